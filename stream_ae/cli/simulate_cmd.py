"""``stream-ae simulate``: produce simulated plant readings and/or a labelled CSV."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from stream_ae.cli.outputs import open_output
from stream_ae.errors import ConfigError
from stream_ae.simulate import (
    FaultSpec,
    LabelledCsvWriter,
    Message,
    MessageSink,
    SimBlock,
    Simulator,
    encode_batch,
    encode_narrow,
    encode_wide,
    format_iso_ms,
    garbage_messages,
    parse_duration_s,
    parse_fault_spec,
    utc_now_ms,
)

DEFAULT_TOPIC = ""  # empty: the settings' topics.readings
#: readings per generated block when running as fast as possible
_BLOCK_READINGS = 50_000


class Shape(StrEnum):
    wide = "wide"
    batch = "batch"
    narrow = "narrow"


def parse_start(text: str, period_ms: int) -> int:
    """``now`` or an ISO-8601 time (naive = UTC) → epoch ms, floored to the period."""
    if text.strip().lower() == "now":
        ts = utc_now_ms()
    else:
        try:
            dt = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ConfigError(
                f"--start {text!r} is not an ISO-8601 time",
                hint="use e.g. 2024-01-01T00:00:00Z or 'now'",
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ts = round(dt.timestamp() * 1000)
    return ts - ts % period_ms


def _encode(block: SimBlock, shape: Shape, batch_size: int, iso_ts: bool) -> list[Message]:
    if shape is Shape.wide:
        return encode_wide(block, iso_ts=iso_ts)
    if shape is Shape.batch:
        return encode_batch(block, batch_size, iso_ts=iso_ts)
    return encode_narrow(block, iso_ts=iso_ts)


def _fault_lines(faults: tuple[FaultSpec, ...], start_ts_ms: int) -> list[str]:
    lines = []
    for f in faults:
        rel = (f.onset_ts_ms - start_ts_ms) / 1000
        lines.append(
            f"fault {f.asset_id} {f.kind} [{', '.join(f.affected_channels)}] "
            f"severity {f.severity:g}: onset {format_iso_ms(f.onset_ts_ms)} (+{rel:g}s), "
            f"full at +{rel + f.ramp_s:g}s"
        )
    return lines


def register(app: typer.Typer, get_sink: Callable[[str], MessageSink]) -> None:
    """Add the ``simulate`` command to ``app``; ``get_sink(topic)`` is called only to produce."""

    @app.command("simulate")
    def simulate(
        assets: Annotated[int, typer.Option("--assets", min=1, help="Number of assets.")] = 10,
        seed: Annotated[
            int, typer.Option("--seed", help="Random seed (same seed, same data).")
        ] = 0,
        steps: Annotated[
            int | None, typer.Option("--steps", min=1, help="Sample steps to generate.")
        ] = None,
        duration: Annotated[
            str | None,
            typer.Option(
                "--duration", help="Simulated time instead of --steps: 90, 90s, 30m, 3h, 500ms."
            ),
        ] = None,
        sample_period_ms: Annotated[
            int, typer.Option("--sample-period-ms", min=1, help="Sample period per asset.")
        ] = 1000,
        rate: Annotated[
            float,
            typer.Option("--rate", min=0.0, help="Readings per second, real time; 0 = max speed."),
        ] = 0.0,
        shape: Annotated[
            Shape, typer.Option("--shape", help="Message shape: wide, batch or narrow.")
        ] = Shape.wide,
        batch_size: Annotated[
            int, typer.Option("--batch-size", min=1, help="Readings per message for --shape batch.")
        ] = 10,
        fault: Annotated[
            list[str] | None,
            typer.Option(
                "--fault",
                help="ASSET:KIND@ONSET[+ramp=DUR][,severity=X][,channel=NAME], repeatable; "
                "e.g. pump-003:bearing_wear@120s+ramp=60s.",
            ),
        ] = None,
        garbage_rate: Annotated[
            float,
            typer.Option(
                "--garbage-rate", min=0.0, max=1.0, help="Extra bad messages, as a fraction."
            ),
        ] = 0.0,
        csv: Annotated[
            Path | None,
            typer.Option(
                "--csv", help="Write the labelled CSV here (produce too only if --topic is given)."
            ),
        ] = None,
        topic: Annotated[
            str | None,
            typer.Option("--topic", help="Topic to produce to (default: topics.readings)."),
        ] = None,
        start: Annotated[
            str, typer.Option("--start", help="Start time: ISO-8601 (UTC if naive) or 'now'.")
        ] = "now",
        iso_ts: Annotated[
            bool, typer.Option("--iso-ts", help="Timestamps as ISO-8601 strings, not epoch ms.")
        ] = False,
        jitter: Annotated[
            float,
            typer.Option(
                "--jitter", min=0.0, max=0.99, help="Timestamp jitter, fraction of the period."
            ),
        ] = 0.0,
        drop_rate: Annotated[
            float,
            typer.Option("--drop-rate", min=0.0, max=0.99, help="Fraction of readings dropped."),
        ] = 0.0,
        asset_prefix: Annotated[
            str, typer.Option("--asset-prefix", help="Asset ids are PREFIX-000, PREFIX-001, …")
        ] = "pump",
    ) -> None:
        """Simulate pumps/motors (with developing faults) and produce readings or a CSV."""
        console = Console()
        err_console = Console(stderr=True)
        if steps is not None and duration is not None:
            raise ConfigError("give --steps or --duration, not both")
        if duration is not None:
            try:
                seconds = parse_duration_s(duration)
            except ValueError as exc:
                raise ConfigError(f"--duration: {exc}") from None
            steps = max(1, math.ceil(seconds * 1000 / sample_period_ms))
        produce = csv is None or topic is not None
        if steps is None and (rate <= 0 or csv is not None):
            raise ConfigError(
                "no --steps or --duration",
                hint="an endless run needs --rate > 0 and no --csv",
            )
        start_ts = parse_start(start, sample_period_ms)
        # FaultSpecError is a ConfigError: the main CLI prints it as one line
        faults = [parse_fault_spec(s, start_ts) for s in fault or []]
        sim = Simulator(
            assets,
            seed=seed,
            sample_period_ms=sample_period_ms,
            start_ts_ms=start_ts,
            faults=faults,
            asset_prefix=asset_prefix,
            ts_jitter=jitter,
            drop_rate=drop_rate,
        )
        # block size: about 0.25 s of output when paced, else ~_BLOCK_READINGS readings
        target = rate * 0.25 if rate > 0 else _BLOCK_READINGS
        block_steps = max(1, min(10_000, int(target // assets)))
        if shape is Shape.batch:
            block_steps = max(batch_size, block_steps // batch_size * batch_size)

        writer = (  # before the sink: a bad path fails before the broker is contacted
            open_output("--csv", csv, lambda p: LabelledCsvWriter(p, sim.channels))
            if csv is not None
            else None
        )
        sink = get_sink(topic or DEFAULT_TOPIC) if produce else None
        sink_topic = getattr(sink, "topic", topic or "topics.readings")
        grng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(9,)))
        readings = messages = dropped = n_bytes = 0
        garbage: Counter[str] = Counter()
        interrupted = False
        t0 = time.monotonic()
        total_readings = steps * assets if steps is not None else None
        progress = Progress(
            TextColumn("[bold]simulate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("readings"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[sim_time]}"),
            console=err_console,
            transient=False,
        )
        try:
            with progress:
                task = progress.add_task("simulate", total=total_readings, sim_time="")
                left = steps
                while left is None or left > 0:
                    n = block_steps if left is None else min(block_steps, left)
                    block = sim.step_block(n)
                    if left is not None:
                        left -= n
                    got = block.n_readings
                    dropped += block.n_steps * block.n_assets - got
                    if writer is not None:
                        writer.write(block)
                    if sink is not None:
                        msgs: list[tuple[bytes, bytes, int]] = _encode(
                            block, shape, batch_size, iso_ts
                        )
                        if garbage_rate > 0:
                            msgs = _mix_garbage(msgs, grng, garbage_rate, block, garbage)
                        per_msg = got / max(1, len(msgs))
                        for i, (key, value, ts) in enumerate(msgs):
                            if rate > 0:
                                due = t0 + (readings + i * per_msg) / rate
                                wait = due - time.monotonic()
                                if wait > 0.002:
                                    time.sleep(wait)
                            sink.send(key, value, ts)
                            n_bytes += len(value)
                        messages += len(msgs)
                    elif rate > 0:
                        wait = t0 + (readings + got) / rate - time.monotonic()
                        if wait > 0:
                            time.sleep(wait)
                    readings += got
                    progress.update(
                        task,
                        advance=block.n_steps * block.n_assets,
                        sim_time=format_iso_ms(int(block.ts_ms[-1])),
                    )
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if sink is not None:
                sink.flush()
            if writer is not None:
                writer.close()
        elapsed = time.monotonic() - t0

        summary = Table(title="simulate summary", title_justify="left", show_header=False)
        summary.add_column("what")
        summary.add_column("value", justify="right")
        summary.add_row("assets", str(assets))
        summary.add_row(
            "steps",
            f"{sim.step_index:,} ({sim.step_index * sample_period_ms / 1000:g} s simulated)",
        )
        summary.add_row(
            "simulated",
            f"{format_iso_ms(start_ts)} → {format_iso_ms(sim.next_ts_ms - sample_period_ms)}",
        )
        summary.add_row(
            "readings", f"{readings:,}" + (f" ({dropped:,} dropped)" if dropped else "")
        )
        if sink is not None:
            summary.add_row("messages", f"{messages:,} {shape.value} → {sink_topic}")
            summary.add_row("bytes", f"{n_bytes:,}")
            if garbage:
                summary.add_row(
                    "garbage",
                    f"{sum(garbage.values()):,} ("
                    + ", ".join(f"{k} {v}" for k, v in sorted(garbage.items()))
                    + ")",
                )
        if writer is not None:
            summary.add_row("csv", f"{writer.rows:,} rows → {csv}")
        summary.add_row(
            "elapsed",
            f"{elapsed:.2f} s ({readings / elapsed if elapsed > 0 else 0:,.0f} readings/s)",
        )
        if interrupted:
            summary.add_row("stopped", "interrupted")
        console.print(summary)
        for line in _fault_lines(sim.faults, start_ts) or ["no faults"]:
            console.print(line, highlight=False, markup=False)


def _mix_garbage(
    msgs: list[Message],
    rng: np.random.Generator,
    garbage_rate: float,
    block: SimBlock,
    counts: Counter[str],
) -> list[Message]:
    """Insert about ``garbage_rate × len(msgs)`` bad messages at random positions."""
    k = int(rng.binomial(len(msgs), garbage_rate))
    if k == 0:
        return msgs
    now = max(utc_now_ms(), int(block.ts_ms[-1]))
    bad = garbage_messages(rng, k, now, asset_ids=block.asset_ids)
    pos = np.sort(rng.integers(0, len(msgs) + 1, size=k))
    ts_bad = int(block.ts_ms[-1])
    out: list[Message] = []
    prev = 0
    for p, (key, value, reason) in zip(pos.tolist(), bad, strict=True):
        out.extend(msgs[prev:p])
        out.append((key, value, ts_bad))
        counts[reason] += 1
        prev = p
    out.extend(msgs[prev:])
    return out
