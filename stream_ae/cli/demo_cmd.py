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
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from stream_ae.io.local_broker import BrokerConfig

console = Console()

DEFAULT_FAULTS = (
    ("bearing_wear", 240.0, None),
    ("cavitation", 120.0, None),
    ("imbalance", 180.0, None),
    ("sensor_drift", 300.0, "pressure"),
    ("stuck_sensor", 0.0, "motor_temp"),
)


@dataclass
class _Live:
    events: list = field(default_factory=list)  # type: ignore[type-arg]
    dead: int = 0
    quality: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def register(app: typer.Typer, broker_config: Callable[[], BrokerConfig]) -> None:
    @app.command()
    def demo(
        assets: Annotated[int, typer.Option("--assets", min=2)] = 12,
        minutes: Annotated[
            float, typer.Option("--minutes", help="Simulated minutes to stream.")
        ] = 30.0,
        train_hours: Annotated[
            float, typer.Option("--train-hours", help="Simulated hours of normal data.")
        ] = 2.0,
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
        now = int(time.time() * 1000) // period * period
        stream_start = now - stream_steps * period
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

        def on_output(out: object) -> None:
            from stream_ae.pipeline import StepOutput

            assert isinstance(out, StepOutput)
            with live.lock:
                live.dead += len(out.dead_letters)
                live.quality += len(out.quality)
                for e in out.events:
                    live.events.append(e)
                    tops = ", ".join(f"{c.channel} {c.share:.0%}" for c in e.top_channels)
                    console.print(
                        f"[red]ANOMALY[/] {e.asset_id} {e.window_end[11:19]} "
                        f"score {e.score:.3g} ({e.severity}) [dim]{tops}[/]"
                    )

        service = ScorerService(settings, bind_model(loaded, settings), on_output=on_output)
        worker = threading.Thread(target=service.run, kwargs={"max_idle_s": None}, daemon=True)
        worker.start()
        # 2. stream the next stretch with faults, plus a little garbage
        sink = KafkaSink(settings, settings.topics.readings)
        rng = np.random.default_rng(seed)
        chunk = max(1, stream_steps // 60)
        sent = 0
        garbage = 0
        started = time.monotonic()
        console.print(
            f"streaming {minutes:g} simulated minutes from {assets} pumps "
            f"({len(faults)} developing faults) over ~{wall_seconds:g} s"
        )
        for k in range(0, stream_steps, chunk):
            b = sim.step_block(min(chunk, stream_steps - k))
            for key, value, ts in encode_wide(b):
                sink.send(key, value, ts)
                sent += 1
            if k // chunk % 10 == 3:
                for key, value, _reason in garbage_messages(rng, 2, int(time.time() * 1000)):
                    sink.send(key, value, int(time.time() * 1000))
                    garbage += 1
            sink.flush()
            target = started + wall_seconds * (k + chunk) / stream_steps
            time.sleep(max(0.0, target - time.monotonic()))
        sink.flush()
        # 3. let the scorer drain, then stop it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and service.pipeline.metrics.messages < sent + garbage:
            time.sleep(0.5)
        service.request_stop()
        worker.join(timeout=30)
        _summary(service, faults, live, sent, garbage, stream_start, time.monotonic() - t_start)
        console.print(
            f"topics: {settings.topics.readings}, {settings.topics.anomalies}, "
            f"{settings.topics.dead_letter_topic}, {settings.topics.data_quality}"
        )
    finally:
        if not keep_broker and already is None:
            local_broker.stop(cfg)
            console.print("stopped the local broker (use --keep-broker to leave it running)")


def _summary(service, faults, live, sent, garbage, stream_start, wall) -> None:  # type: ignore[no-untyped-def]
    m = service.pipeline.metrics
    acct = service.pipeline.windower.accounting()
    table = Table(title="injected faults")
    for col in ("asset", "fault", "onset (sim)", "caught", "delay", "channels named"):
        table.add_column(col)
    faulty = {f.asset_id for f in faults}
    for f in faults:
        evs = [
            e for e in live.events if e.asset_id == f.asset_id and e.window_end_ms > f.onset_ts_ms
        ]
        if evs:
            first = min(evs, key=lambda e: e.window_end_ms)
            delay = f"{(first.window_end_ms - f.onset_ts_ms) / 1000:.0f} s"
            named = {c.channel for e in evs for c in e.top_channels}
            hit = ", ".join(sorted(named & set(f.affected_channels))) or "-"
        else:
            delay, hit = "-", "-"
        onset = f"+{(f.onset_ts_ms - stream_start) / 60000:.1f} min"
        table.add_row(f.asset_id, f.kind, onset, "yes" if evs else "[red]no[/]", delay, hit)
    console.print(table)
    false_alarms = [e for e in live.events if e.asset_id not in faulty]
    console.print(
        f"assets {service.pipeline.windower.__len__() or '-'} open | messages {m.messages:,} "
        f"(sent {sent:,} readings + {garbage} garbage) | readings {m.readings:,} | "
        f"windows {m.windows:,} | events {m.events} ({len(false_alarms)} on healthy pumps) | "
        f"dead letters {dict(m.dead_letters)} | data-quality events {m.quality_events}"
    )
    console.print(
        f"reading outcomes: scored {acct.scored:,}, not in a window {acct.unwindowed:,}, "
        f"incomplete rows {acct.incomplete:,}, late {acct.late:,}, "
        f"still open {service.pipeline.windower.open_readings():,}"
    )
    console.print(f"demo took {wall:.0f} s")
