"""Retried Kafka calls: a call that gives up leaves nothing behind; a commit that
cannot reach the broker waits for the next interval."""

from __future__ import annotations

import gc
import logging
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


def test_retries_return_the_first_success_and_reraise_the_last_error() -> None:
    from stream_ae.io.kafka import _with_retries

    calls: list[int] = []

    def flaky() -> dict[str, int]:
        calls.append(1)
        if len(calls) < 3:
            raise KafkaIOError(f"try {len(calls)}", topic="t", partition=2, hint="wait")
        return {"t": 3}

    assert _with_retries(3, flaky) == {"t": 3} and len(calls) == 3
    calls.clear()
    with pytest.raises(KafkaIOError) as info:
        _with_retries(2, flaky)
    assert len(calls) == 2
    err = info.value
    assert str(err).startswith("try 2") and "wait" in str(err)
    assert (err.topic, err.partition) == ("t", 2)
    assert err.__traceback__ is not None and err.__context__ is None

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not a Kafka error")

    calls.clear()
    with pytest.raises(ValueError, match="a bug"):
        _with_retries(3, broken)
    assert len(calls) == 1  # not retried


def test_a_commit_that_cannot_reach_the_broker_is_skipped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No coordinator (the broker is away): the commit is skipped with a warning and
    the scorer commits again at its next interval; a replay would start from the
    last commit."""
    from stream_ae.io.kafka import InputConsumer

    consumer = InputConsumer(
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), "readings", "g"
    )
    try:
        with caplog.at_level(logging.WARNING, logger="stream_ae.io.kafka"):
            assert consumer.commit({0: 5}) is False
    finally:
        consumer.close()
    assert any("commit skipped, the broker may be away" in r.getMessage() for r in caplog.records)


def test_permanent_errors_are_not_retried() -> None:
    from stream_ae.io.kafka import _with_retries

    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise KafkaIOError("not authorised", permanent=True)

    with pytest.raises(KafkaIOError, match="not authorised"):
        _with_retries(5, refused)
    assert len(calls) == 1


def test_a_refused_authentication_fails_at_once_naming_the_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """librdkafka retries a refused SASL authentication for ever and the metadata
    request only says "transport failure"; the reason reaches the error callback. The
    probe raised "cannot reach Kafka ... start the local broker" after all 10 attempts
    (~80 s). (tests/integration/test_sasl.py sees it from a real broker.)"""
    from confluent_kafka import KafkaError

    password = "pa55-word-never-shown"
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password=password,  # type: ignore[arg-type]
        connect_attempts=10,
    )
    admin = Admin(kafka)
    ref = weakref.ref(admin)
    admin._auth(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert admin._auth.error is None  # only authentication failures are kept
    # what librdkafka reports for a wrong password (the socket here refuses instead)
    admin._auth(
        KafkaError(
            KafkaError._AUTHENTICATION,
            "sasl_plaintext://127.0.0.1:1/bootstrap: SASL authentication error: "
            f"Authentication failed: Invalid username or password {password} "
            "(after 301ms in state AUTH_REQ)",
        )
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(KafkaIOError) as info:
        admin.wait_until_reachable(timeout_s=0.2)
    err = info.value
    assert err.permanent
    text = str(err)
    assert "refused to authenticate the client as 'alice'" in text
    assert "kafka.sasl_mechanism=PLAIN" in text
    assert "Invalid username or password" in text and "(after" not in text
    assert "kafka.sasl_password" in err.hint and "STREAM_AE_KAFKA__SASL_PASSWORD" in err.hint
    assert password not in text
    assert password not in caplog.text
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]  # one attempt
    del admin, err, info
    assert ref() is None  # the error callback keeps no cycle
