"""``stream-ae retrain``: one retraining round for engineers (see trainers/retrain.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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
        """Train a candidate, calibrate its threshold, gate it, register it, promote it."""
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
        if csv is not None:
            from stream_ae.readings_io import read_readings

            readings, source = read_readings(csv, channels=chans, sep=sep), str(csv)
        else:
            from stream_ae.readings_io import read_topic

            readings, source = read_topic(settings, topic_start or "", topic_end, chans)
        console.print(f"retraining on {len(readings):,} readings from {source}")
        reg = Registry(tr.registry)

        def say(version: str) -> None:
            from stream_ae.cli.models_cmd import _announce

            _announce(reg, version)

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
        )
        gate = result.report["gate"]
        table = Table(title=f"candidate {result.version}", show_header=False)
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
    return "rejected: gate failed" if not result.passed else "held: passed, promotion off"
