"""The SASL settings (``kafka.security_protocol``, ``sasl_*``) pass through every client,
proved against the session broker's SASL_PLAINTEXT listener (mechanism PLAIN): it does
not speak PLAINTEXT, so a client that dropped them could not talk to it.

A wrong password fails at once with an error naming the settings, and the password
shows nowhere.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from harness import (
    PERIOD_MS,
    SASL_PASSWORD,
    STREAM_START,
    Env,
    ScorerThread,
    events_of,
    sasl_kafka,
    scores_of,
    simulator,
    stream_messages,
)

from stream_ae.errors import KafkaIOError
from stream_ae.io.kafka import Admin
from stream_ae.settings import KafkaSettings
from stream_ae.simulate import FaultSpec

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "wrong-pw-9d2e"


@pytest.fixture
def sasl_env(sasl_bootstrap: str, model_path: Path) -> Env:
    return Env(sasl_bootstrap, model_path, f"t{uuid.uuid4().hex[:10]}")


def test_admin_producer_consumer_and_scorer_work_over_sasl(
    sasl_env: Env, sasl_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    onset = STREAM_START + 150 * PERIOD_MS
    fault = FaultSpec("pump-002", "bearing_wear", onset, ramp_s=60, severity=1.5)
    # exactly-once: a transactional producer and a read_committed consumer in a group;
    # hot swap and maintenance tags (both on by default): the scorer's two followers
    settings = sasl_env.settings(
        kafka=sasl_kafka(sasl_bootstrap),
        topics={"publish_scores": True},
        scorer={"exactly_once": True},
        model={"hot_swap": True},
        decide={"tag_maintenance": True},
    )
    assert settings.kafka.security_protocol == "SASL_PLAINTEXT"
    with caplog.at_level(logging.DEBUG):
        sasl_env.create_topics(settings)  # admin
        msgs = stream_messages(simulator([fault]), 600)
        sasl_env.produce(settings, msgs)  # producer
        scorer = ScorerThread(settings).start()
        scorer.wait_for(len(msgs), timeout_s=120)
        assert scorer.service._watcher is not None  # the champion follower ran
        assert scorer.service._feedback is not None  # and the maintenance one
        scorer.stop()

        # read back over SASL too
        scores = scores_of(settings, read_committed=True)
        events = events_of(settings, read_committed=True)
    assert {s.asset_id for s in scores} == {f"pump-{i:03d}" for i in range(6)}
    faulty = [e for e in events if e.asset_id == fault.asset_id and e.window_end_ms > onset]
    assert len(faulty) >= 5, [(e.asset_id, e.window_end_ms) for e in events]
    assert SASL_PASSWORD not in caplog.text


def test_the_sasl_listener_refuses_a_client_without_the_sasl_settings(
    sasl_bootstrap: str,
) -> None:
    """The control: a PLAINTEXT client gets nowhere on the SASL listener."""
    admin = Admin(KafkaSettings(bootstrap_servers=sasl_bootstrap, connect_attempts=1))
    with pytest.raises(KafkaIOError, match="cannot reach Kafka"):
        admin.wait_until_reachable(timeout_s=2.0)


def _assert_refused(err: KafkaIOError | BaseException | None) -> str:
    assert isinstance(err, KafkaIOError), repr(err)
    assert err.permanent
    text = str(err)
    assert "refused to authenticate the client as 'stream-ae-test'" in text
    assert "Authentication failed" in text
    assert "kafka.sasl_password" in text and "kafka.sasl_username" in text
    assert WRONG_PASSWORD not in text
    return text


def test_a_wrong_password_fails_the_admin_at_once(
    sasl_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = KafkaSettings(**sasl_kafka(sasl_bootstrap, WRONG_PASSWORD))
    assert kafka.connect_attempts == 10  # what used to be retried (~80 s)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(KafkaIOError) as info:
        Admin(kafka).wait_until_reachable()
    assert time.monotonic() - started < 30
    _assert_refused(info.value)
    assert "retrying" not in caplog.text
    assert WRONG_PASSWORD not in caplog.text


def test_a_wrong_password_stops_the_scorer_with_a_clear_error(
    sasl_env: Env, sasl_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = sasl_env.settings(kafka=sasl_kafka(sasl_bootstrap, WRONG_PASSWORD))
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        scorer = ScorerThread(settings).start()
        scorer.thread.join(timeout=60)
    assert not scorer.thread.is_alive(), "the scorer hangs on a wrong password"
    assert time.monotonic() - started < 60
    _assert_refused(scorer.error)
    assert WRONG_PASSWORD not in caplog.text


@pytest.mark.usefixtures("cli_state")
def test_a_wrong_password_makes_topics_create_exit_2(
    sasl_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from stream_ae import cli

    run = f"t{uuid.uuid4().hex[:10]}"
    for name, value in sasl_kafka(sasl_bootstrap, WRONG_PASSWORD).items():
        monkeypatch.setenv(f"STREAM_AE_KAFKA__{name.upper()}", value)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        code = cli.run(["--set", f"topics.readings={run}.readings", "topics", "create"])
    assert time.monotonic() - started < 60
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    text = " ".join(err.split())  # the console wraps long lines
    assert "refused to authenticate the client as 'stream-ae-test'" in text
    assert "kafka.sasl_password" in text
    assert WRONG_PASSWORD not in out + err
    assert WRONG_PASSWORD not in caplog.text
