"""The real local Kafka broker: start, serve, stop, restart, in a temporary state dir.

Uses the shared jar cache (downloaded with mvn on the first run) and free ports. A broker
that fails to start fails this test; nothing here is skipped.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from stream_ae.errors import BrokerError
from stream_ae.io import local_broker as lb
from stream_ae.io.local_broker import BrokerConfig

pytestmark = pytest.mark.integration

_START_IN_CHILD = """
import sys
from pathlib import Path
from stream_ae.io.local_broker import BrokerConfig, start
cfg = BrokerConfig(state_dir=Path(sys.argv[1]), port=int(sys.argv[2]),
                   controller_port=int(sys.argv[3]))
print(start(cfg, timeout_s=90).pid)
"""


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0


def _consume_one(consumer: Consumer, timeout_s: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert isinstance(value, bytes)
            return value
        raise AssertionError(f"no message within {timeout_s} s")
    finally:
        consumer.close()


def _topics(bootstrap: str) -> set[str]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return set(metadata.topics)


@pytest.mark.timeout(240)
def test_local_broker_lifecycle(tmp_path: Path) -> None:
    cfg = BrokerConfig(
        state_dir=tmp_path / "broker", port=lb.free_port(), controller_port=lb.free_port()
    )
    topic = f"lifecycle-{uuid.uuid4().hex[:8]}"
    try:
        # Started by a Python process that then exits: the broker must outlive it.
        args = [str(cfg.state_dir), str(cfg.port), str(cfg.controller_port)]
        child = subprocess.run(
            [sys.executable, "-c", _START_IN_CHILD, *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        pid = int(child.stdout.strip().splitlines()[-1])

        info = lb.status(cfg)
        assert info is not None
        assert info.pid == pid
        assert info.bootstrap == cfg.bootstrap
        assert info.kafka_version == cfg.kafka_version
        assert info.log_path.is_file()
        assert (cfg.data_dir / "meta.properties").is_file()
        assert lb.ping(cfg.bootstrap, timeout_s=10)

        # Idempotent.
        again = lb.start(cfg, timeout_s=30)
        assert again.pid == pid

        # It serves: topic, produce, consume in a consumer group.
        _create_topic(cfg.bootstrap, topic)
        _produce(cfg.bootstrap, topic, b"hello")
        consumer = Consumer(
            {
                "bootstrap.servers": cfg.bootstrap,
                "group.id": "lifecycle",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        assert _consume_one(consumer) == b"hello"

        # Its port, asked for by a broker of another state dir: a clear error.
        other = replace(cfg, state_dir=tmp_path / "other", controller_port=lb.free_port())
        with pytest.raises(BrokerError, match=f"port {cfg.port} on 127.0.0.1 is already in use"):
            lb.start(other, timeout_s=10)

        # Stop.
        assert lb.stop(cfg) is True
        assert lb.status(cfg) is None
        assert not lb._pid_alive(pid)
        assert not lb.ping(cfg.bootstrap, timeout_s=1)
        assert lb.stop(cfg) is False

        # A stale pid file does not stop a restart; the data is kept.
        dead = subprocess.Popen(["true"])
        dead.wait()
        cfg.pid_file.write_text(f"{dead.pid}\n")
        assert lb.status(cfg) is None
        restarted = lb.start(cfg, timeout_s=60)
        assert restarted.pid != pid
        assert topic in _topics(cfg.bootstrap)
        reader = Consumer({"bootstrap.servers": cfg.bootstrap, "group.id": "lifecycle-2"})
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert _consume_one(reader) == b"hello"
    finally:
        stopped_at = time.monotonic()
        lb.stop(cfg, wipe=True)
        assert time.monotonic() - stopped_at < 30

    assert lb.status(cfg) is None
    assert not cfg.data_dir.exists()
    assert cfg.log_path.is_file()  # logs are kept
