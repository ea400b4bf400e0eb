"""Scoring raw windows with a trained autoencoder.

**Score meaning** (used everywhere in stream_ae): the score of a window is the
mean squared reconstruction error over its ``C x W`` values *in scaled space*
(each channel standardised by the training mean/std). It is non-negative;
higher means more anomalous; normal windows score roughly at the held-out level
recorded in the artifact and are compared with its threshold. For a
``variational`` model (see :mod:`stream_ae.model.variants`) it is the expected
error under the latent posterior: the error of the decoded mean by default, or
a seeded Monte-Carlo average over ``mc_samples`` latent samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from stream_ae.errors import ConfigError, DataError
from stream_ae.model.autoencoders import tail_errors
from stream_ae.model.scaler import ChannelScaler

__all__ = [
    "DEFAULT_MAX_BATCH",
    "ScoreResult",
    "Scorer",
    "reconstruction_errors",
    "resolve_device",
    "score_tail_of",
    "set_threads",
]

DEFAULT_MAX_BATCH = 1024


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Per-window results of :meth:`Scorer.score` for ``B`` windows of ``C`` channels.

    * ``scores`` ``(B,)`` float32: mean squared error over ``C x W`` (see module doc).
    * ``channel_errors`` ``(B, C)`` float32: mean squared error of each channel over
      ``W`` — divided by the scaler's per-channel ``error_scale`` when the model has
      one (``train.error_norm = "holdout"``); ``scores == channel_errors.mean(axis=1)``.
    * ``channel_shares`` ``(B, C)`` float32: ``channel_errors`` divided by its row
      sum, i.e. each channel's share of the error (rows sum to 1; a perfect
      reconstruction gives equal shares).
    """

    scores: npt.NDArray[np.float32]
    channel_errors: npt.NDArray[np.float32]
    channel_shares: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``; ``"cuda"``/``"cuda:N"``.

    Asking for CUDA on a machine without it raises :class:`ConfigError`.
    """
    name = str(device) if isinstance(device, torch.device) else device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} was requested but CUDA is not available on this machine",
                hint="use device 'cpu' or 'auto'",
            )
        try:
            resolved = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError(f"invalid device {device!r}: {exc}") from exc
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)",
                hint="use 'cuda' or a lower index",
            )
        return resolved
    raise ConfigError(f"unknown device {device!r}", hint="use 'auto', 'cpu' or 'cuda'")


def set_threads(n: int | None) -> None:
    """Set torch's intra-op CPU threads; ``None`` leaves torch's default alone."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads={n!r} must be a positive integer (or unset)")
    torch.set_num_threads(n)


class Scorer:
    """Scores raw float32 windows ``(B, C, W)`` with ``model`` after ``scaler``.

    The model is moved to ``device`` and put in eval mode once, here. Scoring runs
    under ``torch.inference_mode()`` in chunks of at most ``max_batch`` windows,
    each chunk copied to the device once.

    ``runtime`` and ``precision`` name what computes the errors: eager torch in
    float32 here; :class:`stream_ae.model.runtimes.RuntimeScorer` (a subclass with
    the same :meth:`score` contract) runs an exported model instead.
    """

    runtime: str = "torch"
    precision: str = "float32"

    def __init__(
        self,
        model: nn.Module,
        scaler: ChannelScaler,
        device: str | torch.device = "cpu",
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch={max_batch!r} must be a positive integer")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.scaler = scaler
        self.max_batch = max_batch
        window = getattr(model, "window", None)
        self.window: int | None = int(window) if isinstance(window, int) else None

    @property
    def n_channels(self) -> int:
        """Channels ``C`` expected in every window."""
        return self.scaler.n_channels

    def score(self, windows: npt.ArrayLike) -> ScoreResult:
        """Score raw windows ``(B, C, W)``; an empty batch gives empty arrays.

        Raises :class:`DataError` for a wrong shape or NaN/inf values (fill gaps
        before scoring: a NaN score would silently never exceed a threshold).
        """
        arr = np.asarray(windows, dtype=np.float32)
        c = self.n_channels
        if (
            arr.ndim != 3
            or arr.shape[1] != c
            or (self.window is not None and arr.shape[2] != self.window)
        ):
            w = self.window if self.window is not None else "W"
            raise DataError(
                f"windows of shape {arr.shape} cannot be scored",
                hint=f"this model expects (B, {c}, {w})",
            )
        n = arr.shape[0]
        errors = np.empty((n, c), dtype=np.float32)
        if n:
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                raise DataError(
                    f"{bad} NaN/inf value(s) in the {n} windows to score",
                    hint="fill or drop gaps before scoring",
                )
        with torch.inference_mode():
            for start in range(0, n, self.max_batch):
                stop = min(start + self.max_batch, n)
                errors[start:stop] = self.chunk_errors(self.scaler.transform(arr[start:stop]))
        return result_from_errors(self.scaler.scale_errors(errors))

    def chunk_errors(self, scaled: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Per-channel errors ``(b, C)`` of one chunk of *scaled* windows ``(b, C, W)``.

        The one step a runtime replaces (:mod:`stream_ae.model.runtimes`); :meth:`score`
        validates, scales, chunks and turns errors into a :class:`ScoreResult` around it,
        and calls it under ``torch.inference_mode()``.
        """
        x = torch.from_numpy(scaled).to(self.device)
        err = reconstruction_errors(self.model, x)
        out: npt.NDArray[np.float32] = err.to("cpu", torch.float32).numpy()
        return out


def reconstruction_errors(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean squared reconstruction error per channel: scaled ``(B, C, W)`` -> ``(B, C)``.

    A model with a ``channel_errors`` method (the variational autoencoder, whose
    score may be an expectation over latent samples) computes it itself; for any
    other it is ``mean_t (model(x) - x)^2``, over the model's newest
    ``score_tail`` time steps when that is set (``train.score_tail``; 0 = all).
    """
    own = getattr(model, "channel_errors", None)
    if callable(own):
        err: torch.Tensor = own(x)
        return err
    recon: torch.Tensor = model(x)
    return tail_errors(recon, x, score_tail_of(model))


def score_tail_of(model: nn.Module) -> int:
    """The model's ``score_tail`` (0 = the whole window; any model without one)."""
    return int(getattr(model, "score_tail", 0))


def result_from_errors(errors: npt.NDArray[np.float32]) -> ScoreResult:
    """Scores and channel shares from per-channel errors ``(B, C)`` (float32)."""
    scores = errors.mean(axis=1, dtype=np.float32)
    totals = errors.sum(axis=1, keepdims=True, dtype=np.float32)
    shares = np.full_like(errors, 1.0 / errors.shape[1])  # C >= 1: the scaler ensures it
    np.divide(errors, totals, out=shares, where=totals > 0)
    return ScoreResult(scores=scores, channel_errors=errors, channel_shares=shares)
