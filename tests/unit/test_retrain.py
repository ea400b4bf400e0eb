"""One retraining round against a temporary registry (no broker)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stream_ae.errors import KafkaIOError
from stream_ae.readings_io import Readings, readings_from_arrays
from stream_ae.registry import Registry
from stream_ae.settings import Settings, load_settings
from stream_ae.simulate import Simulator
from trainers.retrain import gate_failures, retrain


@pytest.fixture(scope="module")
def readings() -> Readings:
    block = Simulator(2, seed=3, start_ts_ms=1_764_000_000_000).step_block(2400)
    return readings_from_arrays(
        block.asset_ids, block.reading_ts_ms, block.values, block.present, list(block.channels)
    )


def _settings() -> Settings:
    return load_settings(
        flags={
            "window": {"size": 16, "hop": 8},
            "train": {"epochs": 2, "seed": 0},
            "model": {"device": "cpu"},
        }
    )


def test_a_candidate_that_passes_the_gate_is_registered_promoted_and_announced(
    readings: Readings, tmp_path: Path
) -> None:
    reg = Registry(tmp_path / "reg")
    told: list[str] = []
    result = retrain(
        readings, _settings(), source="sim", registry=reg, far_factor=1e9, announce=told.append
    )
    assert result.passed and result.promoted
    assert reg.champion() == result.version == told[0]
    shown = reg.show(result.version)
    assert shown["report"]["gate"]["passed"] is True
    assert shown["metadata"]["threshold"]["method"] == "quantile"
    assert shown["metadata"]["metrics"]["gate"]["n_check_windows"] > 0


def test_a_promotion_stands_when_its_announcement_fails(
    readings: Readings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The registry is the record: a broker that is away must not turn the promoted
    round into a failed one (the trainer service announces again, see ``announce_error``)."""
    reg = Registry(tmp_path / "reg")

    def announce(_version: str) -> None:
        raise KafkaIOError("cannot reach the broker", topic="maintenance.models")

    with caplog.at_level(logging.WARNING, logger="trainers.retrain"):
        result = retrain(
            readings, _settings(), source="sim", registry=reg, far_factor=1e9, announce=announce
        )
    assert result.promoted and reg.champion() == result.version
    assert result.announce_error is not None and "cannot reach the broker" in result.announce_error
    (warning,) = caplog.records
    assert f"promoted {result.version}; the promotion stands" in warning.getMessage()
    assert "stream-ae models announce --registry" in warning.getMessage()


def test_a_candidate_that_fails_the_gate_is_registered_but_not_promoted(
    readings: Readings, tmp_path: Path
) -> None:
    reg = Registry(tmp_path / "reg")
    told: list[str] = []
    # a zero tolerance cannot be met by any window above the threshold
    result = retrain(
        readings,
        _settings(),
        source="sim",
        registry=reg,
        far_target=1e-6,
        far_factor=1e-9,
        method="quantile",
        announce=told.append,
    )
    assert not result.passed and not result.promoted
    assert reg.champion() is None and told == []
    assert not (reg.root / "CHAMPION").exists()
    assert [v.version for v in reg.versions()] == [result.version]
    gate = result.report["gate"]
    assert gate["far_measured"] > gate["far_target_per_window"] * gate["far_factor"]
    # the rejection and its numbers are in the registry, not only in report.json
    [rec] = reg.decisions()
    assert (rec["action"], rec["version"], rec["champion"]) == ("reject", result.version, None)
    assert rec["decision"]["gate"] == gate
    assert rec["decision"]["source"] == "retrain"
    reason = rec["decision"]["reason"]
    assert reason.startswith("retrain: gate failed: false alarms on unseen recent normal")
    assert f"{gate['far_measured']:.4%}" in reason
    [info] = reg.versions()
    assert info.status == "rejected" and info.status_reason == reason


def test_a_candidate_that_passes_with_promotion_off_is_held(
    readings: Readings, tmp_path: Path
) -> None:
    reg = Registry(tmp_path / "reg")
    result = retrain(
        readings,
        _settings(),
        source="sim",
        registry=reg,
        far_factor=1e9,
        promote=False,
        trigger="manual",
    )
    assert result.passed and not result.promoted
    assert reg.champion() is None
    [rec] = reg.decisions()
    assert (rec["action"], rec["version"]) == ("hold", result.version)
    assert rec["decision"]["gate"]["passed"] is True and rec["decision"]["trigger"] == "manual"
    assert reg.versions()[0].status == "held"


def test_gate_failures_name_each_broken_rule() -> None:
    far = {
        "far_target_per_window": 0.005,
        "far_factor": 2.0,
        "far_measured": 0.03,
        "n_check_windows": 100,
        "passed": False,
        "rule": "r",
    }
    assert gate_failures(far) == [
        "false alarms on unseen recent normal windows 3.0000% > 2 x target 0.5000%"
    ]
    assert gate_failures({**far, "n_check_windows": 0}) == [
        "no held-out windows to measure false alarms on"
    ]
    golden = {"passed": False, "verdict": "candidate event_recall 0.000 < champion 1.000 - 0.05"}
    both = {**far, "far_passed": False, "golden": golden}
    assert gate_failures(both)[1] == f"golden set: {golden['verdict']}"
    only_golden = {**far, "far_measured": 0.001, "far_passed": True, "golden": golden}
    assert gate_failures(only_golden) == [f"golden set: {golden['verdict']}"]


def test_a_daily_alarm_budget_becomes_the_per_window_target(
    readings: Readings, tmp_path: Path
) -> None:
    """10 alarms per asset per day with a window every 8 s (hop 8 x 1 s)."""
    result = retrain(
        readings,
        _settings(),
        source="sim",
        registry=Registry(tmp_path / "reg"),
        far_factor=1e9,
        far_per_day=10.0,
    )
    gate = result.report["gate"]
    assert gate["far_target_per_day"] == 10.0
    assert gate["far_target_per_window"] == pytest.approx(10.0 * 8000 / 86_400_000)
    assert gate["far_measured_per_day"] == pytest.approx(gate["far_measured"] * 86_400_000 / 8000)
    assert result.report["threshold"]["params"]["q"] == pytest.approx(1 - 10.0 * 8000 / 86_400_000)


def test_the_retrain_command_takes_its_defaults_from_the_settings_tree(
    readings: Readings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_state: None
) -> None:
    from typer.testing import CliRunner

    from stream_ae import cli
    from stream_ae.simulate import write_csv

    monkeypatch.chdir(tmp_path)
    write_csv(
        tmp_path / "normal.csv",
        [Simulator(2, seed=3, start_ts_ms=1_764_000_000_000).step_block(2400)],
    )
    result = CliRunner().invoke(
        cli.app,
        [
            *("--set", "window.size=16", "--set", "window.hop=2", "--set", "train.epochs=2"),
            *("--set", "trainer.registry=from-settings", "--set", "trainer.far_per_day=10"),
            *("--set", "trainer.threshold_method=pot", "--set", "trainer.far_factor=1e9"),
            *("retrain", "--csv", "normal.csv", "--no-announce"),
        ],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert "10/asset/day" in result.output and "from-settings (promoted)" in result.output
    [info] = Registry(tmp_path / "from-settings").versions()
    shown = Registry(tmp_path / "from-settings").show(info.version)
    assert shown["metadata"]["threshold"]["method"] == "pot"


def test_a_daily_budget_larger_than_the_windows_of_a_day_names_the_setting(
    readings: Readings, tmp_path: Path
) -> None:
    from stream_ae.errors import ConfigError

    with pytest.raises(ConfigError, match=r"trainer\.far_per_day=.*10800 windows a day"):
        retrain(
            readings, _settings(), source="sim", registry=Registry(tmp_path / "r"), far_per_day=2e4
        )
    assert not (tmp_path / "r").exists()  # refused before anything was trained or written


def _two_registered(reg: Registry, tmp_path: Path) -> list[str]:
    from test_registry import _report, make_artifact

    return [reg.register(make_artifact(tmp_path / "art", s), report=_report(s)) for s in (1, 2)]


def test_a_promotion_made_during_the_round_is_not_overridden(
    readings: Readings, tmp_path: Path
) -> None:
    """The round gated against A; an engineer promoted B while it trained: B stays
    champion and the candidate is held with the reason (not promoted silently)."""
    reg = Registry(tmp_path / "reg")
    a, b = _two_registered(reg, tmp_path)
    reg.promote(a, decision={"reason": "first"})
    told: list[str] = []

    def engineer_promotes(epoch: int, _tr: float, _va: float) -> None:
        if epoch == 1 and reg.champion() == a:
            reg.promote(b, decision={"reason": "by hand", "source": "cli"})

    result = retrain(
        readings,
        _settings(),
        source="sim",
        registry=reg,
        far_factor=1e9,
        announce=told.append,
        progress=engineer_promotes,
    )
    assert result.passed and not result.promoted and told == []
    assert reg.champion() == b
    assert result.held_reason is not None
    assert f"gated against {a}, now {b}" in result.held_reason
    assert "promote it by hand" in result.held_reason
    shown = reg.show(result.version)
    assert shown["status"] == "held"
    assert shown["decisions"][-1]["decision"]["champion_now"] == b


def test_the_announcement_carries_the_champion_of_announce_time(
    readings: Readings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another promoter gets in between the round's promotion and its announcement:
    the round announces what CHAMPION says then, never a version that is not champion."""
    reg = Registry(tmp_path / "reg")
    _a, b = _two_registered(reg, tmp_path)
    real = Registry.promote

    def promote_then_someone_else(self: Registry, version: str, **kw: object) -> None:
        real(self, version, **kw)  # type: ignore[arg-type]
        real(Registry(self.root), b, decision={"reason": "someone else"})

    monkeypatch.setattr(Registry, "promote", promote_then_someone_else)
    told: list[str] = []
    result = retrain(
        readings, _settings(), source="sim", registry=reg, far_factor=1e9, announce=told.append
    )
    assert result.promoted
    assert told == [b] == [reg.champion()] and result.announced == b
