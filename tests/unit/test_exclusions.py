"""Which windows the trainer leaves out, by hand-made intervals."""

from __future__ import annotations

import numpy as np
from tiny_models import anomaly_event

from stream_ae.schemas import FeedbackEvent
from stream_ae.windowing import WindowBatch
from trainers.exclusions import exclusion_mask, feedback_intervals, overlaps


def _windows(asset: str, starts: list[int], size: int = 10) -> WindowBatch:
    s = np.array(starts, np.int64)
    n = len(s)
    return WindowBatch(
        [asset] * n, np.zeros(n, np.int64), s, s + size, np.zeros((n, 1, 2), np.float32)
    )


def test_overlap_is_half_open() -> None:
    w = _windows("a", [0, 10, 20, 30])  # [0,10) [10,20) [20,30) [30,40)
    hit = overlaps(w, {"a": [(10, 20)], "b": [(0, 100)]})
    assert hit.tolist() == [False, True, False, False]
    hit = overlaps(w, {"a": [(5, 6), (25, 35)]})
    assert hit.tolist() == [True, False, True, True]


def test_a_long_interval_hides_behind_a_later_short_one() -> None:
    w = _windows("a", [50])
    assert overlaps(w, {"a": [(0, 100), (10, 20)]}).tolist() == [True]


def test_events_maintenance_and_champion_alarms_are_excluded_false_alarms_are_not() -> None:
    w = _windows("a", [0, 10, 20, 30, 40, 50])
    events = [anomaly_event("a", 10, 20), anomaly_event("a", 40, 50)]
    feedback = [
        FeedbackEvent(asset_id="a", kind="false_alarm", start_ms=40, end_ms=50),
        FeedbackEvent(asset_id="a", kind="maintenance_start", start_ms=22),
        FeedbackEvent(asset_id="a", kind="maintenance_end", start_ms=28),
    ]
    scores = np.array([0.1, 0.1, 0.1, 0.1, 5.0, 5.0])
    ex = exclusion_mask(
        w, events=events, feedback=feedback, champion_scores=scores, champion_threshold=1.0
    )
    # [10,20) event; [20,30) maintenance 22..28; [40,50) cleared by the false alarm
    # (its champion alarm too); [50,60) champion alarm
    assert ex.mask.tolist() == [False, True, True, False, False, True]
    assert ex.reasons == {"anomaly_event": 1, "maintenance_or_fault": 1, "champion_alarm": 1}
    assert ex.false_alarm_windows == 1
    assert ex.excluded == 3 and ex.share() == 0.5


def test_an_open_maintenance_runs_to_the_end_of_the_range() -> None:
    excl, fa = feedback_intervals(
        [FeedbackEvent(asset_id="a", kind="maintenance_start", start_ms=100)], open_end_ms=500
    )
    assert excl == {"a": [(100, 500)]} and fa == {}
    excl, _ = feedback_intervals(
        [FeedbackEvent(asset_id="b", kind="acknowledged_fault", start_ms=7, end_ms=9)],
        open_end_ms=500,
    )
    assert excl == {"b": [(7, 9)]}
