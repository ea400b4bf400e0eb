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
   the candidate would have on recent normal data it never saw; with
   ``trainer.per_asset_thresholds`` each asset with enough calibration windows
   gets its own threshold (the others the fleet one), every check window is
   judged by its asset's threshold and the gate reports the rate per asset;
4. the gate: that false-alarm rate must be within ``far_factor`` × the target
   (``far_target``), and with a golden set (``golden``: labelled CSV or
   ``sim:SEED``) the candidate's event recall on it must be at least the
   champion's − ``golden_tolerance`` (trainers/golden.py); the decision and its
   numbers go into the registry;
5. the candidate is registered (always) and promoted (only when it passes and
   ``promote`` is set, and the champion is still the one it was gated against:
   a promotion or rollback made by hand while the round trained wins, and the
   candidate is held with the reason); promotion announces the champion to
   running scorers (what ``CHAMPION`` says then, under the registry's writer
   lock: :meth:`Registry.announce`). Otherwise the decision log records it as
   rejected (with the failing rule) or held.

The registry is the record, the announcement only the notification: an
announcement that fails (the broker is away) leaves the promotion standing; the
result says so (``announce_error``) and the trainer service announces again.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from stream_ae.decide.threshold import (
    MS_PER_DAY,
    AssetThresholds,
    ThresholdSpec,
    calibrate_per_asset,
    calibrate_pot,
    calibrate_quantile,
    far_by_asset,
    rate_per_window_from_daily,
)
from stream_ae.errors import ConfigError, DataError, StreamAEError
from stream_ae.readings_io import Readings
from stream_ae.registry import CANDIDATE_PREFIX, ChampionChanged, Registry
from stream_ae.settings import Settings
from stream_ae.training import fit, training_windows, with_decision_rule
from stream_ae.windowing import WindowBatch
from trainers.exclusions import Exclusions
from trainers.golden import GoldenSet, apply_golden_gate, resolve_golden

if TYPE_CHECKING:
    from stream_ae.model.artifact import LoadedModel

log = logging.getLogger(__name__)

Method = Literal["quantile", "pot"]


@dataclass
class RetrainResult:
    version: str
    promoted: bool
    passed: bool
    report: dict[str, Any]
    #: promoted, but telling the running scorers failed (why): they serve the model
    #: they had until the champion is announced again
    announce_error: str | None = None
    #: why a candidate that passed was not promoted (promotion off, champion changed)
    held_reason: str | None = None
    #: the version announced (the champion when announcing: normally ``version``)
    announced: str | None = None


def calibrate(scores: np.ndarray, method: Method, far_target: float) -> ThresholdSpec:
    if method == "pot":
        return calibrate_pot(scores, target_rate=far_target)
    return calibrate_quantile(scores, 1.0 - far_target)


def calibrate_thresholds(
    scores: np.ndarray, asset_ids: list[str], method: Method, far_target: float, settings: Settings
) -> AssetThresholds:
    """The fleet threshold, plus per-asset ones when ``trainer.per_asset_thresholds`` is on."""
    tr = settings.trainer
    if not tr.per_asset_thresholds:
        return AssetThresholds(calibrate(scores, method, far_target))
    return calibrate_per_asset(
        scores,
        asset_ids,
        lambda s: calibrate(s, method, far_target),
        min_windows=tr.per_asset_min_windows,
    )


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
    golden: GoldenSet | str | Path | None = None,
    golden_tolerance: float = 0.05,
    far_per_day: float | None = None,
    trigger: str | None = None,
    trigger_detail: dict[str, Any] | None = None,
    champion: LoadedModel | None = None,
) -> RetrainResult:
    """``trigger`` (what started the round: schedule, request, drift, manual) and its
    details go into the report and the promotion decision."""
    from stream_ae.model.artifact import save_artifact

    # the champion this round is gated against: promotion requires it still to be champion
    if champion is not None:
        gated_against: str | None = champion.metadata.version
    else:
        gated_against = registry.champion_pointer() if registry.root.is_dir() else None
    hop_ms = settings.window.hop * settings.window.sample_period_ms
    if far_per_day is not None:  # a budget per asset per day, as the plant states it
        if far_per_day * hop_ms >= MS_PER_DAY:
            raise ConfigError(
                f"trainer.far_per_day={far_per_day:g} allows every window to alarm: an asset "
                f"has only {MS_PER_DAY / hop_ms:g} windows a day (hop {hop_ms} ms)",
                hint="set trainer.far_per_day (--far-per-day) to a small budget, e.g. 0.1",
            )
        far_target = rate_per_window_from_daily(far_per_day, hop_ms)
    golden_set = resolve_golden(golden, settings, readings.channels)  # fail before training
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
    held_assets = windows.asset_ids[n - n_hold :]  # aligned with held and scores
    scores = trained.scorer("cpu").score(held).scores
    half = len(scores) // 2
    calib, check = scores[:half], scores[half:]
    thresholds = calibrate_thresholds(calib, held_assets[:half], method, far_target, settings)
    spec = thresholds.fleet
    check_assets = held_assets[half:]
    limits = thresholds.values_for(check_assets)  # each window's own asset's threshold
    far = float(np.mean(check > limits)) if len(check) else float("nan")
    passed = bool(len(check) > 0 and far <= far_target * far_factor)
    gate: dict[str, Any] = {
        "far_target_per_window": far_target,
        "far_target_per_day": far_per_day,
        "far_measured_per_day": far * MS_PER_DAY / hop_ms if len(check) else None,
        "far_factor": far_factor,
        "far_measured": far,
        "n_calibration_windows": len(calib),
        "n_check_windows": len(check),
        "passed": passed,
        "rule": f"false alarms on unseen recent normal windows <= {far_factor} x target",
    }
    if thresholds.min_windows is not None:  # per asset: counts, FAR of each own threshold, worst
        gate["per_asset"] = far_by_asset(check, check_assets, thresholds)
    # same weights, so the same version and hash: only threshold and metrics change
    metadata = trained.metadata.model_copy(
        update={
            "threshold": thresholds.to_dict(),
            "metrics": {**trained.metadata.metrics, "gate": gate},
        }
    )
    candidate = with_decision_rule(dataclasses.replace(trained, metadata=metadata), settings)
    candidate, gate = apply_golden_gate(
        candidate,
        gate,
        golden_set,
        registry=registry,
        settings=settings,
        tolerance=golden_tolerance,
        champion=champion,
    )
    passed = bool(gate["passed"])
    report = {
        "source": source,
        "data": data_info,
        "threshold": spec.to_dict(),
        "gate": gate,
        "metrics": {"far_check": far, **trained.metadata.metrics},
    }
    if trigger is not None:
        report["trigger"] = trigger
        report["trigger_detail"] = trigger_detail or {}
    registry.root.mkdir(parents=True, exist_ok=True)
    # saved next to the registry (same filesystem), then moved in atomically
    with tempfile.TemporaryDirectory(dir=registry.root, prefix=CANDIDATE_PREFIX) as tmp:
        saved = save_artifact(candidate, Path(tmp))
        version = registry.register(saved, report=report, move=True)
    promoted = False
    announce_error = announced = held_reason = None
    verdict = {"source": "retrain", **({"trigger": trigger} if trigger is not None else {})}
    if passed and promote:
        try:
            registry.promote(
                version,
                decision={
                    "reason": "retrain: gate passed",
                    **verdict,
                    "gate": gate,
                    "previous": gated_against,
                },
                expected_champion=gated_against,
            )
            promoted = True
        except ChampionChanged as exc:  # someone promoted or rolled back meanwhile: they win
            held_reason = (
                f"held: the champion changed during the round (gated against "
                f"{exc.expected or 'none'}, now {exc.actual or 'none'}); promote it by hand "
                f"if wanted: `stream-ae models promote {version} --registry {registry.root}`"
            )
            log.warning("candidate %s passed the gate but is %s", version, held_reason)
            registry.hold(
                version,
                decision={
                    "reason": held_reason,
                    **verdict,
                    "gate": gate,
                    "gated_against": exc.expected,
                    "champion_now": exc.actual,
                },
            )
        if promoted and announce is not None:
            send = announce

            def tell(current: str) -> str:
                send(current)
                return current

            try:
                # what CHAMPION says now, sent under the writer lock (see Registry.announce)
                announced = registry.announce(tell)
                if announced != version:
                    log.warning(
                        "promoted %s, but the champion is %s by now: announced %s",
                        version,
                        announced,
                        announced,
                    )
            except Exception as exc:  # promoted is promoted: the round must not look failed
                announce_error = str(exc) or type(exc).__name__
                log.warning(
                    "promoted %s; the promotion stands, but running scorers were not told: "
                    "%s (resend with `stream-ae models announce --registry %s`)",
                    version,
                    announce_error,
                    registry.root,
                    exc_info=not isinstance(exc, StreamAEError),  # not ours: where it broke
                )
    # otherwise the verdict goes into the registry too: held back, or rejected by the gate
    elif passed:
        held_reason = "retrain: gate passed; promotion is off"
        registry.hold(version, decision={"reason": held_reason, **verdict, "gate": gate})
    else:
        reason = "retrain: gate failed: " + "; ".join(gate_failures(gate))
        registry.reject(version, decision={"reason": reason, **verdict, "gate": gate})
    return RetrainResult(version, promoted, passed, report, announce_error, held_reason, announced)


def gate_failures(gate: dict[str, Any]) -> list[str]:
    """The rules a failed ``gate`` broke, in words, with the numbers that broke them."""
    failures = []
    if not gate.get("far_passed", gate["passed"]):  # far_passed: set by the golden gate
        if not gate["n_check_windows"]:
            failures.append("no held-out windows to measure false alarms on")
        else:
            failures.append(
                f"false alarms on unseen recent normal windows {gate['far_measured']:.4%} > "
                f"{gate['far_factor']:g} x target {gate['far_target_per_window']:.4%}"
            )
    golden = gate.get("golden")
    if golden is not None and not golden["passed"]:
        failures.append(f"golden set: {golden['verdict']}")
    return failures or [str(gate["rule"])]
