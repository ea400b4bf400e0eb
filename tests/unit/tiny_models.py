"""Tiny untrained conv autoencoders saved with the real ``save_artifact`` (genuine
hashes and shapes, a few kB each), for tests of artifacts, the registry and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream_ae.decide.events import Decider
from stream_ae.decide.persistence import Persistence
from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.model.artifact import TrainedModel, new_metadata, save_artifact
from stream_ae.model.autoencoders import build_model
from stream_ae.model.scaler import ChannelScaler
from stream_ae.pipeline import ModelBinding
from stream_ae.schemas import AnomalyEvent
from stream_ae.windowing import GridSpec

HPARAMS = {"hidden": 4, "latent": 2}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tiny_artifact(
    out_dir: Path,
    *,
    threshold: ThresholdSpec,
    seed: int = 0,
    channels: tuple[str, str] = ("temp", "vibration"),
    created_at: datetime = T0,
    threshold_section: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Save a 2-channel, W=16, H=4 conv model (weights from ``seed``) under ``out_dir``.

    ``threshold_section`` replaces the metadata's whole ``threshold`` section (e.g.
    per-asset thresholds, or a deliberately invalid one)."""
    torch.manual_seed(seed)
    model = build_model("conv", 2, 16, HPARAMS)
    scaler = ChannelScaler(np.zeros(2), np.ones(2))
    meta = new_metadata(
        model,
        architecture="conv",
        hparams=HPARAMS,
        channels=list(channels),
        sample_period_ms=100,
        window=16,
        hop=4,
        scaler=scaler,
        threshold=threshold,
        metrics=dict(metrics or {}),
        created_at=created_at,
    )
    if threshold_section is not None:
        meta = meta.model_copy(update={"threshold": dict(threshold_section)})
    return save_artifact(TrainedModel(model, scaler, meta), out_dir)


def anomaly_event(asset: str, start_ms: int, end_ms: int) -> AnomalyEvent:
    """A minimal anomaly event of ``asset`` for ``[start_ms, end_ms)`` (id
    ``<asset>-<start>``), as the exclusions and the trainer read them."""
    return AnomalyEvent(
        event_id=f"{asset}-{start_ms}",
        asset_id=asset,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        window_start="",
        window_end="",
        score=2.0,
        threshold=1.0,
        score_ratio=2.0,
        severity="high",
        top_channels=[],
        model_version="v1",
        detected_at="",
    )


def unscored_binding(persistence: Persistence | None = None) -> ModelBinding:
    """A model binding for tests of the scorer service's wiring without Kafka and
    without scoring (no scorer): channels a, b; W = 4, H = 2, 1 s period."""
    decider = Decider(
        threshold=5.0, model_version="v1", channels=["a", "b"], persistence=persistence
    )
    spec = GridSpec(period_ms=1000, size=4, hop=2, lateness_ms=0, fill_limit=0, n_channels=2)
    return ModelBinding(
        scorer=None,  # type: ignore[arg-type]  # nothing is scored here
        decider=decider,
        spec=spec,
        reference_mean=np.array([1.0, 1.0]),
    )
