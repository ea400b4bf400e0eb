"""Warm-up re-baselining: per-asset level correction after a (re)start.

Machines come back from a start or from maintenance at a slightly different
operating level (a new seal, a recalibrated sensor, another water temperature).
A model trained on one level then flags the whole run. With re-baselining, the
first ``warmup_ms`` of an asset's windows are not scored; their per-channel mean
becomes the asset's baseline, and every later window is shifted by
``reference_mean − baseline`` (``reference_mean`` = the training data's mean),
so the model sees the asset's deviations from its *own* recent normal level.

A gap or silence (the windower's data-quality events) starts a new warm-up. The
trade-off is explicit: a fault already present during the warm-up becomes part
of the baseline. Pure numpy, no Kafka, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from stream_ae.windowing.windower import WindowBatch

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
    warmup_windows: int = 0

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
        """Start a new warm-up for these assets (after a gap, silence or maintenance)."""
        for k in keys:
            self._state.pop(k, None)
