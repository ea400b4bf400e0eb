"""One retraining round against a temporary registry (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_ae.readings_io import Readings, readings_from_arrays
from stream_ae.registry import Registry
from stream_ae.settings import Settings, load_settings
from stream_ae.simulate import Simulator
from trainers.retrain import retrain


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
    assert [v.version for v in reg.versions()] == [result.version]
    gate = result.report["gate"]
    assert gate["far_measured"] > gate["far_target_per_window"] * gate["far_factor"]
