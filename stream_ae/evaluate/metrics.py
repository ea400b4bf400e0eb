"""SKAB-protocol metrics as pure numpy functions whose raw sums pool across files.

The definitions follow ``shared/data/skab/README.md`` (the leaderboard protocol);
where the README is silent, the SKAB/TSAD reference code (``waico/SKAB``
``core/metrics.py``, a copy of ``tsad.evaluating``) decides, and every such choice
is written down here.

Point-wise outlier detection
    :func:`point_counts` returns a :class:`PointCounts` (TP, FP, TN, FN). Add the
    counts of all files with ``+`` (or ``sum(parts, start=PointCounts())``) and only
    then read ``f1`` = TP / (TP + (FP+FN)/2), ``far`` = 100·FP/(FP+TN) and
    ``mar`` = 100·FN/(FN+TP) — the leaderboard sums counts over the 34 files.

    Empty denominators (the *vacuous* convention: where nothing could go wrong,
    nothing did): ``far`` = 0 when there are no negatives, ``mar`` = 0 when there
    are no positives, ``precision`` = 1 when nothing was flagged, ``recall`` = 1
    when there is nothing to find, and ``f1`` = 1 when there are no positives and
    no alarms (TP = FP = FN = 0). With these values F1 = 2PR/(P+R) holds in every
    case where P + R > 0, and F1 = 0 whenever anything was missed or falsely
    flagged without a single hit. No metric ever returns NaN.

Per labelled event
    :func:`events_from_labels` gives the runs of 1 as ``(start, end)`` row indices
    (end exclusive); :func:`event_detection` says for each run whether any alarm
    fell inside it and how long after the run's first row the first alarm came
    (rows, and milliseconds when timestamps are given).

NAB-style changepoint scoring
    Detections are ``|diff(pred)|`` with the first row equal to ``pred[0]``
    (:func:`predicted_changepoints`). Each true changepoint at time t opens the
    window [t, t + ``window_ms``] (default 60 s; ``placement="center"`` gives
    [t − w/2, t + w/2] and ``"left"`` [t − w, t], as in the reference code). Only
    the first detection inside a window counts, scored by
    y(x) = (A_tp−A_fp)/2 · (−tanh(x)/tanh(π/2)) + (A_tp−A_fp)/2 + A_fp with x going
    linearly from −π/2 at the window's start to +π/2 at its end, so a detection at
    the start earns A_tp, one at the end A_fp and one in the middle (A_tp+A_fp)/2.
    Further detections inside a window are ignored (not false positives); each
    detection outside every window costs A_fp; each window without a detection
    costs A_fn. Windows are in *time* (``ts_ms``), not rows, so gaps in the
    sampling shorten a window's row count.

    Conventions taken from the reference code:

    * Windows are closed intervals: a detection exactly at t + w is inside.
    * Overlapping windows (changepoints closer than ``window_ms``) are resolved as
      the reference's default ``intersection_mode="cut right window"``: the later
      window starts where the earlier one ends, [max(t_i, end_{i-1}), end_i], and
      its x-scale runs over that cut interval. Windows then touch at most at one
      instant; a detection exactly there is the first detection of *both* windows
      if both are still open (the reference tests each window separately with
      closed bounds). This matters on SKAB, where many changepoints are exactly
      60 s apart.
    * The reference evaluates y on a 1000-point grid (``my_scale``:
      ``y[min(int(frac·1000), 999)]``). By default x is exact (continuous) as the
      README states; ``reference_steps=1000`` reproduces the grid. The two differ
      by at most about 0.002 per detected window.
    * Normalisation pools files: raw scores and window counts are summed over all
      files (:func:`pool_nab`, or ``+`` on :class:`NabRaw`) and
      100·(S − S_null)/(S_perfect − S_null) is taken once on the sums
      (:func:`nab_scores`), with S_perfect = n_windows·A_tp and
      S_null = n_windows·A_fn. That is what the reference ``chp_score`` /
      ``tsad.evaluating`` does (it adds the per-file [score, null, perfect] matrix
      and normalises the total), so a file with many changepoints weighs more than
      one with few. With no windows at all the score is undefined: NaN here,
      ``None`` in :func:`summarise`.

    Note: the SKAB notebooks call the reference with ``numenta_time='30S'`` and
    ``anomaly_window_destenation='center'`` (a 30 s window centred on t), not the
    README's [t, t + 60 s]; pass ``window_ms=30_000, placement="center"`` to
    reproduce them.

Inputs are 1-D arrays of 0/1 (bool, int or float) and timestamps in integer
milliseconds (int, whole-valued float, or ``datetime64``) that never decrease.
Bad inputs raise :class:`~stream_ae.errors.DataError`; bad parameters
:class:`~stream_ae.errors.ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stream_ae.errors import ConfigError, DataError

__all__ = [
    "NAB_PROFILES",
    "Evaluation",
    "EventResult",
    "NabProfile",
    "NabRaw",
    "Placement",
    "PointCounts",
    "changepoints_from_labels",
    "evaluate_file",
    "event_detection",
    "events_from_labels",
    "nab_raw",
    "nab_raw_from_detections",
    "nab_scores",
    "nab_windows",
    "point_counts",
    "pool_nab",
    "predicted_changepoints",
    "summarise",
]

Placement = Literal["right", "center", "left"]

DEFAULT_WINDOW_MS = 60_000

# ---------------------------------------------------------------------------
# input checks


def _as_binary(values: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    """A 1-D array of 0/1 (bool, int or float) as booleans; anything else is a DataError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{name} must hold 0/1 numbers or booleans, got dtype {arr.dtype}")
    ones: npt.NDArray[np.bool_] = np.asarray(arr == 1, dtype=np.bool_)
    ok = ones | (arr == 0)
    if not bool(np.all(ok)):
        bad = arr[~ok][0]
        raise DataError(f"{name} must hold only 0 and 1, found {bad!r}")
    return ones


def _check_length(n: int, arr: npt.NDArray[Any], name: str) -> None:
    if arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} rows, expected {n} (one per label)")


def _as_timestamps(ts_ms: npt.ArrayLike, n: int, name: str = "ts_ms") -> npt.NDArray[np.int64]:
    """Integer milliseconds, one per row, never decreasing."""
    arr = np.asarray(ts_ms)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    _check_length(n, arr, name)
    if arr.dtype.kind == "M":
        if bool(np.any(np.isnat(arr))):
            raise DataError(f"{name} contains NaT")
        out = arr.astype("datetime64[ms]").astype(np.int64)
    elif arr.dtype.kind in "iu":
        out = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not bool(np.all(np.isfinite(arr))) or not bool(np.all(arr == np.round(arr))):
            raise DataError(f"{name} must be whole milliseconds (finite, integral)")
        out = arr.astype(np.int64)
    else:
        raise DataError(f"{name} must be integer milliseconds or datetime64, got {arr.dtype}")
    if out.size > 1 and bool(np.any(np.diff(out) < 0)):
        i = int(np.flatnonzero(np.diff(out) < 0)[0])
        raise DataError(f"{name} must never decrease; row {i + 1} is earlier than row {i}")
    return out


# ---------------------------------------------------------------------------
# point-wise outlier detection


@dataclass(frozen=True, slots=True)
class PointCounts:
    """Row-level confusion counts; ``+`` pools files (the leaderboard's summation)."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __add__(self, other: PointCounts) -> PointCounts:
        if not isinstance(other, PointCounts):
            return NotImplemented
        return PointCounts(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    @property
    def n(self) -> int:
        """Rows counted."""
        return self.tp + self.fp + self.tn + self.fn

    @property
    def f1(self) -> float:
        """TP / (TP + (FP+FN)/2); 1.0 when TP = FP = FN = 0."""
        denom = self.tp + (self.fp + self.fn) / 2
        return 1.0 if denom == 0 else self.tp / denom

    @property
    def far(self) -> float:
        """False alarm rate in percent, 100·FP/(FP+TN); 0.0 when there are no negatives."""
        denom = self.fp + self.tn
        return 0.0 if denom == 0 else 100.0 * self.fp / denom

    @property
    def mar(self) -> float:
        """Missed alarm rate in percent, 100·FN/(FN+TP); 0.0 when there are no positives."""
        denom = self.fn + self.tp
        return 0.0 if denom == 0 else 100.0 * self.fn / denom

    @property
    def precision(self) -> float:
        """TP/(TP+FP); 1.0 when nothing was flagged."""
        denom = self.tp + self.fp
        return 1.0 if denom == 0 else self.tp / denom

    @property
    def recall(self) -> float:
        """TP/(TP+FN) (= 1 − MAR/100); 1.0 when there are no positives."""
        denom = self.tp + self.fn
        return 1.0 if denom == 0 else self.tp / denom

    def as_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def point_counts(
    labels: npt.ArrayLike, pred: npt.ArrayLike, mask: npt.ArrayLike | None = None
) -> PointCounts:
    """Confusion counts of a 0/1 prediction against 0/1 labels, one per row.

    ``mask`` (bool or 0/1, same length) selects the rows that count; by default
    all rows do.
    """
    y = _as_binary(labels, "labels")
    p = _as_binary(pred, "pred")
    _check_length(y.shape[0], p, "pred")
    if mask is not None:
        m = _as_binary(mask, "mask")
        _check_length(y.shape[0], m, "mask")
        y, p = y[m], p[m]
    return PointCounts(
        tp=int(np.count_nonzero(y & p)),
        fp=int(np.count_nonzero(~y & p)),
        tn=int(np.count_nonzero(~y & ~p)),
        fn=int(np.count_nonzero(y & ~p)),
    )


# ---------------------------------------------------------------------------
# per labelled event


@dataclass(frozen=True, slots=True)
class EventResult:
    """One labelled run ``[start, end)`` and whether/when an alarm fell inside it.

    ``delay_rows`` = first alarm row − ``start``; ``delay_ms`` the same in
    timestamp milliseconds (``None`` without timestamps). Both ``None`` when
    undetected.
    """

    start: int
    end: int
    detected: bool
    delay_rows: int | None
    delay_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "detected": self.detected,
            "delay_rows": self.delay_rows,
            "delay_ms": self.delay_ms,
        }


def events_from_labels(labels: npt.ArrayLike) -> list[tuple[int, int]]:
    """Contiguous runs of 1 as ``(start, end_exclusive)`` row indices, in order."""
    y = _as_binary(labels, "labels").astype(np.int8)
    edges = np.diff(y, prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def event_detection(
    labels: npt.ArrayLike, pred: npt.ArrayLike, ts_ms: npt.ArrayLike | None = None
) -> list[EventResult]:
    """For each labelled run: detected = any alarm inside it; delay to the first one."""
    y = _as_binary(labels, "labels")
    p = _as_binary(pred, "pred")
    _check_length(y.shape[0], p, "pred")
    ts = None if ts_ms is None else _as_timestamps(ts_ms, y.shape[0])
    out: list[EventResult] = []
    for start, end in events_from_labels(y):
        hits = np.flatnonzero(p[start:end])
        if hits.size == 0:
            out.append(EventResult(start, end, False, None, None))
            continue
        first = start + int(hits[0])
        delay_ms = None if ts is None else int(ts[first] - ts[start])
        out.append(EventResult(start, end, True, first - start, delay_ms))
    return out


# ---------------------------------------------------------------------------
# NAB-style changepoint scoring


def _edges(values: npt.ArrayLike, name: str) -> npt.NDArray[np.int8]:
    v = _as_binary(values, name).astype(np.int8)
    return np.abs(np.diff(v, prepend=np.int8(0))).astype(np.int8)


def predicted_changepoints(pred: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Detections of a 0/1 alarm series: ``|diff(pred)|`` with row 0 equal to ``pred[0]``."""
    return _edges(pred, "pred")


def changepoints_from_labels(labels: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """True changepoints when a file has no ``changepoint`` column: ``|diff(labels)|``.

    Row 0 is ``labels[0]`` (same rule as :func:`predicted_changepoints`), so a
    slice that starts inside an anomaly has a changepoint at its first row. Each
    labelled run gives its first row and the first row after it.
    """
    return _edges(labels, "labels")


@dataclass(frozen=True, slots=True)
class NabProfile:
    """Weights of one NAB application profile."""

    a_tp: float
    a_fp: float
    a_fn: float

    def __post_init__(self) -> None:
        if not (self.a_tp > self.a_fp and self.a_tp > self.a_fn):
            raise ConfigError(
                f"NAB profile needs a_tp > a_fp and a_tp > a_fn, got {self.a_tp}, "
                f"{self.a_fp}, {self.a_fn}"
            )

    def y(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Score of a detection at x ∈ [−π/2, π/2]: A_tp at −π/2, A_fp at +π/2."""
        half = (self.a_tp - self.a_fp) / 2
        xs = np.asarray(x, dtype=np.float64)
        return half * (-np.tanh(xs) / math.tanh(math.pi / 2)) + half + self.a_fp


NAB_PROFILES: Mapping[str, NabProfile] = MappingProxyType(
    {
        "standard": NabProfile(a_tp=1.0, a_fp=-0.11, a_fn=-1.0),
        "low_fp": NabProfile(a_tp=1.0, a_fp=-0.22, a_fn=-1.0),
        "low_fn": NabProfile(a_tp=1.0, a_fp=-0.11, a_fn=-2.0),
    }
)


@dataclass(frozen=True, slots=True)
class NabRaw:
    """Un-normalised NAB sum for one profile; ``+`` pools files.

    ``detected`` (windows with a detection) and ``false_alarms`` (detections
    outside every window) are the same for every profile and kept for reports.
    """

    score: float = 0.0
    n_windows: int = 0
    detected: int = 0
    false_alarms: int = 0

    def __add__(self, other: NabRaw) -> NabRaw:
        if not isinstance(other, NabRaw):
            return NotImplemented
        return NabRaw(
            self.score + other.score,
            self.n_windows + other.n_windows,
            self.detected + other.detected,
            self.false_alarms + other.false_alarms,
        )


def _check_window(window_ms: float, placement: str) -> None:
    if not (isinstance(window_ms, Real) and math.isfinite(window_ms) and window_ms >= 0):
        raise ConfigError(f"window_ms must be a finite number >= 0, got {window_ms!r}")
    if placement not in ("right", "center", "left"):
        raise ConfigError(f"placement must be 'right', 'center' or 'left', got {placement!r}")


def _window_bounds(
    t: npt.NDArray[np.int64], window_ms: float, placement: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Window [lo, hi] per changepoint time ``t`` (sorted), overlaps cut from the right."""
    tf = t.astype(np.float64)
    if placement == "right":
        lo, hi = tf.copy(), tf + window_ms
    elif placement == "left":
        lo, hi = tf - window_ms, tf.copy()
    else:
        lo, hi = tf - window_ms / 2, tf + window_ms / 2
    # reference intersection_mode="cut right window": a window that starts at or
    # before the previous one's end starts at that end instead (ends never move).
    lo[1:] = np.maximum(lo[1:], hi[:-1])
    return lo, hi


def nab_windows(
    changepoints: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    placement: Placement = "right",
) -> list[tuple[float, float]]:
    """The scoring windows ``(start_ms, end_ms)``, both ends inclusive, after overlap cuts."""
    _check_window(window_ms, placement)
    cp = _as_binary(changepoints, "changepoints")
    ts = _as_timestamps(ts_ms, cp.shape[0])
    lo, hi = _window_bounds(ts[cp], window_ms, placement)
    return [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]


def _x_of(pos: npt.NDArray[np.float64], reference_steps: int | None) -> npt.NDArray[np.float64]:
    """Relative position in the window (0..1) to x ∈ [−π/2, π/2]."""
    if reference_steps is None:
        return -math.pi / 2 + math.pi * pos
    k = np.minimum(np.floor(pos * reference_steps), reference_steps - 1)
    return -math.pi / 2 + math.pi * k / (reference_steps - 1)


def nab_raw_from_detections(
    changepoints: npt.ArrayLike,
    detections: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    placement: Placement = "right",
    profiles: Mapping[str, NabProfile] = NAB_PROFILES,
    reference_steps: int | None = None,
) -> dict[str, NabRaw]:
    """Raw NAB sums of one file, per profile, from 0/1 true and detected changepoints.

    See the module docstring for windows, overlap cuts and the scoring function.
    ``reference_steps`` (e.g. 1000) evaluates y on the reference code's grid
    instead of exactly.
    """
    _check_window(window_ms, placement)
    if reference_steps is not None and (
        not isinstance(reference_steps, int) or reference_steps < 2
    ):
        raise ConfigError(f"reference_steps must be an int >= 2, got {reference_steps!r}")
    cp = _as_binary(changepoints, "changepoints")
    det = _as_binary(detections, "detections")
    _check_length(cp.shape[0], det, "detections")
    ts = _as_timestamps(ts_ms, cp.shape[0])
    lo, hi = _window_bounds(ts[cp], window_ms, placement)
    d = ts[det].astype(np.float64)  # sorted, since ts never decreases
    n_windows = int(lo.size)

    if n_windows and d.size:
        # Detections outside every window. lo and hi are both sorted and windows only
        # touch at single instants, so the last window starting at or before d decides.
        j = np.searchsorted(lo, d, side="right") - 1
        inside = (j >= 0) & (d <= hi[np.maximum(j, 0)])
        false_alarms = int(np.count_nonzero(~inside))
        # First detection at or after each window's start; a hit if it is <= the end.
        k = np.searchsorted(d, lo, side="left")
        first = d[np.minimum(k, d.size - 1)]
        hit = (k < d.size) & (first <= hi)
        width = hi - lo
        safe = np.where(width > 0, width, 1.0)
        pos = np.where(width > 0, (first - lo) / safe, 0.0)[hit]
    else:
        false_alarms = int(d.size)
        pos = np.zeros(0, dtype=np.float64)
    detected = int(pos.size)
    x = _x_of(pos, reference_steps)

    out: dict[str, NabRaw] = {}
    for name, prof in profiles.items():
        score = (
            float(np.sum(prof.y(x))) + false_alarms * prof.a_fp + (n_windows - detected) * prof.a_fn
        )
        out[name] = NabRaw(score, n_windows, detected, false_alarms)
    return out


def nab_raw(
    changepoints: npt.ArrayLike,
    pred: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    placement: Placement = "right",
    profiles: Mapping[str, NabProfile] = NAB_PROFILES,
    reference_steps: int | None = None,
) -> dict[str, NabRaw]:
    """Raw NAB sums of one file for a 0/1 alarm series ``pred`` (detections = its edges)."""
    return nab_raw_from_detections(
        changepoints,
        predicted_changepoints(pred),
        ts_ms,
        window_ms=window_ms,
        placement=placement,
        profiles=profiles,
        reference_steps=reference_steps,
    )


def pool_nab(raws: Iterable[Mapping[str, NabRaw]]) -> dict[str, NabRaw]:
    """Sum per-file raw NAB results profile by profile (empty mappings are skipped)."""
    pooled: dict[str, NabRaw] = {}
    for raw in raws:
        if not raw:
            continue
        if pooled and set(raw) != set(pooled):
            raise DataError(
                f"cannot pool NAB results for profiles {sorted(raw)} with {sorted(pooled)}"
            )
        for name, value in raw.items():
            pooled[name] = pooled.get(name, NabRaw()) + value
    return pooled


def nab_scores(
    raw_by_profile: Mapping[str, NabRaw], profiles: Mapping[str, NabProfile] = NAB_PROFILES
) -> dict[str, float]:
    """100·(S − S_null)/(S_perfect − S_null) per profile, on (pooled) raw sums.

    S_perfect = n_windows·A_tp, S_null = n_windows·A_fn. Perfect detection gives
    100, no detections 0; false alarms can push it below 0. NaN when
    ``n_windows`` is 0. Pass pooled sums to get the leaderboard's number.
    """
    out: dict[str, float] = {}
    for name, raw in raw_by_profile.items():
        if name not in profiles:
            raise ConfigError(f"unknown NAB profile {name!r}; known: {sorted(profiles)}")
        prof = profiles[name]
        if raw.n_windows == 0:
            out[name] = math.nan
            continue
        s_perfect = raw.n_windows * prof.a_tp
        s_null = raw.n_windows * prof.a_fn
        out[name] = 100.0 * (raw.score - s_null) / (s_perfect - s_null)
    return out


# ---------------------------------------------------------------------------
# summary


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def summarise(
    counts: PointCounts,
    nab: Mapping[str, NabRaw] | None = None,
    events: Sequence[EventResult] = (),
    *,
    profiles: Mapping[str, NabProfile] = NAB_PROFILES,
) -> dict[str, Any]:
    """JSON-able summary of (pooled) results; undefined values are ``None``, never NaN.

    Keys: ``f1``, ``far``, ``mar`` (percent), ``precision``, ``recall``,
    ``nab_<profile>`` for each profile (``None`` without NAB results or windows),
    ``counts`` (tp/fp/tn/fn/n), ``changepoints`` (n_windows, detected,
    false_alarms; ``None`` without NAB results) and ``events`` (n, detected,
    detection_rate, median_delay_rows, median_delay_ms; ``None`` where undefined).
    """
    out: dict[str, Any] = {
        "f1": counts.f1,
        "far": counts.far,
        "mar": counts.mar,
        "precision": counts.precision,
        "recall": counts.recall,
    }
    if nab:
        for name, value in nab_scores(nab, profiles).items():
            out[f"nab_{name}"] = _none_if_nan(value)
        any_raw = next(iter(nab.values()))
        out["changepoints"] = {
            "n_windows": any_raw.n_windows,
            "detected": any_raw.detected,
            "false_alarms": any_raw.false_alarms,
        }
    else:
        for name in profiles:
            out[f"nab_{name}"] = None
        out["changepoints"] = None
    out["counts"] = {**counts.as_dict(), "n": counts.n}

    found = [e for e in events if e.detected]
    delays_rows = [e.delay_rows for e in found if e.delay_rows is not None]
    delays_ms = [e.delay_ms for e in found if e.delay_ms is not None]
    out["events"] = {
        "n": len(events),
        "detected": len(found),
        "detection_rate": len(found) / len(events) if events else None,
        "median_delay_rows": float(np.median(delays_rows)) if delays_rows else None,
        "median_delay_ms": float(np.median(delays_ms)) if delays_ms else None,
    }
    return out


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything measured on one file (or pooled over files with ``+``)."""

    counts: PointCounts = PointCounts()
    nab: Mapping[str, NabRaw] = field(default_factory=dict)
    events: tuple[EventResult, ...] = ()

    def __add__(self, other: Evaluation) -> Evaluation:
        if not isinstance(other, Evaluation):
            return NotImplemented
        return Evaluation(
            self.counts + other.counts,
            pool_nab([self.nab, other.nab]),
            self.events + other.events,
        )

    def summary(self, profiles: Mapping[str, NabProfile] = NAB_PROFILES) -> dict[str, Any]:
        """:func:`summarise` of these results."""
        return summarise(self.counts, self.nab, self.events, profiles=profiles)


def evaluate_file(
    labels: npt.ArrayLike,
    pred: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    *,
    changepoints: npt.ArrayLike | None = None,
    mask: npt.ArrayLike | None = None,
    window_ms: float = DEFAULT_WINDOW_MS,
    placement: Placement = "right",
    profiles: Mapping[str, NabProfile] = NAB_PROFILES,
    reference_steps: int | None = None,
) -> Evaluation:
    """Point counts, NAB sums and per-event results of one file's test rows.

    ``changepoints`` defaults to :func:`changepoints_from_labels` (pass SKAB's
    ``changepoint`` column when there is one). ``mask`` restricts only the point
    counts; NAB and events always use every row given.
    """
    cps = changepoints_from_labels(labels) if changepoints is None else changepoints
    return Evaluation(
        counts=point_counts(labels, pred, mask),
        nab=nab_raw(
            cps,
            pred,
            ts_ms,
            window_ms=window_ms,
            placement=placement,
            profiles=profiles,
            reference_steps=reference_steps,
        ),
        events=tuple(event_detection(labels, pred, ts_ms)),
    )
