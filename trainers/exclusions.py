"""Keeping training data normal: which windows to leave out, and why.

A window is excluded when it overlaps, for its asset:

* an anomaly event already emitted (``anomaly_event``), unless a ``false_alarm``
  feedback record covers that event's window — an engineer said it was normal;
* a maintenance period or an acknowledged fault from the feedback topic
  (``maintenance``, ``acknowledged_fault``);
* or the current champion scores it above its own threshold (``champion_alarm``).

False-alarm feedback is also returned as a calibration signal: those windows
are normal operation the model found unusual. :func:`exclusion_mask` is pure
numpy; :func:`read_exclusion_records` reads the anomalies and feedback topics
and :func:`champion_excluder` builds the ``exclude`` callable a retraining round
(trainers/retrain.py) applies, for every caller that trains on a topic range
(``stream-ae retrain --from/--to``; the trainer service builds the same thing in
``TrainerService._excluder``, which could call these two instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from stream_ae import schemas
from stream_ae.errors import StreamAEError
from stream_ae.schemas import AnomalyEvent, FeedbackEvent
from stream_ae.windowing import WindowBatch

if TYPE_CHECKING:
    from stream_ae.model.artifact import LoadedModel
    from stream_ae.settings import Settings

log = logging.getLogger(__name__)

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


# -- for the callers that read the topics ------------------------------------------------


def read_topic_values(settings: Settings, topic: str, start_ms: int) -> list[Any]:
    from stream_ae.io.kafka import iter_values, read_range

    try:
        return list(iter_values(read_range(settings.kafka, topic, start_ms=start_ms)))
    except StreamAEError as exc:  # a topic that does not exist yet holds nothing
        log.info("nothing read from %s: %s", topic, exc)
        return []


#: per round, the records of the anomalies topic that are not events logged one by
#: one; the others are counted in one summary line
SKIPPED_LOGGED = 3


def anomaly_events(messages: list[Any], topic: str) -> list[AnomalyEvent]:
    """The anomaly events among ``messages``, decoded one by one. A record that is not
    one (another producer's, an older schema, a truncated value) is skipped: decoding
    them all at once let one such record stop every round until it left the look-back.
    The first :data:`SKIPPED_LOGGED` are logged where they are, the rest counted."""
    events: list[AnomalyEvent] = []
    skipped = 0
    for m in messages:
        try:
            events.append(msgspec.json.decode(m.value() or b"", type=AnomalyEvent))
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            skipped += 1
            if skipped <= SKIPPED_LOGGED:
                log.warning(
                    "record skipped (%s partition %s offset %s): not an anomaly event: %s",
                    topic,
                    m.partition(),
                    m.offset(),
                    exc,
                )
    if skipped > SKIPPED_LOGGED:
        log.warning(
            "%d records of %s skipped in all: not anomaly events (the first %d logged above)",
            skipped,
            topic,
            SKIPPED_LOGGED,
        )
    return events


def read_exclusion_records(
    settings: Settings, start_ms: int
) -> tuple[list[AnomalyEvent], list[FeedbackEvent]]:
    """What the exclusions need from the broker, read as the trainer service reads
    it: the anomaly events on ``topics.anomalies`` from ``start_ms`` (the start of the
    training range) to the topic's end, and every feedback record on
    ``topics.feedback`` from its beginning (a maintenance may have started before the
    range). A topic that does not exist yet holds nothing; a feedback record that is
    not one is logged and skipped."""
    topic = settings.topics.anomalies
    events = anomaly_events(read_topic_values(settings, topic, start_ms), topic)
    feedback, problems = schemas.feedback_events(
        read_topic_values(settings, settings.topics.feedback, 0)
    )
    for problem in problems:
        log.warning("%s", problem)
    return events, feedback


def drift_report(md: Any, windows: WindowBatch, scores: np.ndarray) -> dict[str, Any]:
    """Drift of these windows and the model's scores against its training period
    (the same as trainers/service.py's ``_drift_report``)."""
    from stream_ae.decide.drift import DriftMonitor

    monitor = DriftMonitor.from_metadata(md, horizon=len(scores))
    monitor.update(windows.values, scores, windows.asset_ids)
    return monitor.report()


def champion_excluder(
    events: Sequence[AnomalyEvent],
    feedback: Sequence[FeedbackEvent],
    *,
    open_end_ms: int,
    champion: LoadedModel | None,
    channels: Sequence[str],
) -> Callable[[WindowBatch], Exclusions]:
    """The ``exclude`` of a retraining round: windows overlapping ``events`` or the
    maintenance and faults in ``feedback`` (open ones run to ``open_end_ms``), and the
    windows ``champion`` alarms on, each judged by its asset's threshold — when the
    champion can score these windows (the same ``channels``, in the same order, and
    window size); with it, the drift of the new data against its training period."""
    chans = list(channels)

    def exclude(windows: WindowBatch) -> Exclusions:
        scores = threshold = None
        if champion is not None:
            md = champion.metadata
            if list(md.channels) == chans and windows.values.shape[2] == md.window:
                scores = np.asarray(champion.scorer.score(windows.values).scores)
                threshold = md.asset_thresholds.values_for(windows.asset_ids)
        ex = exclusion_mask(
            windows,
            events=events,
            feedback=feedback,
            champion_scores=scores,
            champion_threshold=threshold,
            open_end_ms=open_end_ms,
        )
        if scores is not None and champion is not None:
            ex.drift = drift_report(champion.metadata, windows, scores)
        return ex

    return exclude
