"""The scorer's runtime loop: poll → pipeline → produce → commit. Thin on purpose.

Delivery (at-least-once, the default): outputs of a batch are produced, then at
each commit interval the producer is flushed (every record acknowledged) and
only then are offsets committed — and never past the first reading an open
window still needs (:meth:`Pipeline.committable`). A crash at any point replays
from the last commit; replayed windows produce events with the same
``event_id``.

Exactly-once (``scorer.exactly_once``): outputs, offsets and the scorer's
"emitted up to" marks commit in one Kafka transaction. The marks (a compacted
topic, key ``partition|asset``) let a restarted scorer recognise windows it
already published while it replays from the pinned offset, so a
``read_committed`` reader sees each event once. A transaction that fails without
a fatal error (the broker restarts, say) is rewound in process the same way
(:meth:`ScorerService._rewind`), so the scorer rides the outage out.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import msgspec
import numpy as np

from stream_ae import schemas
from stream_ae.decide.drift import DriftMonitor
from stream_ae.decide.events import Decider
from stream_ae.decide.maintenance import Note
from stream_ae.decide.persistence import Persistence
from stream_ae.errors import KafkaIOError
from stream_ae.io.kafka import (
    Admin,
    ControlWatcher,
    DeliveryFailed,
    InputConsumer,
    OutputProducer,
    Rebalance,
    TopicFollower,
    TransactionFailed,
    log_held_back,
    publish_control,
    read_range,
)
from stream_ae.pipeline import AssetState, ModelBinding, Pipeline, StepOutput
from stream_ae.settings import Settings
from stream_ae.windowing import GridSpec

if TYPE_CHECKING:
    from stream_ae.model.artifact import ArtifactMetadata, LoadedModel

log = logging.getLogger(__name__)
T = TypeVar("T")

#: transactions in a row that may fail and be replayed before the scorer stops: the
#: broker coming back takes one or two; more means replaying does not help
MAX_REWINDS = 5

#: a refused hot swap is tried again after this many seconds (at a batch boundary) ...
SWAP_RETRY_S = 30.0
#: ... at most this many times, unless a new announcement replaces it: a model still
#: being copied, or a file system back from an I/O error, gets a few minutes; a
#: corrupted artifact is then refused for good (counted, no more log lines)
SWAP_RETRIES = 5


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def load_model(settings: Settings) -> LoadedModel:
    """Load and verify the artifact, retrying (bounded) while it is not there yet."""
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    from stream_ae.errors import ArtifactError
    from stream_ae.model.artifact import load_artifact
    from stream_ae.model.scorer import set_threads

    set_threads(settings.model.threads)

    @retry(
        stop=stop_after_attempt(settings.model.load_attempts),
        wait=wait_exponential(multiplier=0.5, max=5),
        retry=retry_if_exception_type(ArtifactError),
        before_sleep=lambda s: log.warning(
            "loading model from %s failed (%s); retrying",
            settings.model.path,
            s.outcome.exception() if s.outcome else "?",
        ),
        reraise=True,
    )
    def load() -> LoadedModel:
        return load_artifact(
            settings.model.path,
            device=settings.model.device,
            max_batch=settings.model.max_batch,
            runtime=settings.model.runtime,
            precision=settings.model.precision,
        )

    return load()


def model_grid(md: ArtifactMetadata, settings: Settings) -> GridSpec:
    """A model's windowing: period, W and H from the artifact, lateness, gap filling
    and gap alerts from the settings (the scorer's, and anything that windows like it)."""
    alert_ms = settings.window.gap_alert_ms
    return GridSpec(
        period_ms=md.sample_period_ms,
        size=md.window,
        hop=md.hop,
        lateness_ms=settings.window.allowed_lateness_ms,
        fill_limit=settings.window.fill_limit,
        n_channels=len(md.channels),
        gap_alert=None if alert_ms is None else -(-alert_ms // md.sample_period_ms),
    )


def bind_model(loaded: LoadedModel, settings: Settings) -> ModelBinding:
    """Grid and decision rules for a model: W, H and the period come from the artifact."""
    from functools import partial

    from stream_ae.model.latents import latents

    md = loaded.metadata
    thresholds = md.asset_thresholds
    spec = model_grid(md, settings)
    decider = Decider(
        threshold=thresholds.fleet.value,
        per_asset=thresholds.lookup,
        model_version=md.version,
        channels=list(md.channels),
        high_ratio=settings.decide.high_ratio,
        critical_ratio=settings.decide.critical_ratio,
        top_channels=settings.decide.top_channels,
        persistence=Persistence.from_params(
            thresholds.fleet.params, settings.decide.persistence_k, settings.decide.persistence_n
        ),
    )
    return ModelBinding(
        scorer=loaded.scorer,
        decider=decider,
        spec=spec,
        reference_mean=np.asarray(loaded.scorer.scaler.mean, dtype=np.float64),
        drift=DriftMonitor.from_metadata(md),
        encoder=partial(latents, loaded.scorer) if settings.topics.publish_latents else None,
    )


def output_topics(settings: Settings) -> list[str]:
    t = settings.topics
    topics = [t.anomalies, t.dead_letter_topic, t.data_quality]
    if t.publish_scores:
        topics.append(t.scores)
    if t.publish_latents:
        topics.append(t.latents)
    return topics


def ensure_control_topic(settings: Settings) -> None:
    Admin(settings.kafka).ensure_topics(
        [settings.topics.models],
        partitions=1,
        replication_factor=settings.topics.replication_factor,
        config={settings.topics.models: {"cleanup.policy": "compact"}},
    )


def announce_champion(settings: Settings, artifact_dir: Path) -> schemas.ModelAnnouncement:
    """Tell every running scorer to switch to the artifact at ``artifact_dir``.

    The artifact is verified here first (hash, shapes), so a broken one is never
    announced; scorers verify again before they switch."""
    from stream_ae.model.artifact import load_artifact

    loaded = load_artifact(artifact_dir, device="cpu")
    ann = schemas.ModelAnnouncement(
        version=loaded.metadata.version,
        path=str(loaded.path.resolve()),
        weights_sha256=loaded.metadata.weights_sha256,
        announced_at=schemas.iso_ms(now_ms()),
    )
    ensure_control_topic(settings)
    publish_control(
        settings.kafka, settings.topics.models, schemas.CHAMPION_KEY, schemas.encode(ann)
    )
    return ann


def marks_topic(settings: Settings) -> str:
    return f"{settings.scorer.group_id}.emitted"


def _log_maintenance(fb: schemas.FeedbackEvent, note: Note, open_since: int | None) -> None:
    """Say what a feedback record did to the maintenance periods that tag events
    (``open_since``: the start of the asset's open maintenance, if any, after it)."""
    asset, at = fb.asset_id, schemas.iso_ms(fb.start_ms)
    if note == "opened":
        log.info(
            "maintenance on %s started at %s: its anomaly events are tagged "
            "during_maintenance until maintenance_end",
            asset,
            at,
        )
    elif note == "closed":
        log.info(
            "maintenance on %s ended at %s: anomaly events of its windows from then "
            "on are no longer tagged during_maintenance",
            asset,
            at,
        )
    elif note == "period":
        assert fb.end_ms is not None
        log.info(
            "maintenance on %s from %s to %s: anomaly events of windows overlapping it "
            "are tagged during_maintenance",
            asset,
            at,
            schemas.iso_ms(fb.end_ms),
        )
    elif note == "already_open":
        log.info(
            "maintenance on %s reported to start at %s: already open since %s (the "
            "first start stands)",
            asset,
            at,
            "?" if open_since is None else schemas.iso_ms(open_since),
        )
    elif note == "nothing_to_close":
        log.warning(
            "maintenance_end on %s at %s closes nothing: no maintenance_start before it "
            "was read, or only a later one (an end written before its start leaves that "
            "maintenance open until the next end)",
            asset,
            at,
        )
    elif note == "empty":
        log.warning(
            "maintenance on %s ends (end_ms) at or before it starts (%s): ignored", asset, at
        )


@dataclass
class RunSummary:
    batches: int
    metrics: dict[str, object]


@dataclass(frozen=True)
class _SwapRetry:
    """An announced model this scorer refused, to be tried again at ``at`` (monotonic
    seconds): ``tries`` refusals so far."""

    raw: bytes
    tries: int
    at: float


class ScorerService:
    """One scorer process. ``on_output`` sees every step's outputs (the demo prints them)."""

    def __init__(
        self,
        settings: Settings,
        binding: ModelBinding,
        *,
        on_output: Callable[[StepOutput], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = Pipeline(
            binding,
            max_future_ms=settings.window.max_future_ms,
            idle_timeout_ms=settings.window.idle_timeout_ms,
            publish_scores=settings.topics.publish_scores,
            publish_latents=settings.topics.publish_latents,
            track_marks=settings.scorer.exactly_once or settings.scorer.replay_marks,
            rebaseline_ms=int(settings.model.rebaseline_s * 1000),
            tag_maintenance=settings.decide.tag_maintenance,
            maintenance_open_max_ms=int(settings.decide.maintenance_open_max_h * 3_600_000),
        )
        rule = binding.decider.persistence
        if not self.pipeline.track_marks and (
            self.pipeline.rebaseliner is not None or (rule is not None and rule.active)
        ):
            log.warning(
                "scorer.replay_marks is off: the persistence verdicts and re-baselining "
                "state will not survive a restart (set scorer.replay_marks=true)"
            )
        self.on_output = on_output
        self._stop = False
        self._closing = False
        self._consumed: dict[int, int] = {}
        self._eos = settings.scorer.exactly_once
        self._marks = self.pipeline.track_marks  # marks topic written and read back
        # exactly-once: per partition, the consumed position of the last transaction
        # (dead letters below it were already published)
        self._consumed_marks: dict[int, int] = {}
        self._in_txn = False
        self._txn_id: str | None = None
        #: exactly-once: a transaction failed (not fatally); the loop rewinds
        self._txn_failed: KafkaIOError | None = None
        self._rewinds = 0  # in a row, without a transaction committed between
        self._watcher: ControlWatcher | None = None
        self._feedback: TopicFollower | None = None
        #: the announcement dealt with: switched to, already served, or refused for good
        self._last_announcement: bytes | None = None
        self._swap_retry: _SwapRetry | None = None

    def request_stop(self, *_args: object) -> None:
        self._stop = True

    def _stopping(self) -> bool:
        return self._stop

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info(
                "received %s: finishing the batch, flushing, committing",
                signal.Signals(signum).name,
            )
            self._stop = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- set-up ------------------------------------------------------------------------

    def _prepare(self) -> None:
        s = self.settings
        admin = Admin(s.kafka)
        admin.wait_until_reachable()
        existing = admin.existing_topics()
        if s.topics.readings not in existing:
            from stream_ae.errors import KafkaIOError

            raise KafkaIOError(
                "readings topic does not exist",
                topic=s.topics.readings,
                hint="create it with `stream-ae topics create` or check topics.readings",
            )
        topics = output_topics(s)
        config: dict[str, dict[str, str]] = {}
        if self._marks:
            topics.append(marks_topic(s))
            config[marks_topic(s)] = {"cleanup.policy": "compact"}
        if self._follows_feedback():
            topics.append(s.topics.feedback)
        admin.ensure_topics(
            topics,
            partitions=existing[s.topics.readings],
            replication_factor=s.topics.replication_factor,
            config=config,
        )
        if s.model.hot_swap:
            ensure_control_topic(s)

    # -- the loop ------------------------------------------------------------------------

    def run(
        self, *, max_idle_s: float | None = None, max_seconds: float | None = None
    ) -> RunSummary:
        """Run until stopped (signal, ``request_stop``) or, for bounded runs, until no
        message arrived for ``max_idle_s`` / ``max_seconds`` passed."""
        s = self.settings
        self._prepare()
        self._closing = False
        self._txn_failed = None
        if self._eos:
            self._txn_id = f"{s.scorer.transactional_id}-{socket.gethostname()}-{os.getpid()}"
            self.producer = self._new_producer()
        else:
            self.producer = OutputProducer(s.kafka)
        self.consumer = InputConsumer(
            s.kafka,
            s.topics.readings,
            s.scorer.group_id,
            rebalance=Rebalance(
                on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            ),
            read_committed=self._eos,
        )
        self._watcher = ControlWatcher(s.kafka, s.topics.models) if s.model.hot_swap else None
        if self._follows_feedback():
            self._feedback = TopicFollower(s.kafka, s.topics.feedback)
        # Everything built so far (torch, the model, clients) lives as long as the process:
        # take it out of the cyclic GC's generations, which otherwise walk it on every
        # full collection (measured: ~25 % of the hot loop's time, docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        started = last_msg = last_commit = last_stats = last_sweep = time.monotonic()
        batches = 0
        try:
            while not self._stop:
                try:
                    msgs = self.consumer.consume(s.scorer.batch_size, s.scorer.poll_timeout_s)
                    now = time.monotonic()
                    if self._watcher is not None:
                        self._follow_champion(now)
                    if self._feedback is not None:
                        self._follow_maintenance()
                    if msgs:
                        last_msg = now
                        batches += 1
                        self._begin()
                        out = self.pipeline.step(msgs, now_ms=now_ms())
                        for p, o in out.consumed.items():
                            self._consumed[p] = max(o, self._consumed.get(p, 0))
                        self._publish(out)
                    if now - last_sweep >= 1.0:  # silent assets, even while others stream
                        self._begin()
                        self._publish(self.pipeline.tick(now_ms=now_ms()))
                        last_sweep = now
                    if now - last_commit >= s.scorer.commit_interval_s:
                        self._commit()
                        last_commit = now
                    if now - last_stats >= s.scorer.stats_interval_s:
                        self._log_stats()
                        last_stats = now
                    if max_idle_s is not None and now - last_msg > max_idle_s:
                        break
                    if max_seconds is not None and now - started > max_seconds:
                        break
                except (TransactionFailed, DeliveryFailed) as exc:
                    if not self._eos:
                        raise
                    self._txn_failed = exc
                if self._txn_failed is not None:
                    self._rewind(self._txn_failed)
            if self._txn_failed is not None:  # set in the last turn, e.g. by a callback
                self._rewind(self._txn_failed)
            self._commit()
        except TransactionFailed as exc:  # the final commit, after a stop
            raise self._stopped(exc) from None
        finally:
            self._close()
            # The process may outlive this run (tests, a program that embeds the scorer):
            # what was frozen, this run's clients included, can be collected again.
            gc.unfreeze()
        self._log_stats()
        return RunSummary(batches=batches, metrics=self.pipeline.metrics.as_dict())

    def _begin(self) -> None:
        if self._eos and not self._in_txn:
            self.producer.begin()
            self._in_txn = True

    def _publish(self, out: StepOutput) -> None:
        t = self.settings.topics
        send = self.producer.send
        for e in out.events:
            send(t.anomalies, schemas.encode(e), key=e.asset_id.encode())
        for r in out.scores:
            send(t.scores, schemas.encode(r), key=r.asset_id.encode())
        for z in out.latents:
            send(t.latents, schemas.encode(z), key=z.asset_id.encode())
        for q in out.quality:
            send(t.data_quality, schemas.encode(q), key=q.asset_id.encode())
        for d in out.dead_letters:
            if d.source_offset < self._consumed_marks.get(d.source_partition, -1):
                continue  # published before the crash or model change this replay follows
            send(t.dead_letter_topic, d.value, key=d.key, headers=d.headers())
        self.producer.poll()
        if self.on_output is not None:
            self.on_output(out)

    def _commit(self, offsets: dict[int, int] | None = None) -> None:
        """Flush, write the marks, commit ``offsets`` (default: what is safe now)."""
        if offsets is None:
            offsets = self.pipeline.committable(self._consumed)
        if self._eos:
            if self._txn_failed is not None:  # e.g. partitions lost: it must not commit
                raise self._txn_failed
            if not self._in_txn:
                self._begin()
            self._send_marks()
            self.producer.commit_with_offsets(  # raises TransactionFailed for _rewind
                self.consumer.offsets_for(offsets),
                self.consumer.group_metadata(),
                stopping=self._stopping,
            )
            self.pipeline.dirty_marks.clear()
            self._in_txn = False
            self._rewinds = 0
            return
        self.producer.flush(stopping=self._stopping)  # all acknowledged (or raise) ...
        if self._marks:  # ... before a mark may say its window was published
            self._send_marks()
            self.producer.flush(stopping=self._stopping)
            self.pipeline.dirty_marks.clear()
        self.consumer.commit(offsets)

    def _new_producer(self, init_timeout_s: float = 30.0) -> OutputProducer:
        """A transactional producer, initialised: its ``transactional.id`` is this
        process's, so it fences an earlier producer of this process and aborts the
        transaction that one left open."""
        producer = OutputProducer(self.settings.kafka, transactional_id=self._txn_id)
        producer.init_transactions(init_timeout_s)
        return producer

    def _rewind(self, failure: KafkaIOError) -> None:
        """Exactly-once: the open transaction failed, not fatally (the broker was
        away, a record timed out, a call hung, partitions were lost). Do in process
        what a restart would: abort the transaction (if the producer cannot, a new
        one with the same ``transactional.id`` fences it and aborts it), take the
        assigned partitions' state and marks back from the marks topic as of the
        last committed transaction, and move the consumer back to that
        transaction's offsets. Waits while the broker is away; a stop meanwhile
        ends the run with an error (nothing after the last transaction is
        committed)."""
        self._txn_failed = None
        if self._stop:
            raise self._stopped(failure)
        self._rewinds += 1
        if self._rewinds > MAX_REWINDS:
            raise KafkaIOError(
                f"{MAX_REWINDS} transactions in a row failed and were replayed, the last: "
                f"{failure}",
                hint="replaying does not help: see the errors above; the next run replays "
                "from the last committed transaction",
            )
        self.pipeline.metrics.transactions_rewound += 1
        log.warning("exactly-once: %s", failure)
        aborted = not self._in_txn
        if self._in_txn and not self.producer.wedged:
            try:
                self.producer.abort(10, stopping=self._stopping)
                aborted = True
            except KafkaIOError as exc:
                log.warning("the transaction could not be aborted: %s", exc)
        self._in_txn = False
        if not aborted:
            old = self.producer
            self.producer = self._until_back(  # short tries: a stop is seen between them
                "start a new transactional producer", lambda: self._new_producer(10.0)
            )
            old.abandon()
        parts = self.consumer.assignment()
        self._forget(parts)
        if parts:
            offsets = self._until_back(
                "read the committed offsets", lambda: self.consumer.committed(parts)
            )
            self._until_back("read the marks back", lambda: self._load_marks(set(parts)))
            self._until_back("seek to the committed offsets", lambda: self.consumer.seek(offsets))
            log.info(
                "replaying partitions from the last committed transaction: %s",
                ", ".join(f"{p} from {o if o >= 0 else 'the start'}" for p, o in offsets.items()),
            )

    @staticmethod
    def _stopped(exc: Exception, what: str = "") -> KafkaIOError:
        return KafkaIOError(
            f"stopped {what}after a failed transaction: {exc}",
            hint="nothing after the last committed transaction was committed; the next "
            "run replays from there",
        )

    def _until_back(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, retried while it fails with a :class:`KafkaIOError` that is not
        ``permanent`` (the broker is away), warning every 30 s; a stop gives up."""
        started = warned = time.monotonic()
        while True:
            try:
                return call()
            except KafkaIOError as exc:
                if exc.permanent:
                    raise
                now = time.monotonic()
                if self._stop:
                    raise self._stopped(exc, f"while waiting to {what} ") from None
                if now - warned >= 30.0:
                    log.warning(
                        "could not %s for %.0f s, the broker may be away: %s",
                        what,
                        now - started,
                        exc,
                    )
                    warned = now
                time.sleep(1.0)

    def _send_marks(self) -> None:
        """Per (partition, asset) its :class:`AssetState` (the start of the last
        published window, with the decision state as of it), and per partition the
        consumed position (dead letters below it were published)."""
        mt = marks_topic(self.settings)
        state = self.pipeline.asset_state
        for p, asset in self.pipeline.dirty_marks:
            value = msgspec.json.encode(state((p, asset)))
            self.producer.send(mt, value, key=f"{p}|{asset}".encode())
        for p, o in self._consumed.items():  # the partition's record: its position
            # never backwards: a commit during a replay (below the position taken back)
            # would otherwise pair the asset records' gap state, as of that position,
            # with an older one, and a second restart would replay readings onto it
            position = max(o, self._consumed_marks.get(p, -1))
            self.producer.send(mt, msgspec.json.encode(AssetState(position)), key=f"{p}|".encode())

    # -- hot swap ------------------------------------------------------------------------

    def _follow_champion(self, now: float | None = None) -> None:
        """At a batch boundary: switch to a newly announced champion, or refuse it.

        A refused model is tried again every :data:`SWAP_RETRY_S` (monotonic ``now``),
        at most :data:`SWAP_RETRIES` times, until a new announcement replaces it: the
        artifact may still be being copied (a partial copy fails its sha256 too), or
        the file system may be back. Only the batch boundary after the wait tries it,
        so the loop never blocks. An announcement that cannot be decoded is refused
        for good at once."""
        assert self._watcher is not None
        raw = self._watcher.latest(schemas.CHAMPION_KEY)
        if raw is None or raw == self._last_announcement:
            return
        now = time.monotonic() if now is None else now
        retry = self._swap_retry if self._swap_retry and self._swap_retry.raw == raw else None
        if retry is not None and now < retry.at:
            return
        try:
            ann = msgspec.json.decode(raw, type=schemas.ModelAnnouncement)
        except msgspec.DecodeError as exc:
            self._last_announcement, self._swap_retry = raw, None
            self._refuse(
                f"unreadable announcement on {self.settings.topics.models}: {exc}",
                hint="announce the champion again (`stream-ae models announce`)",
            )
            return
        current = self.pipeline.model.decider.model_version
        refused = None if ann.version == current else self._try_swap(ann, current)
        if refused is None:
            self._last_announcement, self._swap_retry = raw, None
            return
        tries = 1 if retry is None else retry.tries + 1
        if tries <= SWAP_RETRIES:
            self._swap_retry = _SwapRetry(raw, tries, now + SWAP_RETRY_S)
            self._refuse(
                refused,
                hint=f"trying again in {SWAP_RETRY_S:g} s ({tries} of {SWAP_RETRIES} retries)",
            )
        else:
            self._last_announcement, self._swap_retry = raw, None
            self._refuse(
                refused,
                hint=f"refused {tries} times, not trying again; fix the artifact and announce "
                "it again (`stream-ae models announce`)",
            )

    def _try_swap(self, ann: schemas.ModelAnnouncement, current: str) -> str | None:
        """Load, verify and switch to the announced model; why not, when it cannot."""
        from stream_ae.errors import StreamAEError
        from stream_ae.model.artifact import load_artifact

        why = f"model {ann.version} refused, {current} keeps serving"
        try:
            loaded = load_artifact(
                Path(ann.path),
                device=self.settings.model.device,
                max_batch=self.settings.model.max_batch,
                runtime=self.settings.model.runtime,
                precision=self.settings.model.precision,
            )
            md = loaded.metadata
            if md.weights_sha256 != ann.weights_sha256 or md.version != ann.version:
                return (
                    f"{why}: the artifact at {ann.path} is version {md.version} with weights "
                    f"{md.weights_sha256[:12]}…, the announcement says {ann.version} / "
                    f"{ann.weights_sha256[:12]}…"
                )
            binding = bind_model(loaded, self.settings)
        except (StreamAEError, OSError) as exc:
            return f"{why}: {exc}"
        self._swap(binding, md.version, current)
        return None

    def _follows_feedback(self) -> bool:
        """Maintenance reports tag events (decide.tag_maintenance) or start warm-ups."""
        s = self.settings
        return s.decide.tag_maintenance or s.model.rebaseline_s > 0

    def _follow_maintenance(self) -> None:
        """At a batch boundary: maintenance periods tag the anomaly events of the windows
        that overlap them (the pipeline holds them), and maintenance that ended starts a
        new warm-up for its asset (re-baselining), from the reported time on."""
        assert self._feedback is not None
        events, problems = schemas.feedback_events(self._feedback.poll())
        for problem in problems:
            log.warning("%s", problem)
        latest = now_ms() + self.settings.window.max_future_ms
        for fb in events:
            note = self.pipeline.note_feedback(fb)
            if note is not None:
                assert self.pipeline.maintenance is not None
                _log_maintenance(fb, note, self.pipeline.maintenance.open_since(fb.asset_id))
            if self.pipeline.rebaseliner is not None:
                self._rebaseline_after(fb, latest)

    def _rebaseline_after(self, fb: schemas.FeedbackEvent, latest: int) -> None:
        end = fb.maintenance_end_ms
        if end is None:
            if fb.kind == "maintenance":
                log.info("maintenance on %s has no end_ms yet: no warm-up from it", fb.asset_id)
            return
        if end > latest:  # would hold every later restart of the asset back
            log.warning(
                "maintenance on %s ending at %s is in the future (beyond "
                "window.max_future_ms): no warm-up from it; send maintenance_end when it ends",
                fb.asset_id,
                schemas.iso_ms(end),
            )
            return
        if self.pipeline.note_maintenance(fb.asset_id, end):
            log.info(
                "maintenance on %s ended at %s: a new warm-up from then",
                fb.asset_id,
                schemas.iso_ms(end),
            )

    def _swap(self, binding: ModelBinding, new: str, old: str) -> None:
        started = time.monotonic()
        replay_from = self.pipeline.committable(self._consumed)
        if self.pipeline.swap_model(binding):
            # W, H, period or channels changed: settle what the old grid emitted, then
            # replay from the pins so the new grid fills (see Pipeline.swap_model). The
            # commit stays at the pins: a crash during the replay replays again.
            self._commit(replay_from)
            for p, o in self._consumed.items():
                self._consumed_marks[p] = max(self._consumed_marks.get(p, -1), o)
            self.consumer.seek(replay_from)
            log.info("model %s → %s: windows rebuilt, replaying from %s", old, new, replay_from)
        log.info(
            "now scoring with model %s (was %s; swap took %.0f ms)",
            new,
            old,
            (time.monotonic() - started) * 1000,
        )

    def _refuse(self, message: str, *, hint: str) -> None:
        self.pipeline.metrics.model_swap_failures += 1
        log.error("%s (%s)", message, hint)

    def _on_assign(self, partitions: list[int]) -> None:
        log.info("assigned partitions %s", partitions)
        if self._marks and partitions:
            self._load_marks(set(partitions))

    def _on_revoke(self, partitions: list[int]) -> None:
        log.info("revoking partitions %s", partitions)
        if not self._closing:  # closing: run() has committed, or failed and must not
            try:
                self._commit()
            except KafkaIOError as exc:  # the next owner replays from the last good commit
                log.error("commit before giving up partitions %s failed: %s", partitions, exc)
                if self._eos and isinstance(exc, TransactionFailed):
                    self._txn_failed = exc  # the partitions kept replay too
            except Exception:
                log.exception("commit before giving up partitions %s failed", partitions)
        self._forget(partitions)

    def _on_lost(self, partitions: list[int]) -> None:
        """Taken away while this scorer was out of the group (e.g. blocked in a flush
        through a broker outage): another scorer may own them already, so nothing is
        committed and no mark written for them."""
        log.warning(
            "lost partitions %s (out of the group too long): their state is dropped; "
            "their owner replays from the last commit",
            partitions,
        )
        if self._eos and self._in_txn:  # it holds outputs of theirs: the owner replays
            self._txn_failed = TransactionFailed(
                f"partitions {partitions} were lost while a transaction was open",
                hint="it is aborted; the partitions kept replay from the last committed one",
            )
        self._forget(partitions)

    def _forget(self, partitions: list[int]) -> None:
        self.pipeline.forget_partitions(partitions)
        for p in partitions:
            self._consumed.pop(p, None)
            self._consumed_marks.pop(p, None)

    def _load_marks(self, partitions: set[int]) -> None:
        """Take back the marks and decision state of newly assigned partitions (the
        latest record per key; the topic is compacted, not necessarily yet)."""
        mt = marks_topic(self.settings)
        latest: dict[tuple[int, str], bytes] = {}
        # all of it or an error: a part would republish windows or drop decision state
        for batch in read_range(self.settings.kafka, mt, read_committed=True, strict=True):
            for m in batch:
                p_text, _, asset = (m.key() or b"").decode().partition("|")
                if (p := int(p_text)) in partitions:
                    latest[(p, asset)] = m.value() or b"{}"
        refused = []
        for (p, asset), value in latest.items():
            state = msgspec.json.decode(value, type=AssetState)
            if not asset:
                self._consumed_marks[p] = state.window_start_ms
                self.pipeline.restore_position(p, state.window_start_ms)
            elif not self.pipeline.restore_asset((p, asset), state):
                refused.append(asset)
        if refused:
            log.warning(
                "%d assets' stored baselines are for other channels (or another order) "
                "than model %s has: they warm up afresh (e.g. %s)",
                len(refused),
                self.pipeline.model.decider.model_version,
                ", ".join(sorted(refused)[:5]),
            )

    def _log_stats(self) -> None:
        log_held_back()
        acct = self.pipeline.windower.accounting()
        log.info(
            "stats %s accounting=%s open_readings=%d revoked_readings=%d "
            "suppressed_windows=%d assets=%d drift=%s",
            self.pipeline.metrics.as_dict(),
            vars(acct),
            self.pipeline.windower.open_readings(),
            self.pipeline.windower.revoked_readings,
            self.pipeline.suppressed_windows,
            len(self.pipeline.windower),
            drift.report() if (drift := self.pipeline.model.drift) is not None else None,
        )

    def _close(self) -> None:
        try:
            if not self._eos:  # after a stop, run() has flushed or given up: no second wait
                self.producer.flush(10, stopping=self._stopping, stop_grace_s=0.0)
            elif self._in_txn and not self.producer.wedged:  # a committed one left nothing
                self.producer.abort(10, stopping=self._stopping)
        except KafkaIOError as exc:  # DeliveryFailed, TransactionFailed
            log.error("%s on shutdown: %s", "abort" if self._eos else "flush", exc)
        except Exception:
            log.exception("flush on shutdown failed")
        self._closing = True
        self.consumer.close()
        for follower in (self._watcher, self._feedback):
            if follower is not None:
                follower.close()
