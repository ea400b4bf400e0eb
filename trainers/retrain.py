"""One retraining round: fit a candidate, calibrate, gate it, register, maybe promote.

Used by ``stream-ae retrain`` and ``scripts/retrain.sh``. Steps:

1. windows from the readings with the scorer's own windowing (labelled anomalies
   in a CSV are left out), minus the windows ``exclude`` names (emitted events,
   maintenance, acknowledged faults, champion alarms: trainers/exclusions.py);
   refused when more than ``max_excluded_share`` would go, or too little is left;
2. fit the autoencoder; its most recent windows are held out, in time order;
3. the held-out windows are split in two: the first half calibrates the
   threshold (``quantile`` or ``pot`` — peaks over threshold for a target
   false-alarm rate per window), the second half measures the false-alarm rate
   the candidate would have on recent normal data it never saw;
4. the gate: that false-alarm rate must be within ``far_factor`` × the target
   (``far_target``); the decision and its numbers go into the registry;
5. the candidate is registered (always) and promoted (only when it passes and
   ``promote`` is set); promotion announces it to running scorers.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream_ae.decide.threshold import ThresholdSpec, calibrate_pot, calibrate_quantile
from stream_ae.errors import DataError
from stream_ae.readings_io import Readings
from stream_ae.registry import Registry
from stream_ae.settings import Settings
from stream_ae.training import fit, training_windows, with_decision_rule
from stream_ae.windowing import WindowBatch
from trainers.exclusions import Exclusions

Method = Literal["quantile", "pot"]


@dataclass
class RetrainResult:
    version: str
    registered: bool
    promoted: bool
    passed: bool
    report: dict[str, Any]


def calibrate(scores: np.ndarray, method: Method, far_target: float) -> ThresholdSpec:
    if method == "pot":
        return calibrate_pot(scores, target_rate=far_target)
    return calibrate_quantile(scores, 1.0 - far_target)


def retrain(
    readings: Readings,
    settings: Settings,
    *,
    source: str,
    registry: Registry,
    method: Method = "quantile",
    far_target: float = 0.005,
    far_factor: float = 2.0,
    promote: bool = True,
    announce: Callable[[str], None] | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    exclude: Callable[[WindowBatch], Exclusions] | None = None,
    max_excluded_share: float = 0.5,
) -> RetrainResult:
    from stream_ae.model.artifact import save_artifact

    windows, data_info = training_windows(readings, settings)
    if exclude is not None:
        ex = exclude(windows)
        data_info["exclusions"] = {
            "windows": len(windows),
            "excluded": ex.excluded,
            "share": round(ex.share(), 4),
            "by_reason": ex.reasons,
            "false_alarm_windows_kept": ex.false_alarm_windows,
            "champion_drift": ex.drift,
        }
        if ex.share() > max_excluded_share:
            raise DataError(
                f"refusing to train: {ex.share():.0%} of {len(windows)} windows would be "
                f"excluded ({ex.reasons}), more than the allowed {max_excluded_share:.0%}",
                hint="the range holds too much abnormal data; pick another time range or "
                "raise trainer.max_excluded_share after checking the data",
            )
        windows = windows.select(~ex.mask)
    t = settings.train
    trained = fit(windows, readings.channels, settings, {"source": source, **data_info}, progress)
    n = len(windows)
    n_hold = int(trained.metadata.training.get("n_holdout", max(1, round(n * t.holdout_fraction))))
    held = windows.values[n - n_hold :]
    scores = trained.scorer("cpu").score(held).scores
    half = len(scores) // 2
    calib, check = scores[:half], scores[half:]
    spec = calibrate(calib, method, far_target)
    far = float(np.mean(check > spec.value)) if len(check) else float("nan")
    passed = bool(len(check) > 0 and far <= far_target * far_factor)
    gate = {
        "far_target_per_window": far_target,
        "far_factor": far_factor,
        "far_measured": far,
        "n_calibration_windows": len(calib),
        "n_check_windows": len(check),
        "passed": passed,
        "rule": f"false alarms on unseen recent normal windows <= {far_factor} x target",
    }
    # same weights, so the same version and hash: only threshold and metrics change
    metadata = trained.metadata.model_copy(
        update={
            "threshold": spec.to_dict(),
            "metrics": {**trained.metadata.metrics, "gate": gate},
        }
    )
    candidate = with_decision_rule(dataclasses.replace(trained, metadata=metadata), settings)
    report = {
        "source": source,
        "data": data_info,
        "threshold": spec.to_dict(),
        "gate": gate,
        "metrics": {"far_check": far, **trained.metadata.metrics},
    }
    registry.root.mkdir(parents=True, exist_ok=True)
    # saved next to the registry (same filesystem), then moved in atomically
    with tempfile.TemporaryDirectory(dir=registry.root, prefix=".candidate-") as tmp:
        saved = save_artifact(candidate, Path(tmp))
        version = registry.register(saved, report=report, move=True)
    promoted = False
    if passed and promote:
        previous = registry.champion()
        registry.promote(
            version,
            decision={
                "reason": "retrain: gate passed",
                "source": "retrain",
                "gate": gate,
                "previous": previous,
            },
        )
        promoted = True
        if announce is not None:
            announce(version)
    return RetrainResult(version, True, promoted, passed, report)
