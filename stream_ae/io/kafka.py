"""The only module that talks to Kafka through confluent_kafka (besides the
local broker's readiness probe).

* :func:`client_config` builds every librdkafka dict from :class:`KafkaSettings`
  (SASL/TLS pass through; secrets are unwrapped here and nowhere else).
* :func:`check` turns a ``KafkaError`` into a :class:`KafkaIOError` naming topic,
  partition and offset — the one helper for that.
* :func:`new_client` creates every client; settings librdkafka refuses become a
  :class:`ConfigError` naming the setting (``kafka.sasl_mechanism``, ``kafka.extra``).
* Start-up steps that are idempotent (reaching the cluster, creating topics) retry
  with tenacity; producing does not (librdkafka retries it itself). A failed
  authentication (a wrong SASL password) is not retried: :class:`Admin` reports it
  at once, naming the settings to check.
* librdkafka's own log lines go to the ``stream_ae.librdkafka`` logger, with
  repeats held back (:class:`RepeatFilter`): while a broker is down every client
  logs a refused connect about 20 times a second.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from stream_ae.errors import ConfigError, KafkaIOError
from stream_ae.settings import KafkaSettings, is_secret_property

log = logging.getLogger(__name__)
T = TypeVar("T")


class RepeatFilter(logging.Filter):
    """Pass a message, then hold back the same message for ``every_s`` seconds and
    pass the next one with how many were held back.

    librdkafka retries a refused connect about every 50 ms per client and logs each
    one: measured in ``test_delivery``'s broker restart, a scorer logged 762 such
    lines in 18 s of outage. "The same" ignores the ``(after N ms in state …)`` part.
    """

    _TIMING = re.compile(r"\(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)")

    def __init__(self, every_s: float = 30.0, max_kinds: int = 1000) -> None:
        super().__init__()
        self.every_s = every_s
        self.max_kinds = max_kinds
        self._lock = threading.Lock()  # librdkafka may log from its own threads
        self._seen: dict[str, tuple[float, int]] = {}  # message -> (last passed, held)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = f"{record.levelno}|{self._TIMING.sub('', text).rstrip()}"
        now = time.monotonic()
        with self._lock:
            passed, held = self._seen.get(key, (-math.inf, 0))
            if now - passed < self.every_s:
                self._seen[key] = (passed, held + 1)
                return False
            if len(self._seen) >= self.max_kinds:  # forget the quiet ones
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every_s}
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{text} ({held} more like this in the last {now - passed:.0f} s)"
            record.args = ()
        return True

    def flush(self, logger: logging.Logger) -> None:
        """Log how many were held back of each message whose period has passed: the
        next one would have said so, but it may never come (the broker is back)."""
        now = time.monotonic()
        with self._lock:
            over = [(k, h) for k, (p, h) in self._seen.items() if h and now - p >= self.every_s]
            for key, _ in over:
                self._seen.pop(key)
        for key, held in over:
            level, _, text = key.partition("|")
            after = f"{self.every_s:.0f} s after it"
            logger.log(int(level), "%s (%d more like this in the %s)", text, held, after)


#: where librdkafka's log lines go (``client_config`` passes it as ``logger``)
librdkafka_log = logging.getLogger("stream_ae.librdkafka")
librdkafka_log.addFilter(RepeatFilter())


def log_held_back() -> None:
    """Log the counts librdkafka's :class:`RepeatFilter` holds for periods that have
    passed (the scorer calls it with its stats)."""
    for f in librdkafka_log.filters:
        if isinstance(f, RepeatFilter):
            f.flush(librdkafka_log)


#: librdkafka property -> the KafkaSettings field it comes from (:func:`client_config`;
#: a refused property is named by its field, :func:`_client_settings_error`)
_PROPERTY_FIELDS = {
    "bootstrap.servers": "bootstrap_servers",
    "client.id": "client_id",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
}
#: another name librdkafka accepts for a property above
_PROPERTY_ALIASES = {"sasl.mechanisms": "sasl.mechanism"}


def client_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """librdkafka properties for any client, from the settings tree."""
    conf: dict[str, Any] = {"logger": librdkafka_log}
    for prop, name in _PROPERTY_FIELDS.items():
        value = getattr(kafka, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value() or None
        if value is not None:
            conf[prop] = value
    conf.update(kafka.extra)
    conf.update(overrides)
    return conf


def redacted(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: every secret-like property (:func:`is_secret_property`,
    which covers ``kafka.extra``'s too, e.g. ``sasl.oauthbearer.client.secret``) masked."""
    return {k: ("***" if is_secret_property(k) else v) for k, v in conf.items()}


def _scrubbed(text: str, conf: dict[str, Any]) -> str:
    """``text`` (librdkafka's, which may quote a value) with every secret value of
    ``conf`` masked."""
    for key, value in conf.items():
        if is_secret_property(key) and isinstance(value, str) and value:
            text = text.replace(value, "***")
    return text


_PROPERTY_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")


def _field_of(prop: str) -> str | None:
    """The KafkaSettings field a librdkafka property (or an alias of it) comes from."""
    return _PROPERTY_FIELDS.get(_PROPERTY_ALIASES.get(prop, prop))


def _refused_property(text: str, conf: dict[str, Any]) -> str | None:
    """The librdkafka property an error text is about: the first dotted name in it
    that is a property we set or one it quotes (a file name such as ``ca.pem`` in
    the text is neither); None when it names none."""
    for m in _PROPERTY_NAME.finditer(text):
        name = m.group()
        quoted = m.start() > 0 and text[m.start() - 1] in "`\"'"
        if name in conf or _field_of(name) is not None or quoted:
            return name
    return "sasl.mechanism" if "sasl mechanism" in text.lower() else None


def _client_settings_error(
    exc: KafkaException, conf: dict[str, Any], kafka: KafkaSettings, what: str
) -> ConfigError:
    """librdkafka's refusal of a client's properties as a :class:`ConfigError` that
    names the setting to fix (a named ``kafka.*`` field, or ``kafka.extra`` for any
    other property). Secret values never appear, even where librdkafka quotes one."""
    err = exc.args[0] if exc.args else None
    text = err.str() if isinstance(err, KafkaError) else str(exc)
    text = _scrubbed(re.sub(r"^Failed to create [\w ]+?: ", "", text), conf)
    prop = _refused_property(text, conf)
    file = conf.get(prop) if prop is not None and prop.endswith(".location") else None
    if isinstance(file, str) and not Path(file).exists():  # librdkafka says "BIO lib"
        text += f" (the file {file} does not exist)"
    field = None if prop is None or prop in kafka.extra else _field_of(prop)
    if prop is None:
        setting, env = "the kafka settings", "STREAM_AE_KAFKA__*"
    elif field is None:
        setting, env = f'kafka.extra["{prop}"]', "STREAM_AE_KAFKA__EXTRA"
    else:
        setting, env = f"kafka.{field}", f"STREAM_AE_KAFKA__{field.upper()}"
    where = f"[kafka] of the settings file or {env}"
    if field is not None:
        where += f" or --set {setting}=..."
    return ConfigError(
        f"cannot create a Kafka {what}: {setting} ({env}): {text}",
        hint=f"correct it in {where}; librdkafka's properties: "
        "https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md",
    )


def new_client(
    make: Callable[[dict[str, Any]], T], conf: dict[str, Any], kafka: KafkaSettings, what: str
) -> T:
    """``make(conf)``: every librdkafka client (admin, producer, consumer) is created
    here. librdkafka checks the properties when a client is created and raises
    ``KafkaException`` for an unknown property, a bad value or an unreadable
    certificate file; that becomes a :class:`ConfigError` naming the setting, for
    every command alike (not a traceback)."""
    try:
        return make(conf)
    except KafkaException as exc:
        raise _client_settings_error(exc, conf, kafka, what) from None


#: errors that waiting for the broker does not cure
_PERMANENT = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError._INVALID_ARG,
}


def check(
    err: KafkaError | None,
    what: str,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> None:
    """Raise :class:`KafkaIOError` for a real error; ``None`` and partition EOF pass."""
    if err is None or err.code() == KafkaError._PARTITION_EOF:
        return
    hint = ""
    if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
        hint = "is the broker running? `stream-ae kafka status`; check kafka.bootstrap_servers"
    elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        hint = "create the topics first: `stream-ae topics create`"
    raise KafkaIOError(
        f"{what}: {err.str()}",
        topic=topic,
        partition=partition,
        offset=offset,
        hint=hint,
        permanent=err.fatal() or err.code() in _PERMANENT,
    )


#: the errors librdkafka reports (to ``error_cb`` only) when the broker refuses the
#: client's credentials; the request that waited for the broker then just times out
_AUTH_FAILED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
_AFTER = re.compile(r"\s*\(after \d+ms in state \w+\)")


class _AuthWatch:
    """A client's ``error_cb``: keeps its latest authentication failure.

    librdkafka retries a refused authentication for ever and the request waiting for
    the broker fails with a bare "transport failure" or a timeout; the reason only
    reaches the error callback (served by ``poll``). It holds no reference to the
    client or its owner (no cycle keeps either alive)."""

    def __init__(self) -> None:
        self.error: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.code() in _AUTH_FAILED:
            self.error = err


def _auth_error(kafka: KafkaSettings, conf: dict[str, Any], err: KafkaError) -> KafkaIOError:
    """A permanent :class:`KafkaIOError` for a refused authentication that names the
    settings to check; no secret value appears in it."""
    text = _scrubbed(_AFTER.sub("", err.str()), conf)
    who = f" as {kafka.sasl_username!r}" if kafka.sasl_username else ""
    how = f"kafka.security_protocol={kafka.security_protocol}"
    if kafka.sasl_mechanism:
        how += f", kafka.sasl_mechanism={kafka.sasl_mechanism}"
    if kafka.security_protocol.startswith("SASL"):
        check_these = (
            "kafka.sasl_username and kafka.sasl_password (STREAM_AE_KAFKA__SASL_USERNAME, "
            "STREAM_AE_KAFKA__SASL_PASSWORD) and kafka.sasl_mechanism"
        )
    else:
        check_these = "kafka.security_protocol and the kafka.ssl_* settings"
    return KafkaIOError(
        f"Kafka at {kafka.bootstrap_servers} refused to authenticate the client{who} "
        f"({how}): {text}",
        hint=f"check {check_these}; retrying does not help",
        permanent=True,
    )


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    # the text, not the error: a kept log record would keep its frames (and client)
    log.warning("attempt %d failed: %s; retrying", state.attempt_number, str(exc))


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaIOError) and not exc.permanent


def _with_retries(attempts: int, call: Callable[[], T]) -> T:
    """``call()``, retried on :class:`KafkaIOError` up to ``attempts`` times; the last
    error is raised without tenacity's frames. A ``permanent`` one (a refused
    authentication) is raised at once.

    Why not tenacity's decorator on a local function: decorating a closure creates
    a reference cycle between the decorated functions, and tenacity keeps the last
    error in a frame that the error's traceback holds. Either cycle keeps the
    closure's client (a librdkafka handle, still trying to connect) alive until
    the garbage collector happens to run, and a service that probes a broker that
    is down every round would pile them up. So the error comes without its
    traceback, cause or context (its message, hint, topic, partition and offset
    are what users see). Other exceptions are not retried and pass unchanged.
    """
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=5),
        retry=retry_if_exception(_retriable),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        return retrying(call)
    except KafkaIOError as exc:
        exc.__context__ = None  # its traceback holds the attempt's frames too
        raise exc.with_traceback(None) from None


# -- admin -------------------------------------------------------------------------------


class Admin:
    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._auth = _AuthWatch()
        self._conf = client_config(kafka, error_cb=self._auth)
        self._admin = new_client(AdminClient, self._conf, kafka, "admin client")

    def _raise_if_refused(self) -> None:
        """After a request failed: raise the authentication failure behind it, if any
        (``poll`` serves the error callback, and librdkafka's log lines)."""
        self._admin.poll(0)
        if self._auth.error is not None:
            raise _auth_error(self._kafka, self._conf, self._auth.error)

    def wait_until_reachable(self, timeout_s: float = 5.0) -> None:
        """Retry (bounded by ``kafka.connect_attempts``) until the cluster answers; a
        refused authentication raises at once (a permanent :class:`KafkaIOError`)."""

        def probe() -> None:
            try:
                self._admin.list_topics(timeout=timeout_s)
            except KafkaException as exc:
                self._raise_if_refused()
                raise KafkaIOError(
                    f"cannot reach Kafka at {self._kafka.bootstrap_servers}: {exc}",
                    hint="start the local broker with `stream-ae kafka up`, or set "
                    "kafka.bootstrap_servers / STREAM_AE_KAFKA__BOOTSTRAP_SERVERS",
                ) from None

        _with_retries(self._kafka.connect_attempts, probe)

    def existing_topics(self) -> dict[str, int]:
        """Topic -> partition count (retried: it is the first call after connecting)."""

        def fetch() -> dict[str, int]:
            try:
                md = self._admin.list_topics(timeout=10)
            except KafkaException as exc:
                self._raise_if_refused()
                raise KafkaIOError(f"cannot list topics: {exc}") from None
            return {name: len(t.partitions) for name, t in md.topics.items()}

        return _with_retries(self._kafka.connect_attempts, fetch)

    def ensure_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int,
        replication_factor: int,
        config: dict[str, dict[str, str]] | None = None,
    ) -> list[str]:
        """Create the topics that do not exist yet; return the names created."""
        existing = self.existing_topics()
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return []
        futures = self._admin.create_topics(
            [
                NewTopic(
                    t,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config=(config or {}).get(t, {}),
                )
                for t in missing
            ],
            operation_timeout=30,
        )
        created = []
        for topic, fut in futures.items():
            try:
                fut.result()
                created.append(topic)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    check(err, "create topic", topic=topic)
        return created

    def delete_topics(self, topics: Sequence[str]) -> None:
        for topic, fut in self._admin.delete_topics(list(topics), operation_timeout=30).items():
            try:
                fut.result()
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    check(err, "delete topic", topic=topic)


# -- producer ----------------------------------------------------------------------------


def _delivery_timeout_s(kafka: KafkaSettings) -> float:
    """librdkafka's ``message.timeout.ms`` (alias ``delivery.timeout.ms``) in seconds:
    set in ``kafka.extra`` or librdkafka's default."""
    extra = kafka.extra
    key = "message.timeout.ms" if "message.timeout.ms" in extra else "delivery.timeout.ms"
    value = extra.get(key, 300_000)
    try:
        return float(value) / 1000
    except (TypeError, ValueError):
        raise ConfigError(
            f"kafka.extra {key}={value!r} is not a number of milliseconds",
            hint=f"set kafka.extra.{key} to an integer, or leave it out (300000)",
        ) from None


class DeliveryFailed(KafkaIOError):
    """A produced record was not acknowledged; offsets must not be committed past it."""


class TransactionFailed(KafkaIOError):
    """The open transaction cannot commit, but nothing is fatal: the broker was away,
    a record timed out, or a call hung. What it held is aborted (in place, or by a
    new producer with the same ``transactional.id``, which fences a wedged one), and
    the scorer replays from the last committed transaction
    (``ScorerService._rewind``)."""


#: a transactional producer's records that an abort took back (not lost: replayed)
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}

#: how much longer than its own timeout a transactional call may block before it is
#: given up on: librdkafka's send_offsets_to_transaction ignores its timeout while the
#: group coordinator is away (confluentinc/librdkafka#5456), seen to hang for good
#: after a broker restart
_TXN_GRACE_S = 5.0


class OutputProducer:
    """Producer that remembers delivery failures, so a commit can refuse to go ahead."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        transactional_id: str | None = None,
        linger_ms: int = 20,
    ) -> None:
        overrides: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": "lz4",
        }
        if transactional_id:
            overrides["transactional.id"] = transactional_id
        self._producer = new_client(Producer, client_config(kafka, **overrides), kafka, "producer")
        #: after this long librdkafka stops retrying a record and reports it failed
        self.delivery_timeout_s = _delivery_timeout_s(kafka)
        self._failures: list[str] = []
        #: set by the first failed delivery: every later flush raises too, so no caller
        #: can commit (or write a mark) past records that were lost, even after it
        #: caught and logged the first error
        self.broken: str | None = None
        self.transactional = transactional_id is not None
        self.delivered = 0
        self.warn_every_s = 30.0  # while a flush waits
        #: a transactional call hung past its timeout (see :meth:`_bounded`)
        self.wedged = False

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        elif not (self.transactional and err.code() in _PURGED):
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"key": key, "on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = headers
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                return
            except BufferError:
                # local queue full: serve delivery callbacks and try again
                self._producer.poll(0.1)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError._STATE:  # the transaction already failed
                    self._txn_error(err, f"produce to {topic}")
                check(err, f"produce to {topic}", topic=topic)  # e.g. a record too large

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(
        self,
        timeout_s: float | None = None,
        *,
        stopping: Callable[[], bool] | None = None,
        stop_grace_s: float = 10.0,
    ) -> None:
        """Wait for every record to be acknowledged; raise if any was not.

        By default the wait lasts until librdkafka has settled every record, which
        it does within its delivery timeout (``message.timeout.ms``, 300 s unless
        set in ``kafka.extra``): a broker that is away for a restart delays the
        commit instead of stopping the scorer, and a record librdkafka gives up on
        fails the flush. A warning is logged every ``warn_every_s`` of waiting.
        Once ``stopping()`` is true (a SIGTERM) the wait lasts at most
        ``stop_grace_s`` more."""
        started = time.monotonic()
        deadline = started + (self.delivery_timeout_s + 10.0 if timeout_s is None else timeout_s)
        warned = started
        stop_at: float | None = None
        while left := self._producer.flush(max(min(deadline - time.monotonic(), 1.0), 0.0)):
            self.raise_failures()  # one already failed: no point in waiting for the rest
            now = time.monotonic()
            if stop_at is None and stopping is not None and stopping():
                stop_at = now + stop_grace_s
                deadline = min(deadline, stop_at)
            if now >= deadline:
                why = "; stopping" if stop_at is not None and deadline == stop_at else ""
                raise DeliveryFailed(
                    f"{left} records still unacknowledged after {now - started:.0f} s{why}",
                    hint="the broker may be down; offsets were not committed, the next run "
                    "replays from the last commit",
                )
            if now - warned >= self.warn_every_s:
                log.warning(
                    "%d records not acknowledged after %.0f s: the broker may be away; "
                    "waiting up to %.0f s more (nothing is committed meanwhile)",
                    left,
                    now - started,
                    deadline - now,
                )
                warned = now
        self.raise_failures()

    def raise_failures(self) -> None:
        if self._failures:
            first, n = self._failures[0], len(self._failures)
            self._failures.clear()
            self.broken = self.broken or f"{n} records failed delivery, first: {first}"
        if self.broken is not None:
            raise DeliveryFailed(
                self.broken,
                hint="records were lost: stop and restart, the next run replays from the "
                "last commit",
            )

    # transactions (exactly-once mode)
    def _txn_error(self, err: KafkaError, what: str) -> None:
        """Raise for ``err``: :class:`TransactionFailed` when a transactional producer
        can go on after an abort, :class:`KafkaIOError` when it is fatal (fenced by a
        newer instance, misconfigured) or the producer is not transactional."""
        if self.transactional and not err.fatal():
            raise TransactionFailed(
                f"{what}: {err.str()}",
                hint="the transaction is aborted and the scorer replays from the last "
                "committed one",
            )
        check(err, what)

    def _bounded(
        self,
        what: str,
        call: Callable[[], None],
        timeout_s: float,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        """``call()`` in a thread, given up on ``_TXN_GRACE_S`` after ``timeout_s``
        (see :data:`_TXN_GRACE_S`), or that long after ``stopping()`` turns true. A
        call given up on keeps running; the producer is then ``wedged`` and must be
        replaced (a new one with the same ``transactional.id`` fences it)."""
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)

        worker = threading.Thread(target=run, name=f"stream-ae {what}", daemon=True)
        started = time.monotonic()
        deadline = started + timeout_s + _TXN_GRACE_S
        worker.start()
        while worker.is_alive() and (now := time.monotonic()) < deadline:
            worker.join(min(deadline - now, 0.5))
            if stopping is not None and stopping():
                deadline = min(deadline, now + _TXN_GRACE_S)
                stopping = None
        if worker.is_alive():
            self.wedged = True
            raise TransactionFailed(
                f"{what} did not return within {time.monotonic() - started:.0f} s",
                hint="the broker or its group coordinator was away; the transaction is "
                "abandoned and the scorer replays from the last committed one",
            )
        if outcome:
            exc = outcome.pop()
            if isinstance(exc, KafkaException):
                self._txn_error(exc.args[0], what)
            raise exc

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        try:
            self._producer.init_transactions(timeout_s)
        except KafkaException as exc:
            check(exc.args[0], "init transactions")

    def begin(self) -> None:
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            self._txn_error(exc.args[0], "begin transaction")

    def commit_with_offsets(
        self,
        offsets: list[TopicPartition],
        group_metadata: Any,
        timeout_s: float = 30.0,
        *,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        """Add ``offsets`` to the open transaction and commit it. Raises
        :class:`TransactionFailed` when it did not commit but the scorer can go on:
        the caller aborts it (or replaces the producer, if ``wedged``) and rewinds.
        Once ``stopping()`` is true a hung call is given up on sooner."""
        p = self._producer
        if offsets:
            self._bounded(
                "send offsets to transaction",
                lambda: p.send_offsets_to_transaction(offsets, group_metadata, timeout_s),
                timeout_s,
                stopping,
            )
        self._bounded(
            "commit transaction", lambda: p.commit_transaction(timeout_s), timeout_s, stopping
        )
        self.raise_failures()

    def abort(self, timeout_s: float = 30.0, *, stopping: Callable[[], bool] | None = None) -> None:
        """Abort the open transaction. Its records' failures are forgotten: the
        scorer replays them (in exactly-once mode a failed record fails its
        transaction and nothing else)."""
        p = self._producer
        self._bounded(
            "abort transaction", lambda: p.abort_transaction(timeout_s), timeout_s, stopping
        )
        p.poll(0)  # the aborted records' reports
        self._failures.clear()
        self.broken = None

    def abandon(self) -> None:
        """Drop what is queued: its transaction was aborted by a replacement. A wedged
        producer is left to its hung call (purging under it is not safe)."""
        if not self.wedged:
            self._producer.purge()
            self._producer.poll(0)


# -- consumer ----------------------------------------------------------------------------

_REBALANCING = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._STATE,
}
#: a commit that failed because the group coordinator cannot be reached: retried
#: at the next interval like one refused while the group rebalances
_UNREACHABLE = {
    KafkaError._WAIT_COORD,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.REQUEST_TIMED_OUT,
}


@dataclass
class Rebalance:
    """Callbacks a consumer calls with the partitions (numbers) of its topic.
    ``on_lost``: taken away without a revoke (this consumer was out of the group
    too long), so they may already have another owner; ``on_revoke`` if unset."""

    on_assign: Callable[[list[int]], None] | None = None
    on_revoke: Callable[[list[int]], None] | None = None
    on_lost: Callable[[list[int]], None] | None = None


class InputConsumer:
    """A consumer of one topic in a group, with manual commits."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        group_id: str,
        *,
        rebalance: Rebalance | None = None,
        read_committed: bool = False,
        from_beginning: bool = True,
    ) -> None:
        self.topic = topic
        self._reset = OFFSET_BEGINNING if from_beginning else OFFSET_END
        conf = client_config(
            kafka,
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.max.bytes": 52428800,
                "max.partition.fetch.bytes": 10485760,
                "queued.max.messages.kbytes": 262144,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                # a flush may wait out a broker restart (the producer's delivery
                # timeout) without polling: the group must not drop this member meanwhile
                "max.poll.interval.ms": max(
                    300_000, int((_delivery_timeout_s(kafka) + 120) * 1000)
                ),
            },
        )
        self._consumer = new_client(Consumer, conf, kafka, "consumer")
        self._rebalance = rebalance or Rebalance()
        self._consumer.subscribe(
            [topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def _assigned(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        if self._rebalance.on_assign:
            self._rebalance.on_assign([p.partition for p in parts])

    def _revoked(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        if self._rebalance.on_revoke:
            self._rebalance.on_revoke([p.partition for p in parts])

    def _lost(self, c: Consumer, parts: list[TopicPartition]) -> None:
        if self._rebalance.on_lost:
            self._rebalance.on_lost([p.partition for p in parts])
        else:
            self._revoked(c, parts)

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """A batch of good messages; a fatal consumer error raises."""
        msgs = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
        good = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.fatal():
                check(err, "consume", topic=m.topic(), partition=m.partition())
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", err.str())
        return good

    def commit(self, offsets: dict[int, int]) -> bool:
        """Synchronously commit ``partition -> next offset to read``.

        A commit refused because the group is rebalancing, or one that failed
        because the broker cannot be reached (a retriable error), is skipped
        (returns False): it is safe, a replay starts from the last commit, and this
        process commits again at its next interval."""
        if not offsets:
            return True
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError._NO_OFFSET:
                return True
            if err.code() in _REBALANCING:
                log.info("commit skipped while the group rebalances: %s", err.str())
                return False
            if err.retriable() or err.code() in _UNREACHABLE:
                log.warning(
                    "commit skipped, the broker may be away (%s): the offsets are "
                    "committed at the next interval",
                    err.str(),
                )
                return False
            check(err, "commit offsets", topic=self.topic)
        return True

    def committed(self, partitions: Sequence[int], timeout_s: float = 10.0) -> dict[int, int]:
        """The group's committed offset per partition; where the consumer starts
        (its ``auto.offset.reset``) for one without. Raises :class:`KafkaIOError`
        when the group coordinator cannot answer."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        try:
            got = self._consumer.committed(tps, timeout=timeout_s)
        except KafkaException as exc:
            check(exc.args[0], "read committed offsets", topic=self.topic)
        out = {}
        for tp in got:
            check(tp.error, "read committed offsets", topic=self.topic, partition=tp.partition)
            out[tp.partition] = tp.offset if tp.offset >= 0 else self._reset
        return out

    def seek(self, offsets: dict[int, int]) -> None:
        """Rewind assigned partitions (replay after a model change that rebuilds
        windows, or after a failed transaction)."""
        for p, o in offsets.items():
            try:
                self._consumer.seek(TopicPartition(self.topic, p, o))
            except KafkaException as exc:  # e.g. a partition not fetching yet
                check(exc.args[0], "seek", topic=self.topic, partition=p, offset=o)

    def offsets_for(self, offsets: dict[int, int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p, o) for p, o in offsets.items()]

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def assignment(self) -> list[int]:
        return [tp.partition for tp in self._consumer.assignment()]

    def close(self) -> None:
        self._consumer.close()


# -- the control topic (hot swap) ------------------------------------------------------------


class TopicFollower:
    """Follows a topic without a group: every partition from the beginning, then new
    records as they come. For small topics every scorer must see whole (control
    records, maintenance feedback), whoever owns which readings.

    The constructor reads up to the end offsets as they stand (at most
    ``catch_up_s``), so the first :meth:`poll` returns everything published before
    the process started, before any reading is scored; later calls never block."""

    def __init__(self, kafka: KafkaSettings, topic: str, *, catch_up_s: float = 10.0) -> None:
        self.topic = topic
        conf = client_config(
            kafka,
            **{
                "group.id": f"stream-ae-follow-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
        self._consumer = new_client(Consumer, conf, kafka, "consumer")
        try:
            md = self._consumer.list_topics(topic, timeout=10)
            tmeta = md.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                raise KafkaIOError("topic to follow does not exist", topic=topic)
            parts = sorted(tmeta.partitions)
            self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            self._pending = self._catch_up(parts, catch_up_s)
        except BaseException:
            self._consumer.close()
            raise

    def _catch_up(self, parts: list[int], timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        ends: dict[int, int] = {}
        unknown: list[int] = []
        for p in parts:
            marks = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=max(deadline - time.monotonic(), 0.1)
            )
            if marks is None:
                unknown.append(p)
            elif marks[1] > marks[0]:
                ends[p] = marks[1]
        out: list[Message] = []
        while ends and time.monotonic() < deadline:
            msgs = self._consumer.consume(num_messages=500, timeout=0.2)
            out.extend(m for m in msgs if m.error() is None)
            # positions, not message offsets: transaction markers take offsets too
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        if ends or unknown:
            log.warning(
                "%s: caught up only partly in %.0f s (partitions %s not read to the end); "
                "the rest follows as it is read",
                self.topic,
                timeout_s,
                sorted([*ends, *unknown]),
            )
        return out

    def poll(self) -> list[Message]:
        """The records that arrived since the last call (without errors), in order."""
        out, self._pending = self._pending, []
        while True:
            msgs = self._consumer.consume(num_messages=500, timeout=0)
            out.extend(m for m in msgs if m.error() is None)
            if len(msgs) < 500:
                return out

    def close(self) -> None:
        self._consumer.close()


class ControlWatcher(TopicFollower):
    """Follows a compacted control topic; ``latest(key)`` never blocks."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__(kafka, topic)
        self._latest: dict[bytes, bytes] = {}

    def latest(self, key: bytes) -> bytes | None:
        """The newest value seen for ``key`` (after reading what has arrived)."""
        for m in self.poll():
            k, v = m.key(), m.value()
            if k is not None and v is not None:
                self._latest[k] = v
        return self._latest.get(key)


def publish_control(kafka: KafkaSettings, topic: str, key: bytes, value: bytes) -> None:
    """Write one record to a control topic and wait for the acknowledgement."""
    producer = OutputProducer(kafka, linger_ms=0)
    producer.send(topic, value, key=key)
    producer.flush(30)


# -- bounded reads (training from a topic, tests, the benchmark) ---------------------------


def read_range(
    kafka: KafkaSettings,
    topic: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    batch: int = 10_000,
    idle_timeout_s: float = 5.0,
    read_committed: bool = False,
    strict: bool = False,
) -> Iterator[list[Message]]:
    """Yield batches of messages of ``topic`` from ``start_ms`` (record timestamp;
    None = beginning) up to the end offsets as they stand when the read starts
    (``end_ms`` filters by record timestamp; with ``read_committed`` the end is the
    last stable offset). Uses manual assignment, no group. A read that gets nothing
    for ``idle_timeout_s`` ends there, or, ``strict``, raises
    :class:`KafkaIOError`."""
    conf = client_config(
        kafka,
        **{
            "group.id": f"stream-ae-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        },
    )
    consumer = new_client(Consumer, conf, kafka, "consumer")
    try:  # the body is _read, so that librdkafka's errors get their message here
        yield from _read(consumer, topic, start_ms, end_ms, batch, idle_timeout_s, strict)
    except KafkaException as exc:  # the broker went away meanwhile
        check(exc.args[0], "read", topic=topic)
    finally:
        consumer.close()


def _read(
    consumer: Consumer,
    topic: str,
    start_ms: int | None,
    end_ms: int | None,
    batch: int,
    idle_timeout_s: float,
    strict: bool,
) -> Iterator[list[Message]]:
    md = consumer.list_topics(topic, timeout=10)
    tmeta = md.topics.get(topic)
    if tmeta is None or tmeta.error is not None:
        raise KafkaIOError(
            "topic does not exist", topic=topic, hint="check the topic name or create it"
        )
    parts = sorted(tmeta.partitions)
    ends: dict[int, int] = {}
    for p in parts:
        _lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends[p] = hi
    if start_ms is None:
        starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
    else:
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, start_ms) for p in parts], timeout=10
        )
    todo = {tp.partition for tp in starts if tp.offset >= 0 and ends[tp.partition] > 0}
    todo |= {p for p in parts if ends[p] > 0 and start_ms is None}
    consumer.assign(starts)
    last_progress = time.monotonic()
    while todo:
        msgs = consumer.consume(num_messages=batch, timeout=0.5)
        out = []
        for m in msgs:
            if m.error():
                check(m.error(), "read", topic=topic, partition=m.partition())
                continue
            p, off = m.partition() or 0, m.offset() or 0
            if off >= ends[p]:  # past the end as it stood (its position ends it below)
                continue
            if end_ms is not None and m.timestamp()[1] >= end_ms:
                todo.discard(p)
                continue
            out.append(m)
        # a partition is done once its position reaches the end; with read_committed
        # the end is the last stable offset and may follow a transaction marker,
        # which is never returned but which the position passes
        for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
            if tp.offset >= ends[tp.partition]:
                todo.discard(tp.partition)
        if out:
            last_progress = time.monotonic()
            yield out
        elif time.monotonic() - last_progress > idle_timeout_s:
            if strict:
                raise KafkaIOError(
                    f"partitions {sorted(todo)} were not read to their end: nothing came "
                    f"for {idle_timeout_s:.0f} s",
                    topic=topic,
                    hint="the broker may be away or overloaded",
                )
            break


def partitions_of(kafka: KafkaSettings, topic: str) -> list[int]:
    admin = new_client(AdminClient, client_config(kafka), kafka, "admin client")
    md = admin.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    return [] if t is None or t.error is not None else sorted(t.partitions)


def iter_values(batches: Iterable[list[Message]]) -> Iterator[Message]:
    for b in batches:
        yield from b
