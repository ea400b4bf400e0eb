"""The retraining service: refit on a schedule or on request, keep data normal,
gate, register, promote, announce. Thin: the steps live in retrain.py and
exclusions.py.

Requests arrive on the control topic (``topics.models``) under the key
``retrain`` (``stream-ae trainer trigger`` writes one); the service acts on a
request newer than its last run.

Every ``trainer.drift_check_s`` it scores the last ``trainer.drift_lookback_s``
of readings with the champion and logs the drift (:class:`DriftCheck`). Only
with ``trainer.drift_refit`` on does a drift score at or above
``trainer.drift_refit_threshold`` start a round, at most once per
``trainer.drift_refit_min_interval_s``. Each round's report (``models show``)
says what started it: ``trigger`` = schedule | request | drift (manual for
``trainer run --once``), with the details in ``trigger_detail``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from stream_ae import schemas
from stream_ae.decide.drift import DriftMonitor
from stream_ae.errors import ConfigError, DataError, StreamAEError
from stream_ae.io.kafka import ControlWatcher, iter_values, publish_control, read_range
from stream_ae.readings_io import Readings, read_topic, to_windows
from stream_ae.registry import Registry
from stream_ae.schemas import AnomalyEvent, FeedbackEvent
from stream_ae.service import announce_champion, ensure_control_topic, model_grid
from stream_ae.settings import Settings
from stream_ae.windowing import WindowBatch
from trainers.exclusions import Exclusions, exclusion_mask
from trainers.retrain import RetrainResult, retrain

if TYPE_CHECKING:
    from stream_ae.model.artifact import LoadedModel

log = logging.getLogger(__name__)

RETRAIN_KEY = b"retrain"


class RetrainRequest(msgspec.Struct, frozen=True, kw_only=True):
    requested_at_ms: int
    by: str = ""
    reason: str = ""


def request_retrain(settings: Settings, *, by: str, reason: str) -> RetrainRequest:
    req = RetrainRequest(requested_at_ms=time.time_ns() // 1_000_000, by=by, reason=reason)
    ensure_control_topic(settings)
    publish_control(settings.kafka, settings.topics.models, RETRAIN_KEY, msgspec.json.encode(req))
    return req


@dataclass(frozen=True)
class DriftCheck:
    """One drift check: the champion's drift on recent readings and what it led to."""

    at_ms: int
    champion: str | None
    #: DriftMonitor.report() (``drift_score``, ``input_shift_max``, …); empty when
    #: nothing could be measured (no champion, no readings: see ``why``).
    report: dict[str, Any] = field(default_factory=dict)
    refit: bool = False
    why: str = ""

    @property
    def score(self) -> float | None:
        value = self.report.get("drift_score")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": schemas.iso_ms(self.at_ms),
            "champion": self.champion,
            "drift": self.report,
            "refit": self.refit,
            "why": self.why,
        }


def _drift_report(md: Any, windows: WindowBatch, scores: np.ndarray) -> dict[str, Any]:
    """Drift of these windows and the model's scores against its training period."""
    monitor = DriftMonitor.from_metadata(md, horizon=len(scores))
    monitor.update(windows.values, scores, windows.asset_ids)
    return monitor.report()


def _read(settings: Settings, topic: str, start_ms: int) -> list[Any]:
    try:
        return list(iter_values(read_range(settings.kafka, topic, start_ms=start_ms)))
    except StreamAEError as exc:  # a topic that does not exist yet holds nothing
        log.info("nothing read from %s: %s", topic, exc)
        return []


class TrainerService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.trainer.registry.mkdir(parents=True, exist_ok=True)  # the trainer fills it
        self.registry = Registry(settings.trainer.registry)
        self._stop = False
        self.last_run_ms = 0
        self.last_drift_refit_ms: int | None = None  # when a drift check last started a round
        self.last_drift: DriftCheck | None = None
        self._next_due = 0.0  # monotonic seconds: the next scheduled round
        self._next_drift = 0.0  # ... the next drift check

    def champion(self) -> LoadedModel | None:
        """The registry's champion, loaded and verified (None without one)."""
        version = self.registry.champion()
        return None if version is None else self._load(version)

    def _load(self, version: str) -> LoadedModel:
        """Registered ``version``, loaded and verified."""
        from stream_ae.model.artifact import load_artifact

        return load_artifact(self.registry.path_of(version), device="cpu")

    def channels(self, champion: LoadedModel | None) -> list[str]:
        if self.settings.trainer.channels:
            return list(self.settings.trainer.channels)
        if champion is None:
            raise ConfigError(
                "trainer.channels is empty and the registry has no champion to take them from",
                hint='set trainer.channels (e.g. --set trainer.channels=\'["a","b"]\')',
            )
        return list(champion.metadata.channels)

    def run_once(
        self,
        now_ms: int | None = None,
        *,
        trigger: str = "manual",
        detail: dict[str, Any] | None = None,
    ) -> RetrainResult:
        """One round on the last ``trainer.lookback_s`` of readings; ``trigger`` (schedule,
        request, drift, manual) and ``detail`` go into the report and the decision."""
        s = self.settings
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        start = now - int(s.trainer.lookback_s * 1000)
        champion = self.champion()  # loaded once: channels, exclusions, golden gate
        channels = self.channels(champion)
        readings, source = read_topic(s, schemas.iso_ms(start), schemas.iso_ms(now), channels)
        events = [
            msgspec.json.decode(m.value(), type=AnomalyEvent)
            for m in _read(s, s.topics.anomalies, start)
        ]
        feedback, problems = schemas.feedback_events(_read(s, s.topics.feedback, 0))
        for problem in problems:
            log.warning("%s", problem)
        exclude = self._excluder(events, feedback, now, champion, channels)
        log.info(
            "retraining (%s) on %d readings from %s (%d events, %d feedback records)",
            trigger,
            len(readings),
            source,
            len(events),
            len(feedback),
        )
        result = retrain(
            readings,
            s,
            source=source,
            registry=self.registry,
            method=s.trainer.threshold_method,
            far_target=s.trainer.far_target,
            far_factor=s.trainer.far_factor,
            far_per_day=s.trainer.far_per_day,
            promote=s.trainer.promote,
            announce=self._announce,
            exclude=exclude,
            max_excluded_share=s.trainer.max_excluded_share,
            golden=s.trainer.golden_set,
            golden_tolerance=s.trainer.golden_tolerance,
            trigger=trigger,
            trigger_detail=detail,
            champion=champion,
        )
        self.last_run_ms = now
        log.info(
            "candidate %s: gate %s, %s",
            result.version,
            "passed" if result.passed else "failed",
            "promoted"
            if result.promoted
            else ("rejected" if not result.passed else "held (trainer.promote is off)"),
        )
        return result

    def _excluder(
        self,
        events: list[AnomalyEvent],
        feedback: list[FeedbackEvent],
        now: int,
        loaded: LoadedModel | None,
        channels: list[str],
    ) -> Callable[[WindowBatch], Exclusions]:
        """Exclusions from events, feedback and the champion's own alarms (when the
        champion can score these windows: the same channels, in the same order, and
        window size), each window judged by its asset's threshold."""

        def exclude(windows: WindowBatch) -> Exclusions:
            scores = threshold = None
            if loaded is not None:
                md = loaded.metadata
                if list(md.channels) == channels and windows.values.shape[2] == md.window:
                    scores = np.asarray(loaded.scorer.score(windows.values).scores)
                    threshold = md.asset_thresholds.values_for(windows.asset_ids)
            ex = exclusion_mask(
                windows,
                events=events,
                feedback=feedback,
                champion_scores=scores,
                champion_threshold=threshold,
                open_end_ms=now,
            )
            if scores is not None and loaded is not None:
                ex.drift = _drift_report(loaded.metadata, windows, scores)
            return ex

        return exclude

    # -- drift ---------------------------------------------------------------------------

    def recent_readings(self, now_ms: int, channels: list[str]) -> Readings:
        """The last ``trainer.drift_lookback_s`` of the readings topic (the drift check's
        input; a test replaces it)."""
        start = now_ms - int(self.settings.trainer.drift_lookback_s * 1000)
        readings, _ = read_topic(
            self.settings, schemas.iso_ms(start), schemas.iso_ms(now_ms), channels
        )
        return readings

    def measure_drift(self, loaded: Any, readings: Readings) -> dict[str, Any]:
        """The champion ``loaded``'s drift report on ``readings``: its windows (the
        scorer's windowing, the champion's grid), scored, through a DriftMonitor."""
        md = loaded.metadata
        missing = [c for c in md.channels if c not in readings.channels]
        if missing:
            raise DataError(f"the recent readings lack the champion's channels {missing}")
        windows = to_windows(readings.project(md.channels), model_grid(md, self.settings))
        if not len(windows):
            return {"windows": 0, "drifted": False}
        return _drift_report(md, windows, np.asarray(loaded.scorer.score(windows.values).scores))

    def decide_drift(self, report: dict[str, Any], now_ms: int) -> tuple[bool, str]:
        """Whether a drift report starts a round (pure: settings and the time of the
        last drift-triggered round), and why (for the log and the report)."""
        t = self.settings.trainer
        score = report.get("drift_score")
        if score is None:
            return False, "no drift score (no windows to measure)"
        if score < t.drift_refit_threshold:
            return False, f"drift score {score:g} < threshold {t.drift_refit_threshold:g}"
        above = f"drift score {score:g} >= threshold {t.drift_refit_threshold:g}"
        if not t.drift_refit:
            return False, f"{above}, but trainer.drift_refit is off"
        if self.last_drift_refit_ms is not None:
            wait_ms = self.last_drift_refit_ms + int(t.drift_refit_min_interval_s * 1000)
            if now_ms < wait_ms:
                return False, (
                    f"{above}, but the last drift refit was at "
                    f"{schemas.iso_ms(self.last_drift_refit_ms)} (next allowed "
                    f"{schemas.iso_ms(wait_ms)}, trainer.drift_refit_min_interval_s)"
                )
        return True, above

    def check_drift(self, now_ms: int, readings: Readings | None = None) -> DriftCheck:
        """Measure the champion's drift on ``readings`` (default: the recent readings
        topic), decide, log, and remember it as ``last_drift``. Never raises for data
        or broker trouble: that is logged and the check refits nothing."""
        champion = self.registry.champion()
        if champion is None:
            check = DriftCheck(now_ms, None, why="no champion to compare with")
        else:
            try:
                loaded = self._load(champion)
                if readings is None:
                    readings = self.recent_readings(now_ms, list(loaded.metadata.channels))
                report = self.measure_drift(loaded, readings)
            except StreamAEError as exc:
                check = DriftCheck(now_ms, champion, why=f"not measured: {exc}")
            else:
                refit, why = self.decide_drift(report, now_ms)
                check = DriftCheck(now_ms, champion, report, refit, why)
        level = logging.WARNING if check.refit or (check.score or 0) >= 1.0 else logging.INFO
        log.log(
            level,
            "drift check: champion %s, drift_score %s: %s%s %s",
            check.champion,
            check.score,
            check.why,
            "; refitting" if check.refit else "",
            check.report,
        )
        self.last_drift = check
        return check

    # -- the loop --------------------------------------------------------------------------

    def step(self, now_ms: int, mono: float, request: RetrainRequest | None) -> str | None:
        """One turn of the loop at wall time ``now_ms`` and monotonic time ``mono``: run
        a round when asked (a request newer than the last round), when due, or when a
        drift check calls for one. Returns the round's trigger, or None."""
        t = self.settings.trainer
        trigger: str | None = None
        detail: dict[str, Any] = {}
        if request is not None and request.requested_at_ms > self.last_run_ms:
            trigger = "request"
            detail = {"by": request.by, "reason": request.reason}
            detail["requested_at"] = schemas.iso_ms(request.requested_at_ms)
        elif mono >= self._next_due:
            trigger, detail = "schedule", {"interval_s": t.interval_s}
        elif t.drift_check_s > 0 and mono >= self._next_drift:
            self._next_drift = mono + t.drift_check_s
            check = self.check_drift(now_ms)
            if check.refit:
                trigger, detail = "drift", check.to_dict()
                self.last_drift_refit_ms = now_ms
        if trigger is None:
            return None
        if trigger != "drift" and self.last_drift is not None:
            detail["last_drift_check"] = self.last_drift.to_dict()
        try:
            self.run_once(now_ms, trigger=trigger, detail=detail)
        except StreamAEError as exc:
            log.error("retraining (%s) failed: %s", trigger, exc)
            self.last_run_ms = now_ms
        self._next_due = mono + t.interval_s
        return trigger

    def _announce(self, version: str) -> None:
        ann = announce_champion(self.settings, self.registry.path_of(version))
        log.info("announced %s on %s", ann.version, self.settings.topics.models)

    def request_stop(self) -> None:
        self._stop = True

    def run(self) -> None:
        """Refit every ``trainer.interval_s``, on requests and (when on) on drift, until
        SIGTERM/SIGINT."""
        s = self.settings

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping after the current step", signal.Signals(signum).name)
            self._stop = True

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        ensure_control_topic(s)
        watcher = ControlWatcher(s.kafka, s.topics.models)
        self._next_due = time.monotonic()  # a round at start-up
        self._next_drift = time.monotonic() + s.trainer.drift_check_s
        try:
            while not self._stop:
                raw = watcher.latest(RETRAIN_KEY)
                request = None if raw is None else msgspec.json.decode(raw, type=RetrainRequest)
                self.step(time.time_ns() // 1_000_000, time.monotonic(), request)
                time.sleep(1.0)
        finally:
            watcher.close()
