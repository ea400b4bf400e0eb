"""``stream-ae demo``: the whole loop on a laptop, in a few minutes.

Starts the local broker (unless one runs), trains a conv autoencoder on
simulated normal operation, runs the scorer while the simulator streams the
next half hour (simulated time, compressed into about a minute) with developing
faults and some garbage, prints anomaly events live, and ends with a summary:
which faults were caught, how long after onset, and where every reading went.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from stream_ae.io.local_broker import BrokerConfig
from stream_ae.pipeline import StepOutput
from stream_ae.schemas import AnomalyEvent

if TYPE_CHECKING:
    from stream_ae.service import ScorerService
    from stream_ae.simulate import FaultSpec

console = Console()

#: (kind, ramp seconds, channel) of the faults the demo injects, one pump each.
DEFAULT_FAULTS = (
    ("bearing_wear", 240.0, None),
    ("cavitation", 120.0, None),
    ("imbalance", 180.0, None),
    ("sensor_drift", 240.0, "pressure"),
    ("stuck_sensor", 0.0, "motor_current"),
)
#: Print at most one event per asset per this much event time, unless severity rises.
QUIET_MS = 120_000


@dataclass
class _Live:
    events: list[AnomalyEvent] = field(default_factory=list)
    last_shown: dict[str, tuple[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def show(self, out: StepOutput) -> None:
        with self.lock:
            for e in out.events:
                self.events.append(e)
                rank = _SEVERITY_RANK[e.severity]
                last = self.last_shown.get(e.asset_id)
                if last and e.window_end_ms - last[0] < QUIET_MS and rank <= last[1]:
                    continue
                self.last_shown[e.asset_id] = (e.window_end_ms, rank)
                tops = ", ".join(f"{c.channel} {c.share:.0%}" for c in e.top_channels)
                colour = ("yellow", "red", "bold red")[rank]
                console.print(
                    f"[{colour}]{e.severity.upper():8s}[/] {e.asset_id} window ending "
                    f"{e.window_end[11:19]}  score {e.score:.3g} = {e.score_ratio:.1f}× threshold"
                    f"  [dim]{tops}[/]"
                )


_SEVERITY_RANK = {"warning": 0, "high": 1, "critical": 2}


def register(app: typer.Typer, broker_config: Callable[[], BrokerConfig]) -> None:
    @app.command()
    def demo(
        assets: Annotated[int, typer.Option("--assets", min=2)] = 12,
        minutes: Annotated[
            float, typer.Option("--minutes", help="Simulated minutes to stream.")
        ] = 30.0,
        train_hours: Annotated[
            float, typer.Option("--train-hours", help="Simulated hours of normal data.")
        ] = 3.0,
        wall_seconds: Annotated[
            float, typer.Option("--wall-seconds", help="Real seconds to spread streaming over.")
        ] = 60.0,
        epochs: Annotated[int, typer.Option("--epochs", min=1)] = 15,
        seed: Annotated[int, typer.Option("--seed")] = 7,
        keep_broker: Annotated[
            bool, typer.Option("--keep-broker", help="Leave the broker running at the end.")
        ] = False,
    ) -> None:
        """Train, stream faults through Kafka, show the events, summarise."""
        run_demo(
            broker_config(),
            assets=assets,
            minutes=minutes,
            train_hours=train_hours,
            wall_seconds=wall_seconds,
            epochs=epochs,
            seed=seed,
            keep_broker=keep_broker,
        )


def run_demo(
    cfg: BrokerConfig,
    *,
    assets: int,
    minutes: float,
    train_hours: float,
    wall_seconds: float,
    epochs: int,
    seed: int,
    keep_broker: bool,
) -> None:
    from stream_ae.cli import get_settings
    from stream_ae.cli.commands import KafkaSink, ensure_topics
    from stream_ae.io import local_broker
    from stream_ae.readings_io import readings_from_arrays
    from stream_ae.service import ScorerService, bind_model, load_model
    from stream_ae.simulate import FaultSpec, Simulator, encode_wide, garbage_messages
    from stream_ae.training import train

    t_start = time.monotonic()
    already = local_broker.status(cfg)
    with console.status("starting the local Kafka broker ..."):
        info = local_broker.start(cfg)
    console.print(f"[bold]Kafka[/] {info.kafka_version} at {info.bootstrap} (log {info.log_path})")
    run = time.strftime("%Y%m%d%H%M%S")
    work = Path(".stream_ae") / "demo" / run
    settings = get_settings(
        {
            "kafka": {"bootstrap_servers": info.bootstrap},
            "topics": {
                "readings": f"demo.{run}.readings",
                "anomalies": f"demo.{run}.anomalies",
                "data_quality": f"demo.{run}.data_quality",
                "models": f"demo.{run}.models",
                "partitions": 3,
            },
            "scorer": {"group_id": f"demo-{run}", "commit_interval_s": 1.0},
            "train": {"epochs": epochs, "output_dir": work / "artifacts", "seed": seed},
            "window": {"size": 64, "hop": 8, "sample_period_ms": 1000},
            "model": {"device": "cpu"},
        }
    )
    try:
        ensure_topics(settings)
        period = settings.window.sample_period_ms
        stream_steps = int(minutes * 60_000 / period)
        train_steps = int(train_hours * 3_600_000 / period)
        # The stream starts at the latest 06:00 UTC that lets it end in the past. The
        # simulator's ambient temperature follows the time of day, so a start that
        # moved with the wall clock gave other data, another model and other events
        # in every run; a fixed time of day (a multiple of the window hop) makes the
        # same seed give the same readings, windows, model and events.
        day, anchor = 86_400_000, 6 * 3_600_000
        now = int(time.time() * 1000)
        stream_start = (now - stream_steps * period - anchor) // day * day + anchor
        sim_start = stream_start - train_steps * period
        faults = []
        for i, (kind, ramp, channel) in enumerate(DEFAULT_FAULTS[: max(1, assets - 2)]):
            onset = stream_start + int((0.2 + 0.08 * i) * stream_steps) * period
            faults.append(FaultSpec(f"pump-{2 * i + 1:03d}", kind, onset, ramp, channel=channel))
        sim = Simulator(
            assets, seed=seed, sample_period_ms=period, start_ts_ms=sim_start, faults=faults
        )
        # 1. train on normal operation (the same machines, before any fault)
        with console.status(f"simulating {train_hours:g} h of normal operation ..."):
            block = sim.step_block(train_steps)
            readings = readings_from_arrays(
                block.asset_ids,
                block.reading_ts_ms,
                block.values,
                block.present,
                list(block.channels),
            )
        console.print(f"training on {len(readings):,} normal readings from {assets} pumps")

        def progress(epoch: int, tr: float, va: float) -> None:
            console.print(f"  epoch {epoch:3d}  train {tr:.4f}  held-out {va:.4f}")

        path, tinfo = train(readings, settings, source="simulator", progress=progress)
        console.print(f"model [bold]{tinfo['version']}[/] saved in {path}")
        settings.model.path = path
        loaded = load_model(settings)
        live = _Live()
        service = ScorerService(settings, bind_model(loaded, settings), on_output=live.show)
        worker = threading.Thread(target=service.run, kwargs={"max_idle_s": None}, daemon=True)
        worker.start()
        # 2. stream the next stretch with faults, plus a little garbage
        sink = KafkaSink(settings, settings.topics.readings)
        rng = np.random.default_rng(seed)
        chunk = max(1, stream_steps // 120)
        sent = garbage = 0
        started = time.monotonic()
        console.print(
            f"streaming {minutes:g} simulated minutes from {assets} pumps "
            f"({len(faults)} developing faults, some garbage) over ~{wall_seconds:g} s"
        )
        m = service.pipeline.metrics
        with console.status("") as status:
            for k in range(0, stream_steps, chunk):
                b = sim.step_block(min(chunk, stream_steps - k))
                for key, value, ts in encode_wide(b):
                    sink.send(key, value, ts)
                    sent += 1
                if k // chunk % 20 == 7:
                    wall_now = int(time.time() * 1000)
                    for key, value, _reason in garbage_messages(rng, 2, wall_now):
                        sink.send(key, value, wall_now)
                        garbage += 1
                sink.flush()
                status.update(
                    f"sim time +{(k + chunk) * period / 60000:4.1f} min | sent {sent:,} | "
                    f"scored windows {m.windows:,} | events {m.events} | "
                    f"dead letters {sum(m.dead_letters.values())}"
                )
                target = started + wall_seconds * (k + chunk) / stream_steps
                time.sleep(max(0.0, target - time.monotonic()))
            # 3. let the scorer drain, then stop it (SIGTERM path: flush, commit)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and m.messages < sent + garbage:
                time.sleep(0.2)
        service.request_stop()
        worker.join(timeout=30)
        _summary(service, faults, live, sent, garbage, stream_start)
        console.print(f"demo took {time.monotonic() - t_start:.0f} s")
        t = settings.topics
        console.print(
            f"[dim]topics: {t.readings}, {t.anomalies}, {t.dead_letter_topic}, "
            f"{t.data_quality}; model {path}[/]"
        )
    finally:
        if not keep_broker and already is None:
            local_broker.stop(cfg)
            console.print("stopped the local broker (use --keep-broker to leave it running)")


def _summary(
    service: ScorerService,
    faults: list[FaultSpec],
    live: _Live,
    sent: int,
    garbage: int,
    stream_start: int,
) -> None:
    m = service.pipeline.metrics
    acct = service.pipeline.windower.accounting()
    table = Table(title="injected faults")
    for col in ("pump", "fault", "onset", "caught", "first alarm after onset", "channels named"):
        table.add_column(col)
    faulty = {f.asset_id for f in faults}
    for f in faults:
        evs = [
            e for e in live.events if e.asset_id == f.asset_id and e.window_end_ms > f.onset_ts_ms
        ]
        if evs:
            first = min(evs, key=lambda e: e.window_end_ms)
            delay = f"{(first.window_end_ms - f.onset_ts_ms) / 1000:.0f} s (event time)"
            named = {c.channel for e in evs for c in e.top_channels}
            hit = ", ".join(sorted(named & set(f.affected_channels))) or "-"
        else:
            delay, hit = "-", "-"
        onset = f"+{(f.onset_ts_ms - stream_start) / 60000:.1f} min"
        table.add_row(f.asset_id, f.kind, onset, "yes" if evs else "[red]no[/]", delay, hit)
    console.print(table)
    healthy = sum(1 for e in live.events if e.asset_id not in faulty)
    early = sum(
        1
        for f in faults
        for e in live.events
        if e.asset_id == f.asset_id and e.window_end_ms <= f.onset_ts_ms
    )
    summary = Table(title="where everything went", show_header=False)
    summary.add_row("messages consumed", f"{m.messages:,} ({sent:,} readings + {garbage} garbage)")
    summary.add_row("windows scored", f"{m.windows:,}")
    summary.add_row(
        "anomaly events", f"{m.events} ({healthy} on healthy pumps, {early} before an onset)"
    )
    summary.add_row("dead letters", ", ".join(f"{k} {v}" for k, v in m.dead_letters.items()))
    summary.add_row("data-quality events", str(m.quality_events))
    # the stop hands the partitions back: readings of windows still open are revoked
    windower = service.pipeline.windower
    held = windower.open_readings() + windower.revoked_readings
    summary.add_row(
        "reading outcomes",
        f"scored {acct.scored:,} | not in a window {acct.unwindowed:,} | "
        f"incomplete rows {acct.incomplete:,} | late {acct.late:,} | "
        f"in windows open at the stop (not committed: the next start reads them) {held:,}",
    )
    console.print(summary)
