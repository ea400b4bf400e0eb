"""Per-asset thresholds: calibration with fleet fallback, lookup, metadata form, FAR per asset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from stream_ae.decide.threshold import (
    AssetThreshold,
    AssetThresholds,
    ThresholdSpec,
    calibrate_per_asset,
    calibrate_pot,
    calibrate_quantile,
    far_by_asset,
    per_window,
)
from stream_ae.errors import ArtifactError, ConfigError, DataError

Q = 0.99


def quantile(scores: np.ndarray) -> ThresholdSpec:
    return calibrate_quantile(scores, Q)


def fleet_data(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Interleaved scores of a quiet asset, a noisy one (3x the spread) and a small one."""
    rng = np.random.default_rng(seed)
    parts = {
        "quiet": rng.gamma(4.0, 0.05, 4000),
        "noisy": rng.gamma(4.0, 0.15, 4000),
        "small": rng.gamma(4.0, 0.15, 50),
    }
    scores = np.concatenate(list(parts.values()))
    assets = [a for a, s in parts.items() for _ in range(s.size)]
    order = rng.permutation(scores.size)  # assets interleaved, as in time order
    return scores[order], [assets[i] for i in order.tolist()]


def test_a_noisier_asset_gets_a_higher_threshold_and_a_small_one_falls_back() -> None:
    scores, assets = fleet_data()
    th = calibrate_per_asset(scores, assets, quantile, min_windows=1000)
    assert set(th.per_asset) == {"quiet", "noisy"}
    assert th.per_asset["noisy"].value > th.fleet.value > th.per_asset["quiet"].value
    assert th.per_asset["noisy"].value > 2 * th.per_asset["quiet"].value
    assert th.fallback == {"small": "50 calibration windows < 1000"}
    assert th.value_for("small") == th.fleet.value
    assert th.value_for("never-seen") == th.fleet.value
    # each asset's own threshold is the method on its own scores only (ids kept aligned)
    ids = np.array(assets)
    for asset in ("quiet", "noisy"):
        expected = calibrate_quantile(scores[ids == asset], Q)
        assert th.per_asset[asset] == AssetThreshold(expected.value, 4000, expected.params)
    assert th.fleet == calibrate_quantile(scores, Q)


def test_pot_per_asset_and_a_failed_asset_calibration_falls_back() -> None:
    scores, assets = fleet_data(1)
    # a constant asset has no excesses over its initial POT threshold: DataError
    scores = np.concatenate([scores, np.full(2000, 0.3)])
    assets = assets + ["stuck"] * 2000
    th = calibrate_per_asset(
        scores, assets, lambda s: calibrate_pot(s, target_rate=1e-3), min_windows=1000
    )
    assert th.fleet.method == "pot"
    assert set(th.per_asset) == {"quiet", "noisy"}
    assert th.per_asset["noisy"].value > th.per_asset["quiet"].value
    assert th.per_asset["noisy"].params["target_rate"] == 1e-3
    assert th.fallback["stuck"].startswith("calibration failed: peaks-over-threshold needs")
    assert th.value_for("stuck") == th.fleet.value


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_min_windows_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ConfigError, match="min_windows"):
        calibrate_per_asset([1.0, 2.0], ["a", "b"], quantile, min_windows=bad)


def test_one_asset_id_per_score() -> None:
    with pytest.raises(DataError, match="3 scores but 2 asset ids"):
        calibrate_per_asset([1.0, 2.0, 3.0], ["a", "b"], quantile, min_windows=1)


def test_per_window_lookup_with_fleet_fallback() -> None:
    got = per_window({"a": 0.5, "c": 2.0}, 1.0, ["a", "b", "c", "a", "zz"])
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [0.5, 1.0, 2.0, 0.5, 1.0])
    np.testing.assert_array_equal(per_window({}, 1.0, ["a", "b"]), [1.0, 1.0])
    assert per_window({"a": 0.5}, 1.0, []).shape == (0,)


# ----------------------------------------------------------------------------- metadata form

FLEET = ThresholdSpec("quantile", {"q": 0.995, "n_scores": 9000}, 1.25)


def per_asset() -> AssetThresholds:
    return AssetThresholds(
        FLEET,
        {
            "pump-1": AssetThreshold(2.5, 3000, {"q": 0.995, "n_scores": 3000}),
            "pump-2": AssetThreshold(0.75, 4000, {"q": 0.995, "n_scores": 4000}),
        },
        1000,
        {"pump-3": "20 calibration windows < 1000"},
    )


def test_round_trip_keeps_the_fleet_value_and_every_asset() -> None:
    th = per_asset()
    d = th.to_dict()
    assert d["value"] == 1.25 and d["method"] == "quantile"
    assert d["per_asset"]["pump-1"] == {
        "value": 2.5,
        "n": 3000,
        "params": th.per_asset["pump-1"].params,
    }
    assert d["per_asset_min_windows"] == 1000
    assert AssetThresholds.from_dict(d) == th  # fallback reasons are report-only
    assert ThresholdSpec.from_dict(d) == FLEET  # readers of the fleet spec are unaffected
    assert th.lookup == {"pump-1": 2.5, "pump-2": 0.75}


def test_a_section_without_per_asset_reads_and_writes_as_before() -> None:
    old = FLEET.to_dict()
    th = AssetThresholds.from_dict(old)
    assert th.per_asset == {} and th.min_windows is None
    assert th.to_dict() == old
    np.testing.assert_array_equal(th.values_for(["x", "y"]), [1.25, 1.25])


def test_per_asset_on_with_no_asset_qualifying_is_recorded() -> None:
    d = AssetThresholds(FLEET, {}, 500).to_dict()
    assert d["per_asset"] == {} and d["per_asset_min_windows"] == 500
    assert AssetThresholds.from_dict(d).min_windows == 500


def _with(path: list[str], value: Any) -> dict[str, Any]:
    d = per_asset().to_dict()
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["per_asset"], [1, 2], "threshold.per_asset'"),
        (["per_asset", "pump-1"], 2.5, "threshold.per_asset.pump-1'"),
        (["per_asset", "pump-1", "value"], float("nan"), "threshold.per_asset.pump-1.value"),
        (["per_asset", "pump-1", "value"], "2.5", "threshold.per_asset.pump-1.value"),
        (["per_asset", "pump-1", "value"], True, "threshold.per_asset.pump-1.value"),
        (["per_asset", "pump-1", "value"], _DELETE, "threshold.per_asset.pump-1.value"),
        (["per_asset", "pump-2", "n"], 0, "threshold.per_asset.pump-2.n"),
        (["per_asset", "pump-2", "n"], 12.5, "threshold.per_asset.pump-2.n"),
        (["per_asset", "pump-2", "params"], {"q": "high"}, "threshold.per_asset.pump-2.params"),
        (["per_asset", ""], {"value": 1.0, "n": 5}, "invalid asset id"),
        (["per_asset_min_windows"], -1, "threshold.per_asset_min_windows"),
        (["per_asset"], _DELETE, "threshold.per_asset' is missing"),
        (["value"], None, "threshold.value"),
    ],
)
def test_bad_per_asset_metadata_is_rejected_naming_the_field(
    path: list[str], value: Any, field: str
) -> None:
    with pytest.raises(ArtifactError, match=field.replace(".", r"\.")) as err:
        AssetThresholds.from_dict(_with(path, value))
    assert "re-train" in str(err.value)


# ----------------------------------------------------------------------------- FAR per asset


def test_far_by_asset_judges_each_window_by_its_own_threshold() -> None:
    th = AssetThresholds(
        ThresholdSpec("quantile", {}, 1.0),
        {
            "a": AssetThreshold(0.5, 100, {}),
            "b": AssetThreshold(2.0, 100, {}),
            "gone": AssetThreshold(3.0, 100, {}),
        },
        100,
        {"c": "3 calibration windows < 100"},
    )
    assets = ["a", "a", "a", "a", "b", "b", "c", "c"]
    scores = [0.6, 0.4, 0.3, 0.1, 1.5, 2.5, 1.5, 0.9]
    # a: 0.6 > 0.5 -> 1/4; b: 2.5 > 2 -> 1/2 (1.5 is above the fleet only); c: fleet 1/2
    report = far_by_asset(scores, assets, th)
    assert report["far"] == pytest.approx(3 / 8)
    assert report["far_by_asset"] == {
        "a": {"far": 0.25, "n": 4, "threshold": 0.5},
        "b": {"far": 0.5, "n": 2, "threshold": 2.0},
        "gone": {"far": None, "n": 0, "threshold": 3.0},
    }
    assert report["worst"] == {"asset_id": "b", "far": 0.5, "n": 2, "threshold": 2.0}
    assert (report["assets_own"], report["assets_fallback"], report["min_windows"]) == (3, 1, 100)
    assert report["fallback"] == {"c": "3 calibration windows < 100"}


def test_far_by_asset_without_windows() -> None:
    report = far_by_asset([], [], per_asset())
    assert report["far"] is None and report["worst"] is None
    assert report["far_by_asset"]["pump-1"]["n"] == 0
