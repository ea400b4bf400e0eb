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

The service is long-running: nothing one round meets stops it. A record on the
anomalies topic that is not an event is skipped and logged (it stays in the
look-back for days and would stop every round until it left); a bad retrain
request is logged once and ignored; any other failure of a round or a drift
check is logged with its traceback and the loop goes on. A promotion whose
announcement failed stands, and the champion is announced again on the next
steps until the control topic takes it.
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
from stream_ae.errors import ConfigError, DataError, StreamAEError
from stream_ae.io.kafka import ControlWatcher, publish_control
from stream_ae.readings_io import Readings, read_topic, to_windows
from stream_ae.registry import Registry
from stream_ae.schemas import AnomalyEvent, FeedbackEvent
from stream_ae.service import announce_champion, ensure_control_topic, model_grid
from stream_ae.settings import Settings
from stream_ae.windowing import WindowBatch
from trainers.exclusions import (
    Exclusions,
    anomaly_events,
    champion_excluder,
    drift_report,
)
from trainers.exclusions import read_topic_values as _read
from trainers.retrain import RetrainResult, retrain

if TYPE_CHECKING:
    from stream_ae.model.artifact import LoadedModel

log = logging.getLogger(__name__)

RETRAIN_KEY = b"retrain"

#: seconds between two tries to announce a promotion whose announcement failed
ANNOUNCE_RETRY_S = 30.0


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


def decode_request(raw: bytes) -> RetrainRequest:
    """A retrain request as the control topic holds it; :class:`DataError` naming the
    topic key and the schema when it is not one."""
    try:
        return msgspec.json.decode(raw, type=RetrainRequest)
    except msgspec.DecodeError as exc:
        raise DataError(
            f"the retrain request on the control topic (key {RETRAIN_KEY.decode()}) is not "
            f"one: {exc}",
            hint="send a new one with `stream-ae trainer trigger`; a request is "
            '{"requested_at_ms": <epoch ms>, "by": "...", "reason": "..."}',
        ) from exc


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
        #: a promotion whose announcement failed: announce the champion again
        self.unannounced: str | None = None
        self._next_announce = 0.0  # monotonic seconds: the next try
        self._bad_request: bytes | None = None  # the unreadable request last logged

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
        events = anomaly_events(_read(s, s.topics.anomalies, start), s.topics.anomalies)
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
        if result.promoted and result.announce_error is not None:
            self.unannounced = result.version  # told again by the next steps
            self._next_announce = 0.0
        elif result.promoted:
            self.unannounced = None
        log.info(
            "candidate %s: gate %s, %s",
            result.version,
            "passed" if result.passed else "failed",
            "promoted"
            if result.promoted
            else ("rejected" if not result.passed else result.held_reason or "held"),
        )
        self.prune()
        return result

    def prune(self) -> None:
        """Retention after a round: keep the ``trainer.keep_versions`` newest versions
        (0 = all; the champion and rollback targets always stay). A failure is logged:
        the round itself succeeded."""
        keep = self.settings.trainer.keep_versions
        if not keep:
            return
        try:
            res = self.registry.prune(keep)
        except StreamAEError as exc:
            log.warning("could not prune %s to %d versions: %s", self.registry.root, keep, exc)
            return
        if res.removed or res.stale_candidates:
            log.info(
                "pruned %s to the %d newest versions: removed %s%s, %d bytes freed",
                self.registry.root,
                keep,
                ", ".join(v for v, _ in res.removed) or "no version",
                f" and {len(res.stale_candidates)} stale candidate folder(s)"
                if res.stale_candidates
                else "",
                res.freed,
            )

    def _excluder(
        self,
        events: list[AnomalyEvent],
        feedback: list[FeedbackEvent],
        now: int,
        loaded: LoadedModel | None,
        channels: list[str],
    ) -> Callable[[WindowBatch], Exclusions]:
        """Exclusions from events, feedback (open ones run to ``now``) and the
        champion's own alarms: :func:`trainers.exclusions.champion_excluder`, which
        ``stream-ae retrain --from/--to`` uses too."""
        return champion_excluder(
            events, feedback, open_end_ms=now, champion=loaded, channels=channels
        )

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
        return drift_report(md, windows, np.asarray(loaded.scorer.score(windows.values).scores))

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
        or broker trouble, nor for a champion pointer to a missing or damaged version:
        that is logged and the check refits nothing."""
        champion: str | None = None
        try:
            champion = self.registry.champion()
            if champion is None:
                check = DriftCheck(now_ms, None, why="no champion to compare with")
            else:
                loaded = self._load(champion)
                if readings is None:
                    readings = self.recent_readings(now_ms, list(loaded.metadata.channels))
                report = self.measure_drift(loaded, readings)
                refit, why = self.decide_drift(report, now_ms)
                check = DriftCheck(now_ms, champion, report, refit, why)
        except StreamAEError as exc:
            check = DriftCheck(now_ms, champion, why=f"not measured: {exc}")
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
        drift check calls for one. Returns the round's trigger, or None.

        Never raises an :class:`Exception`: the service is long-running, so a round
        or a drift check that fails is logged (with the traceback when it is not one
        of ours) and the next step goes on; the failed round counts as run."""
        t = self.settings.trainer
        if self.unannounced is not None and mono >= self._next_announce:
            self._announce_again(mono)
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
            try:
                check = self.check_drift(now_ms)
            except Exception:
                log.exception("drift check failed; the next one in %g s", t.drift_check_s)
                return None
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
        except Exception:
            log.exception("retraining (%s) failed unexpectedly; the service goes on", trigger)
            self.last_run_ms = now_ms
        self._next_due = mono + t.interval_s
        return trigger

    def request(self, raw: bytes | None) -> RetrainRequest | None:
        """The request the control topic holds (``raw``), or None when there is none or
        it is not one: that is logged once (not every second) and otherwise ignored,
        until a new request replaces it."""
        if raw is None:
            return None
        try:
            return decode_request(raw)
        except DataError as exc:
            if raw != self._bad_request:
                log.warning("retrain request ignored: %s", exc)
                self._bad_request = raw
            return None

    def _announce(self, version: str) -> None:
        ann = announce_champion(self.settings, self.registry.path_of(version))
        log.info("announced %s on %s", ann.version, self.settings.topics.models)

    def _announce_again(self, mono: float) -> None:
        """Announce the champion after a promotion whose announcement failed, until one
        gets through (every :data:`ANNOUNCE_RETRY_S`). The champion of the moment is
        announced: an operator may have promoted or rolled back since."""
        try:
            if self.registry.champion() is not None:  # what CHAMPION says, under the lock
                self.registry.announce(self._announce)
        except Exception as exc:  # the broker is away, the version went missing, ...
            self._next_announce = mono + ANNOUNCE_RETRY_S
            log.warning(
                "the champion is still not announced since %s was promoted (running "
                "scorers serve the model they had): %s; trying again in %g s",
                self.unannounced,
                exc,
                ANNOUNCE_RETRY_S,
            )
            return
        self.unannounced = None

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
                try:
                    request = self.request(watcher.latest(RETRAIN_KEY))
                except Exception:  # the control topic's reader: the next turn reads again
                    log.exception("reading the retrain requests failed")
                    request = None
                self.step(time.time_ns() // 1_000_000, time.monotonic(), request)
                time.sleep(1.0)
        finally:
            watcher.close()
