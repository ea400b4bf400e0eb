"""OutputProducer: a failed delivery makes every later flush fail; a flush waits for
librdkafka to settle every record (no broker needed)."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError

from stream_ae.io.kafka import DeliveryFailed, OutputProducer
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
