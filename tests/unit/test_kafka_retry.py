"""Retried Kafka calls: a call that gives up leaves nothing behind."""

from __future__ import annotations

import gc
import weakref

import pytest

from stream_ae.errors import KafkaIOError
from stream_ae.io.kafka import Admin
from stream_ae.io.local_broker import free_port
from stream_ae.settings import KafkaSettings


@pytest.fixture
def no_gc() -> object:
    """Only reference counting frees objects, as between a service's rare full
    collections."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.usefixtures("no_gc")
def test_a_failed_probe_leaves_no_client_behind() -> None:
    """Once the error is dropped, nothing holds the client. tenacity keeps the last
    attempt's outcome in a frame that the error's traceback holds: a cycle only the
    garbage collector frees, so a service that probes a broker that is down would
    pile up clients, each still trying to connect."""
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", connect_attempts=2)
    admin = Admin(kafka)
    ref = weakref.ref(admin)
    message = ""
    try:
        admin.wait_until_reachable(timeout_s=0.2)
    except KafkaIOError as exc:
        message = str(exc)
    del admin
    assert "cannot reach Kafka" in message
    assert ref() is None
