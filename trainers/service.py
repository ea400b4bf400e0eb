"""The retraining service: refit on a schedule or on request, keep data normal,
gate, register, promote, announce. Thin: the steps live in retrain.py and
exclusions.py.

Requests arrive on the control topic (``topics.models``) under the key
``retrain`` (``stream-ae trainer trigger`` writes one); the service acts on a
request newer than its last run.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import msgspec
import numpy as np

from stream_ae import schemas
from stream_ae.decide.drift import DriftMonitor
from stream_ae.errors import ConfigError, StreamAEError
from stream_ae.io.kafka import ControlWatcher, publish_control, read_range
from stream_ae.readings_io import read_topic
from stream_ae.registry import Registry
from stream_ae.schemas import AnomalyEvent, FeedbackEvent
from stream_ae.service import announce_champion, ensure_control_topic
from stream_ae.settings import Settings
from stream_ae.windowing import WindowBatch
from trainers.exclusions import Exclusions, exclusion_mask
from trainers.retrain import RetrainResult, retrain

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


def _read(settings: Settings, topic: str, start_ms: int) -> list[Any]:
    try:
        return [m for b in read_range(settings.kafka, topic, start_ms=start_ms) for m in b]
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

    def channels(self) -> list[str]:
        if self.settings.trainer.channels:
            return list(self.settings.trainer.channels)
        champion = self.registry.champion()
        if champion is None:
            raise ConfigError(
                "trainer.channels is empty and the registry has no champion to take them from",
                hint='set trainer.channels (e.g. --set trainer.channels=\'["a","b"]\')',
            )
        md = self.registry.show(champion)["metadata"]
        return list(md["channels"])

    def run_once(self, now_ms: int | None = None) -> RetrainResult:
        s = self.settings
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        start = now - int(s.trainer.lookback_s * 1000)
        channels = self.channels()
        readings, source = read_topic(s, schemas.iso_ms(start), schemas.iso_ms(now), channels)
        events = [
            msgspec.json.decode(m.value(), type=AnomalyEvent)
            for m in _read(s, s.topics.anomalies, start)
        ]
        feedback = [schemas.decode_feedback(m.value()) for m in _read(s, s.topics.feedback, 0)]
        exclude = self._excluder(events, feedback, now)
        log.info(
            "retraining on %d readings from %s (%d events, %d feedback records)",
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
            promote=s.trainer.promote,
            announce=self._announce,
            exclude=exclude,
            max_excluded_share=s.trainer.max_excluded_share,
        )
        self.last_run_ms = now
        log.info(
            "candidate %s: gate %s, %s",
            result.version,
            "passed" if result.passed else "failed",
            "promoted" if result.promoted else "not promoted",
        )
        return result

    def _excluder(
        self, events: list[AnomalyEvent], feedback: list[FeedbackEvent], now: int
    ) -> Callable[[WindowBatch], Exclusions]:
        """Exclusions from events, feedback and the champion's own alarms (when the
        champion can score these windows: same channels and window size)."""
        champion = self.registry.champion()
        loaded = None
        if champion is not None:
            from stream_ae.model.artifact import load_artifact

            loaded = load_artifact(self.registry.path_of(champion), device="cpu")

        def exclude(windows: WindowBatch) -> Exclusions:
            scores = threshold = None
            if loaded is not None:
                md = loaded.metadata
                if windows.values.shape[1:] == (len(md.channels), md.window):
                    scores = np.asarray(loaded.scorer.score(windows.values).scores)
                    threshold = md.threshold_spec.value
            ex = exclusion_mask(
                windows,
                events=events,
                feedback=feedback,
                champion_scores=scores,
                champion_threshold=threshold,
                open_end_ms=now,
            )
            if scores is not None and loaded is not None:
                monitor = DriftMonitor.from_metadata(loaded.metadata, horizon=len(scores))
                monitor.update(windows.values, scores)
                ex.drift = monitor.report()
            return ex

        return exclude

    def _announce(self, version: str) -> None:
        ann = announce_champion(self.settings, self.registry.path_of(version))
        log.info("announced %s on %s", ann.version, self.settings.topics.models)

    def request_stop(self) -> None:
        self._stop = True

    def run(self) -> None:
        """Refit every ``trainer.interval_s`` and on requests, until SIGTERM/SIGINT."""
        s = self.settings

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping after the current step", signal.Signals(signum).name)
            self._stop = True

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        ensure_control_topic(s)
        watcher = ControlWatcher(s.kafka, s.topics.models)
        next_due = time.monotonic()
        try:
            while not self._stop:
                raw = watcher.latest(RETRAIN_KEY)
                requested = (
                    raw is not None
                    and msgspec.json.decode(raw, type=RetrainRequest).requested_at_ms
                    > self.last_run_ms
                )
                if requested or time.monotonic() >= next_due:
                    try:
                        self.run_once()
                    except StreamAEError as exc:
                        log.error("retraining failed: %s", exc)
                        self.last_run_ms = time.time_ns() // 1_000_000
                    next_due = time.monotonic() + s.trainer.interval_s
                time.sleep(1.0)
        finally:
            watcher.close()
