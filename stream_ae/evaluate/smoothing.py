"""Optional persistence smoothing of window verdicts, for backtests.

:func:`k_of_n` turns raw per-window verdicts ("score above the threshold") into
"at least ``k`` of the last ``n`` windows were above it". It only looks back, so
feeding its output to :func:`~stream_ae.evaluate.decisions.causal_rule` keeps the
rule causal; it delays the first alarm of a fault by at least ``k − 1`` windows
and removes isolated spikes (fewer flickering alarms, hence fewer NAB false
detections). ``k = n = 1`` returns the verdicts unchanged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stream_ae.errors import ConfigError

__all__ = ["k_of_n"]


def k_of_n(
    anomalous: npt.ArrayLike, k: int, n: int, starts: npt.ArrayLike | None = None
) -> npt.NDArray[np.bool_]:
    """Window ``j`` (in start order) is anomalous when at least ``k`` of windows
    ``j − n + 1 … j`` are; the first windows look back over what exists.

    ``anomalous`` (B,) bool/0-1 verdicts; ``starts`` (B,) optional window start
    buckets — when given, windows are ordered by start first and the result is
    returned in the input order.
    """
    if isinstance(k, bool) or isinstance(n, bool) or not (1 <= int(k) <= int(n)):
        raise ConfigError(f"k_of_n needs 1 <= k <= n, got k={k!r}, n={n!r}")
    a = np.asarray(anomalous).astype(bool)
    if a.ndim != 1:
        raise ConfigError(f"anomalous must be one-dimensional, got shape {a.shape}")
    if k == 1 and n == 1:
        return a.copy()
    order = None
    if starts is not None:
        order = np.argsort(np.asarray(starts), kind="stable")
        a = a[order]
    csum = np.concatenate([[0], np.cumsum(a.astype(np.int64))])
    idx = np.arange(len(a))
    lo = np.maximum(idx - n + 1, 0)
    out: npt.NDArray[np.bool_] = np.asarray((csum[idx + 1] - csum[lo]) >= k, dtype=np.bool_)
    if order is not None:
        restored = np.empty_like(out)
        restored[order] = out
        out = restored
    return out
