"""One asset's grid: pending slots, forward fill, runs of valid rows, windows.

Rules (all in event time):

* **Grid.** Bucket ``b = ts // P``. A bucket keeps, per channel, the value of the
  reading that arrived last (arrival order is the partition order, so replays
  rebuild the same rows). Narrow readings fill one channel each.
* **Watermark.** ``closed = (max_ts - lateness) // P``: buckets below it are final.
  A reading whose bucket is already final when it arrives is *late* (returned to
  the caller, which dead-letters it), judged with the watermark as it stood at
  that reading's arrival, so a batch behaves exactly like one-by-one arrival.
* **Fill.** A missing cell takes the channel's last actual value if that value
  is at most ``fill_limit`` buckets old; otherwise the row is invalid.
* **Runs and windows.** Consecutive valid rows form a run; an invalid row ends
  it. Windows start on absolute buckets ``s`` with ``s % H == 0`` and cover
  ``[s, s + W)``; a window is emitted once all its rows are final and valid.
  Alignment on absolute buckets makes window identity (asset, start) independent
  of where a replay began, which is what makes event ids deterministic.
* **Gaps.** Consecutive invalid rows form a gap. It is reported (as a
  data-quality event) when data resumes or the asset goes silent, if the asset
  once had a valid row or the gap was alerted (below): an asset's first rows are
  often incomplete for a moment (narrow readings assembling), which is no gap.
* **Alerts.** A gap may never close: one dead sensor while the other channels
  keep arriving leaves the asset unscored for as long as the sensor is dead. So
  a gap still open ``gap_alert`` rows after its first row is alerted once, at
  its first final invalid row *with readings* from then on, naming the channels
  without a usable value in that row. Readings there show the asset is alive but
  incomplete; a hole without readings alerts nothing (the gap event, when data
  resumes, or the silence event covers it). Final rows are event time and
  arrival order only, so a replay of the same readings alerts the same.
* **Gaps across a restart.** While a gap lasts the commits move on, so a replay
  starts inside it and would see it begin at its first replayed row. The gap
  state at the commit (:meth:`AssetGrid.gap_state`: the open gap's start, whether
  it was alerted, whether the asset was ever valid) is stored with the scorer's
  marks; the replay's grid takes it (:meth:`AssetGrid.set_gap_state`) once it has
  seen the readings consumed before that commit, i.e. at row ``closed`` of the
  original (see :class:`~stream_ae.windowing.windower.Windower`). Rows from there
  on are the uninterrupted run's (their readings and fill sources are replayed),
  so the gap goes on from its original start (no second alert; its end carries
  that start) and every later gap event and alert, with its id, is the
  uninterrupted run's.
* **Delivery.** :meth:`AssetGrid.min_pin` is the smallest source offset among the
  readings a future window or row may still need: pending rows, plus final rows
  from ``min(next_win, closed) - fill_limit`` (``closed - fill_limit`` between
  runs), valid or not, whose values can still be fill sources. The consumer
  never commits past it, so after a crash a replay rebuilds every window that
  had not been emitted, and every row not yet final as the uninterrupted run
  did (valid or not: the gaps and alerts from there on are the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

NO_PIN = np.iinfo(np.int64).max
_FAR_PAST = int(np.iinfo(np.int64).min // 4)


@dataclass(frozen=True)
class GridSpec:
    period_ms: int
    size: int  # W
    hop: int  # H
    lateness_ms: int
    fill_limit: int
    n_channels: int
    #: rows a gap lasts before it is alerted while still open; None: one window (size);
    #: 0: never
    gap_alert: int | None = None

    @property
    def alert_after(self) -> int:
        return self.size if self.gap_alert is None else self.gap_alert

    def closed_bound(self, max_ts: int) -> int:
        return (max_ts - self.lateness_ms) // self.period_ms

    def first_window_at_or_after(self, bucket: int) -> int:
        return -(-bucket // self.hop) * self.hop


class GapState(NamedTuple):
    """What an asset's gap reporting depends on at a point of its grid: ``start``:
    the open gap's first row (bucket), None when none is open; ``alerted``: its
    alert was emitted; ``ever_valid``: the asset had a valid row (a gap's end is
    reported only then, or when alerted)."""

    start: int | None
    alerted: bool
    ever_valid: bool


#: a new grid's: no row yet
FRESH_GAP_STATE = GapState(None, False, False)


class Alert(NamedTuple):
    """A gap still open: rows [start, end) invalid so far (buckets); ``missing``: the
    channels (indices) without a usable value in row ``end - 1``."""

    start: int
    end: int
    missing: tuple[int, ...]


@dataclass
class Emitted:
    """What one call produced for one asset."""

    window_starts: list[int] = field(default_factory=list)  # buckets
    window_values: list[np.ndarray] = field(default_factory=list)  # each (W, C) float32
    gaps: list[tuple[int, int]] = field(default_factory=list)  # [start, end) buckets
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class Accounting:
    """Reading-level outcomes (every accepted reading ends in exactly one bucket)."""

    scored: int = 0  # in at least one emitted window
    unwindowed: int = 0  # in a valid row that no window covered (run too short, alignment)
    incomplete: int = 0  # in a row that stayed invalid (a channel missing beyond the fill limit)
    late: int = 0

    def add(self, other: Accounting) -> None:
        self.scored += other.scored
        self.unwindowed += other.unwindowed
        self.incomplete += other.incomplete
        self.late += other.late


class AssetGrid:
    """State of one asset. Arrays are small; memory is O(C × (W + lateness/P))."""

    def __init__(self, spec: GridSpec, first_ts: int) -> None:
        self.spec = spec
        c = spec.n_channels
        self.max_ts = first_ts
        self.closed = spec.closed_bound(first_ts)
        # pending (not yet final) rows, sorted by bucket
        self.p_buckets = np.empty(0, np.int64)
        self.p_vals = np.empty((0, c), np.float64)
        self.p_pins = np.empty(0, np.int64)
        self.p_counts = np.empty(0, np.int64)
        # forward-fill carry: last actual value per channel and its bucket
        self.carry_vals = np.full(c, np.nan)
        self.carry_bucket = np.full(c, _FAR_PAST, np.int64)
        # (buckets, pins) of final rows that had readings, in order; pruned lazily to the
        # rows a future window may still use
        self.history: list[tuple[np.ndarray, np.ndarray]] = []
        # current run of valid rows [run_start, run_start + run_len)
        cap = max(2 * (spec.size + spec.hop + spec.fill_limit), 64)
        self.run_vals = np.empty((cap, c), np.float32)
        self.run_counts = np.empty(cap, np.int64)
        self.run_covered = np.zeros(cap, bool)
        self.run_start = 0
        self.run_len = 0
        self.next_win = _FAR_PAST
        self.ever_valid = False
        self.gap_start: int | None = None
        self.gap_alerted = False
        #: gap_state() changed since the owner last looked (to store it again)
        self.gap_changed = False
        self.acct = Accounting()

    # -- input ---------------------------------------------------------------------------

    def add(self, ts: np.ndarray, vals: np.ndarray, pins: np.ndarray, out: Emitted) -> np.ndarray:
        """Take readings in arrival order; return a bool mask of the late ones."""
        spec = self.spec
        running = np.maximum.accumulate(ts)
        before = np.empty_like(running)
        before[0] = self.max_ts
        np.maximum(running[:-1], self.max_ts, out=before[1:])
        closed_at = np.maximum((before - spec.lateness_ms) // spec.period_ms, self.closed)
        buckets = ts // spec.period_ms
        late: np.ndarray = buckets < closed_at
        self.max_ts = max(self.max_ts, int(running[-1]))
        if late.any():
            self.acct.late += int(late.sum())
            keep = ~late
            buckets, vals, pins = buckets[keep], vals[keep], pins[keep]
        if len(buckets):
            self._merge_pending(buckets, vals, pins)
        self._finalize(spec.closed_bound(self.max_ts), out)
        return late

    def flush(self, out: Emitted) -> None:
        """End of input for this asset: finalize every pending row."""
        if len(self.p_buckets):
            self._finalize(int(self.p_buckets[-1]) + 1, out)
        self._end_run(out)
        self._close_gap(self.closed, out)
        self.history.clear()  # no window will come: nothing is pinned

    def gap_state(self) -> GapState:
        return GapState(self.gap_start, self.gap_alerted, self.ever_valid)

    def set_gap_state(self, state: GapState) -> None:
        """Take the gap state another run of this asset had with the same rows final
        (a replay taking the stored state at the commit it started from)."""
        self.gap_start, self.gap_alerted, self.ever_valid = state

    def min_pin(self) -> int:
        lo = int(self.p_pins.min()) if len(self.p_pins) else NO_PIN
        self._prune_history()
        if self.history:
            lo = min(lo, int(self.history[0][1].min()))
        return lo

    def _prune_history(self) -> None:
        """Keep final rows from the first row a window not emitted yet, or the next
        row to finalize, may take fill values from.

        That window starts at ``next_win`` while a run is open, else at or after
        ``closed``; the next row is ``closed``. Either may take fill values from
        ``fill_limit`` rows before it. The bound never decreases, so pruning late is
        as good as pruning early.
        """
        if not self.history:
            return
        first = min(self.next_win, self.closed) if self.run_len else self.closed
        bound = first - self.spec.fill_limit
        if len(self.history) == 1:
            buckets, pins = self.history[0]
        else:
            buckets = np.concatenate([h[0] for h in self.history])
            pins = np.concatenate([h[1] for h in self.history])
        keep = int(np.searchsorted(buckets, bound))
        self.history = [(buckets[keep:], pins[keep:])] if keep < len(buckets) else []

    # -- pending rows --------------------------------------------------------------------

    def _merge_pending(self, buckets: np.ndarray, vals: np.ndarray, pins: np.ndarray) -> None:
        ones = np.ones(len(buckets), np.int64)
        if (len(buckets) == 1 or (buckets[1:] > buckets[:-1]).all()) and (
            not len(self.p_buckets) or buckets[0] > self.p_buckets[-1]
        ):
            # fast path: readings in order, one per bucket, after every pending row
            if len(self.p_buckets):
                buckets = np.concatenate([self.p_buckets, buckets])
                vals = np.concatenate([self.p_vals, vals])
                pins = np.concatenate([self.p_pins, pins])
                ones = np.concatenate([self.p_counts, ones])
            self.p_buckets, self.p_vals, self.p_pins, self.p_counts = buckets, vals, pins, ones
            return
        b = np.concatenate([self.p_buckets, buckets])
        v = np.concatenate([self.p_vals, vals])
        pn = np.concatenate([self.p_pins, pins])
        cnt = np.concatenate([self.p_counts, ones])
        order = np.argsort(b, kind="stable")  # stable: arrival order within a bucket
        b, v, pn, cnt = b[order], v[order], pn[order], cnt[order]
        first = np.ones(len(b), bool)
        first[1:] = b[1:] != b[:-1]
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(b)) - 1
        if len(starts) == len(b):  # one reading per bucket: nothing to merge
            self.p_buckets, self.p_vals, self.p_pins, self.p_counts = b, v, pn, cnt
            return
        # last non-NaN value per channel within each bucket group
        src = np.where(np.isnan(v), -1, np.arange(len(b))[:, None])
        src = np.maximum.accumulate(src, axis=0)[ends]
        ok = src >= starts[:, None]
        merged = np.take_along_axis(v, np.maximum(src, 0), axis=0)
        self.p_buckets = b[starts]
        self.p_vals = np.where(ok, merged, np.nan)
        self.p_pins = np.minimum.reduceat(pn, starts)
        self.p_counts = np.add.reduceat(cnt, starts)

    # -- finalizing ----------------------------------------------------------------------

    def _finalize(self, new_closed: int, out: Emitted) -> None:
        if new_closed <= self.closed:
            return
        n_final = int(np.searchsorted(self.p_buckets, new_closed))
        occ = self.p_buckets[:n_final]
        vals, pins, counts = self.p_vals[:n_final], self.p_pins[:n_final], self.p_counts[:n_final]
        self.p_buckets = self.p_buckets[n_final:]
        self.p_vals = self.p_vals[n_final:]
        self.p_pins = self.p_pins[n_final:]
        self.p_counts = self.p_counts[n_final:]
        if n_final:
            self.history.append((occ, pins))

        cursor = self.closed
        if n_final:
            # groups of occupied buckets; a hole longer than fill_limit + 1 splits them
            split = np.flatnonzero(np.diff(occ) > self.spec.fill_limit + 1) + 1
            bounds = [0, *split.tolist(), n_final]
            for g in range(len(bounds) - 1):
                lo, hi = int(bounds[g]), int(bounds[g + 1])
                g0, g1 = int(occ[lo]), int(occ[hi - 1])
                self._empty_stretch(cursor, g0, out)
                self._dense_block(g0, g1 + 1, occ[lo:hi], vals[lo:hi], counts[lo:hi], out=out)
                cursor = g1 + 1
        self._empty_stretch(cursor, new_closed, out)
        self.closed = new_closed
        if len(self.history) > 32:
            self._prune_history()

    def _empty_stretch(self, start: int, end: int, out: Emitted) -> None:
        """Rows [start, end) that got no reading: fillable prefix, then invalid."""
        if end <= start:
            return
        oldest = int(self.carry_bucket.min()) if not np.isnan(self.carry_vals).any() else None
        fill_end = start if oldest is None else min(end, oldest + self.spec.fill_limit + 1)
        if fill_end > start:
            empty = np.empty(0, np.int64)
            self._dense_block(
                start, fill_end, empty, np.empty((0, self.spec.n_channels)), empty, out=out
            )
        if end > max(start, fill_end):
            self._invalid(max(start, fill_end), end, 0, out)

    def _dense_block(
        self,
        start: int,
        end: int,
        occ: np.ndarray,
        occ_vals: np.ndarray,
        occ_counts: np.ndarray,
        *,
        out: Emitted,
    ) -> None:
        """Rows [start, end) with readings at ``occ``: forward fill, then feed the run."""
        n, c = end - start, self.spec.n_channels
        if len(occ) == n and not np.isnan(occ_vals).any():
            # fast path: every row present and complete, nothing to fill
            self.carry_vals = occ_vals[-1].copy()
            self.carry_bucket = np.full(c, end - 1, np.int64)
            self._append_valid(start, occ_vals, occ_counts, out)
            return
        rel = occ - start
        block = np.full((n + 1, c), np.nan)
        block[0] = self.carry_vals
        block[rel + 1] = occ_vals
        counts = np.zeros(n, np.int64)
        counts[rel] = occ_counts
        src = np.where(np.isnan(block), -1, np.arange(n + 1)[:, None])
        src = np.maximum.accumulate(src, axis=0)
        filled = np.take_along_axis(block, np.maximum(src, 0), axis=0)
        src_bucket = np.where(src == 0, self.carry_bucket, start + src - 1)
        age = (start + np.arange(-1, n))[:, None] - src_bucket
        ok = (src >= 0) & (age <= self.spec.fill_limit)
        last = src[-1]
        has = last >= 0
        self.carry_vals = np.where(has, filled[-1], self.carry_vals)
        self.carry_bucket = np.where(has, src_bucket[-1], self.carry_bucket)
        valid = np.asarray(ok[1:].all(axis=1))
        rows = filled[1:]
        # feed alternating valid / invalid stretches
        edges = np.flatnonzero(valid[1:] != valid[:-1]) + 1
        bounds = [0, *edges.tolist(), n]
        for k in range(len(bounds) - 1):
            a, b = int(bounds[k]), int(bounds[k + 1])
            if valid[a]:
                self._append_valid(start + a, rows[a:b], counts[a:b], out)
            else:
                self._invalid(start + a, start + b, int(counts[a:b].sum()), out)
                if not self.gap_alerted:
                    self._alert(start + a, counts[a:b], ok[a + 1 : b + 1], out)

    def _invalid(self, start: int, end: int, readings: int, out: Emitted) -> None:
        self.acct.incomplete += readings
        self._end_run(out)
        if self.gap_start is None:
            self.gap_start = start
            self.gap_alerted = False
            self.gap_changed = True

    def _alert(self, start: int, counts: np.ndarray, usable: np.ndarray, out: Emitted) -> None:
        """Alert the open gap at its first row from ``gap_start + alert_after - 1`` on
        that has readings, if one is among these invalid rows ``[start, start + n)``
        (``counts``: readings per row, ``usable``: (n, C) channel has a usable value)."""
        after = self.spec.alert_after
        if after == 0 or self.gap_start is None:
            return
        skip = max(self.gap_start + after - 1 - start, 0)
        hits = np.flatnonzero(counts[skip:])
        if not len(hits):
            return
        i = skip + int(hits[0])
        missing = tuple(np.flatnonzero(~usable[i]).tolist())
        out.alerts.append(Alert(self.gap_start, start + i + 1, missing))
        self.gap_alerted = True
        self.gap_changed = True

    def _close_gap(self, end: int, out: Emitted) -> None:
        if self.gap_start is None:
            return
        if self.ever_valid or self.gap_alerted:
            out.gaps.append((self.gap_start, end))
        self.gap_start = None
        self.gap_alerted = False
        self.gap_changed = True

    # -- runs and windows ------------------------------------------------------------------

    def _append_valid(self, start: int, rows: np.ndarray, counts: np.ndarray, out: Emitted) -> None:
        spec = self.spec
        self._close_gap(start, out)
        if not self.ever_valid:
            self.ever_valid = self.gap_changed = True
        if self.run_len == 0:
            self.run_start = start
            self.next_win = max(self.next_win, spec.first_window_at_or_after(start))
        n = len(rows)
        self._ensure_capacity(self.run_len + n)
        sl = slice(self.run_len, self.run_len + n)
        self.run_vals[sl] = rows
        self.run_counts[sl] = counts
        self.run_covered[sl] = False
        self.run_len += n
        run_end = self.run_start + self.run_len
        while self.next_win + spec.size <= run_end:
            i = self.next_win - self.run_start
            out.window_starts.append(self.next_win)
            out.window_values.append(self.run_vals[i : i + spec.size].copy())
            self.run_covered[i : i + spec.size] = True
            self.next_win += spec.hop
        self._trim(self.next_win - spec.fill_limit)

    def _trim(self, keep_from: int) -> None:
        k = min(max(keep_from - self.run_start, 0), self.run_len)
        if k == 0:
            return
        self._account(slice(0, k))
        rest = slice(k, self.run_len)
        m = self.run_len - k
        self.run_vals[:m] = self.run_vals[rest]
        self.run_counts[:m] = self.run_counts[rest]
        self.run_covered[:m] = self.run_covered[rest]
        self.run_start += k
        self.run_len = m

    def _end_run(self, out: Emitted) -> None:
        if self.run_len:
            self._account(slice(0, self.run_len))
            self.run_len = 0

    def _account(self, sl: slice) -> None:
        counts, covered = self.run_counts[sl], self.run_covered[sl]
        self.acct.scored += int(counts[covered].sum())
        self.acct.unwindowed += int(counts[~covered].sum())

    def _ensure_capacity(self, n: int) -> None:
        cap = len(self.run_counts)
        if n <= cap:
            return
        new = max(n, 2 * cap)
        for name in ("run_vals", "run_counts", "run_covered"):
            old = getattr(self, name)
            grown = np.empty((new, *old.shape[1:]), old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def pending_readings(self) -> int:
        """Accepted readings not yet accounted (pending rows and the current run)."""
        return int(self.p_counts.sum()) + int(self.run_counts[: self.run_len].sum())
