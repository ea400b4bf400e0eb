"""Scores → anomaly events. No torch, no Kafka: numbers in, records out.

A window is anomalous when ``score > threshold``. Severity comes from the ratio
``score / threshold``: ``warning`` below ``high_ratio``, ``high`` below
``critical_ratio``, ``critical`` above. The top channels are those with the
largest share of the window's reconstruction error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_ae.decide.persistence import Persistence
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
from stream_ae.windowing.windower import Gap


def severity_of(ratio: float, high_ratio: float, critical_ratio: float) -> Severity:
    if ratio >= critical_ratio:
        return "critical"
    if ratio >= high_ratio:
        return "high"
    return "warning"


@dataclass(frozen=True)
class Decider:
    threshold: float
    model_version: str
    channels: Sequence[str]
    high_ratio: float = 2.0
    critical_ratio: float = 4.0
    top_channels: int = 3
    persistence: Persistence | None = None

    def anomalous(self, scores: np.ndarray, windows: WindowBatch | None = None) -> np.ndarray:
        """Above the threshold, and — with persistence — ``k`` of the asset's last ``n``."""
        above = scores > self.threshold
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
    ) -> list[AnomalyEvent]:
        """One event per window whose score exceeds the threshold, in input order."""
        idx = np.flatnonzero(self.anomalous(scores, windows))
        if not len(idx):
            return []
        detected = iso_ms(now_ms)
        k = min(self.top_channels, len(self.channels))
        top = np.argsort(-shares[idx], axis=1, kind="stable")[:, :k]
        out = []
        for row, i in enumerate(idx.tolist()):
            score = float(scores[i])
            ratio = score / self.threshold if self.threshold > 0 else float("inf")
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
                    threshold=self.threshold,
                    score_ratio=ratio,
                    severity=severity_of(ratio, self.high_ratio, self.critical_ratio),
                    top_channels=[
                        ChannelShare(self.channels[c], round(float(shares[i, c]), 4))
                        for c in top[row].tolist()
                    ],
                    model_version=self.model_version,
                    detected_at=detected,
                )
            )
        return out

    def score_records(self, windows: WindowBatch, scores: np.ndarray) -> list[ScoreRecord]:
        return [
            ScoreRecord(
                asset_id=a,
                window_start_ms=s,
                window_end_ms=e,
                score=sc,
                threshold=self.threshold,
                model_version=self.model_version,
            )
            for a, s, e, sc in zip(
                windows.asset_ids,
                windows.start_ms.tolist(),
                windows.end_ms.tolist(),
                scores.tolist(),
                strict=True,
            )
        ]


def quality_events(gaps: Sequence[Gap], *, now_ms: int, period_ms: int) -> list[DataQualityEvent]:
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
    return out
