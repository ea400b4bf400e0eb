"""``stream-ae evaluate``: backtests on labelled data (SKAB protocols or any CSV)."""

from __future__ import annotations

import json
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)

PROTOCOLS = ("skab-published", "skab-causal", "skab-streaming")

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


#: the options that say how a SKAB protocol fits its models (ModelSpec fields)
FIT_OPTIONS = ("architecture", "variant", "error_norm", "score_tail")


def _check_fit_options(protocol: str | None, window: int, knobs: dict[str, Any]) -> None:
    """Refuse fitting options that would be silently ignored or fail late."""
    from stream_ae.errors import ConfigError
    from stream_ae.evaluate.backtest import ModelSpec

    if protocol is None:  # --csv with --model: the model's own, from its metadata
        default = ModelSpec()
        given = ["--" + k.replace("_", "-") for k in FIT_OPTIONS if knobs[k] != getattr(default, k)]
        if given:
            raise ConfigError(
                f"{', '.join(given)} only apply to the SKAB protocols, which fit their models",
                hint="--csv scores with the --model artifact as it was trained; drop "
                + ", ".join(given),
            )
    elif knobs["score_tail"] > window:
        raise ConfigError(
            f"--score-tail {knobs['score_tail']} is longer than the window (--window {window})",
            hint=f"use --score-tail {window} or less (0 = the whole window)",
        )


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        protocol: Annotated[
            str | None,
            typer.Option("--protocol", help="skab-published, skab-causal or skab-streaming."),
        ] = None,
        data: Annotated[
            Path | None,
            typer.Option("--data", help="SKAB folder (default ../shared/data/skab)."),
        ] = None,
        csv: Annotated[
            Path | None,
            typer.Option(
                "--csv",
                "--input",
                help="Labelled CSV or Parquet file, or a folder of them, scored by --model.",
            ),
        ] = None,
        model: Annotated[Path | None, typer.Option("--model", help="Artifact for --csv.")] = None,
        sep: Annotated[str, typer.Option("--sep", help="CSV separator for --csv.")] = ",",
        label_column: Annotated[str, typer.Option("--label-column")] = "anomaly",
        time_column: Annotated[str | None, typer.Option("--time-column")] = None,
        asset_column: Annotated[
            str,
            typer.Option(
                "--asset-column",
                help="--csv: column naming the asset (absent: the file's name is the asset).",
            ),
        ] = "asset_id",
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
        error_norm: Annotated[
            str,
            typer.Option(
                "--error-norm",
                help="SKAB: none, or holdout (each channel's error / its held-out mean).",
            ),
        ] = "none",
        score_tail: Annotated[
            int,
            typer.Option(
                "--score-tail",
                min=0,
                help="SKAB: score each window by its newest K readings' error (0 = all).",
            ),
        ] = 0,
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
        via_kafka: Annotated[
            bool,
            typer.Option(
                "--via-kafka",
                help="Also send each file through a real topic and a running `stream-ae "
                "score`, and check it gives the same windows, scores and decisions "
                "(--csv, skab-streaming; broker: kafka.bootstrap_servers).",
            ),
        ] = False,
        keep_topics: Annotated[
            bool,
            typer.Option("--keep-topics", help="--via-kafka: keep the per-file eval topics."),
        ] = False,
        flush_idle_s: Annotated[
            float,
            typer.Option(
                "--flush-idle-s",
                min=0.5,
                help="--via-kafka: the scorer closes a file's windows after this long "
                "without data (window.idle_timeout_ms); must exceed one batch's scoring.",
            ),
        ] = 5.0,
    ) -> None:
        """Replay labelled data through the scorer's windowing, model and decision code
        (with --via-kafka also through a real topic and a running scorer, and compare)."""
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
            "error_norm": error_norm,
            "score_tail": score_tail,
        }
        if protocol is not None and protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        _check_fit_options(protocol, window, knobs)
        if report is not None:  # before the run, not when its results are written
            from stream_ae.cli.outputs import check_output_dir

            check_output_dir("--report", report)
        via = _broker_eval(protocol, keep_topics, flush_idle_s) if via_kafka else None
        try:
            if protocol is not None:
                from stream_ae.evaluate.backtest import DEFAULT_SKAB

                root = data or DEFAULT_SKAB
                if protocol == "skab-streaming":
                    result = _skab_streaming(
                        root,
                        seed_list,
                        files,
                        window,
                        epochs,
                        delay,
                        rebaseline_s,
                        report,
                        knobs,
                        via,
                    )
                else:
                    result = _skab(
                        protocol, root, seed_list, files, window, epochs, delay, report, knobs
                    )
            else:
                if model is None:
                    raise ConfigError("--csv needs --model (an artifact folder)")
                assert csv is not None
                persist = (knobs["persistence_k"], knobs["persistence_n"])
                result = _csv(
                    csv,
                    model,
                    sep,
                    label_column,
                    time_column,
                    delay,
                    report,
                    persist,
                    via,
                    asset_column=asset_column,
                )
        finally:
            if via is not None:
                via.close()  # its temporary folder, on failure too
        if as_json:
            print(json.dumps(result, default=str))
        if via is not None and not _via_equal(result):
            console.print(
                "[bold red]the broker path differs from the in-process one[/] "
                "(tables above; --json has the details)"
            )
            raise typer.Exit(1)


def _broker_eval(protocol: str | None, keep_topics: bool, flush_idle_s: float) -> Any:
    """The broker side of --via-kafka, checked reachable before any model is fitted."""
    from stream_ae.cli import get_settings
    from stream_ae.errors import ConfigError
    from stream_ae.evaluate.via_kafka import BrokerEval

    if protocol in ("skab-published", "skab-causal"):
        raise ConfigError(
            f"--via-kafka does not apply to --protocol {protocol}",
            hint="it checks the live path with one fixed model; "
            + (
                "skab-published's decision rule is not causal, so no running scorer can produce it"
                if protocol == "skab-published"
                else "skab-causal fits a new model on each file's first 400 rows, which "
                "the broker path cannot change"
            )
            + ". Use --protocol skab-streaming, or --csv FILE --model DIR",
        )
    via = BrokerEval(get_settings(), keep_topics=keep_topics, flush_idle_s=flush_idle_s)
    via.check_reachable()
    console.print(
        f"--via-kafka: broker {via.bootstrap}, run {via.run_id}: each file through "
        f"topics {via.prefix}.{via.run_id}.<n>.* and a fresh `stream-ae score`",
        highlight=False,
    )
    return via


def _via_equal(result: Any) -> bool:
    """False when any --via-kafka comparison in the result found a difference."""
    if isinstance(result, dict):
        own = result.get("via_kafka")
        if isinstance(own, dict) and not own.get("equal", True):
            return False
        return all(_via_equal(v) for k, v in result.items() if k != "via_kafka")
    return True


def _via_kafka(
    via: Any,
    refs: list[Any],
    readings: list[Any],
    setup: Any,
    spec: Any,
    period_ms: int,
    seconds: list[float],
) -> tuple[list[Any], list[Any]]:
    """Each file through the broker, every one with the scorer set up as ``setup``;
    → (runs rebuilt from what came back, comparisons)."""
    from stream_ae.evaluate.via_kafka import compare, kafka_file_run

    got, comparisons = [], []
    for ref, r, secs in zip(refs, readings, seconds, strict=True):
        run = via.run(ref.name, r, setup)
        mine = kafka_file_run(ref, r, run, spec, period_ms=period_ms)
        got.append(mine)
        comparisons.append(compare(ref, mine, run, spec, period_ms=period_ms, in_process_s=secs))
    return got, comparisons


def _via_summary(
    via: Any, title: str, mine: dict[str, Any], got: list[Any], comparisons: list[Any]
) -> dict[str, Any]:
    """The via_kafka section of the result, and its table; ``mine`` is the in-process
    runs' :func:`_pooled` metrics."""
    theirs = _pooled(got)
    metrics_equal = json.dumps(mine, default=str) == json.dumps(theirs, default=str)
    files = [c.as_dict() for c in comparisons]
    out: dict[str, Any] = {
        "bootstrap_servers": via.bootstrap,
        "run_id": via.run_id,
        "equal": metrics_equal and all(c.equal for c in comparisons),
        "metrics_equal": metrics_equal,
        "windows": sum(c.windows_via_kafka for c in comparisons),
        "dead_letters": sum(sum(c.dead_letters.values()) for c in comparisons),
        "wall_s": round(sum(c.wall_s for c in comparisons), 1),
        "metrics": theirs,
        "files": files,
    }
    table = Table(title=f"{title}: in-process vs via Kafka ({via.bootstrap})")
    for col in (
        "file",
        "windows",
        "missing/extra",
        "max |Δscore|",
        "decisions ≠",
        "events",
        "DLQ",
        "seconds",
        "equal",
    ):
        table.add_column(col, justify="left" if col == "file" else "right")
    for c in comparisons:
        table.add_row(
            c.name,
            f"{c.windows_in_process}/{c.windows_via_kafka}",
            f"{c.missing}/{c.extra}",
            f"{c.max_score_diff:.2g}",
            str(c.decisions_differ),
            f"{c.events_expected}/{c.events}",
            str(sum(c.dead_letters.values())),
            f"{c.in_process_s:.1f}/{c.wall_s:.1f}",
            "[green]yes[/]" if c.equal else "[red]NO[/]",
        )
    Console().print(table)
    console.print(
        "  (windows, events, seconds: in-process / via Kafka; events = alarmed windows)",
        highlight=False,
    )
    for c in comparisons:
        for line in [*c.examples, *c.notes]:
            console.print(f"  {c.name}: {line}", highlight=False)
    if not metrics_equal:
        console.print("  pooled metrics differ: in-process " + json.dumps(mine, default=str))
    return out


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
    via: Any = None,
) -> dict[str, Any]:
    from stream_ae.evaluate.backtest import (
        ModelSpec,
        fit_trained,
        skab_readings,
        stream_readings,
    )
    from stream_ae.readings_io import read_csv

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
    readings = [skab_readings(p) for p in paths]
    normal = read_csv(root / "anomaly-free" / "anomaly-free.csv", sep=";")
    # the fit depends on the seed only (not on the variant): once per seed
    fitted: dict[int, tuple[Any, Any, float]] = {}  # seed → (trained, scorer, threshold)
    artifacts: dict[int, Path] = {}  # seed → the fit saved for --via-kafka's scorer
    for name, rb in variants.items():
        per_seed = []
        via_per_seed = []
        first_runs = None
        for seed in seeds:
            if seed in fitted:
                console.print(f"{name}, seed {seed}: reusing its fit on anomaly-free.csv")
            else:
                console.print(f"{name}, seed {seed}: fitting on anomaly-free.csv")
                trained = fit_trained(normal, spec, period_ms=1000, seed=seed)
                fitted[seed] = (
                    trained,
                    trained.scorer("cpu"),
                    trained.threshold.value * spec.threshold_factor,
                )
            trained, scorer, threshold = fitted[seed]
            runs, seconds = [], []
            for p, r in zip(paths, readings, strict=True):
                t0 = time.perf_counter()
                runs.append(
                    stream_readings(
                        f"{p.parent.name}/{p.name}", r, scorer, threshold, spec, rebaseline_s=rb
                    )
                )
                seconds.append(time.perf_counter() - t0)
            first_runs = first_runs or runs
            pooled = _pooled(runs)
            per_seed.append(pooled | {"seed": seed})
            if via is not None:
                from stream_ae.evaluate.via_kafka import ScorerSetup, save_for_scorer

                if seed not in artifacts:  # the variants differ in the scorer's settings only
                    artifacts[seed] = save_for_scorer(
                        trained, threshold, spec, via.artifact_dir / f"seed-{seed}"
                    )
                setup = ScorerSetup(
                    artifacts[seed],
                    fill_limit=spec.fill_limit,
                    rebaseline_s=rb,
                    persistence=(spec.persistence_k, spec.persistence_n),
                )
                got, comparisons = _via_kafka(via, runs, readings, setup, spec, 1000, seconds)
                title = f"skab-streaming, {name}, seed {seed}"
                via_per_seed.append(
                    _via_summary(via, title, pooled, got, comparisons) | {"seed": seed}
                )
        agg = _aggregate(per_seed)
        _print_table(f"skab-streaming, {name}", per_seed, agg)
        result[name] = agg
        if via is not None:
            agg["via_kafka"] = {
                "equal": all(v["equal"] for v in via_per_seed),
                "seeds": via_per_seed,
            }
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
    persistence: tuple[int, int] = (1, 1),
    via: Any = None,
    *,
    asset_column: str = "asset_id",
) -> dict[str, Any]:
    from stream_ae.errors import DataError
    from stream_ae.evaluate.backtest import artifact_spec, score_readings_with_artifact
    from stream_ae.model.artifact import load_artifact
    from stream_ae.readings_io import input_files, read_readings

    loaded = load_artifact(model_dir, device="cpu")
    md = loaded.metadata
    paths = input_files(path)  # a file, or the .csv/.parquet/.pq files of a folder
    readings, runs, seconds = [], [], []
    for p in paths:
        r = read_readings(
            p,
            channels=md.channels,
            sep=sep,
            label_column=label_column,
            time_column=time_column,
            asset_column=asset_column,
            require_labels=True,  # without labels every metric would be made up
        )  # no asset column: the asset is the file's stem
        t0 = time.perf_counter()
        runs.append(
            score_readings_with_artifact(p.name, r, loaded, delay=delay, persistence=persistence)
        )
        seconds.append(time.perf_counter() - t0)
        readings.append(r)
        if not len(runs[-1].window_scores) and len(paths) > 1:
            warning = escape(_unscored(p, r, md))
            console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if not any(len(run.window_scores) for run in runs):
        raise DataError(
            f"nothing to evaluate: {_unscored(path, readings[0], md)}"
            if len(paths) == 1
            else f"nothing to evaluate: none of the {len(paths)} files in {path} gave a window",
            hint=f"give an asset at least {md.window} consecutive readings (the model's window)",
        )
    pooled = _pooled(runs)
    result = pooled | {
        "files": len(paths),
        "model": loaded.metadata.version,
        "rule": RULE_NOTES["skab-causal"].format(delay=delay),
    }
    _print_table(f"{path} with {loaded.metadata.version}", [result], result)
    if via is not None:
        from stream_ae.evaluate.via_kafka import ScorerSetup

        spec = artifact_spec(md, delay=delay, persistence=persistence)
        setup = ScorerSetup(loaded.path, fill_limit=spec.fill_limit, persistence=persistence)
        got, comparisons = _via_kafka(
            via, runs, readings, setup, spec, md.sample_period_ms, seconds
        )
        result["via_kafka"] = _via_summary(via, str(path), pooled, got, comparisons)
    if report is not None:
        from stream_ae.evaluate.report import write_report

        write_report(report, runs, result)
    return result


def _unscored(path: Path, readings: Any, md: Any) -> str:
    """Why a file gave no window: too few readings for one window, or gaps. (Its
    readings would all count as 'no alarm', and a file without anomalies would
    score a perfect F1.)"""
    from collections import Counter

    most = max(Counter(readings.asset_ids).values())
    window = f"the model's window of {md.window}"
    why = (
        f"its asset with the most readings has {most}, fewer than {window}"
        if most < md.window
        else f"no asset has {window} readings without a gap"
    )
    return f"{path}: 0 windows were scored ({len(readings)} rows; {why})"


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
