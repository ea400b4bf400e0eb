"""Many assets: route readings to their :class:`AssetGrid`, batch the windows.

State is keyed by (partition, asset id) so a rebalance can drop exactly the
assets of a revoked partition; their readings are replayed by the next owner
from the committed offset, which never passes an open window's first reading.

**Replays and gaps.** A replay rebuilds windows, but not the gap state: while a
gap lasts the commits move on, and a replay starts inside it. Its owner gives
back what it stored at the commit: per partition the consumed position
(:meth:`Windower.restore_position`), per asset :meth:`Windower.gap_state`
(:meth:`Windower.restore_gap`). The rule: an asset's readings below the
consumed position were processed before that commit, and every gap event and
alert they produced was published then. So the grid built from them emits none
(the first replayed rows lack their fill sources: what it would report there is
a repeat or an artefact), and once the asset's first reading at or after the
position comes, the grid stands where the original stood at the commit (same
``closed``: the reading that set it is pinned, so replayed) and takes the
stored gap state in place of its own. From there its rows, gaps and alerts are
the uninterrupted run's: a gap open at the commit goes on from its original
start, not alerted again if it was, and its end is reported as it would have
been. A grid created on a reading at or after the position is new in the
uninterrupted run too, and keeps its own state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stream_ae.windowing.asset_grid import (
    FRESH_GAP_STATE,
    NO_PIN,
    Accounting,
    AssetGrid,
    Emitted,
    GapState,
    GridSpec,
)


@dataclass
class WindowBatch:
    """Windows ready to score. ``values`` is float32 ``(B, C, W)``; times are epoch ms."""

    asset_ids: list[str]
    partitions: np.ndarray  # (B,) int64
    start_ms: np.ndarray  # (B,) int64, inclusive
    end_ms: np.ndarray  # (B,) int64, exclusive
    values: np.ndarray  # (B, C, W) float32

    def __len__(self) -> int:
        return len(self.asset_ids)

    def select(self, mask: np.ndarray) -> WindowBatch:
        idx = np.flatnonzero(mask)
        return WindowBatch(
            [self.asset_ids[i] for i in idx.tolist()],
            self.partitions[idx],
            self.start_ms[idx],
            self.end_ms[idx],
            self.values[idx],
        )

    @staticmethod
    def empty(n_channels: int, size: int) -> WindowBatch:
        return WindowBatch(
            [],
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty((0, n_channels, size), np.float32),
        )


@dataclass(frozen=True)
class Gap:
    asset_id: str
    start_ms: int
    end_ms: int
    silent: bool = False  # True: the asset went silent (idle timeout), not a hole between data
    partition: int = 0


@dataclass(frozen=True)
class GapAlert:
    """A gap still open after ``GridSpec.alert_after`` rows (see :mod:`.asset_grid`):
    ``[start_ms, end_ms)`` had no usable row when it fired. Not a closed gap: the
    asset's :class:`Gap` still comes when data resumes or the asset goes silent."""

    asset_id: str
    start_ms: int
    end_ms: int
    missing: tuple[int, ...]  # channel indices without a usable value at end_ms - P
    partition: int = 0


@dataclass
class StepResult:
    windows: WindowBatch
    late: np.ndarray  # indices into the readings given to process(), bool mask (N,)
    gaps: list[Gap] = field(default_factory=list)
    alerts: list[GapAlert] = field(default_factory=list)
    #: (partition, asset) whose :meth:`Windower.gap_state` changed (to store again)
    gap_changes: list[tuple[int, str]] = field(default_factory=list)


Key = tuple[int, str]


class Windower:
    """Per-asset grids for every (partition, asset) seen; see :mod:`.asset_grid`."""

    def __init__(self, spec: GridSpec, *, idle_timeout_ms: int | None = None) -> None:
        self.spec = spec
        self.idle_timeout_ms = idle_timeout_ms
        self._grids: dict[tuple[int, str], AssetGrid] = {}
        self._last_seen: dict[tuple[int, str], int] = {}
        # replays (see the module docstring): per partition the consumed position at
        # the commit replayed from; per asset the gap state stored then, until its
        # grid exists; grids still below the position, with the state to take there
        self._positions: dict[int, int] = {}
        self._restored: dict[Key, GapState | None] = {}
        self._replaying: dict[Key, GapState | None] = {}
        self._closed_acct = Accounting()
        self.revoked_readings = 0

    def __len__(self) -> int:
        return len(self._grids)

    def process(
        self,
        asset_ids: Sequence[str],
        partitions: np.ndarray,
        offsets: np.ndarray,
        ts_ms: np.ndarray,
        values: np.ndarray,
        *,
        now_ms: int,
    ) -> StepResult:
        """Feed N readings (in arrival order) → windows now complete, late mask, gaps,
        gap alerts.

        ``values`` is ``(N, C)`` with NaN for channels a reading did not carry;
        ``offsets`` are the source offsets (used as delivery pins).
        """
        n = len(asset_ids)
        late = np.zeros(n, bool)
        if n == 0:
            return StepResult(WindowBatch.empty(self.spec.n_channels, self.spec.size), late)
        # group readings by (partition, asset) keeping arrival order inside each group
        index: dict[tuple[int, str], int] = {}
        codes = np.fromiter(
            (
                index.setdefault(k, len(index))
                for k in zip(partitions.tolist(), asset_ids, strict=True)
            ),
            np.int64,
            count=n,
        )
        order = np.argsort(codes, kind="stable")
        bounds = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1, n]
        keys = list(index)
        collected: list[tuple[tuple[int, str], Emitted]] = []
        for g in range(len(bounds) - 1):
            sel = order[bounds[g] : bounds[g + 1]]
            key = keys[int(codes[sel[0]])]
            grid = self._grids.get(key)
            ts = ts_ms[sel]
            offs = offsets[sel]
            position = self._positions.get(key[0])
            if grid is None:
                grid = self._grids[key] = AssetGrid(self.spec, int(ts[0]))
                restored = self._restored.pop(key, None)
                if position is not None and int(offs[0]) < position:
                    self._replaying[key] = restored
            self._last_seen[key] = now_ms
            out = Emitted()
            if key in self._replaying:
                assert position is not None
                past = offs >= position
                k = int(past.argmax()) if past.any() else len(sel)
                if k:  # readings processed before the commit: their events are out
                    before = Emitted()
                    head = sel[:k]
                    late[head] = grid.add(ts_ms[head], values[head], offsets[head], before)
                    out.window_starts, out.window_values = (
                        before.window_starts,
                        before.window_values,
                    )
                    grid.gap_changed = False  # what was stored
                if k < len(sel):
                    self._settle(key, grid)
                    tail = sel[k:]
                    late[tail] = grid.add(ts_ms[tail], values[tail], offsets[tail], out)
            else:
                late[sel] = grid.add(ts, values[sel], offs, out)
            collected.append((key, out))
        return StepResult(
            self._batch(collected),
            late,
            self._gaps(collected),
            self._alerts(collected),
            self._gap_changes(key for key, _ in collected),
        )

    def sweep_idle(self, now_ms: int) -> StepResult:
        """Close assets silent (wall clock) for longer than the idle timeout."""
        if self.idle_timeout_ms is None:
            return self._close([], silent=True)
        limit = now_ms - self.idle_timeout_ms
        return self._close([k for k, seen in self._last_seen.items() if seen < limit], silent=True)

    def flush_all(self) -> StepResult:
        """End of input (a file, a bounded replay): emit what every asset can still emit."""
        return self._close(list(self._grids), silent=False)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop the state of assets on partitions this process no longer owns."""
        gone = set(partitions)
        for key in [k for k in self._grids if k[0] in gone]:
            grid = self._grids.pop(key)
            self._last_seen.pop(key, None)
            self._closed_acct.add(grid.acct)
            self.revoked_readings += grid.pending_readings()
        for p in gone:
            self._positions.pop(p, None)
        self._restored = {k: g for k, g in self._restored.items() if k[0] not in gone}
        self._replaying = {k: g for k, g in self._replaying.items() if k[0] not in gone}

    # -- replays: gap state (see the module docstring) -------------------------------------

    def gap_state(self, key: Key) -> GapState | None:
        """``key``'s gap state to store at a commit (start in buckets); None: not known
        (a replay below the consumed position of an asset whose stored record had
        none: the next replay keeps its own view, as this one does)."""
        if key in self._replaying:
            return self._replaying[key]
        grid = self._grids.get(key)
        if grid is not None:
            return grid.gap_state()
        return self._restored.get(key, FRESH_GAP_STATE)

    def gap_keys(self) -> list[Key]:
        """Every key :meth:`gap_state` knows of (grids, and states not taken yet)."""
        return [*self._grids, *(k for k in self._restored if k not in self._grids)]

    def positions(self) -> dict[int, int]:
        """The consumed positions given by :meth:`restore_position`."""
        return dict(self._positions)

    def restore_position(self, partition: int, consumed: int) -> None:
        """A replay of ``partition`` starts from a commit made when ``consumed`` was its
        consumed position (the next offset): readings below it were processed then."""
        self._positions[partition] = consumed

    def restore_gap(self, key: Key, state: GapState | None) -> None:
        """The gap state :meth:`gap_state` had for ``key`` at that commit (None: not
        known). Taken by the asset's grid once the replay passes the consumed
        position; ignored when the asset has a grid already (its state is newer)."""
        if key not in self._grids:
            self._restored[key] = state

    def _settle(self, key: Key, grid: AssetGrid) -> None:
        """The replay of ``key`` reached the consumed position: the grid is where the
        original stood at the commit; it takes the state stored then."""
        state = self._replaying.pop(key)
        if state is not None:
            grid.set_gap_state(state)

    def next_window_starts_ms(self) -> dict[tuple[int, str], int]:
        """Per (partition, asset): start (epoch ms) of the next window not yet emitted."""
        p = self.spec.period_ms
        return {key: g.next_win * p for key, g in self._grids.items()}

    def carry_accounting_from(self, other: Windower) -> None:
        """Keep another windower's settled outcomes (used when the grid is rebuilt)."""
        self._closed_acct.add(other.accounting())
        self.revoked_readings += other.revoked_readings

    def committable(self, partition: int) -> int | None:
        """Lowest source offset still needed on ``partition`` (None: nothing held)."""
        lo = min(
            (g.min_pin() for (p, _), g in self._grids.items() if p == partition),
            default=NO_PIN,
        )
        return None if lo == NO_PIN else lo

    def accounting(self) -> Accounting:
        total = Accounting()
        total.add(self._closed_acct)
        for g in self._grids.values():
            total.add(g.acct)
        return total

    def open_readings(self) -> int:
        return sum(g.pending_readings() for g in self._grids.values())

    # -- helpers ---------------------------------------------------------------------------

    def _close(self, keys: list[tuple[int, str]], *, silent: bool) -> StepResult:
        collected: list[tuple[tuple[int, str], Emitted]] = []
        silences: list[Gap] = []
        changed = []
        for key in keys:
            grid = self._grids.pop(key)
            self._last_seen.pop(key, None)
            if key in self._replaying:  # no reading after the position: as the original
                self._settle(key, grid)
            out = Emitted()
            grid.flush(out)
            changed.append(key)  # no grid: a new one next time
            collected.append((key, out))
            self._closed_acct.add(grid.acct)
            if silent:
                silences.append(
                    Gap(key[1], grid.max_ts, grid.max_ts, silent=True, partition=key[0])
                )
        late = np.zeros(0, bool)
        return StepResult(
            self._batch(collected),
            late,
            self._gaps(collected) + silences,
            self._alerts(collected),
            changed,
        )

    def _gap_changes(self, keys: Iterable[Key]) -> list[Key]:
        changed = []
        for key in keys:
            grid = self._grids[key]
            if grid.gap_changed:
                grid.gap_changed = False
                changed.append(key)
        return changed

    def _gaps(self, collected: list[tuple[tuple[int, str], Emitted]]) -> list[Gap]:
        p = self.spec.period_ms
        return [
            Gap(key[1], a * p, b * p, partition=key[0])
            for key, out in collected
            for a, b in out.gaps
        ]

    def _alerts(self, collected: list[tuple[tuple[int, str], Emitted]]) -> list[GapAlert]:
        p = self.spec.period_ms
        return [
            GapAlert(key[1], a.start * p, a.end * p, a.missing, partition=key[0])
            for key, out in collected
            for a in out.alerts
        ]

    def _batch(self, collected: list[tuple[tuple[int, str], Emitted]]) -> WindowBatch:
        spec = self.spec
        assets: list[str] = []
        parts: list[int] = []
        starts: list[int] = []
        arrays: list[np.ndarray] = []
        for (partition, asset), out in collected:
            k = len(out.window_starts)
            if k:
                assets.extend([asset] * k)
                parts.extend([partition] * k)
                starts.extend(out.window_starts)
                arrays.extend(out.window_values)
        if not assets:
            return WindowBatch.empty(spec.n_channels, spec.size)
        start_ms = np.array(starts, np.int64) * spec.period_ms
        stacked = np.stack(arrays)  # (B, W, C)
        return WindowBatch(
            asset_ids=assets,
            partitions=np.array(parts, np.int64),
            start_ms=start_ms,
            end_ms=start_ms + spec.size * spec.period_ms,
            values=np.ascontiguousarray(stacked.transpose(0, 2, 1)),
        )
