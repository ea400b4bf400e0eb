"""Artifacts with per-asset thresholds: saved, validated on load, served by the scorer's decider."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_artifact

from stream_ae.decide.threshold import AssetThreshold, AssetThresholds, ThresholdSpec
from stream_ae.errors import ArtifactError
from stream_ae.model.artifact import (
    METADATA_FILE,
    load_artifact,
)
from stream_ae.service import bind_model
from stream_ae.settings import load_settings
from stream_ae.windowing import WindowBatch

FLEET = ThresholdSpec("quantile", {"q": 0.995, "n_scores": 5000}, 1.0)
THRESHOLDS = AssetThresholds(
    FLEET,
    {
        "pump-a": AssetThreshold(0.5, 2000, {"q": 0.995, "n_scores": 2000}),
        "pump-c": AssetThreshold(2.0, 2500, {"q": 0.995, "n_scores": 2500}),
    },
    1000,
)


def _save(out_dir: Path, threshold: dict[str, object] | None) -> Path:
    return tiny_artifact(out_dir, threshold=FLEET, threshold_section=threshold)


def test_round_trip_and_the_scorer_decides_per_asset(tmp_path: Path) -> None:
    path = _save(tmp_path, THRESHOLDS.to_dict())
    loaded = load_artifact(path, device="cpu")
    assert loaded.metadata.asset_thresholds == THRESHOLDS
    assert loaded.threshold == FLEET  # threshold.value stays the fleet value
    decider = bind_model(loaded, load_settings()).decider
    assert decider.threshold == 1.0 and dict(decider.per_asset) == {"pump-a": 0.5, "pump-c": 2.0}
    n = 3
    w = WindowBatch(
        ["pump-a", "pump-b", "pump-c"],
        np.zeros(n, np.int64),
        np.arange(n, dtype=np.int64),
        np.arange(n, dtype=np.int64) + 1600,
        np.zeros((n, 2, 16), np.float32),
    )
    np.testing.assert_array_equal(
        decider.anomalous(np.array([0.75, 0.75, 1.5]), w), [True, False, False]
    )


def test_an_artifact_without_per_asset_thresholds_loads_unchanged(tmp_path: Path) -> None:
    path = _save(tmp_path, None)
    raw = json.loads((path / METADATA_FILE).read_text())
    assert "per_asset" not in raw["threshold"]
    loaded = load_artifact(path, device="cpu")
    assert loaded.metadata.asset_thresholds == AssetThresholds(FLEET)
    decider = bind_model(loaded, load_settings()).decider
    assert decider.threshold == 1.0 and not decider.per_asset


def test_bad_per_asset_metadata_is_refused_on_load(tmp_path: Path) -> None:
    bad = THRESHOLDS.to_dict()
    bad["per_asset"]["pump-c"]["value"] = "high"
    path = _save(tmp_path, bad)
    with pytest.raises(ArtifactError, match=r"threshold\.per_asset\.pump-c\.value") as err:
        load_artifact(path, device="cpu")
    assert str(path / METADATA_FILE) in str(err.value)


def test_the_file_backtest_judges_each_asset_by_its_own_threshold(tmp_path: Path) -> None:
    """`stream-ae evaluate --csv … --model` decides as the live scorer does: with the
    model's per-asset thresholds (pump-a 0.5, pump-c 2.0, fleet 1.0)."""
    from stream_ae.evaluate.backtest import score_readings_with_artifact
    from stream_ae.readings_io import Readings

    loaded = load_artifact(_save(tmp_path, THRESHOLDS.to_dict()), device="cpu")
    rng = np.random.default_rng(0)
    n = 64  # per asset, 100 ms apart
    assets = ["pump-a", "pump-b", "pump-c"]
    ts = np.tile(1_700_000_000_000 + 100 * np.arange(n, dtype=np.int64), len(assets))
    readings = Readings(
        [a for a in assets for _ in range(n)],
        ts,
        rng.normal(0, 1, (n * len(assets), 2)),
        ["temp", "vibration"],
    )
    run = score_readings_with_artifact("three pumps", readings, loaded)
    used = run.info["window_thresholds"]
    win_assets = np.asarray(run.window_assets)
    assert len(used) == len(run.window_scores) == len(win_assets) > 0
    own = {"pump-a": 0.5, "pump-b": 1.0, "pump-c": 2.0}
    rows = np.asarray(readings.asset_ids)
    for a in assets:
        np.testing.assert_array_equal(used[win_assets == a], own[a])
        # a reading alarms only when its own asset's window beats that asset's threshold
        above = run.window_scores[win_assets == a] > own[a]
        assert run.pred[rows == a].any() == above.any()
    scores = run.window_scores
    # the per-asset thresholds matter here: judged by the fleet value alone, pump-a or
    # pump-c would be decided differently
    assert ((scores[win_assets == "pump-a"] > 0.5) != (scores[win_assets == "pump-a"] > 1.0)).any()
