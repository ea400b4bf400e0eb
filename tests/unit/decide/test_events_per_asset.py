"""Decider with per-asset thresholds: lookup, fleet fallback, what events and records carry."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.decide.events import Decider
from stream_ae.decide.persistence import Persistence
from stream_ae.windowing import WindowBatch

CHANNELS = ["vibration_rms", "bearing_temp"]
START = 1_764_097_136_000
FLEET = 1.0
OWN = {"pump-a": 0.5, "pump-c": 2.0}  # a: quieter than the fleet, c: noisier


def batch(assets: list[str]) -> WindowBatch:
    n = len(assets)
    starts = START + 16_000 * np.arange(n, dtype=np.int64)
    return WindowBatch(
        asset_ids=assets,
        partitions=np.zeros(n, np.int64),
        start_ms=starts,
        end_ms=starts + 64_000,
        values=np.zeros((n, len(CHANNELS), 4), np.float32),
    )


def decider(**kw: object) -> Decider:
    return Decider(
        threshold=FLEET,
        model_version="v1",
        channels=CHANNELS,
        per_asset=dict(OWN),
        **kw,  # type: ignore[arg-type]
    )


def shares(n: int) -> np.ndarray:
    return np.full((n, len(CHANNELS)), 0.5)


def test_a_score_between_the_assets_threshold_and_the_fleets_is_decided_by_the_asset() -> None:
    # 0.75 lies between pump-a's 0.5 and the fleet's 1.0; 1.5 between the fleet's and pump-c's
    w = batch(["pump-a", "pump-b", "pump-c", "pump-c", "pump-b"])
    scores = np.array([0.75, 0.75, 1.5, 2.5, 1.5])
    np.testing.assert_array_equal(decider().anomalous(scores, w), [True, False, False, True, True])
    events = decider().events(w, scores, shares(5), now_ms=START)
    assert [(e.asset_id, e.threshold) for e in events] == [
        ("pump-a", 0.5),
        ("pump-c", 2.0),
        ("pump-b", FLEET),
    ]
    assert [e.score_ratio for e in events] == [1.5, 1.25, 1.5]


def test_severity_uses_the_assets_own_threshold() -> None:
    # 1.0 / 0.5 = 2 -> high for pump-a; judged by the fleet it would not even alarm
    w = batch(["pump-a", "pump-a", "pump-b"])
    events = decider().events(w, np.array([1.0, 2.0, 2.0]), shares(3), now_ms=START)
    assert [(e.score_ratio, e.severity) for e in events] == [
        (2.0, "high"),
        (4.0, "critical"),
        (2.0, "high"),
    ]


def test_thresholds_lookup_falls_back_to_the_fleet() -> None:
    w = batch(["pump-z", "pump-a", "pump-c", "pump-a"])
    np.testing.assert_array_equal(decider().thresholds(w), [FLEET, 0.5, 2.0, 0.5])


def test_score_records_carry_each_windows_threshold() -> None:
    w = batch(["pump-a", "pump-b", "pump-c"])
    records = decider().score_records(w, np.array([0.1, 0.2, 0.3]))
    assert [(r.asset_id, r.threshold) for r in records] == [
        ("pump-a", 0.5),
        ("pump-b", FLEET),
        ("pump-c", 2.0),
    ]
    plain = Decider(threshold=FLEET, model_version="v1", channels=CHANNELS)
    assert [r.threshold for r in plain.score_records(w, np.array([0.1, 0.2, 0.3]))] == [FLEET] * 3


def test_persistence_counts_windows_above_their_own_threshold() -> None:
    d = decider(persistence=Persistence(k=2, n=2))
    # pump-a: 0.75, 0.75 both above 0.5 -> the second alarms; pump-b: above nothing
    w = batch(["pump-a", "pump-b", "pump-a", "pump-b"])
    np.testing.assert_array_equal(
        d.anomalous(np.array([0.75, 0.75, 0.75, 0.75]), w), [False, False, True, False]
    )


def test_per_asset_thresholds_need_the_windows() -> None:
    with pytest.raises(ValueError, match="asset ids"):
        decider().anomalous(np.array([0.75]))
    # one threshold for all: scores alone are enough, as before
    plain = Decider(threshold=FLEET, model_version="v1", channels=CHANNELS)
    np.testing.assert_array_equal(plain.anomalous(np.array([0.75, 1.5])), [False, True])
