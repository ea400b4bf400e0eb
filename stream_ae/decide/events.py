"""Scores → anomaly events. No torch, no Kafka: numbers in, records out.

A window is anomalous when ``score > threshold``, where ``threshold`` is the
window's asset's own threshold when the model has one for it
(:class:`~stream_ae.decide.threshold.AssetThresholds`) and the fleet threshold
otherwise. Severity comes from the ratio ``score / threshold``: ``warning``
below ``high_ratio``, ``high`` below ``critical_ratio``, ``critical`` above.
Events and score records carry the threshold that judged them. The top
channels are those with the largest share of the window's reconstruction error.
An event whose window overlaps a known maintenance period of its asset is tagged
``during_maintenance`` (:mod:`stream_ae.decide.maintenance`), nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stream_ae.decide.maintenance import MaintenancePeriods
from stream_ae.decide.persistence import Persistence
from stream_ae.decide.threshold import per_window
from stream_ae.schemas import (
    AnomalyEvent,
    ChannelShare,
    DataQualityEvent,
    ScoreRecord,
    Severity,
    event_id,
    iso_ms,
)
from stream_ae.windowing import WindowBatch
from stream_ae.windowing.windower import Gap, GapAlert


def severity_of(ratio: float, high_ratio: float, critical_ratio: float) -> Severity:
    if ratio >= critical_ratio:
        return "critical"
    if ratio >= high_ratio:
        return "high"
    return "warning"


@dataclass(frozen=True)
class Decider:
    """``threshold`` is the fleet threshold; ``per_asset`` maps the assets that have
    their own (``AssetThresholds.lookup``) to it. Empty: one threshold for all."""

    threshold: float
    model_version: str
    channels: Sequence[str]
    high_ratio: float = 2.0
    critical_ratio: float = 4.0
    top_channels: int = 3
    persistence: Persistence | None = None
    per_asset: Mapping[str, float] = field(default_factory=dict)

    def thresholds(self, windows: WindowBatch) -> np.ndarray:
        """``(B,)`` float64: each window's threshold (its asset's own, else the fleet's)."""
        return per_window(self.per_asset, self.threshold, windows.asset_ids)

    def limits(self, windows: WindowBatch | None) -> float | np.ndarray:
        """The thresholds that judge ``windows``: the fleet threshold as a scalar when no
        asset has its own (no per-window work), else :meth:`thresholds`. Work it out
        once per batch and pass it to :meth:`events` and :meth:`score_records`."""
        if not self.per_asset:
            return self.threshold
        if windows is None:
            raise ValueError("a decider with per-asset thresholds needs the windows' asset ids")
        return self.thresholds(windows)

    def anomalous(
        self,
        scores: np.ndarray,
        windows: WindowBatch | None = None,
        limits: float | np.ndarray | None = None,
    ) -> np.ndarray:
        """Above the threshold, and — with persistence — ``k`` of the asset's last ``n``.

        With per-asset thresholds ``windows`` is required (its asset ids choose them).
        """
        above = scores > (self.limits(windows) if limits is None else limits)
        if self.persistence is None or windows is None:
            return above
        return self.persistence.apply(windows, above)

    def events(
        self,
        windows: WindowBatch,
        scores: np.ndarray,
        shares: np.ndarray,
        *,
        now_ms: int,
        limits: float | np.ndarray | None = None,
        maintenance: MaintenancePeriods | None = None,
    ) -> list[AnomalyEvent]:
        """One event per window whose score exceeds the threshold, in input order
        (``limits``: :meth:`limits` of these windows, when already worked out).
        ``maintenance``: the periods that tag an event ``during_maintenance``; they
        live with the pipeline, not the decider, as they outlast a model swap."""
        if limits is None:
            limits = self.limits(windows)
        idx = np.flatnonzero(self.anomalous(scores, windows, limits))
        if not len(idx):
            return []
        detected = iso_ms(now_ms)
        k = min(self.top_channels, len(self.channels))
        top = np.argsort(-shares[idx], axis=1, kind="stable")[:, :k]
        used = np.broadcast_to(limits, scores.shape)[idx].tolist()
        out = []
        for row, (i, threshold) in enumerate(zip(idx.tolist(), used, strict=True)):
            score = float(scores[i])
            ratio = score / threshold if threshold > 0 else float("inf")
            start, end = int(windows.start_ms[i]), int(windows.end_ms[i])
            asset = windows.asset_ids[i]
            out.append(
                AnomalyEvent(
                    event_id=event_id(asset, start, end, self.model_version),
                    asset_id=asset,
                    window_start_ms=start,
                    window_end_ms=end,
                    window_start=iso_ms(start),
                    window_end=iso_ms(end),
                    score=score,
                    threshold=threshold,
                    score_ratio=ratio,
                    severity=severity_of(ratio, self.high_ratio, self.critical_ratio),
                    top_channels=[
                        ChannelShare(self.channels[c], round(float(shares[i, c]), 4))
                        for c in top[row].tolist()
                    ],
                    model_version=self.model_version,
                    detected_at=detected,
                    during_maintenance=(
                        maintenance is not None and maintenance.covers(asset, start, end)
                    ),
                )
            )
        return out

    def score_records(
        self,
        windows: WindowBatch,
        scores: np.ndarray,
        limits: float | np.ndarray | None = None,
    ) -> list[ScoreRecord]:
        if limits is None:
            limits = self.limits(windows)
        used = limits.tolist() if isinstance(limits, np.ndarray) else [limits] * len(scores)
        return [
            ScoreRecord(
                asset_id=a,
                window_start_ms=s,
                window_end_ms=e,
                score=sc,
                threshold=t,
                model_version=self.model_version,
            )
            for a, s, e, sc, t in zip(
                windows.asset_ids,
                windows.start_ms.tolist(),
                windows.end_ms.tolist(),
                scores.tolist(),
                used,
                strict=True,
            )
        ]


def quality_events(
    gaps: Sequence[Gap],
    *,
    now_ms: int,
    period_ms: int,
    alerts: Sequence[GapAlert] = (),
    channels: Sequence[str] = (),
) -> list[DataQualityEvent]:
    """Data-quality events: each gap or silence, then each alert (``channels``: the
    model's channel names, which the alerts' channel indices refer to)."""
    detected = iso_ms(now_ms)
    out = []
    for g in gaps:
        if g.silent:
            kind, detail = (
                "silent_asset",
                (f"no reading since {iso_ms(g.start_ms)}; its open windows were closed"),
            )
        else:
            kind = "gap"
            missing = (g.end_ms - g.start_ms) // period_ms
            detail = f"{missing} grid steps without usable data; no window spans them"
        out.append(
            DataQualityEvent(
                event_id=event_id(kind, g.asset_id, g.start_ms, g.end_ms),
                kind=kind,  # type: ignore[arg-type]
                asset_id=g.asset_id,
                start_ms=g.start_ms,
                end_ms=g.end_ms,
                detail=detail,
                detected_at=detected,
            )
        )
    out.extend(_alert_event(a, detected, period_ms, channels) for a in alerts)
    return out


def _alert_event(
    a: GapAlert, detected: str, period_ms: int, channels: Sequence[str]
) -> DataQualityEvent:
    """One per open gap: the id has no end, so it names the gap (a replay of the same
    readings alerts the same gap at the same row anyway)."""
    names = ", ".join(channels[c] if c < len(channels) else f"#{c}" for c in a.missing)
    steps = (a.end_ms - a.start_ms) // period_ms
    return DataQualityEvent(
        event_id=event_id("channels_missing", a.asset_id, a.start_ms),
        kind="channels_missing",
        asset_id=a.asset_id,
        start_ms=a.start_ms,
        end_ms=a.end_ms,
        detail=(
            f"no usable row for {steps} grid steps and still none: no value within the "
            f"fill limit for {names}. No window of this asset is scored until they return: "
            "check the sensors, or retrain a model without these channels"
        ),
        detected_at=detected,
    )
