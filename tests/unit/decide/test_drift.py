"""Drift signals on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.decide.drift import DriftMonitor


def _monitor() -> DriftMonitor:
    return DriftMonitor(
        reference_mean=np.array([10.0, 0.0]),
        reference_std=np.array([2.0, 1.0]),
        channels=["a", "b"],
        holdout_p50=0.1,
        holdout_exceed=0.01,
        threshold=1.0,
        horizon=100,
    )


def _windows(n: int, a: float, b: float, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, 2, 8))
    x[:, 0] = x[:, 0] * 2.0 + a
    x[:, 1] += b
    return x


def test_no_drift_when_recent_data_looks_like_training() -> None:
    rng = np.random.default_rng(0)
    m = _monitor()
    for _ in range(20):
        m.update(_windows(50, 10.0, 0.0, rng), rng.exponential(0.14, 50))
    r = m.report()
    assert r["drifted"] is False
    assert r["input_shift_max"] < 0.5
    assert 0 < r["drift_score"] < 1.0
    assert 0.5 < r["score_p50_ratio"] < 2.0


def test_a_level_shift_on_one_channel_is_reported_for_that_channel() -> None:
    rng = np.random.default_rng(1)
    m = _monitor()
    for _ in range(20):
        m.update(_windows(50, 10.0, 5.0, rng), rng.exponential(0.14, 50))
    r = m.report()
    assert r["drifted"] is True
    assert r["input_shift_channel"] == "b"
    assert r["input_shift_max"] > 4.0
    assert r["drift_score"] == pytest.approx(r["input_shift_max"] / 3.0, abs=1e-3)
    assert r["drift_score"] > 1.0


def test_rising_scores_are_drift_even_with_stable_inputs() -> None:
    rng = np.random.default_rng(2)
    m = _monitor()
    for _ in range(20):
        m.update(_windows(50, 10.0, 0.0, rng), rng.exponential(0.14, 50) * 5)
    r = m.report()
    assert r["drifted"] is True and r["score_p50_ratio"] > 2.0
    assert r["drift_score"] == pytest.approx(r["score_p50_ratio"] / 2.0, abs=1e-3)


def test_empty_monitor_reports_nothing() -> None:
    assert _monitor().report() == {"windows": 0, "drifted": False}


def test_each_window_exceeds_by_its_own_assets_threshold() -> None:
    mon = DriftMonitor(
        reference_mean=np.zeros(2),
        reference_std=np.ones(2),
        channels=["x", "y"],
        threshold=1.0,
        per_asset={"quiet": 0.2},
    )
    windows = np.zeros((4, 2, 3))
    scores = np.array([0.5, 0.5, 0.5, 0.5])  # above quiet's own threshold, below the fleet's
    mon.update(windows, scores, ["quiet", "quiet", "loud", "loud"])
    assert mon.report()["recent_exceed_fraction"] == 0.5
    fleet_only = DriftMonitor(np.zeros(2), np.ones(2), ["x", "y"], threshold=1.0)
    fleet_only.update(windows, scores, ["quiet", "quiet", "loud", "loud"])
    assert fleet_only.report()["recent_exceed_fraction"] == 0.0
