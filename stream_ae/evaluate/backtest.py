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

The live rule is per asset (:func:`live_decisions`): an asset's readings take the
verdicts of that asset's windows, as the running scorer decides them.
``evaluate --via-kafka`` (:mod:`stream_ae.evaluate.via_kafka`) rebuilds the same
decisions from the scores a real scorer published and checks they are equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream_ae.decide.persistence import Persistence
from stream_ae.decide.threshold import AssetThresholds
from stream_ae.evaluate.decisions import causal_rule, published_reach, published_rule
from stream_ae.evaluate.smoothing import k_of_n
from stream_ae.readings_io import (
    Readings,
    read_csv,
    to_windows,
    windows_and_gaps,
)
from stream_ae.windowing import GridSpec, WindowBatch
from stream_ae.windowing.rebaseline import Rebaseliner

Rule = Literal["published", "causal"]

SKAB_TRAIN_ROWS = 400
#: SKAB beside the checkout (read-only, never copied into the project)
DEFAULT_SKAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "skab"
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
    window_assets: list[str] = field(default_factory=list)  # (B,) asset of each window
    #: (N,) bool: rows the decision rule can flag at all (the published rule never
    #: flags the first W−1 and last 2W−2 test rows); None = every row
    can_flag: np.ndarray | None = None


@dataclass(frozen=True)
class ModelSpec:
    """How a backtest fits its models (tuned only on training data; see docs)."""

    architecture: str = "conv"
    variant: str = "plain"
    variant_params: dict[str, float | str] = field(default_factory=dict)
    #: train.error_norm: "none" or "holdout" (per-channel error normalisation)
    error_norm: str = "none"
    #: train.score_tail: a window's score is its newest this-many steps' error (0 = all)
    score_tail: int = 0
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
        window_assets=list(windows.asset_ids),
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
    trained = fit_trained(train, model, period_ms=period_ms, seed=seed)
    return trained.scorer("cpu"), trained.threshold.value * model.threshold_factor


def fit_trained(train: Readings, model: ModelSpec, *, period_ms: int, seed: int) -> Any:
    """Fit on ``train`` → the :class:`~stream_ae.model.artifact.TrainedModel` (savable;
    its threshold is the calibrated one, before ``model.threshold_factor``)."""
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
        error_norm=model.error_norm,
        score_tail=model.score_tail,
    )
    return trained


def window_verdicts(
    window_assets: Sequence[str],
    window_start_ms: np.ndarray,
    scores: np.ndarray,
    threshold: float | np.ndarray,
    model: ModelSpec,
) -> np.ndarray:
    """(B,) bool: above the threshold (one, or one per window) and, with persistence,
    ``k`` of the asset's last ``n`` windows in start order — what the live decider
    alarms on."""
    above = np.asarray(scores) > threshold
    out = np.zeros(len(above), bool)
    starts = np.asarray(window_start_ms)
    for sel in asset_groups(window_assets).values():
        out[sel] = k_of_n(above[sel], model.persistence_k, model.persistence_n, starts[sel])
    return out


def asset_groups(asset_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Asset -> the ascending indices of its items, assets in order of first
    appearance. One sort for all assets: a mask per asset costs assets × items
    comparisons (33 s for 2,000 assets and a million readings)."""
    ids = np.asarray(list(asset_ids), dtype=object)
    if not len(ids):
        return {}
    names, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    parts = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1])
    return {str(names[g]): parts[g] for g in np.argsort(first, kind="stable")}


def live_decisions(
    readings: Readings,
    window_assets: Sequence[str],
    window_start_ms: np.ndarray,
    scores: np.ndarray,
    threshold: float | np.ndarray,
    model: ModelSpec,
    *,
    period_ms: int,
) -> np.ndarray:
    """(N,) 0/1 per reading by the live rule, per asset: each reading takes the verdict
    (:func:`window_verdicts`) of its own asset's latest window that ended by it
    (+ ``model.delay``). One function for the in-process and the broker paths, so
    their decisions can only differ where their windows or scores do."""
    pred = np.zeros(len(readings), np.int8)
    verdicts = window_verdicts(window_assets, window_start_ms, scores, threshold, model)
    starts = np.asarray(window_start_ms, np.int64) // period_ms
    row_buckets = readings.ts_ms // period_ms
    windows_of = asset_groups(window_assets)
    none = np.zeros(0, np.int64)
    for asset, rows in asset_groups(readings.asset_ids).items():
        wins = windows_of.get(asset, none)
        pred[rows] = causal_rule(
            row_buckets[rows], starts[wins], verdicts[wins], model.window, delay=model.delay
        )
    return pred


def score_rows(
    test: Readings,
    scorer: Any,
    threshold: float,
    model: ModelSpec,
    *,
    period_ms: int,
    rule: Rule,
    per_asset: AssetThresholds | None = None,
) -> tuple[WindowBatch, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """→ windows, window scores, window shares, row predictions, rows counted.

    ``per_asset`` (a model's per-asset thresholds, causal rule only) judges each
    window by its asset's threshold, as the live Decider does."""
    spec = _spec(test, model, period_ms)
    windows = to_windows(test, spec)
    res = scorer.score(windows.values)
    if rule == "causal":
        pred = live_decisions(
            test,
            windows.asset_ids,
            windows.start_ms,
            res.scores,
            threshold if per_asset is None else per_asset.values_for(windows.asset_ids),
            model,
            period_ms=period_ms,
        )
        counted = np.ones(len(test), bool)
    else:
        anomalous = res.scores > threshold
        row_buckets = test.ts_ms // period_ms
        starts = windows.start_ms // period_ms
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
    readings = skab_readings(path, sep=sep)
    train, test = _rows(readings, 0, train_rows), _rows(readings, train_rows)
    t0 = time.perf_counter()
    scorer, threshold = fit_model(train, model, period_ms=period_ms, seed=seed)
    fit_s = time.perf_counter() - t0
    windows, scores, shares, pred, counted = score_rows(
        test, scorer, threshold, model, period_ms=period_ms, rule=rule
    )
    reach = published_reach(len(test), model.window)
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
        info={"published_reach": int(reach.sum())},
        can_flag=reach if rule == "published" else None,
    )


def artifact_spec(
    metadata: Any, *, delay: int = 0, persistence: tuple[int, int] = (1, 1)
) -> ModelSpec:
    """The live decision rule of a saved model: its W and H, and its recorded
    persistence (``persistence`` only when it has none), as ``bind_model`` does."""
    rule = Persistence.from_params(metadata.threshold_spec.params, *persistence)
    return ModelSpec(
        window=metadata.window,
        hop=metadata.hop,
        delay=delay,
        persistence_k=rule.k,
        persistence_n=rule.n,
    )


def score_readings_with_artifact(
    name: str,
    readings: Readings,
    loaded: Any,
    *,
    delay: int = 0,
    persistence: tuple[int, int] = (1, 1),
) -> FileRun:
    """Readings (one file's) scored by a loaded model with the live rule."""
    md = loaded.metadata
    spec = artifact_spec(md, delay=delay, persistence=persistence)
    windows, scores, shares, pred, counted = score_rows(
        readings,
        loaded.scorer,
        md.threshold_spec.value,
        spec,
        period_ms=md.sample_period_ms,
        rule="causal",
        per_asset=md.asset_thresholds,
    )
    used = md.asset_thresholds.values_for(windows.asset_ids)  # the fleet's where none own
    return file_run(
        name,
        readings,
        windows,
        scores,
        shares,
        pred,
        md.threshold_spec.value,
        counted=counted,
        info={"window_thresholds": used},
    )


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
    return stream_readings(
        f"{path.parent.name}/{path.name}",
        skab_readings(path, sep=sep),
        scorer,
        threshold,
        model,
        rebaseline_s=rebaseline_s,
        period_ms=period_ms,
    )


def skab_readings(path: Path, *, sep: str = ";") -> Readings:
    """A SKAB file's readings; the asset is ``<folder>/<stem>`` (e.g. ``valve1/3``)."""
    return read_csv(path, sep=sep, default_asset=f"{path.parent.name}/{path.stem}")


def stream_readings(
    name: str,
    readings: Readings,
    scorer: Any,
    threshold: float,
    model: ModelSpec,
    *,
    rebaseline_s: float = 0.0,
    period_ms: int = 1000,
) -> FileRun:
    """:func:`stream_file` on readings already read."""
    spec = _spec(readings, model, period_ms)
    windows, gaps = windows_and_gaps(readings, spec)
    if rebaseline_s > 0:
        rb = Rebaseliner(int(rebaseline_s * 1000), np.asarray(scorer.scaler.mean, np.float64))
        rb.note_gaps(gaps)  # a gap restarts the warm-up, as in the live scorer
        windows = rb.apply(windows)
    res = scorer.score(windows.values)
    pred = live_decisions(
        readings,
        windows.asset_ids,
        windows.start_ms,
        res.scores,
        threshold,
        model,
        period_ms=period_ms,
    )
    return file_run(
        name,
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
