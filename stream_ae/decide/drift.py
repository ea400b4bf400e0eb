"""Drift: are recent inputs and scores still like the training period's?

Two signals, both cheap and pure numpy:

* **inputs** — per channel, the shift of the recent mean from the training
  mean in training standard deviations (``|μ_recent − μ_train| / σ_train``);
* **scores** — the recent median score over the held-out median at training
  time, and the recent share of windows above the threshold (each window's own
  asset's threshold where the model has one, as the scorer decides) against
  the held-out share.

"Recent" is an exponentially weighted average over about ``horizon`` windows.
``drift_score`` puts both on one scale: the larger of the input shift over its
limit and the score ratio over its limit, so 1.0 is where ``drifted`` turns true.
Drift is reported (scorer stats log, metrics, retrain reports), never acted on
by default: an automatic refit on drifted data can learn the fault
(``trainer.drift_refit`` opts in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_ae.decide.threshold import per_window

INPUT_SHIFT_LIMIT = 3.0  # training standard deviations
SCORE_RATIO_LIMIT = 2.0


@dataclass
class DriftMonitor:
    reference_mean: np.ndarray  # (C,) raw units
    reference_std: np.ndarray  # (C,)
    channels: list[str]
    holdout_p50: float | None = None
    holdout_exceed: float | None = None
    threshold: float | None = None
    #: per-asset thresholds (asset -> value); other assets use ``threshold``
    per_asset: Mapping[str, float] = field(default_factory=dict)
    horizon: int = 5000
    _mean: np.ndarray | None = field(default=None, repr=False)
    _log_score: float | None = None
    _exceed: float | None = None
    windows: int = 0

    @classmethod
    def from_metadata(cls, md: Any, horizon: int = 5000) -> DriftMonitor:
        m = md.metrics or {}
        return cls(
            reference_mean=np.asarray(md.scaler["mean"], np.float64),
            reference_std=np.asarray(md.scaler["std"], np.float64),
            channels=list(md.channels),
            holdout_p50=m.get("holdout_score_p50"),
            holdout_exceed=m.get("holdout_exceed_fraction"),
            threshold=md.threshold_spec.value,
            per_asset=md.asset_thresholds.lookup,
            horizon=horizon,
        )

    def update(
        self, windows: np.ndarray, scores: np.ndarray, asset_ids: Sequence[str] | None = None
    ) -> None:
        """``windows`` (B, C, W) raw values, ``scores`` (B,), ``asset_ids`` (B,) for
        per-asset thresholds (without them every window is judged by the fleet's)."""
        b = len(scores)
        if not b:
            return
        alpha = 1.0 - (1.0 - 1.0 / self.horizon) ** b  # weight of this batch as a whole
        mean = windows.mean(axis=(0, 2), dtype=np.float64)
        log_score = float(np.median(np.log(np.maximum(scores, 1e-12))))
        exceed = 0.0
        if self.threshold is not None:
            limit: float | np.ndarray = self.threshold
            if self.per_asset and asset_ids is not None:
                limit = per_window(self.per_asset, self.threshold, asset_ids)
            exceed = float(np.mean(scores > limit))
        if self._mean is None:
            self._mean, self._log_score, self._exceed = mean, log_score, exceed
        else:
            self._mean = (1 - alpha) * self._mean + alpha * mean
            self._log_score = (1 - alpha) * (self._log_score or 0.0) + alpha * log_score
            self._exceed = (1 - alpha) * (self._exceed or 0.0) + alpha * exceed
        self.windows += b

    def report(self) -> dict[str, Any]:
        if self._mean is None:
            return {"windows": 0, "drifted": False}
        shift = np.abs(self._mean - self.reference_mean) / np.maximum(self.reference_std, 1e-12)
        worst = int(np.argmax(shift))
        out: dict[str, Any] = {
            "windows": self.windows,
            "input_shift_max": round(float(shift[worst]), 3),
            "input_shift_channel": self.channels[worst],
            "recent_exceed_fraction": round(self._exceed or 0.0, 5),
            "holdout_exceed_fraction": self.holdout_exceed,
        }
        ratio = None
        if self.holdout_p50 and self._log_score is not None:
            ratio = float(np.exp(self._log_score)) / self.holdout_p50
            out["score_p50_ratio"] = round(ratio, 3)
        score = max(float(shift[worst]) / INPUT_SHIFT_LIMIT, (ratio or 0.0) / SCORE_RATIO_LIMIT)
        out["drift_score"] = round(score, 3)
        out["drifted"] = bool(
            shift[worst] > INPUT_SHIFT_LIMIT or (ratio is not None and ratio > SCORE_RATIO_LIMIT)
        )
        return out
