"""The trainer's drift check and what starts a round (no broker: readings injected,
rounds recorded instead of run), and the trigger in a round's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_ae.readings_io import Readings, readings_from_arrays
from stream_ae.registry import Registry
from stream_ae.settings import Settings, load_settings
from stream_ae.simulate import Simulator
from trainers.retrain import RetrainResult, retrain
from trainers.service import RetrainRequest, TrainerService

T0 = 1_764_000_000_000
HOUR_MS = 3_600_000


def _readings(sim: Simulator, steps: int) -> Readings:
    block = sim.step_block(steps)
    return readings_from_arrays(
        block.asset_ids, block.reading_ts_ms, block.values, block.present, list(block.channels)
    )


@pytest.fixture(scope="module")
def data() -> dict[str, Readings]:
    sim = Simulator(2, seed=3, start_ts_ms=T0)
    train = _readings(sim, 2400)
    recent = _readings(sim, 600)  # the next ten minutes of the same machines
    shifted = Readings(recent.asset_ids, recent.ts_ms, recent.values.copy(), recent.channels)
    col = shifted.values[:, 0]
    col += 10 * np.nanstd(train.values[:, 0])  # one sensor reads 10 training σ high
    return {"train": train, "recent": recent, "shifted": shifted}


def _settings(registry: Path, **trainer: Any) -> Settings:
    return load_settings(
        flags={
            "window": {"size": 16, "hop": 8},
            "train": {"epochs": 2, "seed": 0},
            "model": {"device": "cpu"},
            "trainer": {
                "registry": registry,
                "interval_s": 86_400.0,
                "drift_check_s": 60.0,
                "drift_refit_min_interval_s": 3600.0,
                **trainer,
            },
        }
    )


@pytest.fixture(scope="module")
def registry(data: dict[str, Readings], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose champion was trained on ``data["train"]`` by a scheduled round."""
    root = tmp_path_factory.mktemp("drift") / "reg"
    result = retrain(
        data["train"],
        _settings(root),
        source="sim",
        registry=Registry(root),
        far_factor=1e9,
        trigger="schedule",
        trigger_detail={"interval_s": 86_400.0},
    )
    assert result.promoted
    return root


def test_a_round_records_its_trigger_in_the_report_and_the_decision(registry: Path) -> None:
    reg = Registry(registry)
    champion = reg.champion()
    assert champion is not None
    shown = reg.show(champion)
    assert shown["report"]["trigger"] == "schedule"
    assert shown["report"]["trigger_detail"] == {"interval_s": 86_400.0}
    assert [d["decision"]["trigger"] for d in shown["decisions"]] == ["schedule"]


# -- the check: measured on injected readings ------------------------------------------------


@pytest.mark.parametrize("flag", [True, False])
def test_drift_above_the_threshold_refits_only_with_the_flag_on(
    data: dict[str, Readings], registry: Path, flag: bool
) -> None:
    service = TrainerService(_settings(registry, drift_refit=flag))
    check = service.check_drift(T0 + HOUR_MS, data["shifted"])
    assert check.champion == Registry(registry).champion()
    assert check.score is not None and check.score > 3.0  # ~10 σ / 3 σ
    assert check.report["input_shift_channel"] == data["train"].channels[0]
    assert check.refit is flag
    assert ("drift_refit is off" in check.why) is not flag
    assert service.last_drift is check


def test_recent_normal_readings_do_not_refit(data: dict[str, Readings], registry: Path) -> None:
    service = TrainerService(_settings(registry, drift_refit=True))
    check = service.check_drift(T0 + HOUR_MS, data["recent"])
    assert check.score is not None and check.score < 1.0
    assert check.report["windows"] > 0
    assert not check.refit and "< threshold 1" in check.why


def test_a_lower_threshold_catches_milder_drift(data: dict[str, Readings], registry: Path) -> None:
    mild = TrainerService(_settings(registry, drift_refit=True))
    score = mild.check_drift(T0, data["recent"]).score
    assert score is not None
    low = TrainerService(_settings(registry, drift_refit=True, drift_refit_threshold=score / 2))
    assert low.check_drift(T0, data["recent"]).refit


def test_readings_without_the_champion_channels_are_logged_not_raised(
    data: dict[str, Readings], registry: Path
) -> None:
    r = data["shifted"]
    renamed = Readings(r.asset_ids, r.ts_ms, r.values, [f"x{i}" for i in range(len(r.channels))])
    check = TrainerService(_settings(registry, drift_refit=True)).check_drift(T0, renamed)
    assert not check.refit and check.report == {}
    assert "lack the champion's channels" in check.why


def test_without_a_champion_nothing_is_measured(data: dict[str, Readings], tmp_path: Path) -> None:
    service = TrainerService(_settings(tmp_path / "empty", drift_refit=True))
    check = service.check_drift(T0, data["shifted"])
    assert check.champion is None and not check.refit and check.score is None


# -- the decision: pure ------------------------------------------------------------------------


def test_decide_drift_threshold_flag_and_minimum_interval(tmp_path: Path) -> None:
    service = TrainerService(_settings(tmp_path / "reg", drift_refit=True))
    assert service.decide_drift({"drift_score": 1.0}, T0)[0]  # at the threshold counts
    assert not service.decide_drift({"drift_score": 0.999}, T0)[0]
    assert not service.decide_drift({"windows": 0, "drifted": False}, T0)[0]
    service.last_drift_refit_ms = T0
    refit, why = service.decide_drift({"drift_score": 9.0}, T0 + HOUR_MS - 1)
    assert not refit and "drift_refit_min_interval_s" in why
    assert service.decide_drift({"drift_score": 9.0}, T0 + HOUR_MS)[0]
    off = TrainerService(_settings(tmp_path / "reg", drift_refit=False))
    assert not off.decide_drift({"drift_score": 1e9}, T0)[0]


# -- the loop: which round runs when --------------------------------------------------------


def _recording(
    service: TrainerService, readings: Readings, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, dict[str, Any]]]:
    """Rounds are recorded (and mark the time, as a real round does), never trained;
    the drift check reads ``readings`` instead of the topic."""
    rounds: list[tuple[str, dict[str, Any]]] = []

    def run_once(
        now_ms: int | None = None, *, trigger: str = "manual", detail: dict[str, Any] | None = None
    ) -> RetrainResult:
        assert now_ms is not None
        rounds.append((trigger, detail or {}))
        service.last_run_ms = now_ms
        return RetrainResult("v", False, True, {})

    monkeypatch.setattr(service, "run_once", run_once)
    monkeypatch.setattr(service, "recent_readings", lambda now_ms, channels: readings)
    return rounds


def test_loop_with_drift_refit_on(
    data: dict[str, Readings], registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = TrainerService(_settings(registry, drift_refit=True))
    rounds = _recording(service, data["shifted"], monkeypatch)
    assert service.step(T0, 0.0, None) == "schedule"  # at start-up
    assert service.step(T0 + 1000, 1.0, None) == "drift"  # the first check: drifted
    assert rounds[1][1]["drift"]["drift_score"] > 1.0
    assert service.step(T0 + 2000, 2.0, None) is None  # no check due
    assert service.step(T0 + 61_000, 61.0, None) is None  # checked: within the min interval
    assert service.last_drift is not None
    assert "min_interval" in service.last_drift.why
    assert service.step(T0 + 1000 + HOUR_MS, 3601.0, None) == "drift"  # interval over
    request = RetrainRequest(requested_at_ms=T0 + 2 * HOUR_MS, by="ops", reason="new pump")
    assert service.step(T0 + 2 * HOUR_MS + 5, 7200.0, request) == "request"
    assert service.step(T0 + 2 * HOUR_MS + 6, 7201.0, request) is None  # already served
    trigger, detail = rounds[-1]
    assert (trigger, detail["by"], detail["reason"]) == ("request", "ops", "new pump")
    assert detail["last_drift_check"]["drift"]["drift_score"] > 1.0
    assert [t for t, _ in rounds] == ["schedule", "drift", "drift", "request"]


def test_loop_with_drift_refit_off_only_logs(
    data: dict[str, Readings],
    registry: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = TrainerService(_settings(registry))  # drift_refit defaults to off
    assert service.settings.trainer.drift_refit is False
    rounds = _recording(service, data["shifted"], monkeypatch)
    caplog.set_level("INFO", logger="trainers.service")
    mono = 0.0
    for k in range(30):  # half an hour of checks every 60 s, all drifted
        service.step(T0 + k * 60_000, mono, None)
        mono += 60.0
    assert [t for t, _ in rounds] == ["schedule"]
    assert service.last_drift is not None and (service.last_drift.score or 0) > 1.0
    logged = [r.getMessage() for r in caplog.records if "drift check" in r.getMessage()]
    assert len(logged) == 29 and "drift_refit is off" in logged[-1]
    assert "drift_score" in logged[-1]


def test_no_drift_checks_when_drift_check_s_is_zero(
    data: dict[str, Readings], registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = TrainerService(_settings(registry, drift_refit=True, drift_check_s=0.0))
    rounds = _recording(service, data["shifted"], monkeypatch)
    for k in range(5):
        service.step(T0 + k * 60_000, k * 60.0, None)
    assert [t for t, _ in rounds] == ["schedule"] and service.last_drift is None
