"""Helpers for the integration tests (fixtures live in conftest.py).

The broker runs from the project's own set-up (`stream_ae.io.local_broker`) on
free ports in a temporary folder, and is stopped at the end. If it cannot start,
every integration test errors: nothing here skips. ``STREAM_AE_TEST_BOOTSTRAP``
points the tests at an already running broker instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from stream_ae.io.kafka import Admin, OutputProducer, read_range
from stream_ae.schemas import AnomalyEvent, ScoreRecord
from stream_ae.settings import Settings, load_settings
from stream_ae.simulate import FaultSpec, Simulator, encode_wide

# The fleet every integration test simulates: the model is trained on its first
# TRAIN_STEPS steps (normal), tests stream the steps after that.
N_ASSETS = 6
SEED = 11
PERIOD_MS = 1000
TRAIN_STEPS = 10800  # 3 h: long enough to see every operating mode
W, H = 32, 8
#: the user the session broker's SASL/PLAIN listener accepts (conftest.sasl_bootstrap)
SASL_USER = "stream-ae-test"
SASL_PASSWORD = "sasl-test-pw-7c41"


def fleet_start_ms() -> int:
    """Anchored in the past so the streamed part never looks like the future."""
    return (int(time.time() * 1000) // 3_600_000 - 6) * 3_600_000


_START = fleet_start_ms()
STREAM_START = _START + TRAIN_STEPS * PERIOD_MS


def simulator(faults: list[FaultSpec] | None = None) -> Simulator:
    """A fresh simulator positioned at the start of the streamed part."""
    sim = Simulator(
        N_ASSETS, seed=SEED, sample_period_ms=PERIOD_MS, start_ts_ms=_START, faults=faults or []
    )
    sim.step_block(TRAIN_STEPS)
    return sim


@dataclass
class Env:
    """Per-test names and settings: unique topics and group, the session broker."""

    bootstrap: str
    model_path: Path
    run: str

    def settings(self, **sections: dict[str, Any]) -> Settings:
        flags: dict[str, Any] = {
            "kafka": {"bootstrap_servers": self.bootstrap},
            "topics": {
                "readings": f"{self.run}.readings",
                "anomalies": f"{self.run}.anomalies",
                "data_quality": f"{self.run}.quality",
                "scores": f"{self.run}.scores",
                "models": f"{self.run}.models",
                "partitions": 3,
            },
            "scorer": {"group_id": f"{self.run}-g", "commit_interval_s": 0.5, "batch_size": 2000},
            "model": {"path": self.model_path, "device": "cpu"},
            "window": {"allowed_lateness_ms": 3000},
        }
        for name, values in sections.items():
            flags[name] = {**flags.get(name, {}), **values}
        return load_settings(flags=flags)

    def create_topics(self, settings: Settings, partitions: int = 3) -> None:
        from stream_ae.service import output_topics

        Admin(settings.kafka).ensure_topics(
            [settings.topics.readings, *output_topics(settings)],
            partitions=partitions,
            replication_factor=1,
        )

    def produce(self, settings: Settings, messages: list[tuple[bytes, bytes, int]]) -> None:
        p = OutputProducer(settings.kafka)
        for key, value, ts in messages:
            p.send(settings.topics.readings, value, key=key, timestamp_ms=ts)
        p.flush()


def sasl_kafka(bootstrap: str, password: str = SASL_PASSWORD) -> dict[str, Any]:
    """The ``kafka`` settings of a client of the SASL/PLAIN listener at ``bootstrap``."""
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": SASL_USER,
        "sasl_password": password,
    }


def read_all(settings: Settings, topic: str, *, read_committed: bool = False) -> list[Any]:
    return [
        m
        for batch in read_range(settings.kafka, topic, read_committed=read_committed)
        for m in batch
    ]


def events_of(settings: Settings, *, read_committed: bool = False) -> list[AnomalyEvent]:
    return [
        msgspec.json.decode(m.value(), type=AnomalyEvent)
        for m in read_all(settings, settings.topics.anomalies, read_committed=read_committed)
    ]


def scores_of(settings: Settings, *, read_committed: bool = False) -> list[ScoreRecord]:
    return [
        msgspec.json.decode(m.value(), type=ScoreRecord)
        for m in read_all(settings, settings.topics.scores, read_committed=read_committed)
    ]


class ScorerThread:
    """An in-process scorer (the real ScorerService) running in a thread."""

    def __init__(self, settings: Settings, on_output: Callable[[Any], None] | None = None) -> None:
        from stream_ae.service import ScorerService, bind_model, load_model

        self.service = ScorerService(
            settings, bind_model(load_model(settings), settings), on_output=on_output
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ScorerThread:
        self.thread.start()
        return self

    def assignment(self) -> list[int]:
        consumer = getattr(self.service, "consumer", None)
        return [] if consumer is None else consumer.assignment()

    def wait_for(self, messages: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.service.pipeline.metrics.messages < messages:
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"scorer saw {self.service.pipeline.metrics.messages} of {messages} messages"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        self.service.request_stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "scorer did not stop"
        if self.error is not None:
            raise self.error


def stream_messages(sim: Simulator, steps: int) -> list[tuple[bytes, bytes, int]]:
    return encode_wide(sim.step_block(steps))


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as STREAM_AE_* variables, for a scorer in another process."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_AE_")}
    for section in ("kafka", "topics", "scorer", "model", "window"):
        for field, value in getattr(settings, section).model_dump(mode="json").items():
            if value is None or isinstance(value, dict):
                continue
            env[f"STREAM_AE_{section.upper()}__{field.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return env


class ScorerProcess:
    """``stream-ae score`` as a separate process (to be SIGKILLed or SIGTERMed)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        import subprocess
        import sys

        self.log_path = log_path
        self._log = log_path.open("ab")
        exe = Path(sys.executable).with_name("stream-ae")
        self.proc = subprocess.Popen(
            [str(exe), "score"],
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        self._log.close()
        return code

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def window_keys(records: list[ScoreRecord]) -> list[tuple[str, int]]:
    return [(r.asset_id, r.window_start_ms) for r in records]
