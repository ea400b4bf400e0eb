"""Retraining with trainer.per_asset_thresholds on (temporary registry, no broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_ae.model.artifact import load_artifact
from stream_ae.readings_io import Readings, readings_from_arrays
from stream_ae.registry import Registry
from stream_ae.service import bind_model
from stream_ae.settings import Settings, load_settings
from stream_ae.simulate import Simulator
from stream_ae.training import training_windows
from trainers.retrain import retrain

MIN_WINDOWS = 20


@pytest.fixture(scope="module")
def readings() -> Readings:
    """Three pumps; pump-002 only reports for the last eighth of the range, so it has
    ~14 calibration windows (< MIN_WINDOWS) against ~25 for the other two."""
    block = Simulator(3, seed=3, start_ts_ms=1_764_000_000_000).step_block(2400)
    present = block.present.copy()
    present[:2100, 2] = False
    return readings_from_arrays(
        block.asset_ids, block.reading_ts_ms, block.values, present, list(block.channels)
    )


def _settings(per_asset: bool) -> Settings:
    return load_settings(
        flags={
            "window": {"size": 16, "hop": 8},
            "train": {"epochs": 2, "seed": 0},
            "model": {"device": "cpu"},
            "trainer": {
                "per_asset_thresholds": per_asset,
                "per_asset_min_windows": MIN_WINDOWS,
            },
        }
    )


def test_assets_with_enough_windows_get_their_own_threshold_and_the_gate_uses_it(
    readings: Readings, tmp_path: Path
) -> None:
    settings = _settings(True)
    reg = Registry(tmp_path / "reg")
    result = retrain(
        readings, settings, source="sim", registry=reg, far_target=0.05, far_factor=1e9
    )
    assert result.passed and result.promoted
    gate = result.report["gate"]
    pa = gate["per_asset"]
    assert (pa["assets_own"], pa["assets_fallback"], pa["min_windows"]) == (2, 1, MIN_WINDOWS)
    assert set(pa["far_by_asset"]) == {"pump-000", "pump-001"}
    assert list(pa["fallback"]) == ["pump-002"]
    assert pa["fallback"]["pump-002"].endswith(f"calibration windows < {MIN_WINDOWS}")
    worst = max(pa["far_by_asset"].items(), key=lambda kv: kv[1]["far"])
    assert pa["worst"]["asset_id"] == worst[0] and pa["worst"]["far"] == worst[1]["far"]

    # the registered artifact carries the map; the scorer's decider uses it
    loaded = load_artifact(reg.path_of(result.version), device="cpu")
    th = loaded.metadata.asset_thresholds
    assert set(th.per_asset) == {"pump-000", "pump-001"} and th.min_windows == MIN_WINDOWS
    assert all(t.n >= MIN_WINDOWS for t in th.per_asset.values())
    assert loaded.metadata.threshold["params"]["persistence_k"] == 1  # decision rule kept
    assert dict(bind_model(loaded, settings).decider.per_asset) == th.lookup
    assert th.fleet.value == result.report["threshold"]["value"]  # report: the fleet value

    # recompute the check half: every window judged by its own asset's threshold
    windows, _ = training_windows(readings, settings)
    n, n_hold = len(windows), int(loaded.metadata.training["n_holdout"])
    scores = loaded.scorer.score(windows.values[n - n_hold :]).scores
    assets = windows.asset_ids[n - n_hold :]
    half = n_hold // 2
    assert {a: t.n for a, t in th.per_asset.items()} == {
        a: assets[:half].count(a) for a in th.per_asset
    }
    check, check_assets = scores[half:], assets[half:]
    limits = th.values_for(check_assets)
    assert limits.tolist() != [th.fleet.value] * len(check)
    assert gate["far_measured"] == pytest.approx(float(np.mean(check > limits)))
    assert pa["far"] == pytest.approx(gate["far_measured"])
    ids = np.array(check_assets)
    for asset, r in pa["far_by_asset"].items():
        mine = check[ids == asset]
        assert r["n"] == mine.size
        assert r["far"] == pytest.approx(float(np.mean(mine > th.per_asset[asset].value)))


def test_per_asset_off_writes_the_fleet_threshold_only(readings: Readings, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    result = retrain(readings, _settings(False), source="sim", registry=reg, far_factor=1e9)
    assert "per_asset" not in result.report["gate"]
    threshold = reg.show(result.version)["metadata"]["threshold"]
    assert "per_asset" not in threshold and "per_asset_min_windows" not in threshold
