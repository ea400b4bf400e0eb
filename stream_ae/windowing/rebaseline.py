"""Warm-up re-baselining: per-asset level correction after a (re)start.

Machines come back from a start or from maintenance at a slightly different
operating level (a new seal, a recalibrated sensor, another water temperature).
A model trained on one level then flags the whole run. With re-baselining, the
first ``warmup_ms`` of an asset's windows are not scored; their per-channel mean
becomes the asset's baseline, and every later window is shifted by
``reference_mean − baseline`` (``reference_mean`` = the training data's mean),
so the model sees the asset's deviations from its *own* recent normal level.

A gap or silence (the windower's data-quality events) starts a new warm-up at
the asset's first window *after* it (:meth:`Rebaseliner.note_gaps`, called
before the step's windows are applied): where a batch happens to split the
stream never changes which windows belong to which warm-up, so the live scorer
and a backtest that windows a whole file at once agree. The trade-off is
explicit: a fault already present during the warm-up becomes part of the
baseline. Pure numpy, no Kafka, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from stream_ae.windowing.windower import Gap, WindowBatch

Key = tuple[int, str]


@dataclass
class _Baseline:
    first_start_ms: int
    total: np.ndarray  # (C,) sum of window means during warm-up
    count: int = 0
    offset: np.ndarray | None = None  # (C,) once settled


@dataclass
class Rebaseliner:
    warmup_ms: int
    reference_mean: np.ndarray  # (C,)
    _state: dict[Key, _Baseline] = field(default_factory=dict)
    #: per asset: its next window starting at or after this time opens a new warm-up
    _restart_at: dict[Key, int] = field(default_factory=dict)
    warmup_windows: int = 0

    def note_gaps(self, gaps: Iterable[Gap]) -> None:
        """Each gap (or silence) restarts its asset's warm-up from the first window
        that starts after it; windows before it keep the current baseline."""
        for g in gaps:
            # a hole's windows resume at its end; after a silence (start = end = the
            # last reading) the next window starts later than that reading
            at = g.end_ms + 1 if g.silent else g.end_ms
            key = (g.partition, g.asset_id)
            self._restart_at[key] = max(at, self._restart_at.get(key, at))

    def apply(self, windows: WindowBatch) -> WindowBatch:
        """Warm-up windows are dropped (they only feed the baseline); the rest are
        shifted. Windows of one asset must come in start order (they do)."""
        if not len(windows):
            return windows
        keep = np.ones(len(windows), bool)
        values = windows.values.copy()
        means = windows.values.mean(axis=2)  # (B, C)
        for i, (p, asset, start) in enumerate(
            zip(
                windows.partitions.tolist(),
                windows.asset_ids,
                windows.start_ms.tolist(),
                strict=True,
            )
        ):
            restart = self._restart_at.get((p, asset))
            if restart is not None and start >= restart:
                del self._restart_at[(p, asset)]
                self._state.pop((p, asset), None)
            st = self._state.get((p, asset))
            if st is None:
                st = self._state[(p, asset)] = _Baseline(start, np.zeros(values.shape[1]))
            if st.offset is None:
                if start < st.first_start_ms + self.warmup_ms:
                    st.total += means[i]
                    st.count += 1
                    keep[i] = False
                    continue
                st.offset = self.reference_mean - st.total / max(st.count, 1)
            values[i] += st.offset[:, None].astype(values.dtype)
        self.warmup_windows += int((~keep).sum())
        shifted = WindowBatch(
            windows.asset_ids, windows.partitions, windows.start_ms, windows.end_ms, values
        )
        return shifted if keep.all() else shifted.select(keep)

    def reset(self, keys: Iterable[Key]) -> None:
        """Start a new warm-up for these assets now (maintenance; partitions handed
        away). Gaps go through :meth:`note_gaps`, which is exact about the window."""
        for k in keys:
            self._state.pop(k, None)
            self._restart_at.pop(k, None)
