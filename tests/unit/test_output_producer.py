"""OutputProducer: a failed delivery makes every later flush fail; a flush waits for
librdkafka to settle every record; transactional calls that fail or hang raise
what the scorer rewinds on (no broker needed)."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, TopicPartition

from stream_ae.errors import KafkaIOError
from stream_ae.io import kafka as kafka_mod
from stream_ae.io.kafka import DeliveryFailed, OutputProducer, TransactionFailed
from stream_ae.io.local_broker import free_port
from stream_ae.settings import KafkaSettings


def test_a_failed_delivery_fails_every_later_flush() -> None:
    producer = OutputProducer(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    producer.flush(1)  # nothing queued, nothing failed
    lost = SimpleNamespace(topic=lambda: "maintenance.anomalies")
    producer._on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), lost)  # type: ignore[arg-type]
    with pytest.raises(DeliveryFailed, match="1 records failed delivery, first: maintenance"):
        producer.flush(1)
    # a caller that logged the first error and carried on must not commit past the loss
    with pytest.raises(DeliveryFailed, match="restart"):
        producer.flush(1)
    assert producer.broken is not None


def test_a_flush_waits_until_librdkafka_settles_every_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens: the record is neither acknowledged nor failed until the
    delivery timeout (here 2 s) passes. The default flush waits that long, warning
    meanwhile, and then fails because the record failed, not because it gave up
    waiting first."""
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"message.timeout.ms": "2000"}
    )
    producer = OutputProducer(kafka)
    assert producer.delivery_timeout_s == 2.0
    producer.warn_every_s = 0.5
    producer.send("maintenance.anomalies", b"{}", key=b"pump-001")
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="stream_ae.io.kafka"),
        pytest.raises(DeliveryFailed, match="1 records failed delivery, first: maintenance"),
    ):
        producer.flush()
    assert 1.5 < time.monotonic() - started < 10
    assert any("1 records not acknowledged after" in r.getMessage() for r in caplog.records)


def test_a_flush_with_a_timeout_gives_up_on_records_still_pending() -> None:
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"message.timeout.ms": "60000"}
    )
    producer = OutputProducer(kafka)
    producer.send("maintenance.anomalies", b"{}", key=b"pump-001")
    with pytest.raises(DeliveryFailed, match="1 records still unacknowledged after 1 s"):
        producer.flush(1)


def test_a_stop_ends_the_wait_after_the_grace() -> None:
    """A SIGTERM while the broker is away: the scorer gives up the wait (nothing is
    committed) instead of holding the process for the whole delivery timeout."""
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"message.timeout.ms": "60000"}
    )
    producer = OutputProducer(kafka)
    producer.send("maintenance.anomalies", b"{}", key=b"pump-001")
    started = time.monotonic()
    with pytest.raises(
        DeliveryFailed, match=r"1 records still unacknowledged after \d+ s; stopping"
    ):
        producer.flush(stopping=lambda: True, stop_grace_s=0.5)
    assert time.monotonic() - started < 5


class _HangingProducer:
    """Stands in for librdkafka's producer where send_offsets_to_transaction ignores
    its timeout (confluentinc/librdkafka#5456)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.purged = False

    def send_offsets_to_transaction(self, *_args: object) -> None:
        self.release.wait(30)

    def commit_transaction(self, _timeout: float) -> None:
        raise AssertionError("not reached")

    def purge(self) -> None:
        self.purged = True

    def poll(self, _timeout: float) -> int:
        return 0


@pytest.mark.parametrize("stopping", [False, True], ids=["timeout", "stop"])
def test_a_transactional_call_that_hangs_is_given_up_on(
    monkeypatch: pytest.MonkeyPatch, stopping: bool
) -> None:
    """After its timeout plus a grace, or the grace after a stop (here the timeout
    is 30 s and the grace 0.2 s), whichever comes first."""
    monkeypatch.setattr(kafka_mod, "_TXN_GRACE_S", 0.2)
    producer = OutputProducer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), transactional_id="t")
    hanging = _HangingProducer()
    producer._producer = hanging  # type: ignore[assignment]
    started = time.monotonic()
    with pytest.raises(TransactionFailed, match="did not return within 1 s"):
        producer.commit_with_offsets(
            [TopicPartition("r", 0, 5)],
            object(),
            timeout_s=0.5 if not stopping else 30,
            stopping=lambda: stopping,
        )
    assert time.monotonic() - started < 5
    assert producer.wedged
    producer.abandon()  # not under a call still running
    assert not hanging.purged
    hanging.release.set()


def test_transaction_errors_are_rewound_unless_fatal() -> None:
    """A transactional producer's non-fatal error (here: a transaction begun before
    init, which librdkafka refuses at once) is a TransactionFailed the scorer rewinds;
    a fatal one (fenced) and any error of a plain producer stop it."""
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    txn = OutputProducer(kafka, transactional_id="t")
    with pytest.raises(TransactionFailed, match="begin transaction") as info:
        txn.begin()
    assert "replays from the last committed one" in (info.value.hint or "")
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    with pytest.raises(KafkaIOError, match="fenced") as fatal:
        txn._txn_error(fenced, "commit transaction")
    assert not isinstance(fatal.value, TransactionFailed)
    with pytest.raises(KafkaIOError) as plain:
        OutputProducer(kafka)._txn_error(KafkaError(KafkaError._STATE), "produce")
    assert not isinstance(plain.value, TransactionFailed)


def test_an_abort_forgets_its_records_failures() -> None:
    """In exactly-once mode a record that fails fails its transaction; once that is
    aborted (and replayed), the next transaction must not fail for it, nor for the
    records the abort purged."""
    producer = OutputProducer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), transactional_id="t")
    record = SimpleNamespace(topic=lambda: "maintenance.anomalies")
    producer._on_delivery(KafkaError(KafkaError._PURGE_QUEUE), record)  # type: ignore[arg-type]
    producer.raise_failures()  # purged by an abort: not a loss
    producer._on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), record)  # type: ignore[arg-type]
    with pytest.raises(DeliveryFailed):
        producer.raise_failures()
    producer._producer = SimpleNamespace(  # type: ignore[assignment]
        abort_transaction=lambda _timeout: None, poll=lambda _timeout: 0
    )
    producer.abort(1)
    producer.raise_failures()
    assert producer.broken is None
