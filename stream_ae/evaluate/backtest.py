"""Backtests: labelled readings through the scorer's own windowing, model and
decision code, in-process, one file at a time (state reset between files).

Protocols (see docs/evaluation.md):

* ``skab-published`` — per file, fit on rows ``[0, 400)``, test on the rest,
  windows with hop 1, SKAB's leaderboard decision rule (non-causal; it cannot
  flag a file's last 2W − 2 rows) so numbers compare with the published table.
* ``skab-causal`` — the same split; every test reading is decided by the live
  rule (the latest window that has ended by that reading, plus ``delay``).
* ``skab-streaming`` — one model fitted on ``anomaly-free.csv``; every labelled
  file streamed through it whole with the live rule, without and with warm-up
  re-baselining.
* ``file`` — any labelled CSV(s) scored by a given model artifact with the live
  rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream_ae.evaluate.decisions import causal_rule, published_reach, published_rule
from stream_ae.evaluate.smoothing import k_of_n
from stream_ae.readings_io import Readings, read_csv, to_windows
from stream_ae.windowing import GridSpec, WindowBatch
from stream_ae.windowing.rebaseline import Rebaseliner

Rule = Literal["published", "causal"]

SKAB_TRAIN_ROWS = 400
SKAB_FOLDERS = ("valve1", "valve2", "other")


@dataclass
class FileRun:
    """Everything a report needs about one file's backtest."""

    name: str
    channels: list[str]
    ts_ms: np.ndarray  # (N,) test rows
    values: np.ndarray  # (N, C) test rows (raw)
    labels: np.ndarray  # (N,) 0/1
    changepoints: np.ndarray  # (N,) 0/1
    pred: np.ndarray  # (N,) 0/1
    counted: np.ndarray  # (N,) bool: rows the rule can decide (all for the causal rule)
    window_end_ms: np.ndarray  # (B,) exclusive end of each scored window
    window_scores: np.ndarray  # (B,)
    window_shares: np.ndarray  # (B, C)
    threshold: float
    train_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """How a backtest fits its models (tuned only on training data; see docs)."""

    architecture: str = "conv"
    variant: str = "plain"
    variant_params: dict[str, float | str] = field(default_factory=dict)
    window: int = 60
    hop: int = 1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    holdout_fraction: float = 0.2
    threshold_quantile: float = 0.995
    threshold_factor: float = 1.0
    hparams: dict[str, float] = field(default_factory=dict)
    fill_limit: int = 3
    delay: int = 0
    #: causal rule: k of the last n windows above the threshold (the live
    #: decision step's decide.persistence_k/n)
    persistence_k: int = 1
    persistence_n: int = 1


def file_run(
    name: str,
    readings: Readings,
    windows: WindowBatch,
    scores: np.ndarray,
    shares: np.ndarray,
    pred: np.ndarray,
    threshold: float,
    **extra: Any,
) -> FileRun:
    """A :class:`FileRun` for ``readings``; missing label columns count as all-normal."""
    n = len(readings)
    zeros = np.zeros(n, np.int8)
    return FileRun(
        name=name,
        channels=readings.channels,
        ts_ms=readings.ts_ms,
        values=readings.values,
        labels=readings.labels if readings.labels is not None else zeros,
        changepoints=readings.changepoints if readings.changepoints is not None else zeros,
        pred=pred,
        counted=extra.pop("counted", np.ones(n, bool)),
        window_end_ms=windows.end_ms,
        window_scores=scores,
        window_shares=shares,
        threshold=threshold,
        **extra,
    )


def skab_files(root: Path) -> list[Path]:
    """The 34 labelled SKAB files in a stable order."""
    files = [p for folder in SKAB_FOLDERS for p in sorted((root / folder).glob("*.csv"))]
    return sorted(files, key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else 0))


def _spec(readings: Readings, model: ModelSpec, period_ms: int) -> GridSpec:
    return GridSpec(
        period_ms=period_ms,
        size=model.window,
        hop=model.hop,
        lateness_ms=0,
        fill_limit=model.fill_limit,
        n_channels=len(readings.channels),
    )


def _rows(readings: Readings, start: int, stop: int | None = None) -> Readings:
    mask = np.zeros(len(readings), bool)
    mask[start:stop] = True
    return readings.select(mask)


def fit_model(train: Readings, model: ModelSpec, *, period_ms: int, seed: int) -> tuple[Any, float]:
    """Fit on ``train`` (all rows normal by assumption) → (scorer, threshold)."""
    from stream_ae.model.train import fit_autoencoder

    windows = to_windows(train, _spec(train, model, period_ms))
    trained = fit_autoencoder(
        windows.values,
        architecture=model.architecture,
        channels=train.channels,
        sample_period_ms=period_ms,
        hop=model.hop,
        hparams=dict(model.hparams),
        epochs=model.epochs,
        batch_size=model.batch_size,
        lr=model.lr,
        seed=seed,
        device="cpu",
        holdout_fraction=model.holdout_fraction,
        threshold_quantile=model.threshold_quantile,
        variant=model.variant,
        variant_params=dict(model.variant_params),
    )
    return trained.scorer("cpu"), trained.threshold.value * model.threshold_factor


def score_rows(
    test: Readings,
    scorer: Any,
    threshold: float,
    model: ModelSpec,
    *,
    period_ms: int,
    rule: Rule,
) -> tuple[WindowBatch, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """→ windows, window scores, window shares, row predictions, rows counted."""
    spec = _spec(test, model, period_ms)
    windows = to_windows(test, spec)
    res = scorer.score(windows.values)
    anomalous = res.scores > threshold
    row_buckets = test.ts_ms // period_ms
    starts = windows.start_ms // period_ms
    if rule == "causal":
        anomalous = k_of_n(anomalous, model.persistence_k, model.persistence_n, starts)
        pred = causal_rule(row_buckets, starts, anomalous, model.window, delay=model.delay)
        counted = np.ones(len(test), bool)
    else:
        if model.hop != 1:
            raise ValueError("the published rule needs windows with hop 1")
        # row-indexed windows: window j starts at row j (rows on a gap-free stretch)
        row_of_bucket = {int(b): i for i, b in enumerate(row_buckets.tolist())}
        per_row = np.zeros(max(len(test) - model.window + 1, 0), bool)
        for b, a in zip(starts.tolist(), anomalous.tolist(), strict=True):
            j = row_of_bucket.get(int(b))
            if j is not None and j < len(per_row):
                per_row[j] = a
        pred = published_rule(per_row, len(test), model.window)
        counted = np.ones(len(test), bool)
    return windows, res.scores, res.channel_shares, pred, counted


def run_split_file(
    path: Path,
    model: ModelSpec,
    *,
    rule: Rule,
    seed: int,
    train_rows: int = SKAB_TRAIN_ROWS,
    sep: str = ";",
    period_ms: int = 1000,
) -> FileRun:
    """SKAB protocol for one file: fit on the first ``train_rows`` rows, test on the rest."""
    readings = read_csv(path, sep=sep, default_asset=f"{path.parent.name}/{path.stem}")
    train, test = _rows(readings, 0, train_rows), _rows(readings, train_rows)
    t0 = time.perf_counter()
    scorer, threshold = fit_model(train, model, period_ms=period_ms, seed=seed)
    fit_s = time.perf_counter() - t0
    windows, scores, shares, pred, counted = score_rows(
        test, scorer, threshold, model, period_ms=period_ms, rule=rule
    )
    n = len(test)
    return file_run(
        f"{path.parent.name}/{path.name}",
        test,
        windows,
        scores,
        shares,
        pred,
        threshold,
        counted=counted,
        train_seconds=fit_s,
        info={"published_reach": int(published_reach(n, model.window).sum())},
    )


def score_file_with_artifact(
    path: Path,
    loaded: Any,
    *,
    sep: str = ",",
    label_column: str = "anomaly",
    time_column: str | None = None,
    delay: int = 0,
) -> FileRun:
    """A labelled CSV scored by a saved model with the live (causal) rule."""
    md = loaded.metadata
    readings = read_csv(
        path,
        channels=md.channels,
        sep=sep,
        label_column=label_column,
        time_column=time_column,
        default_asset=path.stem,
    )
    spec = ModelSpec(window=md.window, hop=md.hop, delay=delay)
    windows, scores, shares, pred, counted = score_rows(
        readings,
        loaded.scorer,
        md.threshold_spec.value,
        spec,
        period_ms=md.sample_period_ms,
        rule="causal",
    )
    return file_run(
        path.name,
        readings,
        windows,
        scores,
        shares,
        pred,
        md.threshold_spec.value,
        counted=counted,
    )


def fit_on_file(
    path: Path, model: ModelSpec, *, seed: int, sep: str = ";", period_ms: int = 1000
) -> tuple[Any, float]:
    """Fit once on a whole file of normal data (``skab-streaming``: anomaly-free.csv)."""
    return fit_model(read_csv(path, sep=sep), model, period_ms=period_ms, seed=seed)


def stream_file(
    path: Path,
    scorer: Any,
    threshold: float,
    model: ModelSpec,
    *,
    rebaseline_s: float = 0.0,
    sep: str = ";",
    period_ms: int = 1000,
) -> FileRun:
    """A whole labelled file through a fixed model with the live rule, optionally with
    warm-up re-baselining (the live scorer's ``model.rebaseline_s``)."""
    readings = read_csv(path, sep=sep, default_asset=f"{path.parent.name}/{path.stem}")
    spec = _spec(readings, model, period_ms)
    windows = to_windows(readings, spec)
    if rebaseline_s > 0:
        rb = Rebaseliner(int(rebaseline_s * 1000), np.asarray(scorer.scaler.mean, np.float64))
        windows = rb.apply(windows)
    res = scorer.score(windows.values)
    anomalous = res.scores > threshold
    pred = causal_rule(
        readings.ts_ms // period_ms,
        windows.start_ms // period_ms,
        anomalous,
        model.window,
        delay=model.delay,
    )
    return file_run(
        f"{path.parent.name}/{path.name}",
        readings,
        windows,
        res.scores,
        res.channel_shares,
        pred,
        threshold,
        info={"rebaseline_s": rebaseline_s},
    )


def run_many(
    paths: Sequence[Path],
    run_one: Callable[[Path], FileRun],
    progress: Callable[[int, int, str], None] | None = None,
) -> list[FileRun]:
    out = []
    for i, p in enumerate(paths):
        if progress:
            progress(i, len(paths), str(p))
        out.append(run_one(p))
    if progress:
        progress(len(paths), len(paths), "done")
    return out
