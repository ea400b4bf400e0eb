"""Window verdicts → one 0/1 decision per reading (row), for backtests.

Two rules, both over the windows the scorer's own windowing built (identified
by their first grid bucket; a window covers buckets ``[s, s + W)``):

* :func:`causal_rule` — what the live scorer can know: reading ``i`` (bucket
  ``b``) takes the verdict of the most recent window that has *ended* by bucket
  ``b + delay`` (ended = its last bucket ≤ ``b + delay``). ``delay = 0`` is
  strictly causal; with hop H the verdict can lag up to H − 1 readings. Readings
  before the first window ends get 0 (no alarm).
* :func:`published_rule` — SKAB's leaderboard rule, reproduced exactly (windows
  with hop 1): row ``i`` is flagged only when the W − 1 windows starting at rows
  ``i − W + 1 … i − 1`` are all anomalous, and only for ``W − 1 ≤ i ≤ n − 2W + 1``.
  It looks W − 1 readings ahead of row ``i`` and can never flag the last 2W − 2
  rows: it is not causal, and the report says so.
"""

from __future__ import annotations

import numpy as np


def causal_rule(
    row_buckets: np.ndarray,
    window_starts: np.ndarray,
    anomalous: np.ndarray,
    size: int,
    *,
    delay: int = 0,
) -> np.ndarray:
    """``row_buckets`` (N,) int; ``window_starts`` (B,) buckets; ``anomalous`` (B,) bool."""
    pred = np.zeros(len(row_buckets), np.int8)
    if not len(window_starts):
        return pred
    order = np.argsort(window_starts, kind="stable")
    last_bucket = window_starts[order] + size - 1
    verdict = anomalous[order]
    # index of the latest window whose last bucket <= row bucket + delay
    k = np.searchsorted(last_bucket, row_buckets + delay, side="right") - 1
    ok = k >= 0
    pred[ok] = verdict[k[ok]]
    return pred


def published_rule(window_anomalous: np.ndarray, n_rows: int, size: int) -> np.ndarray:
    """SKAB's rule over row-indexed windows (hop 1): ``window_anomalous[j]`` is the
    verdict of the window covering rows ``j … j + size − 1`` (length n − size + 1)."""
    pred = np.zeros(n_rows, np.int8)
    n_windows = len(window_anomalous)
    a = window_anomalous.astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(a)])
    for i in range(size - 1, n_windows - size + 1):
        lo, hi = i - size + 1, i  # windows lo .. hi-1 (the original's slice [i-W+1 : i])
        if csum[hi] - csum[lo] == hi - lo:
            pred[i] = 1
    return pred


def published_reach(n_rows: int, size: int) -> np.ndarray:
    """Rows the published rule can flag at all (the rest are never scored by it)."""
    reach = np.zeros(n_rows, bool)
    reach[size - 1 : max(size - 1, n_rows - 2 * size + 2)] = True
    return reach
