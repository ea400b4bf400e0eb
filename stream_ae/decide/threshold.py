"""Anomaly thresholds: a serialisable spec plus calibration methods (numpy only).

A window is anomalous when its score is **strictly greater** than
:attr:`ThresholdSpec.value`. Calibration runs on scores of held-out *normal*
windows, so a quantile ``q`` means "about ``1 - q`` of normal windows raise a
false alarm". Further methods (e.g. peaks-over-threshold) belong beside
:func:`calibrate_quantile` and return the same :class:`ThresholdSpec`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_ae.errors import ArtifactError, ConfigError, DataError

__all__ = ["ThresholdSpec", "calibrate_quantile"]


@dataclass(frozen=True, slots=True)
class ThresholdSpec:
    """How a threshold was obtained (``method``, ``params``) and its ``value``."""

    method: str
    params: dict[str, float]
    value: float

    def exceeded(self, scores: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Boolean mask: ``scores > value`` (NaN scores never exceed)."""
        return np.asarray(scores) > self.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form stored in artifact metadata under ``threshold``."""
        return {"method": self.method, "params": dict(self.params), "value": float(self.value)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ArtifactError` naming the bad field."""
        if not isinstance(data, Mapping):
            raise ArtifactError(
                f"field 'threshold' must be an object, got {type(data).__name__}",
                hint="re-train the model to write a valid artifact",
            )
        method = data.get("method")
        if not isinstance(method, str) or not method:
            raise ArtifactError(
                f"field 'threshold.method' must be a non-empty string, got {method!r}",
                hint="re-train the model to write a valid artifact",
            )
        params = data.get("params", {})
        if not isinstance(params, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in params.items()
        ):
            raise ArtifactError(
                f"field 'threshold.params' must map names to numbers, got {params!r}",
                hint="re-train the model to write a valid artifact",
            )
        value = data.get("value")
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ArtifactError(
                f"field 'threshold.value' must be a finite number, got {value!r}",
                hint="re-train the model to write a valid artifact",
            )
        return cls(method=method, params=dict(params), value=float(value))


def calibrate_quantile(scores: npt.ArrayLike, q: float) -> ThresholdSpec:
    """Threshold at the ``q`` quantile (linear interpolation) of normal ``scores``.

    ``q`` must lie in the open interval (0, 1); ``scores`` must be a non-empty
    array of finite values (any shape; it is flattened).
    """
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 < q < 1.0:
        raise ConfigError(
            f"threshold quantile q={q!r} is out of range",
            hint="use a number strictly between 0 and 1, e.g. 0.995",
        )
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0:
        raise DataError(
            "cannot calibrate a threshold on 0 scores",
            hint="provide held-out windows to score (more data or a larger holdout fraction)",
        )
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(
            f"cannot calibrate a threshold: {bad} of {arr.size} scores are NaN or infinite",
            hint="check the input windows for NaN/inf values before scoring",
        )
    value = float(np.quantile(arr, q))
    return ThresholdSpec(
        method="quantile", params={"q": float(q), "n_scores": arr.size}, value=value
    )
