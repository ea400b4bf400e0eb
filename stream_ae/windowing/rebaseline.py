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
and a backtest that windows a whole file at once agree. The end of a maintenance
period (feedback ``maintenance_end`` / ``maintenance``, which the scorer follows)
does the same through :meth:`Rebaseliner.note_restart`, at the reported time;
a restart at or before the asset's current warm-up start changes nothing, so an
old or repeated report is harmless. The trade-off is explicit: a fault already
present during the warm-up becomes part of the baseline. Pure numpy, no Kafka,
no torch.

The baseline is kept as the warm-up's mean, and the shift is computed from the
*current* ``reference_mean``: a hot swap to a model with the same grid replaces
the reference (:meth:`Rebaseliner.set_reference`) without a new warm-up, and a
swap that rebuilds the windows keeps the baselines too (:meth:`carry_from`).

A restart must not start a warm-up either: an asset running with a fault when
the scorer crashed would take the fault as its new normal. The scorer writes
each asset's state with its marks (:meth:`snapshot`) and takes it back when it
is given the partition again (:meth:`restore`); the stored floats are the exact
ones, so a restored asset is shifted exactly as it would have been.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from stream_ae.windowing.windower import Gap, WindowBatch

Key = tuple[int, str]


class BaselineState(msgspec.Struct, omit_defaults=True):
    """One (partition, asset)'s re-baselining state, as stored with the scorer's marks."""

    #: start of the window that began the current warm-up; None: none begun
    warmup_start_ms: int | None = None
    #: warm-up windows summed so far, and their per-channel means summed (C,)
    windows: int = 0
    total: list[float] | None = None
    #: (C,) the settled baseline, once the warm-up is over
    mean: list[float] | None = None
    #: a gap's new warm-up, not begun yet: at the first window starting then or later
    restart_at_ms: int | None = None


@dataclass
class _Baseline:
    first_start_ms: int
    total: np.ndarray  # (C,) sum of window means during warm-up
    count: int = 0
    mean: np.ndarray | None = None  # (C,) the warm-up's mean, once settled
    offset: np.ndarray | None = None  # (C,) reference_mean − mean, float32


@dataclass
class Rebaseliner:
    warmup_ms: int
    reference_mean: np.ndarray  # (C,)
    _state: dict[Key, _Baseline] = field(default_factory=dict)
    #: per asset: its next window starting at or after this time opens a new warm-up
    _restart_at: dict[Key, int] = field(default_factory=dict)
    #: maintenance ends per asset id (reports name no partition), not yet reached
    _asset_restart_at: dict[str, list[int]] = field(default_factory=dict)
    warmup_windows: int = 0
    #: warm-ups started by a maintenance report (not by the first window or a gap)
    maintenance_restarts: int = 0

    @staticmethod
    def restart_ms(gap: Gap) -> int:
        """The first window starting at or after this time opens the gap's warm-up: a
        hole's windows resume at its end; after a silence (start = end = the last
        reading) the next window starts later than that reading."""
        return gap.end_ms + 1 if gap.silent else gap.end_ms

    def note_gaps(self, gaps: Iterable[Gap]) -> None:
        """Each gap (or silence) restarts its asset's warm-up from the first window
        that starts after it; windows before it keep the current baseline."""
        for g in gaps:
            at = self.restart_ms(g)
            key = (g.partition, g.asset_id)
            self._restart_at[key] = max(at, self._restart_at.get(key, at))

    def note_restart(self, asset_id: str, at_ms: int) -> None:
        """Maintenance on ``asset_id`` ended at ``at_ms``: its first window starting at
        or after that time opens a new warm-up, unless its current warm-up already
        started there or later. Several pending ends each take effect in turn."""
        pending = self._asset_restart_at.setdefault(asset_id, [])
        if at_ms not in pending:
            pending.append(at_ms)
            pending.sort()

    def carry_pending_from(self, other: Rebaseliner) -> None:
        """Keep ``other``'s maintenance ends not yet reached (a model swap that rebuilds
        the windows and this re-baseliner)."""
        for asset, ends in other._asset_restart_at.items():
            for at in ends:
                self.note_restart(asset, at)

    def snapshot(self, key: Key) -> BaselineState | None:
        """``key``'s state for :meth:`restore` (None: nothing known about it)."""
        st, restart = self._state.get(key), self._restart_at.get(key)
        if st is None and restart is None:
            return None
        if st is None:
            return BaselineState(restart_at_ms=restart)
        return BaselineState(
            warmup_start_ms=st.first_start_ms,
            windows=st.count,
            total=st.total.tolist(),
            mean=None if st.mean is None else st.mean.tolist(),
            restart_at_ms=restart,
        )

    def restore(self, key: Key, state: BaselineState) -> bool:
        """Take ``key``'s state back from :meth:`snapshot`. False (and nothing taken)
        when it has another number of channels than this model: the asset then warms
        up afresh."""
        n = self.reference_mean.shape[0]
        if any(v is not None and len(v) != n for v in (state.total, state.mean)):
            return False
        self._state.pop(key, None)
        self._restart_at.pop(key, None)
        if state.restart_at_ms is not None:
            self._restart_at[key] = state.restart_at_ms
        if state.warmup_start_ms is not None:
            total = np.zeros(n) if state.total is None else np.array(state.total, np.float64)
            st = self._state[key] = _Baseline(state.warmup_start_ms, total, state.windows)
            if state.mean is not None:
                st.mean = np.array(state.mean, np.float64)
                st.offset = self._offset(st.mean)
        return True

    def carry_from(self, other: Rebaseliner) -> None:
        """Keep ``other``'s baselines, warm-ups in progress and pending restarts (a model
        swap that rebuilds the windows, same channels; with other channels the caller
        keeps only the pending maintenance ends, :meth:`carry_pending_from`)."""
        self.carry_pending_from(other)
        for key in {*other._state, *other._restart_at}:
            state = other.snapshot(key)
            if state is not None:
                self.restore(key, state)

    def set_reference(self, reference_mean: np.ndarray) -> None:
        """A new model's training mean (same channels): settled baselines are kept and
        every later window is shifted towards the new reference."""
        ref = np.asarray(reference_mean, np.float64)
        if ref.shape != self.reference_mean.shape:
            raise ValueError(
                f"reference mean of shape {ref.shape}, expected {self.reference_mean.shape}"
            )
        self.reference_mean = ref
        for st in self._state.values():
            if st.mean is not None:
                st.offset = self._offset(st.mean)

    def _offset(self, mean: np.ndarray) -> np.ndarray:
        return np.asarray(self.reference_mean - mean, dtype=np.float32)

    def _restart_if_due(self, key: Key, start: int) -> None:
        """Drop ``key``'s baseline when the window starting at ``start`` is the first
        after a noted gap or maintenance end (a new warm-up then begins with it)."""
        restart = self._restart_at.get(key)
        if restart is not None and start >= restart:
            del self._restart_at[key]
            self._state.pop(key, None)
            return
        ends = self._asset_restart_at.get(key[1])
        if not ends or start < ends[0]:
            return
        reached = [at for at in ends if at <= start]
        pending = reached[-1]  # the latest maintenance end this window is after
        if len(reached) == len(ends):
            del self._asset_restart_at[key[1]]
        else:
            del ends[: len(reached)]
        st = self._state.get(key)
        if st is None or st.first_start_ms >= pending:
            return  # this warm-up already began after the maintenance
        del self._state[key]
        self.maintenance_restarts += 1

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
            key = (p, asset)
            self._restart_if_due(key, start)
            st = self._state.get(key)
            if st is None:
                st = self._state[key] = _Baseline(start, np.zeros(values.shape[1]))
            if st.mean is None:
                if start < st.first_start_ms + self.warmup_ms:
                    st.total += means[i]
                    st.count += 1
                    keep[i] = False
                    continue
                st.mean = st.total / max(st.count, 1)
                st.offset = self._offset(st.mean)
            assert st.offset is not None
            values[i] += st.offset[:, None]
        self.warmup_windows += int((~keep).sum())
        shifted = WindowBatch(
            windows.asset_ids, windows.partitions, windows.start_ms, windows.end_ms, values
        )
        return shifted if keep.all() else shifted.select(keep)

    def reset(self, keys: Iterable[Key]) -> None:
        """Start a new warm-up for these (partition, asset) keys with their next window.
        Gaps go through :meth:`note_gaps` and maintenance through :meth:`note_restart`,
        which are exact about the window."""
        for k in keys:
            self._state.pop(k, None)
            self._restart_at.pop(k, None)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the state of partitions this process gave away: if one comes back, its
        assets take the state stored with the scorer's marks (:meth:`restore`), not
        what this process held."""
        gone = set(partitions)
        self.reset([k for k in (*self._state, *self._restart_at) if k[0] in gone])
