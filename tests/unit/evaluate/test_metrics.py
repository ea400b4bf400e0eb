"""SKAB-protocol metrics: hand-computed point counts, events and NAB scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from stream_ae.errors import ConfigError, DataError
from stream_ae.evaluate.metrics import (
    NAB_PROFILES,
    Evaluation,
    EventResult,
    NabProfile,
    NabRaw,
    PointCounts,
    changepoints_from_labels,
    evaluate_file,
    event_detection,
    events_from_labels,
    nab_raw,
    nab_raw_from_detections,
    nab_scores,
    nab_windows,
    point_counts,
    pool_nab,
    predicted_changepoints,
    summarise,
)

PROFILES = {  # (A_tp, A_fp, A_fn) as in the README
    "standard": (1.0, -0.11, -1.0),
    "low_fp": (1.0, -0.22, -1.0),
    "low_fn": (1.0, -0.11, -2.0),
}
TANH_HALF_PI = 0.9171523356672744  # tanh(π/2)


def _onehot(n: int, *rows: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int8)
    out[list(rows)] = 1
    return out


def _ts(n: int) -> np.ndarray:
    """1 Hz timestamps in ms starting at 0: row i is at i seconds."""
    return np.arange(n, dtype=np.int64) * 1000


# --------------------------------------------------------------------------- point counts


def test_point_counts_hand_example() -> None:
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 0, 1, 1, 0, 0, 0, 0]
    c = point_counts(labels, pred)
    # TP rows 0,2; FN rows 1,7; FP row 3; TN rows 4,5,6
    assert c == PointCounts(tp=2, fp=1, tn=3, fn=2)
    assert c.n == 8
    assert c.f1 == pytest.approx(2 / (2 + (1 + 2) / 2))  # 0.5714
    assert c.far == pytest.approx(25.0)  # 100·1/(1+3)
    assert c.mar == pytest.approx(50.0)  # 100·2/(2+2)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(0.5)
    # F1 = 2PR/(P+R) with P=2/3, R=1/2 gives 4/7 too
    assert c.f1 == pytest.approx(4 / 7)


def test_point_counts_mask_selects_rows() -> None:
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 0, 1, 1, 0, 0, 0, 0]
    mask = [True, False, True, False, True, True, True, True]  # drop the FN at 1, FP at 3
    assert point_counts(labels, pred, mask) == PointCounts(tp=2, fp=0, tn=3, fn=1)


def test_point_counts_accepts_bool_and_float_inputs() -> None:
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    pred = np.array([True, True, False, False])
    assert point_counts(labels, pred) == PointCounts(tp=1, fp=1, tn=1, fn=1)


def test_always_alarm_on_skab_share_of_positives_gives_f1_070_far_100() -> None:
    # README test-part totals: 23,801 rows of which 12,771 (53.7 %) anomalous.
    labels = np.zeros(23_801, dtype=np.int8)
    labels[:12_771] = 1
    c = point_counts(labels, np.ones_like(labels))
    assert c == PointCounts(tp=12_771, fp=11_030, tn=0, fn=0)
    # F1 = 12771 / (12771 + 11030/2) = 25542 / 36572
    assert c.f1 == pytest.approx(25_542 / 36_572)
    assert round(c.f1, 2) == 0.70
    assert c.far == 100.0
    assert c.mar == 0.0
    assert c.recall == 1.0
    assert c.precision == pytest.approx(12_771 / 23_801)


def test_never_alarm() -> None:
    labels = [0, 1, 1, 0, 1]
    c = point_counts(labels, [0] * 5)
    assert c == PointCounts(tp=0, fp=0, tn=2, fn=3)
    assert c.f1 == 0.0
    assert c.far == 0.0
    assert c.mar == 100.0
    assert c.recall == 0.0
    assert c.precision == 1.0  # convention: no alarms, none of them false


def test_empty_denominator_conventions() -> None:
    nothing = point_counts([0, 0, 0], [0, 0, 0])  # no positives, no alarms
    assert (nothing.f1, nothing.precision, nothing.recall) == (1.0, 1.0, 1.0)
    assert (nothing.far, nothing.mar) == (0.0, 0.0)
    all_pos = point_counts([1, 1], [1, 1])  # no negatives
    assert all_pos.far == 0.0
    assert all_pos.f1 == 1.0
    only_false = point_counts([0, 0], [1, 0])  # alarms but nothing to find
    assert (only_false.f1, only_false.precision, only_false.recall) == (0.0, 0.0, 1.0)
    assert only_false.far == 50.0
    empty = point_counts([], [])
    assert empty == PointCounts()
    assert empty.f1 == 1.0
    assert empty.far == 0.0
    assert empty.mar == 0.0


def test_pooling_two_files_equals_concatenation() -> None:
    rng = np.random.default_rng(7)
    a_y, a_p = rng.integers(0, 2, 57), rng.integers(0, 2, 57)
    b_y, b_p = rng.integers(0, 2, 91), rng.integers(0, 2, 91)
    pooled = point_counts(a_y, a_p) + point_counts(b_y, b_p)
    whole = point_counts(np.concatenate([a_y, b_y]), np.concatenate([a_p, b_p]))
    assert pooled == whole
    assert sum([point_counts(a_y, a_p), point_counts(b_y, b_p)], start=PointCounts()) == whole
    assert pooled.f1 == whole.f1


@pytest.mark.parametrize(
    ("labels", "pred", "match"),
    [
        ([0, 2, 1], [0, 1, 1], "only 0 and 1"),
        ([0, 1, float("nan")], [0, 1, 1], "only 0 and 1"),
        ([0, 1, 1], [0, 1], "rows"),
        ([[0, 1]], [[0, 1]], "one-dimensional"),
        (["0", "1"], [0, 1], "dtype"),
    ],
)
def test_point_counts_rejects_bad_input(labels: object, pred: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        point_counts(labels, pred)  # type: ignore[arg-type]


def test_point_counts_rejects_bad_mask() -> None:
    with pytest.raises(DataError, match="mask"):
        point_counts([0, 1], [0, 1], [True])


# --------------------------------------------------------------------------- events


def test_events_from_labels() -> None:
    assert events_from_labels([0, 1, 1, 0, 1, 0, 0, 1, 1]) == [(1, 3), (4, 5), (7, 9)]
    assert events_from_labels([0, 0, 0]) == []
    assert events_from_labels([1, 1, 1]) == [(0, 3)]
    assert events_from_labels([]) == []


def test_event_detection_with_timestamps() -> None:
    labels = [0, 1, 1, 0, 1, 0, 0, 1, 1]
    pred = [1, 0, 1, 0, 0, 1, 0, 1, 1]  # alarms at 0 and 5 fall outside every event
    ts = [0, 1000, 3500, 4000, 5000, 6000, 7000, 8000, 9000]  # irregular
    assert event_detection(labels, pred, ts) == [
        EventResult(start=1, end=3, detected=True, delay_rows=1, delay_ms=2500),
        EventResult(start=4, end=5, detected=False, delay_rows=None, delay_ms=None),
        EventResult(start=7, end=9, detected=True, delay_rows=0, delay_ms=0),
    ]


def test_event_detection_without_timestamps_has_no_ms() -> None:
    res = event_detection([0, 1, 1, 1], [0, 0, 0, 1])
    assert res == [EventResult(1, 4, True, 2, None)]


def test_event_detection_accepts_datetime64() -> None:
    ts = np.array(["2020-03-09T10:00:00", "2020-03-09T10:00:01", "2020-03-09T10:00:04"], "M8[s]")
    (res,) = event_detection([1, 1, 1], [0, 0, 1], ts)
    assert res.delay_ms == 4000


# --------------------------------------------------------------------------- changepoints


def test_predicted_changepoints_first_row_is_pred0() -> None:
    assert predicted_changepoints([1, 1, 0, 0, 1]).tolist() == [1, 0, 1, 0, 1]
    assert predicted_changepoints([0, 0, 1, 1, 0]).tolist() == [0, 0, 1, 0, 1]
    assert predicted_changepoints([]).tolist() == []


def test_changepoints_from_labels_marks_start_and_first_row_after() -> None:
    assert changepoints_from_labels([0, 0, 1, 1, 1, 0, 0]).tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert changepoints_from_labels([1, 1, 0]).tolist() == [1, 0, 1]


# --------------------------------------------------------------------------- NAB


def _raw_one(detection_row: int | None, *, n: int = 200, cp_row: int = 10) -> dict[str, NabRaw]:
    """One changepoint at ``cp_row`` (60 s window = rows cp..cp+60), one detection."""
    dets = _onehot(n) if detection_row is None else _onehot(n, detection_row)
    return nab_raw_from_detections(_onehot(n, cp_row), dets, _ts(n))


@pytest.mark.parametrize("profile", list(PROFILES))
def test_detection_at_changepoint_scores_a_tp(profile: str) -> None:
    raw = _raw_one(10)[profile]
    assert raw == NabRaw(score=pytest.approx(1.0), n_windows=1, detected=1, false_alarms=0)  # type: ignore[arg-type]
    assert nab_scores({profile: raw})[profile] == pytest.approx(100.0)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_detection_at_window_end_scores_a_fp(profile: str) -> None:
    a_fp = PROFILES[profile][1]
    raw = _raw_one(70)[profile]  # t + 60 s: the end is inside (closed window)
    assert raw.score == pytest.approx(a_fp)
    assert (raw.detected, raw.false_alarms) == (1, 0)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_detection_in_the_middle_scores_the_mean(profile: str) -> None:
    a_tp, a_fp, _ = PROFILES[profile]
    assert _raw_one(40)[profile].score == pytest.approx((a_tp + a_fp) / 2)  # x = 0


@pytest.mark.parametrize("profile", list(PROFILES))
def test_detection_just_outside_costs_a_fp_and_the_window_a_fn(profile: str) -> None:
    _, a_fp, a_fn = PROFILES[profile]
    for row in (9, 71):  # one second before the start / after the end
        raw = _raw_one(row)[profile]
        assert raw.score == pytest.approx(a_fp + a_fn)
        assert (raw.detected, raw.false_alarms) == (0, 1)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_missed_window_costs_a_fn(profile: str) -> None:
    raw = _raw_one(None)[profile]
    assert raw.score == pytest.approx(PROFILES[profile][2])
    assert nab_scores({profile: raw})[profile] == pytest.approx(0.0)


def test_second_detection_in_window_is_ignored() -> None:
    pred = np.zeros(200, dtype=np.int8)
    pred[10:21] = 1  # rises at 10 (= t) and falls at 21: both inside [10, 70]
    raw = nab_raw(_onehot(200, 10), pred, _ts(200))
    for name, (a_tp, _, _) in PROFILES.items():
        assert raw[name].score == pytest.approx(a_tp)
        assert raw[name].false_alarms == 0


def test_window_is_in_time_not_rows() -> None:
    ts = _ts(40)
    ts[20:] += 80_000  # an 80 s gap after row 19: row 20 is at 100 s
    raw = nab_raw_from_detections(_onehot(40, 10), _onehot(40, 20), ts)["standard"]
    # window [10 s, 70 s] has no row after 19; the detection at 100 s is a FP
    assert raw.score == pytest.approx(-0.11 - 1.0)
    assert (raw.detected, raw.false_alarms) == (0, 1)


@pytest.mark.parametrize(
    ("profile", "score", "normalised"),
    [
        # first detection at 1/4 of window 1: x = -π/4,
        # y = (A_tp-A_fp)/2·(1 + tanh(π/4)/tanh(π/2)) + A_fp, tanh(π/4)/tanh(π/2) = 0.715033;
        # plus one FP (A_fp) and one missed window (A_fn).
        # standard: 0.555·1.715033 − 0.11 = 0.841843; S = 0.841843 − 0.11 − 1 = −0.268157;
        #   100·(S + 2)/(2 + 2) = 43.2961
        ("standard", -0.268157, 43.29608),
        # low_fp: 0.61·1.715033 − 0.22 = 0.826170; S = 0.826170 − 0.22 − 1 = −0.393830;
        #   100·(S + 2)/4 = 40.1543
        ("low_fp", -0.393830, 40.15425),
        # low_fn: y as standard; S = 0.841843 − 0.11 − 2 = −1.268157; 100·(S + 4)/(2 + 4) = 45.5307
        ("low_fn", -1.268157, 45.53072),
    ],
)
def test_mixed_case_by_hand(profile: str, score: float, normalised: float) -> None:
    n = 400
    pred = np.zeros(n, dtype=np.int8)
    pred[25:31] = 1  # detections at 25 (first in window [10, 70]) and 31 (ignored)
    pred[200:] = 1  # detection at 200: outside both windows; window [300, 360] missed
    raw = nab_raw(_onehot(n, 10, 300), pred, _ts(n))
    assert raw[profile].score == pytest.approx(score, abs=1e-6)
    assert (raw[profile].n_windows, raw[profile].detected, raw[profile].false_alarms) == (2, 1, 1)
    assert nab_scores(raw)[profile] == pytest.approx(normalised, abs=1e-4)


def _two_files() -> list[tuple[np.ndarray, np.ndarray]]:
    """(changepoints, ts) of two files with 2 and 3 changepoints."""
    return [(_onehot(300, 20, 150), _ts(300)), (_onehot(500, 5, 200, 400), _ts(500))]


def test_perfect_detector_scores_100_for_every_profile() -> None:
    raws = [nab_raw_from_detections(cp, cp, ts) for cp, ts in _two_files()]
    scores = nab_scores(pool_nab(raws))
    assert scores == pytest.approx({"standard": 100.0, "low_fp": 100.0, "low_fn": 100.0})


def test_null_detector_scores_0_for_every_profile() -> None:
    raws = [nab_raw(cp, np.zeros_like(cp), ts) for cp, ts in _two_files()]
    pooled = pool_nab(raws)
    assert pooled["standard"].n_windows == 5
    assert nab_scores(pooled) == pytest.approx({"standard": 0.0, "low_fp": 0.0, "low_fn": 0.0})


def test_normalisation_is_on_pooled_sums_not_a_mean_of_files() -> None:
    perfect = nab_raw_from_detections(_onehot(100, 10), _onehot(100, 10), _ts(100))
    missed = nab_raw_from_detections(_onehot(500, 10, 200, 400), _onehot(500), _ts(500))
    pooled = pool_nab([perfect, missed])
    assert pooled["standard"] == NabRaw(score=pytest.approx(-2.0), n_windows=4, detected=1)  # type: ignore[arg-type]
    # 100·(−2 − (−4))/(4 − (−4)) = 25, whereas the mean of per-file scores is (100 + 0)/2
    assert nab_scores(pooled)["standard"] == pytest.approx(25.0)
    assert perfect["standard"] + missed["standard"] == pooled["standard"]


def test_overlapping_windows_cut_right_window() -> None:
    # changepoints 30 s apart: windows [10, 70] and [40, 100] → second cut to [70, 100]
    n = 200
    cps = _onehot(n, 10, 40)
    assert nab_windows(cps, _ts(n)) == [(10_000.0, 70_000.0), (70_000.0, 100_000.0)]
    raw = nab_raw_from_detections(cps, _onehot(n, 40, 80), _ts(n))["standard"]
    # 40 is mid-window 1 (y = 0.445); 80 is at 1/3 of the cut window 2: x = −π/6,
    # y = 0.555·(1 + tanh(π/6)/tanh(π/2)) − 0.11 = 0.555·1.523875 − 0.11 = 0.735750
    assert raw.score == pytest.approx(0.445 + 0.735750, abs=1e-6)
    assert (raw.detected, raw.false_alarms) == (2, 0)


def test_touching_windows_share_their_boundary_instant() -> None:
    # changepoints exactly 60 s apart (common in SKAB): one detection at the shared
    # instant is window 1's first (at its end: A_fp) and window 2's first (A_tp).
    n = 200
    raw = nab_raw_from_detections(_onehot(n, 10, 70), _onehot(n, 70), _ts(n))
    for name, (a_tp, a_fp, _) in PROFILES.items():
        assert raw[name].score == pytest.approx(a_tp + a_fp)
        assert (raw[name].detected, raw[name].false_alarms) == (2, 0)


def test_center_placement_and_window_length() -> None:
    n = 100
    cps = _onehot(n, 50)
    assert nab_windows(cps, _ts(n), window_ms=30_000, placement="center") == [(35_000.0, 65_000.0)]
    kw = {"window_ms": 30_000, "placement": "center"}
    at_start = nab_raw_from_detections(cps, _onehot(n, 35), _ts(n), **kw)  # type: ignore[arg-type]
    at_cp = nab_raw_from_detections(cps, _onehot(n, 50), _ts(n), **kw)  # type: ignore[arg-type]
    assert at_start["standard"].score == pytest.approx(1.0)
    assert at_cp["standard"].score == pytest.approx(0.445)
    left = nab_windows(cps, _ts(n), window_ms=10_000, placement="left")
    assert left == [(40_000.0, 50_000.0)]


def test_reference_grid_option() -> None:
    cps, ts = _onehot(200, 10), _ts(200)
    mid = nab_raw_from_detections(cps, _onehot(200, 40), ts, reference_steps=1000)
    # grid index int(0.5·1000) = 500 of linspace(−π/2, π/2, 1000): x = π/1998,
    # y = 0.445 − 0.555·tanh(π/1998)/tanh(π/2) = 0.4440485
    assert mid["standard"].score == pytest.approx(0.4440485, abs=1e-7)
    # 1 s into the 60 s window: int(1000/60) = int(16.67) = 16 (truncated, not rounded),
    # x = −π/2 + 16π/999 = −1.5204805, y = 0.555·(1 − tanh(x)/tanh(π/2)) − 0.11 = 0.9949344;
    # the exact (continuous) score there is 0.9947187
    early = nab_raw_from_detections(cps, _onehot(200, 11), ts, reference_steps=1000)
    assert early["standard"].score == pytest.approx(0.9949344, abs=1e-7)
    exact = nab_raw_from_detections(cps, _onehot(200, 11), ts)
    assert exact["standard"].score == pytest.approx(0.9947187, abs=1e-7)
    end = nab_raw_from_detections(cps, _onehot(200, 70), ts, reference_steps=1000)
    assert end["standard"].score == pytest.approx(-0.11)  # index clipped to 999


def test_nab_scores_without_windows_is_nan() -> None:
    raw = nab_raw_from_detections(_onehot(10), _onehot(10, 3), _ts(10))
    assert raw["standard"] == NabRaw(score=pytest.approx(-0.11), false_alarms=1)  # type: ignore[arg-type]
    assert math.isnan(nab_scores(raw)["standard"])


def test_nab_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="never decrease"):
        nab_raw(_onehot(3, 1), _onehot(3), [0, 2000, 1000])
    with pytest.raises(DataError, match="ts_ms has 2 rows"):
        nab_raw(_onehot(3, 1), _onehot(3), [0, 1000])
    with pytest.raises(DataError, match="whole milliseconds"):
        nab_raw(_onehot(2, 1), _onehot(2), [0.0, 0.5])
    with pytest.raises(ConfigError, match="window_ms"):
        nab_raw(_onehot(3, 1), _onehot(3), _ts(3), window_ms=-1)
    with pytest.raises(ConfigError, match="placement"):
        nab_raw(_onehot(3, 1), _onehot(3), _ts(3), placement="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reference_steps"):
        nab_raw(_onehot(3, 1), _onehot(3), _ts(3), reference_steps=1)
    with pytest.raises(ConfigError, match="unknown NAB profile"):
        nab_scores({"nope": NabRaw(0.0, 1)})
    with pytest.raises(DataError, match="cannot pool"):
        pool_nab([{"standard": NabRaw()}, {"low_fp": NabRaw()}])
    with pytest.raises(ConfigError, match="a_tp"):
        NabProfile(a_tp=-1.0, a_fp=-0.11, a_fn=-1.0)


def test_custom_profile_and_default_profiles() -> None:
    assert set(NAB_PROFILES) == set(PROFILES)
    for name, (a_tp, a_fp, a_fn) in PROFILES.items():
        assert NAB_PROFILES[name] == NabProfile(a_tp, a_fp, a_fn)
    custom = {"strict": NabProfile(a_tp=2.0, a_fp=-1.0, a_fn=-3.0)}
    raw = nab_raw_from_detections(_onehot(100, 10), _onehot(100, 40), _ts(100), profiles=custom)
    assert raw["strict"].score == pytest.approx(0.5)  # (2 − 1)/2
    assert nab_scores(raw, custom)["strict"] == pytest.approx(100 * 3.5 / 5)


# --------------------------------------------------------------------------- summary


def test_summarise_is_json_able_and_complete() -> None:
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 0, 1, 1], dtype=np.int8)
    pred = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0], dtype=np.int8)
    ts = _ts(10)
    ev = evaluate_file(labels, pred, ts)
    s = ev.summary()
    json.dumps(s, allow_nan=False)
    assert s["counts"] == {"tp": 2, "fp": 1, "tn": 4, "fn": 3, "n": 10}
    assert s["f1"] == pytest.approx(2 / (2 + 2))
    assert s["far"] == pytest.approx(20.0)
    assert s["mar"] == pytest.approx(60.0)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(0.4)
    # changepoints from labels: rows 2, 5, 8; detections: rows 3 and 6.
    # Windows [2 s, 62 s] → cut [62, 65] → cut [65, 68]: row 3 is window 1's first
    # (x = −π/2 + π/60), row 6 lies in window 1 too (ignored); windows 2, 3 missed.
    assert s["changepoints"] == {"n_windows": 3, "detected": 1, "false_alarms": 0}
    y = 0.555 * (1 + math.tanh(math.pi / 2 - math.pi / 60) / TANH_HALF_PI) - 0.11
    assert s["nab_standard"] == pytest.approx(100 * (y - 2 + 3) / 6)
    assert set(s) >= {"nab_low_fp", "nab_low_fn"}
    assert s["events"] == {
        "n": 2,
        "detected": 1,
        "detection_rate": 0.5,
        "median_delay_rows": 1.0,
        "median_delay_ms": 1000.0,
    }


def test_summarise_undefined_values_are_none() -> None:
    s = summarise(PointCounts(tn=5))
    json.dumps(s, allow_nan=False)
    assert s["nab_standard"] is None and s["changepoints"] is None
    assert s["events"]["detection_rate"] is None
    assert s["events"]["median_delay_ms"] is None
    no_windows = summarise(PointCounts(), {"standard": NabRaw(-0.11, 0, 0, 1)})
    assert no_windows["nab_standard"] is None
    assert no_windows["changepoints"] == {"n_windows": 0, "detected": 0, "false_alarms": 1}


def test_evaluations_pool_with_plus() -> None:
    a = evaluate_file(_onehot(100, *range(20, 40)), _onehot(100, *range(25, 45)), _ts(100))
    b = evaluate_file(
        _onehot(80, *range(10, 30)),
        np.zeros(80, dtype=np.int8),
        _ts(80),
        changepoints=_onehot(80, 10),
    )
    pooled = a + b
    assert pooled.counts == a.counts + b.counts
    assert pooled.events == a.events + b.events
    assert pooled.nab == pool_nab([a.nab, b.nab])
    assert pooled.nab["standard"].n_windows == 3  # 20 and 40 from a's labels, 10 in b
    assert Evaluation() + a == a
    assert pooled.summary()["events"]["n"] == 2


def test_evaluate_file_mask_only_restricts_point_counts() -> None:
    labels = _onehot(100, *range(20, 40))
    pred = np.ones(100, dtype=np.int8)
    mask = np.arange(100) < 50
    ev = evaluate_file(labels, pred, _ts(100), mask=mask)
    assert ev.counts == PointCounts(tp=20, fp=30, tn=0, fn=0)
    assert ev.nab == evaluate_file(labels, pred, _ts(100)).nab


# --------------------------------------------------------------------------- real SKAB files


def test_always_alarm_on_skab_test_parts(skab_dir: Path) -> None:
    counts, raws = PointCounts(), []
    for path in sorted(skab_dir.glob("*/*.csv")):
        if path.parent.name == "anomaly-free":
            continue
        cols = np.loadtxt(path, delimiter=";", skiprows=1, usecols=(0, 9, 10), dtype=str)
        ts = cols[:, 0].astype("datetime64[s]")[400:]
        labels = cols[:, 1].astype(float)[400:]
        cps = cols[:, 2].astype(float)[400:]
        pred = np.ones_like(labels)
        counts += point_counts(labels, pred)
        raws.append(nab_raw(cps, pred, ts))
    # README: 23,801 test rows, 12,771 anomalous, 127 changepoints; F1 0.70, FAR 100.
    assert counts == PointCounts(tp=12_771, fp=11_030, tn=0, fn=0)
    assert round(counts.f1, 2) == 0.70 and counts.far == 100.0
    pooled = pool_nab(raws)
    # the only detection per file is its first test row, outside every window: 34 FPs
    assert (pooled["standard"].n_windows, pooled["standard"].false_alarms) == (127, 34)
    assert nab_scores(pooled) == pytest.approx(
        {
            "standard": 100 * 34 * -0.11 / (127 * 2),  # −1.472
            "low_fp": 100 * 34 * -0.22 / (127 * 2),  # −2.945
            "low_fn": 100 * 34 * -0.11 / (127 * 3),  # −0.982
        }
    )
