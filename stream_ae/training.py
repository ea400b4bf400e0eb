"""One-shot training: readings → the scorer's windows → fit → calibrated artifact.

Labelled anomalies (a label column in a CSV) are removed before windowing, so no
training window contains them; the hole they leave is a gap no window spans.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream_ae.errors import DataError
from stream_ae.readings_io import Readings, to_windows
from stream_ae.settings import Settings
from stream_ae.windowing import GridSpec, WindowBatch

Progress = Callable[[int, float, float], None]


def grid_for_training(settings: Settings, n_channels: int) -> GridSpec:
    w = settings.window
    return GridSpec(
        period_ms=w.sample_period_ms,
        size=w.size,
        hop=w.hop,
        lateness_ms=w.allowed_lateness_ms,
        fill_limit=w.fill_limit,
        n_channels=n_channels,
    )


def training_windows(readings: Readings, settings: Settings) -> tuple[WindowBatch, dict[str, Any]]:
    """Windows for training and a description of what was used and excluded."""
    info: dict[str, Any] = {"readings": len(readings)}
    if readings.labels is not None:
        normal = readings.labels == 0
        info["excluded_labelled_anomalies"] = int((~normal).sum())
        readings = readings.select(normal)
    if not len(readings):
        raise DataError("no normal readings left to train on")
    spec = grid_for_training(settings, len(readings.channels))
    windows = to_windows(readings, spec)
    # time order across assets, so the held-out tail is the most recent data
    order = np.argsort(windows.start_ms, kind="stable")
    windows = _reorder(windows, order)
    info.update(
        windows=len(windows),
        assets=len(set(readings.asset_ids)),
        start_ms=int(readings.ts_ms.min()),
        end_ms=int(readings.ts_ms.max()),
    )
    return windows, info


def _reorder(w: WindowBatch, order: np.ndarray) -> WindowBatch:
    return WindowBatch(
        [w.asset_ids[i] for i in order.tolist()],
        w.partitions[order],
        w.start_ms[order],
        w.end_ms[order],
        w.values[order],
    )


def fit(
    windows: WindowBatch,
    channels: list[str],
    settings: Settings,
    training_info: dict[str, Any],
    progress: Progress | None = None,
) -> Any:
    """``fit_autoencoder`` with every knob from the settings tree (``train`` section)."""
    from stream_ae.model.train import fit_autoencoder

    t = settings.train
    return fit_autoencoder(
        windows.values,
        architecture=t.architecture,
        channels=channels,
        sample_period_ms=settings.window.sample_period_ms,
        hop=settings.window.hop,
        hparams=dict(t.hparams),
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.learning_rate,
        seed=t.seed,
        device=settings.model.device,
        holdout_fraction=t.holdout_fraction,
        threshold_quantile=t.threshold_quantile,
        training_info=training_info,
        progress=progress,
        variant=t.variant,
        variant_params=dict(t.variant_params),
        error_norm=t.error_norm,
        score_tail=t.score_tail,
    )


def with_decision_rule(trained: Any, settings: Settings) -> Any:
    """Record the decision rule's persistence (decide.persistence_k/n) with the model."""
    import dataclasses

    d = settings.decide
    threshold = dict(trained.metadata.threshold)
    threshold["params"] = {
        **threshold.get("params", {}),
        "persistence_k": d.persistence_k,
        "persistence_n": d.persistence_n,
    }
    return dataclasses.replace(
        trained, metadata=trained.metadata.model_copy(update={"threshold": threshold})
    )


def train(
    readings: Readings,
    settings: Settings,
    *,
    source: str,
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fit, calibrate and save; returns the artifact folder and a summary."""
    from stream_ae.model.artifact import save_artifact

    windows, info = training_windows(readings, settings)
    t = settings.train
    started = time.monotonic()
    trained = fit(windows, readings.channels, settings, {"source": source, **info}, progress)
    trained = with_decision_rule(trained, settings)
    path = save_artifact(trained, out_dir or t.output_dir)
    info["wall_s"] = round(time.monotonic() - started, 2)
    info["version"] = trained.metadata.version
    info["threshold"] = trained.metadata.threshold_spec.value
    return path, info
