"""``stream-ae evaluate``: backtests on labelled data (SKAB protocols or any CSV)."""

from __future__ import annotations

import json
import statistics
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)

PROTOCOLS = ("skab-published", "skab-causal", "skab-streaming")
DEFAULT_SKAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "skab"

RULE_NOTES = {
    "skab-published": (
        "decision rule: SKAB's published one, reproduced exactly — it is NOT causal (a row is "
        "flagged from windows reaching W-1 readings ahead) and never flags a file's last "
        "2W-2 rows; compare with the leaderboard only"
    ),
    "skab-causal": (
        "decision rule: the live scorer's — every test reading is decided from the latest "
        "window that ended at or before it (+{delay} readings), every reading counts"
    ),
    "skab-streaming": (
        "one model fitted on anomaly-free.csv; every labelled file streamed whole; decision "
        "rule: the live scorer's (+{delay} readings); every reading counts (readings before "
        "the first window, and during a re-baselining warm-up, count as 'no alarm')"
    ),
}


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        protocol: Annotated[
            str | None,
            typer.Option("--protocol", help="skab-published or skab-causal."),
        ] = None,
        data: Annotated[
            Path | None,
            typer.Option("--data", help="SKAB folder (default ../shared/data/skab)."),
        ] = None,
        csv: Annotated[
            Path | None,
            typer.Option("--csv", help="Labelled CSV file or folder, scored by --model."),
        ] = None,
        model: Annotated[Path | None, typer.Option("--model", help="Artifact for --csv.")] = None,
        sep: Annotated[str, typer.Option("--sep", help="CSV separator for --csv.")] = ",",
        label_column: Annotated[str, typer.Option("--label-column")] = "anomaly",
        time_column: Annotated[str | None, typer.Option("--time-column")] = None,
        seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "0",
        files: Annotated[
            int | None, typer.Option("--files", help="Only the first N files (quick runs).")
        ] = None,
        window: Annotated[int, typer.Option("--window", help="W for SKAB protocols.")] = 60,
        epochs: Annotated[int, typer.Option("--epochs")] = 30,
        delay: Annotated[
            int, typer.Option("--delay", help="Causal rule: readings of allowed delay.")
        ] = 0,
        threshold_quantile: Annotated[
            float,
            typer.Option("--threshold-quantile", help="SKAB: quantile of held-out scores."),
        ] = 0.995,
        threshold_factor: Annotated[
            float, typer.Option("--threshold-factor", help="SKAB: multiplier on it.")
        ] = 1.0,
        architecture: Annotated[
            str, typer.Option("--architecture", help="SKAB: conv or lstm.")
        ] = "conv",
        variant: Annotated[
            str,
            typer.Option(
                "--variant", help="SKAB: plain, denoising, sparse, contractive, variational."
            ),
        ] = "plain",
        persistence: Annotated[
            str,
            typer.Option("--persistence", help="Causal rule: K/N = k of the last n windows."),
        ] = "1/1",
        rebaseline_s: Annotated[
            float,
            typer.Option("--rebaseline-s", help="skab-streaming: warm-up seconds (0 = off)."),
        ] = 300.0,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print one JSON object as the last line.")
        ] = False,
        report: Annotated[
            Path | None, typer.Option("--report", help="Write a report (plots, tables) here.")
        ] = None,
    ) -> None:
        """Replay labelled data through the scorer's windowing, model and decision code."""
        from stream_ae.errors import ConfigError

        if (protocol is None) == (csv is None):
            raise ConfigError("give exactly one of --protocol NAME or --csv PATH --model DIR")
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        k_text, _, n_text = persistence.partition("/")
        if not (k_text.isdigit() and n_text.isdigit()):
            raise ConfigError(f"--persistence {persistence!r}: expected K/N, e.g. 3/5")
        knobs: dict[str, Any] = {
            "threshold_quantile": threshold_quantile,
            "threshold_factor": threshold_factor,
            "persistence_k": int(k_text),
            "persistence_n": int(n_text),
            "architecture": architecture,
            "variant": variant,
        }
        if protocol is not None:
            if protocol not in PROTOCOLS:
                raise ConfigError(f"--protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
            root = data or DEFAULT_SKAB
            if protocol == "skab-streaming":
                result = _skab_streaming(
                    root, seed_list, files, window, epochs, delay, rebaseline_s, report, knobs
                )
            else:
                result = _skab(
                    protocol, root, seed_list, files, window, epochs, delay, report, knobs
                )
        else:
            if model is None:
                raise ConfigError("--csv needs --model (an artifact folder)")
            assert csv is not None
            result = _csv(csv, model, sep, label_column, time_column, delay, report)
        if as_json:
            print(json.dumps(result, default=str))


def _progress(i: int, n: int, name: str) -> None:
    if i < n:
        console.print(f"  [{i + 1}/{n}] {name}", highlight=False)


def _pooled(runs: list[Any]) -> dict[str, Any]:
    """Metrics pooled over files (counts and NAB sums added, then normalised)."""
    from stream_ae.evaluate.metrics import Evaluation, evaluate_file

    total = Evaluation()
    for r in runs:
        total = total + evaluate_file(
            r.labels, r.pred, r.ts_ms, changepoints=r.changepoints, mask=r.counted
        )
    return total.summary()


def _skab_paths(root: Path, limit: int | None) -> list[Path]:
    from stream_ae.errors import DataError
    from stream_ae.evaluate.backtest import skab_files

    paths = skab_files(root)
    if not paths:
        raise DataError(f"no SKAB files under {root}", hint="pass --data PATH")
    return paths[:limit] if limit else paths


def _skab(
    protocol: str,
    root: Path,
    seeds: list[int],
    limit: int | None,
    window: int,
    epochs: int,
    delay: int,
    report: Path | None,
    knobs: dict[str, Any],
) -> dict[str, Any]:
    from stream_ae.evaluate.backtest import ModelSpec, Rule, run_many, run_split_file

    paths = _skab_paths(root, limit)
    rule: Rule = "published" if protocol == "skab-published" else "causal"
    spec = ModelSpec(window=window, hop=1, epochs=epochs, delay=delay, **knobs)
    console.print(f"[bold]{protocol}[/]: {len(paths)} files, seeds {seeds}, W={window}")
    console.print(RULE_NOTES[protocol].format(delay=delay), highlight=False)
    per_seed = []
    runs_by_seed = {}
    for seed in seeds:
        runs = run_many(paths, partial(run_split_file, model=spec, rule=rule, seed=seed), _progress)
        runs_by_seed[seed] = runs
        summary = _pooled(runs)
        summary["seed"] = seed
        summary["train_seconds"] = round(sum(r.train_seconds for r in runs), 1)
        per_seed.append(summary)
    result = _aggregate(per_seed)
    result.update(
        protocol=protocol,
        files=len(paths),
        window=window,
        delay=delay,
        settings=knobs,
        rule=RULE_NOTES[protocol].format(delay=delay),
    )
    _print_table(protocol, per_seed, result)
    if report is not None:
        from stream_ae.evaluate.report import write_report

        write_report(report, runs_by_seed[seeds[0]], result)
        console.print(f"report written to {report}")
    return result


def _skab_streaming(
    root: Path,
    seeds: list[int],
    limit: int | None,
    window: int,
    epochs: int,
    delay: int,
    rebaseline_s: float,
    report: Path | None,
    knobs: dict[str, Any],
) -> dict[str, Any]:
    from stream_ae.evaluate.backtest import ModelSpec, fit_on_file, stream_file

    paths = _skab_paths(root, limit)
    spec = ModelSpec(window=window, hop=1, epochs=epochs, delay=delay, **knobs)
    console.print(f"[bold]skab-streaming[/]: {len(paths)} files, seeds {seeds}, W={window}")
    console.print(RULE_NOTES["skab-streaming"].format(delay=delay), highlight=False)
    variants = {"plain": 0.0, f"rebaseline_{rebaseline_s:g}s": rebaseline_s}
    result: dict[str, Any] = {
        "protocol": "skab-streaming",
        "files": len(paths),
        "window": window,
        "delay": delay,
        "settings": knobs,
        "rule": RULE_NOTES["skab-streaming"].format(delay=delay),
    }
    for name, rb in variants.items():
        per_seed = []
        first_runs = None
        for seed in seeds:
            console.print(f"{name}, seed {seed}: fitting on anomaly-free.csv")
            scorer, threshold = fit_on_file(
                root / "anomaly-free" / "anomaly-free.csv", spec, seed=seed
            )
            runs = [stream_file(p, scorer, threshold, spec, rebaseline_s=rb) for p in paths]
            first_runs = first_runs or runs
            summary = _pooled(runs)
            summary["seed"] = seed
            per_seed.append(summary)
        agg = _aggregate(per_seed)
        _print_table(f"skab-streaming, {name}", per_seed, agg)
        result[name] = agg
        if report is not None and first_runs is not None:
            from stream_ae.evaluate.report import write_report

            write_report(report / name, first_runs, agg | {"rule": result["rule"]})
    return result


def _csv(
    path: Path,
    model_dir: Path,
    sep: str,
    label_column: str,
    time_column: str | None,
    delay: int,
    report: Path | None,
) -> dict[str, Any]:
    from stream_ae.evaluate.backtest import score_file_with_artifact
    from stream_ae.model.artifact import load_artifact

    loaded = load_artifact(model_dir, device="cpu")
    paths = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    runs = [
        score_file_with_artifact(
            p, loaded, sep=sep, label_column=label_column, time_column=time_column, delay=delay
        )
        for p in paths
    ]
    result = _pooled(runs)
    result.update(
        files=len(paths),
        model=loaded.metadata.version,
        rule=RULE_NOTES["skab-causal"].format(delay=delay),
    )
    _print_table(f"{path} with {loaded.metadata.version}", [result], result)
    if report is not None:
        from stream_ae.evaluate.report import write_report

        write_report(report, runs, result)
    return result


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("f1", "far", "mar", "precision", "recall", "nab_standard", "nab_low_fp", "nab_low_fn")
    out: dict[str, Any] = {}
    for k in keys:
        vals = [s[k] for s in per_seed if s.get(k) is not None]
        out[k] = round(statistics.fmean(vals), 4) if vals else None
        out[f"{k}_std"] = round(statistics.pstdev(vals), 4) if len(vals) > 1 else 0.0
    out["seeds"] = per_seed
    return out


def _print_table(title: str, per_seed: list[dict[str, Any]], agg: dict[str, Any]) -> None:
    table = Table(title=title)
    for col in ("seed", "F1", "FAR %", "MAR %", "NAB std", "NAB lowFP", "NAB lowFN"):
        table.add_column(col, justify="right")

    def f(v: Any, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    for s in per_seed:
        table.add_row(
            str(s.get("seed", "-")),
            f(s["f1"]),
            f(s["far"], 2),
            f(s["mar"], 2),
            f(s["nab_standard"], 2),
            f(s["nab_low_fp"], 2),
            f(s["nab_low_fn"], 2),
        )
    if len(per_seed) > 1:
        table.add_row(
            "mean",
            f(agg["f1"]),
            f(agg["far"], 2),
            f(agg["mar"], 2),
            f(agg["nab_standard"], 2),
            f(agg["nab_low_fp"], 2),
            f(agg["nab_low_fn"], 2),
        )
    Console().print(table)
