"""The trainer service rides out what one round meets (no broker, no training): a
record on the anomalies topic that is not an event, a champion pointer to a missing
version, an unreadable retrain request, a round that fails unexpectedly, and a
promotion whose announcement failed (announced again until it gets through)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tiny_models import anomaly_event, tiny_artifact

from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.errors import KafkaIOError
from stream_ae.readings_io import Readings
from stream_ae.registry import CHAMPION_FILE, Registry
from stream_ae.schemas import AnomalyEvent
from stream_ae.settings import Settings, load_settings
from trainers import service as service_mod
from trainers.exclusions import SKIPPED_LOGGED
from trainers.retrain import RetrainResult
from trainers.service import ANNOUNCE_RETRY_S, RetrainRequest, TrainerService

T0 = 1_764_000_000_000
TOPIC = "maintenance.anomalies"


@dataclass
class Record:
    v: bytes | None
    p: int = 0
    o: int = 0

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self.v


def _event(asset: str) -> bytes:
    return msgspec.json.encode(anomaly_event(asset, 0, 1600))


def _settings(registry: Path) -> Settings:
    return load_settings(
        flags={
            "topics": {"anomalies": TOPIC},
            "trainer": {
                "registry": registry,
                "channels": ["temp", "vibration"],
                "interval_s": 3600.0,
                "drift_check_s": 60.0,
            },
        }
    )


def _with_champion(root: Path, tmp_path: Path) -> str:
    reg = Registry(root)
    art = tiny_artifact(tmp_path / "art", threshold=ThresholdSpec("quantile", {"q": 0.99}, 1.0))
    version = reg.register(art, report={})
    reg.promote(version, decision={"reason": "test"})
    return version


# -- (a) a record that is not an event -----------------------------------------------------


def test_records_that_are_not_events_are_skipped_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Decoded one by one: one bad record used to end the round (and the service)."""
    service = TrainerService(_settings(tmp_path / "reg"))
    bad = [Record(b"not json", 1, 40 + k) for k in range(SKIPPED_LOGGED + 2)]
    records = [Record(_event("pump-a"), 0, 7), *bad, Record(None, 2, 9), Record(_event("b"), 0, 8)]
    monkeypatch.setattr(
        service_mod, "_read", lambda _s, topic, _start: records if topic == TOPIC else []
    )
    readings = Readings(["x"], None, None, ["temp", "vibration"])  # type: ignore[arg-type]
    monkeypatch.setattr(service_mod, "read_topic", lambda *_a: (readings, "topic"))
    seen: list[list[AnomalyEvent]] = []

    def excluder(events: list[AnomalyEvent], *_a: Any) -> Any:
        seen.append(events)
        return None

    monkeypatch.setattr(service, "_excluder", excluder)
    monkeypatch.setattr(
        service_mod, "retrain", lambda *_a, **_k: RetrainResult("v", False, False, {})
    )
    with caplog.at_level(logging.WARNING, logger="trainers"):
        service.run_once(T0)
    assert [e.asset_id for e in seen[0]] == ["pump-a", "b"]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == SKIPPED_LOGGED + 1  # each of the first few, then a summary
    assert f"record skipped ({TOPIC} partition 1 offset 40): not an anomaly event" in logged[0]
    assert f"{len(bad) + 1} records of {TOPIC} skipped in all" in logged[-1]


# -- (b) a champion pointer to a missing version -------------------------------------------


def test_a_drift_check_with_a_missing_champion_folder_is_logged_not_raised(
    tmp_path: Path,
) -> None:
    service = TrainerService(_settings(tmp_path / "reg"))
    (tmp_path / "reg" / CHAMPION_FILE).write_text("20260101T000000Z-deadbeef\n")
    check = service.check_drift(T0)
    assert not check.refit and check.champion is None
    assert check.why.startswith("not measured: ") and "not a registered version" in check.why
    assert service.step(T0, 0.0, None) == "schedule"  # the round fails, the service not
    assert service.step(T0 + 1000, 1.0, None) is None  # a drift check: logged, no round


# -- (c) a retrain request that is not one -------------------------------------------------


def test_an_unreadable_retrain_request_is_logged_once_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = TrainerService(_settings(tmp_path / "reg"))
    with caplog.at_level(logging.WARNING, logger="trainers.service"):
        assert service.request(b'{"by": "ops"}') is None
        assert service.request(b'{"by": "ops"}') is None  # the same, a second later
    (warning,) = caplog.records
    assert "retrain request ignored" in warning.getMessage()
    assert "requested_at_ms" in warning.getMessage()
    assert "stream-ae trainer trigger" in warning.getMessage()
    good = msgspec.json.encode(RetrainRequest(requested_at_ms=T0, by="ops"))
    assert service.request(good) == RetrainRequest(requested_at_ms=T0, by="ops")
    assert service.request(None) is None


# -- (d) anything else a round meets -------------------------------------------------------


def test_a_round_that_fails_unexpectedly_is_logged_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service = TrainerService(_settings(tmp_path / "reg"))

    def boom(*_a: Any, **_k: Any) -> RetrainResult:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(service, "run_once", boom)
    with caplog.at_level(logging.ERROR, logger="trainers.service"):
        assert service.step(T0, 0.0, None) == "schedule"
    (record,) = caplog.records
    assert "retraining (schedule) failed unexpectedly" in record.getMessage()
    assert record.exc_info is not None and "CUDA out of memory" in caplog.text
    assert service.last_run_ms == T0
    assert service.step(T0 + 1000, 1.0, None) is None  # not every second: on schedule

    def drift_boom(_now: int, _r: Readings | None = None) -> Any:
        raise ValueError("bad shapes")

    monkeypatch.setattr(service, "check_drift", drift_boom)
    assert service.step(T0 + 61_000, 61.0, None) is None  # logged, nothing more
    assert "drift check failed" in caplog.text

    def interrupted(*_a: Any, **_k: Any) -> RetrainResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(service, "run_once", interrupted)
    with pytest.raises(KeyboardInterrupt):
        service.step(T0 + 2 * 3_600_000, 7200.0, None)


# -- a promotion whose announcement failed -------------------------------------------------


def test_a_failed_announcement_is_retried_until_it_gets_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    version = _with_champion(tmp_path / "reg", tmp_path)
    service = TrainerService(_settings(tmp_path / "reg"))
    readings = Readings(["x"], None, None, ["temp", "vibration"])  # type: ignore[arg-type]
    monkeypatch.setattr(service_mod, "read_topic", lambda *_a: (readings, "topic"))
    monkeypatch.setattr(service_mod, "_read", lambda *_a: [])
    monkeypatch.setattr(
        service_mod,
        "retrain",
        lambda *_a, **_k: RetrainResult(version, True, True, {}, announce_error="broker away"),
    )
    tries: list[str] = []
    broker_up = False

    def announce(v: str) -> None:
        tries.append(v)
        if not broker_up:
            raise KafkaIOError("cannot reach the broker", topic="maintenance.models")

    monkeypatch.setattr(service, "_announce", announce)
    service._next_drift = 1e9  # no drift checks here
    assert service.step(T0, 0.0, None) == "schedule"
    assert service.unannounced == version
    with caplog.at_level(logging.WARNING, logger="trainers.service"):
        service.step(T0 + 1000, 1.0, None)  # the next step tries
        service.step(T0 + 2000, 2.0, None)  # ... then waits
    assert tries == [version]
    assert "still not announced since " + version in caplog.text
    broker_up = True
    service.step(T0 + 1000 + int(ANNOUNCE_RETRY_S * 1000), 1.0 + ANNOUNCE_RETRY_S, None)
    assert tries == [version, version] and service.unannounced is None
    service.step(T0 + 100_000, 100.0, None)
    assert len(tries) == 2
