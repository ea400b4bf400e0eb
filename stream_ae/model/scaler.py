"""Per-channel standardisation of ``(N, C, W)`` windows (numpy only).

Models are trained and scored in scaled space so that channels with large units
(e.g. pressure in Pa) do not dominate the reconstruction error.

Optionally the scaler also carries an **error scale** per channel: the mean
reconstruction error of that channel on held-out normal windows
(``train.error_norm = "holdout"``). The scorer divides each channel's error by
it before averaging, so every channel contributes about 1 in normal operation
and the score reads "times the normal error". Without it, a channel the model
reconstructs poorly even when all is well (a noisy or slowly wandering one)
dominates the score, and a fault on a well-reconstructed channel has to be much
larger to raise it; the attribution (channel shares) is skewed the same way.
On SKAB's synthetic validation set this moved the false-alarm/recall trade-off
of the published rule (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_ae.errors import ArtifactError, DataError

__all__ = ["DEFAULT_EPS", "SCALED_CLAMP", "ChannelScaler"]

#: Scaled values are clamped to this many standard deviations (see ``transform``):
#: its square, a window's largest possible error, stays far inside float32.
SCALED_CLAMP = 1.0e6

#: Absolute floor for a channel's std. A constant training channel then scales by
#: 1/eps, so any later deviation on it shows up as a very large error (it is
#: anomalous: the channel never moved during training) instead of a division by 0.
DEFAULT_EPS = 1e-6

#: Relative floor (times ``|mean|``): below this a std is float32 rounding noise.
_REL_EPS = 1e-6


class ChannelScaler:
    """``(x - mean[c]) / std[c]`` per channel ``c``; fitted on training windows.

    ``mean`` and ``std`` are float64 arrays of shape ``(C,)``; ``std`` is already
    floored (see :data:`DEFAULT_EPS`).
    """

    def __init__(
        self,
        mean: npt.ArrayLike,
        std: npt.ArrayLike,
        eps: float = DEFAULT_EPS,
        error_scale: npt.ArrayLike | None = None,
    ) -> None:
        mean_arr = np.asarray(mean, dtype=np.float64).reshape(-1)
        std_arr = np.asarray(std, dtype=np.float64).reshape(-1)
        if mean_arr.shape != std_arr.shape or mean_arr.size == 0:
            raise ValueError(
                f"mean and std must be non-empty and of equal length, "
                f"got {mean_arr.size} and {std_arr.size}"
            )
        if not (np.all(np.isfinite(mean_arr)) and np.all(np.isfinite(std_arr))):
            raise ValueError("mean and std must be finite")
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a positive finite number, got {eps!r}")
        self.eps = float(eps)
        self.mean = mean_arr
        self.std = np.maximum(std_arr, np.maximum(self.eps, _REL_EPS * np.abs(mean_arr)))
        # float32 broadcast forms used by transform(): (C, 1) against (N, C, W).
        self._mean32 = self.mean.astype(np.float32)[:, None]
        self._inv_std32 = (1.0 / self.std).astype(np.float32)[:, None]
        self.error_scale: npt.NDArray[np.float64] | None = None
        self._error_scale32: npt.NDArray[np.float32] | None = None
        if error_scale is not None:
            scale = np.asarray(error_scale, dtype=np.float64).reshape(-1)
            if scale.shape != mean_arr.shape:
                raise ValueError(
                    f"error_scale must have one value per channel ({mean_arr.size}), "
                    f"got {scale.size}"
                )
            if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
                raise ValueError("error_scale must be finite and positive")
            self.error_scale = scale
            self._error_scale32 = scale.astype(np.float32)

    def scale_errors(self, errors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Per-channel errors ``(N, C)`` float32 divided by ``error_scale`` (a new array);
        ``errors`` itself when the model has no error scale."""
        if self._error_scale32 is None:
            return errors
        return errors / self._error_scale32

    def with_error_scale(self, error_scale: npt.ArrayLike | None) -> ChannelScaler:
        """A copy with ``error_scale`` set (``None`` removes it)."""
        return ChannelScaler(self.mean, self.std, eps=self.eps, error_scale=error_scale)

    @staticmethod
    def error_scale_from(channel_errors: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Per-channel error scale from held-out errors ``(N, C)``: their mean, floored
        at 1e-6 × the largest channel's so a channel reconstructed perfectly does not
        turn into a division by ~0."""
        errors = np.asarray(channel_errors, dtype=np.float64)
        if errors.ndim != 2 or errors.shape[0] == 0:
            raise DataError(
                f"cannot compute an error scale from errors of shape {errors.shape}",
                hint="score at least one held-out window",
            )
        scale = errors.mean(axis=0)
        floor = max(float(scale.max()) * 1e-6, 1e-12)
        out: npt.NDArray[np.float64] = np.maximum(scale, floor)
        return out

    @property
    def n_channels(self) -> int:
        """Number of channels ``C`` the scaler was fitted on."""
        return int(self.mean.size)

    @classmethod
    def fit(cls, windows: npt.ArrayLike, eps: float = DEFAULT_EPS) -> ChannelScaler:
        """Fit mean/std per channel over all windows and time steps of ``(N, C, W)``.

        Overlapping windows count shared samples several times; with a regular hop
        that weights all but the series' edges equally, which is good enough.
        """
        arr = np.asarray(windows)
        if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[2] == 0:
            raise DataError(
                f"cannot fit the scaler on windows of shape {arr.shape}",
                hint="expected a non-empty (N, C, W) array",
            )
        mean = arr.mean(axis=(0, 2), dtype=np.float64)
        std = arr.std(axis=(0, 2), dtype=np.float64)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise DataError(
                "cannot fit the scaler: the training windows contain NaN or infinite values",
                hint="fill or drop gaps before training",
            )
        return cls(mean, std, eps=eps)

    def _check(self, x: npt.NDArray[Any]) -> None:
        if x.ndim != 3 or x.shape[1] != self.n_channels:
            raise DataError(
                f"windows of shape {x.shape} do not match the scaler",
                hint=f"expected (N, {self.n_channels}, W)",
            )

    def transform(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Scale raw ``(N, C, W)`` windows; returns a new float32 array.

        Scaled values are clamped to ``±SCALED_CLAMP`` standard deviations: far beyond
        any normal reading, so a window holding one is still scored as wildly
        anomalous, but a finite reading near float32's limit (a broken sensor's
        3e38) can no longer overflow to inf inside the model and make its score
        inf or NaN (an event with no score).
        """
        arr = np.asarray(x, dtype=np.float32)
        self._check(arr)
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.subtract(arr, self._mean32, dtype=np.float32)
            out *= self._inv_std32
        np.clip(out, -SCALED_CLAMP, SCALED_CLAMP, out=out)
        return out

    def inverse_transform(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Map scaled ``(N, C, W)`` windows back to raw units (float32)."""
        arr = np.asarray(x, dtype=np.float32)
        self._check(arr)
        out = arr * self.std.astype(np.float32)[:, None]
        out += self._mean32
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists of floats) stored in artifact metadata."""
        out: dict[str, Any] = {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "eps": self.eps,
        }
        if self.error_scale is not None:
            out["error_scale"] = self.error_scale.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelScaler:
        """Inverse of :meth:`to_dict`; raises :class:`ArtifactError` naming the bad field."""
        try:
            return cls(
                data["mean"],
                data["std"],
                eps=float(data.get("eps", DEFAULT_EPS)),
                error_scale=data.get("error_scale"),
            )
        except KeyError as exc:
            raise ArtifactError(
                f"field 'scaler.{exc.args[0]}' is missing",
                hint="re-train the model to write a valid artifact",
            ) from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(
                f"field 'scaler' is invalid: {exc}",
                hint="re-train the model to write a valid artifact",
            ) from exc

    def __repr__(self) -> str:
        scaled = "" if self.error_scale is None else ", error_scale=yes"
        return f"ChannelScaler(n_channels={self.n_channels}, eps={self.eps}{scaled})"
