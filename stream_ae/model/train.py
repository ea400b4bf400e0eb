"""Training an autoencoder on normal windows and calibrating its threshold.

The split is chronological: the *last* ``holdout_fraction`` of the windows (in
the order given, which must be time order) is held out. Windows that overlap
the first held-out window are dropped from training (a "purge" gap) so that
held-out data never leaks into training through overlapping samples. The
held-out windows drive early stopping and the threshold calibration.

The ``variant`` option picks a training variant (denoising, sparse, contractive,
variational; see :mod:`stream_ae.model.variants`); ``plain`` is the original
reconstruction-only training, unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from stream_ae.decide.threshold import calibrate_quantile
from stream_ae.errors import ConfigError, DataError
from stream_ae.model.artifact import TrainedModel, new_metadata
from stream_ae.model.autoencoders import build_model, resolve_hparams
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.scorer import Scorer, reconstruction_errors, resolve_device, result_from_errors
from stream_ae.model.variants import VARIANTS, make_strategy

__all__ = [
    "MIN_HOLDOUT",
    "MIN_TRAIN",
    "MIN_WINDOWS",
    "VARIANTS",
    "TrainedModel",
    "fit_autoencoder",
]

#: Minimum number of windows overall, held out, and left for training.
MIN_WINDOWS = 20
MIN_HOLDOUT = 5
MIN_TRAIN = 15

#: Relative improvement of the held-out loss that resets early-stopping patience.
_MIN_REL_IMPROVEMENT = 1e-3
_EVAL_BATCH = 1024

ProgressFn = Callable[[int, float, float], None]


def _split_counts(n: int, holdout_fraction: float) -> tuple[int, int]:
    """``(n_train_before_purge, n_holdout)`` for ``n`` windows."""
    n_holdout = math.ceil(n * holdout_fraction)
    return n - n_holdout, n_holdout


def _windows_needed(holdout_fraction: float) -> int:
    """Smallest window count that satisfies all minimums (start near the answer)."""
    n = max(
        MIN_WINDOWS,
        int((MIN_HOLDOUT - 1) / holdout_fraction),
        int(MIN_TRAIN / (1.0 - holdout_fraction)) - 2,
    )
    while True:
        n_train, n_holdout = _split_counts(n, holdout_fraction)
        if n_holdout >= MIN_HOLDOUT and n_train >= MIN_TRAIN:
            return n
        n += 1


def _validate_args(
    arr: npt.NDArray[np.float32],
    *,
    channels: Sequence[str],
    sample_period_ms: int,
    hop: int,
    epochs: int,
    batch_size: int,
    lr: float,
    holdout_fraction: float,
    threshold_quantile: float,
    patience: int | None,
) -> None:
    if arr.ndim != 3:
        raise DataError(
            f"training windows must be a (N, C, W) array, got shape {arr.shape}",
        )
    if isinstance(channels, str):
        raise ConfigError(f"channels must be a list of names, got the string {channels!r}")
    if arr.shape[1] != len(channels):
        raise DataError(
            f"training windows have {arr.shape[1]} channels but {len(channels)} channel "
            f"names were given ({list(channels)})",
            hint="pass one name per channel, in the windows' channel order",
        )
    if len(set(channels)) != len(channels) or not all(channels):
        raise ConfigError(f"channel names must be unique and non-empty, got {list(channels)}")
    for name, value in (
        ("sample_period_ms", sample_period_ms),
        ("hop", hop),
        ("epochs", epochs),
        ("batch_size", batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer")
    if patience is not None and (isinstance(patience, bool) or patience < 1):
        raise ConfigError(f"patience={patience!r} must be a positive integer or None")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr={lr!r} must be a positive number, e.g. 1e-3")
    if not 0.0 < holdout_fraction < 1.0:
        raise ConfigError(
            f"holdout_fraction={holdout_fraction!r} must be strictly between 0 and 1",
            hint="e.g. 0.2",
        )
    if not 0.0 < threshold_quantile < 1.0:
        raise ConfigError(
            f"threshold_quantile={threshold_quantile!r} must be strictly between 0 and 1",
            hint="e.g. 0.995",
        )


def _mean_loss(model: nn.Module, x: torch.Tensor) -> float:
    """Mean squared reconstruction error over all of ``x`` (already scaled).

    The same quantity as the mean score (for a variational model with
    ``mc_samples`` the expected error, see :func:`reconstruction_errors`).
    """
    model.eval()
    total = 0.0
    own = callable(getattr(model, "channel_errors", None))
    with torch.inference_mode():
        for start in range(0, x.shape[0], _EVAL_BATCH):
            xb = x[start : start + _EVAL_BATCH]
            if own:
                total += float(reconstruction_errors(model, xb).sum()) * xb.shape[2]
            else:
                recon: torch.Tensor = model(xb)
                total += float(F.mse_loss(recon, xb, reduction="sum"))
    return total / x.numel()


#: ``train.error_norm`` values: ``none`` (plain mean squared error) or ``holdout``
#: (each channel's error divided by its mean on held-out normal windows).
ERROR_NORMS = ("none", "holdout")


def fit_autoencoder(
    windows: npt.ArrayLike,
    *,
    architecture: str,
    channels: Sequence[str],
    sample_period_ms: int,
    hop: int,
    hparams: Mapping[str, int | float],
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    holdout_fraction: float = 0.2,
    threshold_quantile: float = 0.995,
    training_info: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    patience: int | None = 5,
    variant: str = "plain",
    variant_params: Mapping[str, int | float | str] | None = None,
    error_norm: str = "none",
    score_tail: int = 0,
) -> TrainedModel:
    """Train ``architecture`` on raw float32 windows ``(N, C, W)`` in time order.

    Steps: chronological split (last ``holdout_fraction`` held out, overlapping
    windows purged from training), scaler fitted on the training part, Adam on
    the MSE for up to ``epochs`` epochs with a seeded shuffle, early stopping
    after ``patience`` epochs without held-out improvement (``None`` disables it)
    and restoring the best epoch's weights, then the threshold is the
    ``threshold_quantile`` of the held-out scores. ``progress(epoch, train_loss,
    val_loss)`` is called after every epoch.

    ``variant`` (one of :data:`VARIANTS`, default ``"plain"``) and
    ``variant_params`` (merged over
    :data:`~stream_ae.model.variants.VARIANT_DEFAULTS`) choose the training
    variant; both are recorded in the metadata. ``train_loss`` is then the
    variant's full objective; ``val_loss`` (early stopping, best epoch) is always
    the held-out reconstruction error, i.e. the mean held-out score. For
    ``variational`` the best epoch is chosen from the end of the β warm-up on.

    ``error_norm="holdout"`` stores each channel's mean held-out error in the
    scaler (:attr:`ChannelScaler.error_scale`); scores, the threshold and channel
    shares are then in units of "times the normal error" per channel.

    ``score_tail`` > 0 scores a window by the error of its newest ``score_tail``
    time steps only (:func:`~stream_ae.model.autoencoders.tail_errors`); training
    and early stopping still use the whole window, the held-out scores, the
    threshold and ``error_norm`` the tail. Recorded in the metadata.

    ``training_info`` (e.g. ``source``, ``start``, ``end``) is stored in the
    metadata's ``training`` section together with the computed counts, losses
    and wall time (computed keys win on a clash). Deterministic for a given
    ``seed`` on a given device and thread count.

    Raises :class:`DataError` when there are too few windows (the message says
    how many were found and needed) or values are NaN/inf, and
    :class:`ConfigError` for invalid arguments.
    """
    t0 = time.perf_counter()
    arr = np.ascontiguousarray(windows, dtype=np.float32)
    _validate_args(
        arr,
        channels=channels,
        sample_period_ms=sample_period_ms,
        hop=hop,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        holdout_fraction=holdout_fraction,
        threshold_quantile=threshold_quantile,
        patience=patience,
    )
    if error_norm not in ERROR_NORMS:
        raise ConfigError(
            f"error_norm={error_norm!r} is not one of {list(ERROR_NORMS)}",
            hint='set train.error_norm to "none" or "holdout"',
        )
    resolved_hparams = resolve_hparams(architecture, hparams)
    strategy = make_strategy(variant, variant_params)
    n, _, window = arr.shape
    if isinstance(score_tail, bool) or not isinstance(score_tail, int) or score_tail < 0:
        raise ConfigError(
            f"score_tail={score_tail!r} must be a whole number >= 0",
            hint="set train.score_tail to 0 (the whole window) or a number of time steps",
        )
    if score_tail > window:
        raise ConfigError(
            f"score_tail={score_tail} is longer than the window ({window} time steps)",
            hint=f"set train.score_tail to at most {window} (window.size), or 0 for all",
        )
    n_train_avail, n_holdout = _split_counts(n, holdout_fraction)
    if n < MIN_WINDOWS or n_holdout < MIN_HOLDOUT or n_train_avail < MIN_TRAIN:
        raise DataError(
            f"found {n} training windows ({n_train_avail} for training, {n_holdout} held out); "
            f"need at least {_windows_needed(holdout_fraction)} at holdout_fraction="
            f"{holdout_fraction} ({MIN_TRAIN} for training and {MIN_HOLDOUT} held out)",
            hint="use a longer time range, a smaller hop or a shorter window",
        )
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(
            f"{bad} NaN/inf value(s) in the training windows",
            hint="fill or drop gaps before training",
        )
    dev = resolve_device(device)

    # Windows [n_train, n_train_avail) overlap the first held-out window: purge them,
    # as far as the minimum training size allows.
    overlap = max(0, math.ceil(window / hop) - 1)
    n_purged = min(overlap, n_train_avail - MIN_TRAIN)
    n_train = n_train_avail - n_purged
    train_raw = arr[:n_train]
    holdout_raw = arr[n_train_avail:]

    scaler = ChannelScaler.fit(train_raw)
    train_x = torch.from_numpy(scaler.transform(train_raw)).to(dev)
    val_x = torch.from_numpy(scaler.transform(holdout_raw)).to(dev)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone = build_model(architecture, len(channels), window, resolved_hparams)
    model = strategy.build_model(backbone).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    best_val = math.inf
    best_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    train_loss = val_loss = math.nan
    epochs_run = 0
    stale = 0
    first_candidate = strategy.selection_start_epoch(epochs)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(n_train)).to(dev)
        total = 0.0
        for start in range(0, n_train, batch_size):
            xb = train_x[order[start : start + batch_size]]
            optimiser.zero_grad(set_to_none=True)
            loss = strategy.training_loss(model, xb, epoch)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
            optimiser.step()
            total += float(loss.detach()) * xb.shape[0]
        train_loss = total / n_train
        if not math.isfinite(train_loss):
            raise DataError(
                f"training diverged: the loss became {train_loss} in epoch {epoch}",
                hint=f"lower the learning rate (lr={lr}) or check the data for extreme values",
            )
        val_loss = _mean_loss(model, val_x)
        epochs_run = epoch
        if progress is not None:
            progress(epoch, train_loss, val_loss)
        if epoch < first_candidate:
            continue
        if val_loss < best_val * (1.0 - _MIN_REL_IMPROVEMENT) or best_state is None:
            best_val, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if patience is not None and stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    del train_x, val_x

    model.score_tail = score_tail
    result = Scorer(model, scaler, dev).score(holdout_raw)
    if error_norm == "holdout":  # what Scorer.score does with the scale, without a 2nd pass
        scale = ChannelScaler.error_scale_from(result.channel_errors)
        scaler = scaler.with_error_scale(scale)
        result = result_from_errors(scaler.scale_errors(result.channel_errors))
    model = model.to("cpu").eval()
    scores = result.scores
    threshold = calibrate_quantile(scores, threshold_quantile)
    metrics = {
        "holdout_score_mean": float(scores.mean()),
        "holdout_score_p50": float(np.quantile(scores, 0.5)),
        "holdout_score_p95": float(np.quantile(scores, 0.95)),
        "holdout_score_p99": float(np.quantile(scores, 0.99)),
        "holdout_score_max": float(scores.max()),
        "holdout_exceed_fraction": float(np.mean(threshold.exceeded(scores))),
        "threshold": threshold.value,
    }
    training: dict[str, Any] = dict(training_info or {})
    training.update(
        n_windows=n,
        n_train=n_train,
        n_holdout=n_holdout,
        n_purged=n_purged,
        holdout_fraction=holdout_fraction,
        epochs=epochs,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        early_stopped=epochs_run < epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        selection_start_epoch=first_candidate,
        device=str(dev),
        final_train_loss=train_loss,
        final_val_loss=val_loss,
        best_val_loss=best_val,
        threshold_quantile=threshold_quantile,
        error_norm=error_norm,
        score_tail=score_tail,
        wall_time_s=round(time.perf_counter() - t0, 3),
    )
    metadata = new_metadata(
        model,
        architecture=architecture,
        hparams=resolved_hparams,
        channels=channels,
        sample_period_ms=sample_period_ms,
        window=window,
        hop=hop,
        scaler=scaler,
        threshold=threshold,
        training=training,
        metrics=metrics,
        variant=variant,
        variant_params=strategy.params,
        score_tail=score_tail,
    )
    return TrainedModel(model=model, scaler=scaler, metadata=metadata)
