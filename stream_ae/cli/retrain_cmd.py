"""``stream-ae retrain``: one retraining round for engineers (see trainers/retrain.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from stream_ae.model.artifact import LoadedModel
    from stream_ae.readings_io import Readings
    from stream_ae.registry import Registry
    from stream_ae.settings import Settings
    from stream_ae.windowing import WindowBatch
    from trainers.exclusions import Exclusions

console = Console()


def register(app: typer.Typer) -> None:
    @app.command()
    def retrain(
        csv: Annotated[
            Path | None,
            typer.Option(
                "--csv", "--input", help="Normal readings: CSV or Parquet file, or a folder."
            ),
        ] = None,
        topic_start: Annotated[
            str | None, typer.Option("--from", help="Readings topic from this time (ISO).")
        ] = None,
        topic_end: Annotated[str | None, typer.Option("--to", help="... up to this time.")] = None,
        channels: Annotated[
            str | None, typer.Option("--channels", help="Comma-separated channels.")
        ] = None,
        sep: Annotated[str, typer.Option("--sep")] = ",",
        registry: Annotated[
            Path | None,
            typer.Option("--registry", help="Registry folder (default trainer.registry)."),
        ] = None,
        method: Annotated[
            str | None,
            typer.Option("--method", help="quantile or pot (default trainer.threshold_method)."),
        ] = None,
        far_target: Annotated[
            float | None,
            typer.Option(
                "--far-target",
                help="Target false alarms per window (default trainer.far_target).",
            ),
        ] = None,
        far_per_day: Annotated[
            float | None,
            typer.Option(
                "--far-per-day",
                help="Instead: target false alarms per asset per day (trainer.far_per_day).",
            ),
        ] = None,
        far_factor: Annotated[
            float | None,
            typer.Option(
                "--far-factor",
                help="Gate: measured FAR <= factor x target (default trainer.far_factor).",
            ),
        ] = None,
        promote: Annotated[
            bool, typer.Option("--promote/--no-promote", help="Promote when the gate passes.")
        ] = True,
        announce: Annotated[
            bool, typer.Option("--announce/--no-announce", help="Tell running scorers.")
        ] = True,
        epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
        golden: Annotated[
            str | None,
            typer.Option(
                "--golden",
                help="Golden set for the gate: labelled CSV, folder of them, or sim:SEED "
                "(default trainer.golden_set).",
            ),
        ] = None,
        golden_tolerance: Annotated[
            float | None,
            typer.Option(
                "--golden-tolerance",
                help="Gate: event recall on the golden set >= the champion's - X "
                "(default trainer.golden_tolerance).",
            ),
        ] = None,
    ) -> None:
        """Train a candidate on normal windows (a topic range leaves out events, maintenance,
        faults and champion alarms; a CSV its labelled rows), calibrate, gate, register, promote."""
        from stream_ae.cli import get_settings
        from stream_ae.errors import ConfigError, DataError
        from stream_ae.registry import Registry
        from trainers.retrain import retrain as run_retrain

        if method not in (None, "quantile", "pot"):
            raise ConfigError(f"--method {method!r}: use quantile or pot")
        settings = get_settings(
            {
                "train": {"epochs": epochs},
                "trainer": {
                    "golden_set": golden,
                    "golden_tolerance": golden_tolerance,
                    "registry": registry,
                    "threshold_method": method,
                    "far_target": far_target,
                    "far_factor": far_factor,
                    # an explicit per-window target wins over a configured daily budget
                    # (a --far-per-day beside it is dropped: load_settings ignores None flags)
                    "far_per_day": far_per_day if far_target is None else None,
                },
            }
        )
        tr = settings.trainer
        chans = [c.strip() for c in channels.split(",")] if channels else None
        if (csv is None) == (topic_start is None):
            raise DataError("give exactly one source: --csv FILE or --from TIME [--to TIME]")
        reg = Registry(tr.registry)
        exclude: Callable[[WindowBatch], Exclusions] | None = None
        champion: LoadedModel | None = None
        if csv is not None:
            from stream_ae.readings_io import read_readings

            readings, source = read_readings(csv, channels=chans, sep=sep), str(csv)
            console.print(f"retraining on {len(readings):,} readings from {source}")
            note = _CSV_EXCLUSIONS + (
                f" ({int((readings.labels != 0).sum()):,} readings labelled anomalous)"
                if readings.labels is not None
                else " (it has none: every row is trained on)"
            )
            console.print(f"[yellow]{note}[/]")
        else:
            readings, source, exclude, champion = _topic_source(
                settings, reg, topic_start or "", topic_end, chans
            )

        def say(version: str) -> None:  # retrain() passes the champion, under the lock
            from stream_ae.cli.models_cmd import _send

            _send(reg, version)

        def progress(epoch: int, tr: float, va: float) -> None:
            console.print(f"  epoch {epoch:3d}  train {tr:.4f}  held-out {va:.4f}")

        result = run_retrain(
            readings,
            settings,
            source=source,
            registry=reg,
            method=tr.threshold_method,
            far_target=tr.far_target,
            far_factor=tr.far_factor,
            far_per_day=None if far_target is not None else tr.far_per_day,
            promote=promote,
            announce=say if announce else None,
            progress=progress,
            golden=tr.golden_set,
            golden_tolerance=tr.golden_tolerance,
            exclude=exclude,
            max_excluded_share=tr.max_excluded_share,
            champion=champion,
        )
        gate = result.report["gate"]
        table = Table(title=f"candidate {result.version}", show_header=False)
        table.add_row("excluded from training", _excluded_text(result.report["data"]))
        table.add_row("threshold", json.dumps(result.report["threshold"]))
        table.add_row(
            "false alarms on unseen recent normal windows",
            f"{gate['far_measured']:.4%} (target {gate['far_target_per_window']:.4%}"
            + (
                f" = {gate['far_target_per_day']:g}/asset/day"
                if gate.get("far_target_per_day")
                else ""
            )
            + f", gate x{gate['far_factor']:g})",
        )
        per_asset = gate.get("per_asset")
        if per_asset is not None:
            worst = per_asset["worst"]
            text = (
                f"{per_asset['assets_own']} assets own one, {per_asset['assets_fallback']} "
                f"use the fleet threshold (min {per_asset['min_windows']} windows)"
            )
            if worst:
                text += f"; worst false alarms {worst['far']:.4%} ({worst['asset_id']})"
            table.add_row("per-asset thresholds", text)
        if gate.get("golden") is not None:
            _golden_rows(table, gate["golden"])
        table.add_row("gate", "[green]passed[/]" if result.passed else "[red]failed[/]")
        table.add_row("registry", f"{tr.registry} ({_verdict(result)})")
        console.print(table)
        if not result.passed:
            raise typer.Exit(1)


#: what a CSV source leaves out: a file has no anomaly events or feedback beside it
_CSV_EXCLUSIONS = (
    "CSV input: no exclusions apply beyond the file's anomaly labels (rows labelled "
    "non-zero are left out); emitted events, maintenance, acknowledged faults and "
    "champion alarms are only left out when training on a topic range (--from/--to)"
)


def _topic_source(
    settings: Settings,
    reg: Registry,
    start: str,
    end: str | None,
    channels: list[str] | None,
) -> tuple[Readings, str, Callable[[WindowBatch], Exclusions], LoadedModel | None]:
    """Readings of the topic range, and the exclusions ``trainer run`` applies: anomaly
    events and feedback read over the same range as the trainer reads them, and the
    windows the registry's champion (loaded here, also for the golden gate) alarms
    on."""
    import time

    from stream_ae.readings_io import _flag_time, read_topic
    from trainers.exclusions import champion_excluder, read_exclusion_records

    readings, source = read_topic(settings, start, end, channels)
    console.print(f"retraining on {len(readings):,} readings from {source}")
    start_ms = _flag_time("--from", start)
    now_ms = time.time_ns() // 1_000_000
    version = reg.champion() if reg.root.is_dir() else None
    champion = None
    if version is not None:
        from stream_ae.model.artifact import load_artifact

        champion = load_artifact(reg.path_of(version), device="cpu")
    events, feedback = read_exclusion_records(settings, start_ms)
    text = (
        f"exclusions: {len(events):,} anomaly events on {settings.topics.anomalies}, "
        f"{len(feedback):,} feedback records on {settings.topics.feedback}, "
        + (f"alarms of champion {version}" if version else "no champion to ask")
        + f" (at most {settings.trainer.max_excluded_share:.0%} of the windows may go: "
        "trainer.max_excluded_share)"
    )
    console.print(text)
    exclude = champion_excluder(
        events, feedback, open_end_ms=now_ms, champion=champion, channels=readings.channels
    )
    return readings, source, exclude, champion


def _excluded_text(data: dict[str, Any]) -> str:
    """The summary's line on what was left out (the report's ``data`` section)."""
    ex = data.get("exclusions")
    if ex is not None:
        reasons = ", ".join(f"{k} {v:,}" for k, v in ex["by_reason"].items())
        text = (
            f"{ex['share']:.2%} of the windows ({ex['excluded']:,} of {ex['windows']:,}; "
            f"{reasons}; false-alarm windows kept {ex['false_alarm_windows_kept']:,})"
        )
    else:
        text = "no event, feedback or champion exclusions (CSV input)"
    labelled = data.get("excluded_labelled_anomalies")
    if labelled is not None:
        text += f"; {labelled:,} readings labelled anomalous left out"
    return text


def _golden_rows(table: Table, g: dict[str, Any]) -> None:
    """Candidate vs champion on the golden set (trainers/golden.py), and the verdict."""
    from rich.markup import escape

    def numbers(m: dict[str, Any]) -> str:
        delay = "-" if m["mean_delay_s"] is None else f"{m['mean_delay_s']:g} s"
        recall = "-" if m["event_recall"] is None else f"{m['event_recall']:.3f}"
        return (
            f"event recall {recall} ({m['events_detected']}/{m['events']}), F1 {m['f1']:.3f}, "
            f"FAR {m['far_pct']:.2f} %, mean delay {delay} (W={m['window']}, H={m['hop']})"
        )

    s = g["set"]
    table.add_row(
        "golden set",
        f"{s['source']}: {s['labelled_events']} labelled faults, {s['readings']:,} readings",
    )
    table.add_row("golden: candidate", numbers(g["candidate"]))
    champ = g["champion"]
    name = f"golden: champion {g['champion_version'] or ''}".rstrip()
    table.add_row(name, numbers(champ) if champ else f"not scored: {escape(g['champion_skipped'])}")
    colour = "green" if g["passed"] else "red"
    table.add_row("golden check", f"[{colour}]{escape(g['verdict'])}[/]")
    for w in g.get("warnings", []):
        table.add_row("golden warning", f"[yellow]{escape(w)}[/]")


def register_trainer(app: typer.Typer) -> None:
    trainer = typer.Typer(help="The retraining service (trainers/).", no_args_is_help=True)

    @trainer.command("run")
    def run(
        once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    ) -> None:
        """Refit every trainer.interval_s and on `trainer trigger`, until SIGTERM/SIGINT."""
        from stream_ae.cli import get_settings
        from trainers.service import TrainerService

        service = TrainerService(get_settings())
        if once:
            result = service.run_once()
            console.print_json(json.dumps(result.report, default=str))
            if not result.passed:
                raise typer.Exit(1)
            return
        service.run()

    @trainer.command("trigger")
    def trigger(
        reason: Annotated[str, typer.Option("--reason")] = "manual request",
    ) -> None:
        """Ask the running trainer service to retrain now."""
        import getpass

        from stream_ae.cli import get_settings
        from trainers.service import request_retrain

        settings = get_settings()
        req = request_retrain(settings, by=getpass.getuser(), reason=reason)
        console.print(f"retraining requested on {settings.topics.models} at {req.requested_at_ms}")

    app.add_typer(trainer, name="trainer")


def _verdict(result: Any) -> str:
    if result.promoted:
        return "promoted"
    if not result.passed:
        return "rejected: gate failed"
    return result.held_reason or "held: passed, promotion off"
