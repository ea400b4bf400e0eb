"""librdkafka's log lines: through Python logging, repeats held back."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Consumer

from stream_ae.io import kafka as kafka_io
from stream_ae.io.kafka import RepeatFilter, client_config
from stream_ae.io.local_broker import free_port
from stream_ae.settings import KafkaSettings


def _record(msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("stream_ae.librdkafka", level, __file__, 1, msg, args, None)


def test_a_repeated_message_passes_once_per_period_with_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: clock[0])
    f = RepeatFilter(every_s=30)
    refused = "%s [%s] %s"
    args = ("FAIL", "consumer-1", "Connect to ipv4#127.0.0.1:9 failed: Connection refused")
    timed = [
        _record(refused, *args[:2], f"{args[2]} (after {n}ms in state CONNECT)") for n in (0, 3)
    ]
    assert f.filter(timed[0])
    passed = [f.filter(timed[1]) for _ in range(50)]  # another timing: the same message
    assert not any(passed)
    assert f.filter(_record("other message"))  # others are not held back
    assert f.filter(_record(refused, *args, level=logging.WARNING))  # nor at another level
    clock[0] += 31
    again = _record(refused, *args[:2], f"{args[2]} (after 1ms in state CONNECT)")
    assert f.filter(again)
    assert again.getMessage().endswith("(50 more like this in the last 31 s)")
    assert not f.filter(_record(refused, *args[:2], f"{args[2]} (after 2ms in state CONNECT)"))
    suppressed = f"{args[2]} (after 0ms in state CONNECT, 4 identical error(s) suppressed)"
    assert not f.filter(_record(refused, *args[:2], suppressed))  # librdkafka's own count


def test_the_count_of_the_last_burst_is_logged_once_its_period_passed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker came back: no next message will carry the count, so the stats
    round logs it."""
    clock = [100.0]
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: clock[0])
    f = RepeatFilter(every_s=30)
    log = logging.getLogger("test.repeats")
    refused = "FAIL [consumer-1] Connect to ipv4#127.0.0.1:9 failed: Connection refused"
    assert f.filter(_record(refused))
    assert not any(f.filter(_record(f"{refused} (after {n}ms in state CONNECT)")) for n in range(7))
    assert f.filter(_record("once"))  # nothing held back: nothing to say
    with caplog.at_level(logging.INFO, logger="test.repeats"):
        clock[0] += 10
        f.flush(log)  # its period is still on
        assert not caplog.records
        clock[0] += 25
        f.flush(log)
        f.flush(log)  # said once
    (said,) = caplog.records
    assert said.levelno == logging.ERROR
    assert said.getMessage() == f"{refused} (7 more like this in the 30 s after it)"


def test_the_filter_forgets_quiet_messages_beyond_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: clock[0])
    f = RepeatFilter(every_s=10, max_kinds=5)
    for i in range(5):
        assert f.filter(_record(f"message {i}"))
    clock[0] = 11.0
    assert f.filter(_record("message 5"))
    assert len(f._seen) == 1  # the five quiet ones went


def test_a_client_on_a_dead_port_logs_the_refusal_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real librdkafka consumer, nothing listening: about 20 refused connects a
    second, one log line."""
    assert [type(f) for f in kafka_io.librdkafka_log.filters] == [RepeatFilter]
    monkeypatch.setattr(kafka_io.librdkafka_log, "filters", [RepeatFilter()])  # a fresh one
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    consumer = Consumer(client_config(kafka, **{"group.id": "logging-test"}))
    try:
        with caplog.at_level(logging.INFO, logger="stream_ae.librdkafka"):
            consumer.subscribe(["nothing"])
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                consumer.poll(0.1)
    finally:
        consumer.close()
    refused = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert refused, [r.getMessage() for r in caplog.records]
    assert all(r.name == "stream_ae.librdkafka" for r in refused)
    assert len(refused) == 1, [r.getMessage() for r in refused]
