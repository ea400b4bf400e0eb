"""Keeping training data normal: which windows to leave out, and why.

A window is excluded when it overlaps, for its asset:

* an anomaly event already emitted (``anomaly_event``), unless a ``false_alarm``
  feedback record covers that event's window — an engineer said it was normal;
* a maintenance period or an acknowledged fault from the feedback topic
  (``maintenance``, ``acknowledged_fault``);
* or the current champion scores it above its own threshold (``champion_alarm``).

False-alarm feedback is also returned as a calibration signal: those windows
are normal operation the model found unusual. Pure numpy; the trainer service
reads the topics and calls :func:`exclusion_mask`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_ae.schemas import AnomalyEvent, FeedbackEvent
from stream_ae.windowing import WindowBatch

Intervals = Mapping[str, Sequence[tuple[int, int]]]  # asset -> [(start_ms, end_ms)), sorted


@dataclass
class Exclusions:
    mask: np.ndarray  # (B,) bool: True = leave out
    reasons: dict[str, int] = field(default_factory=dict)  # windows per reason (overlapping)
    false_alarm_windows: int = 0
    #: the new data against the champion's training period (decide/drift.py)
    drift: dict[str, Any] | None = None

    @property
    def excluded(self) -> int:
        return int(self.mask.sum())

    def share(self) -> float:
        return float(self.mask.mean()) if len(self.mask) else 0.0


def _intervals(pairs: Iterable[tuple[str, int, int]]) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for asset, start, end in pairs:
        out.setdefault(asset, []).append((start, end))
    return {a: sorted(v) for a, v in out.items()}


def overlaps(windows: WindowBatch, intervals: Intervals) -> np.ndarray:
    """(B,) bool: the window [start, end) overlaps one of its asset's intervals."""
    hit = np.zeros(len(windows), bool)
    assets = np.asarray(windows.asset_ids, dtype=object)
    for asset, spans in intervals.items():
        if not spans:
            continue
        sel = np.flatnonzero(assets == asset)
        if not len(sel):
            continue
        starts = np.array([s for s, _ in spans], np.int64)
        ends = np.maximum.accumulate(np.array([e for _, e in spans], np.int64))
        ws, we = windows.start_ms[sel], windows.end_ms[sel]
        # the last interval starting before the window's end: does it reach past its start?
        k = np.searchsorted(starts, we, side="left") - 1
        ok = k >= 0
        hit[sel[ok]] = ends[k[ok]] > ws[ok]
    return hit


def feedback_intervals(
    feedback: Sequence[FeedbackEvent], *, open_end_ms: int
) -> tuple[dict[str, list[tuple[int, int]]], dict[str, list[tuple[int, int]]]]:
    """→ (intervals to exclude, false-alarm intervals). A maintenance start without an
    end runs to ``open_end_ms`` (the end of the training range)."""
    exclude: list[tuple[str, int, int]] = []
    false_alarms: list[tuple[str, int, int]] = []
    open_maintenance: dict[str, int] = {}
    for f in sorted(feedback, key=lambda f: f.start_ms):
        if f.kind == "false_alarm":
            false_alarms.append((f.asset_id, f.start_ms, f.end_ms or f.start_ms + 1))
        elif f.kind == "maintenance_start":
            open_maintenance[f.asset_id] = f.start_ms
        elif f.kind == "maintenance_end":
            began = open_maintenance.pop(f.asset_id, None)
            exclude.append((f.asset_id, f.start_ms if began is None else began, f.start_ms + 1))
        else:  # acknowledged_fault, maintenance (with both ends)
            exclude.append((f.asset_id, f.start_ms, f.end_ms or open_end_ms))
    exclude += [(a, s, open_end_ms) for a, s in open_maintenance.items()]
    return _intervals(exclude), _intervals(false_alarms)


def exclusion_mask(
    windows: WindowBatch,
    *,
    events: Sequence[AnomalyEvent] = (),
    feedback: Sequence[FeedbackEvent] = (),
    champion_scores: np.ndarray | None = None,
    champion_threshold: float | np.ndarray | None = None,
    open_end_ms: int | None = None,
) -> Exclusions:
    end = open_end_ms if open_end_ms is not None else int(windows.end_ms.max(initial=0))
    excl, false_alarm = feedback_intervals(feedback, open_end_ms=end)
    cleared = overlaps(windows, false_alarm)
    event_hit = (
        overlaps(
            windows, _intervals((e.asset_id, e.window_start_ms, e.window_end_ms) for e in events)
        )
        & ~cleared
    )
    feedback_hit = overlaps(windows, excl)
    champion_hit = np.zeros(len(windows), bool)
    if champion_scores is not None and champion_threshold is not None:
        champion_hit = (champion_scores > champion_threshold) & ~cleared
    mask = event_hit | feedback_hit | champion_hit
    return Exclusions(
        mask=mask,
        reasons={
            "anomaly_event": int(event_hit.sum()),
            "maintenance_or_fault": int(feedback_hit.sum()),
            "champion_alarm": int(champion_hit.sum()),
        },
        false_alarm_windows=int(cleared.sum()),
    )
