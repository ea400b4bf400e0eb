"""OutputProducer: a failed delivery makes every later flush fail (no broker needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError

from stream_ae.io.kafka import DeliveryFailed, OutputProducer
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
