"""Windower: routing by (partition, asset), batch layout, delivery, revoke, idle sweep."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from stream_ae.windowing import GridSpec, StepResult, WindowBatch, Windower
from stream_ae.windowing.asset_grid import FRESH_GAP_STATE, GapState
from stream_ae.windowing.windower import Gap

P = 1000
NAN = float("nan")

Reading = tuple[int, str, int, int, Sequence[float]]  # partition, asset, offset, ts_ms, values


def spec(
    *, size: int = 4, hop: int = 2, lateness: int = 0, fill: int = 1, channels: int = 2
) -> GridSpec:
    return GridSpec(
        period_ms=P,
        size=size,
        hop=hop,
        lateness_ms=lateness,
        fill_limit=fill,
        n_channels=channels,
    )


def feed(
    w: Windower,
    readings: Sequence[Reading],
    *,
    now: int = 0,
) -> StepResult:
    """readings: (partition, asset, offset, ts_ms, values)."""
    return w.process(
        [r[1] for r in readings],
        np.array([r[0] for r in readings], np.int64),
        np.array([r[2] for r in readings], np.int64),
        np.array([r[3] for r in readings], np.int64),
        np.array([r[4] for r in readings], np.float64).reshape(len(readings), -1),
        now_ms=now,
    )


def windows(batch: WindowBatch) -> dict[tuple[int, str, int], list[list[float]]]:
    """(partition, asset, start_ms) -> values as (C, W) lists."""
    assert (batch.end_ms - batch.start_ms == batch.values.shape[2] * P).all()
    return {
        (int(p), a, int(s)): v.tolist()
        for p, a, s, v in zip(
            batch.partitions, batch.asset_ids, batch.start_ms, batch.values, strict=True
        )
    }


def series(
    part: int, asset: str, buckets: Sequence[int], *, scale: float = 1.0, off0: int = 0
) -> list[Reading]:
    """Complete readings at b*P + 10 with values (scale*b, -scale*b); offsets off0, off0+1..."""
    return [
        (part, asset, off0 + i, b * P + 10, [scale * b, -scale * b]) for i, b in enumerate(buckets)
    ]


def test_empty_input() -> None:
    r = Windower(spec()).process(
        [],
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty((0, 2)),
        now_ms=0,
    )
    assert len(r.windows) == 0
    assert r.windows.values.shape == (0, 2, 4)
    assert r.late.shape == (0,)
    assert r.gaps == []


def test_batch_layout_is_channels_by_time() -> None:
    w = Windower(spec(size=4, hop=2))
    r = feed(w, series(0, "a", range(5)))
    assert r.windows.asset_ids == ["a"]
    assert r.windows.values.dtype == np.float32
    assert r.windows.values.shape == (1, 2, 4)  # (B, C, W)
    assert r.windows.values.flags.c_contiguous
    assert windows(r.windows) == {(0, "a", 0): [[0, 1, 2, 3], [0, -1, -2, -3]]}
    assert r.windows.end_ms.tolist() == [4000]


def test_assets_are_keyed_by_partition_and_id() -> None:
    w = Windower(spec(size=4, hop=4))
    # the same asset id on two partitions is two independent grids; readings interleave
    a0 = series(0, "x", range(9), scale=1)
    a1 = series(1, "x", range(9), scale=100)
    b0 = series(0, "y", range(4, 9), scale=10, off0=50)
    mixed = [r for trio in zip(a0, a1, [*b0, *[None] * 4], strict=True) for r in trio if r]
    r = feed(w, mixed)
    assert len(w) == 3
    got = windows(r.windows)
    assert sorted(got) == [(0, "x", 0), (0, "x", 4000), (0, "y", 4000), (1, "x", 0), (1, "x", 4000)]
    assert got[(1, "x", 4000)] == [[400, 500, 600, 700], [-400, -500, -600, -700]]
    assert got[(0, "y", 4000)] == [[40, 50, 60, 70], [-40, -50, -60, -70]]
    assert got[(0, "x", 0)] == [[0, 1, 2, 3], [0, -1, -2, -3]]


def test_late_mask_follows_the_input_order() -> None:
    w = Windower(spec(lateness=1000))
    feed(w, series(0, "a", range(5)) + series(0, "b", range(5), off0=10))
    r = feed(
        w,
        [
            (0, "b", 20, 1010, [1, 1]),  # closed for b is 3: late
            (0, "a", 21, 3010, [1, 1]),  # bucket 3 is still open
            (0, "a", 22, 2999, [1, 1]),  # late
            (0, "c", 23, 0, [1, 1]),  # a new asset: never late on its first reading
        ],
    )
    assert r.late.tolist() == [True, False, True, False]
    assert w.accounting().late == 2


def test_gaps_are_reported_in_milliseconds() -> None:
    w = Windower(spec(fill=0))
    feed(w, series(0, "a", range(5)))
    r = feed(w, series(0, "a", [8, 9, 10], off0=5))
    assert r.gaps == [Gap("a", 5000, 8000)]


def test_committable_per_partition() -> None:
    w = Windower(spec(size=4, hop=4, fill=1))
    assert w.committable(0) is None
    feed(w, series(0, "a", range(6), off0=10))  # window [0,4) out; [4,8) may fill from row 3
    feed(w, series(1, "b", range(2), off0=70))
    feed(w, series(0, "c", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], off0=30))
    assert w.committable(0) == 13  # a's row 3 (c's pin is 37)
    assert w.committable(1) == 70
    assert w.committable(2) is None
    feed(w, series(0, "a", range(6, 10), off0=40))  # a: window [4, 8) out, pin → row 7
    assert w.committable(0) == 37
    w.flush_all()
    assert w.committable(0) is None
    assert w.committable(1) is None


def test_flush_all_closes_everything_and_accounts_every_reading() -> None:
    w = Windower(spec(size=4, hop=2, fill=1, lateness=2000))
    given = series(0, "a", [0, 1, 3, 2, 4, 5, 6]) + series(1, "b", [0, 1, 2], off0=10)
    given.append((1, "b", 13, 2010, [NAN, 5.0]))  # duplicate of row 2, b only
    given.append((0, "c", 14, 7010, [1.0, NAN]))  # never complete: incomplete
    r = feed(w, given)
    assert len(r.windows) == 1  # a: [0, 4); the watermark holds the rest open
    assert w.open_readings() > 0
    a = w.accounting()
    assert a.scored + a.unwindowed + a.incomplete + a.late + w.open_readings() == len(given)
    f = w.flush_all()
    assert sorted(windows(f.windows)) == [(0, "a", 2000)]
    assert len(w) == 0
    assert w.open_readings() == 0
    a = w.accounting()
    # a: rows 0..5 in [0,4) or [2,6); row 6 unwindowed; b: 4 readings, run of 3 rows
    assert (a.scored, a.unwindowed, a.incomplete, a.late) == (6, 1 + 4, 1, 0)
    assert a.scored + a.unwindowed + a.incomplete + a.late == len(given)


def test_revoke_drops_only_that_partitions_assets() -> None:
    s = spec(size=4, hop=2, lateness=2000)
    w, alone = Windower(s), Windower(s)
    first = series(0, "a", range(6)) + series(1, "b", range(6), off0=100)
    feed(w, first)
    feed(alone, [r for r in first if r[0] == 1])
    assert len(w) == 2
    pending_a = w._grids[(0, "a")].pending_readings()
    assert pending_a > 0
    w.revoke([0, 7])
    assert len(w) == 1
    assert w.committable(0) is None
    assert w.committable(1) == alone.committable(1)
    assert w.revoked_readings == pending_a
    a = w.accounting()
    assert (
        a.scored + a.unwindowed + a.incomplete + a.late + w.revoked_readings + w.open_readings()
        == 12
    )
    more = series(1, "b", range(6, 12), off0=106)
    got, ref = feed(w, more), feed(alone, more)
    assert windows(got.windows) == windows(ref.windows) != {}
    assert windows(w.flush_all().windows) == windows(alone.flush_all().windows)
    # a revoked asset comes back as a fresh grid (its new owner replays it)
    feed(w, series(0, "a", range(6)))
    assert len(w) == 1


def test_committable_keeps_the_fill_sources_of_the_next_row() -> None:
    """A run that has just begun (next window at row 8, rows 5-6 final): row 7, without
    channel b, is valid only with row 6's value. The commit keeps row 6 so a replay
    sees row 7 as valid too (no gap the uninterrupted run has not)."""
    s = spec(size=4, hop=4, fill=1)
    rows = [*series(0, "x", [5, 6]), (0, "x", 2, 7 * P + 10, [7.0, NAN])]
    rows += series(0, "x", range(8, 13), off0=3)
    w = Windower(s)
    feed(w, rows[:3])
    assert w.committable(0) == 1  # row 6's reading, not row 7's
    replay = Windower(s)
    replay.restore_position(0, 3)
    replay.restore_gap((0, "x"), w.gap_state((0, "x")))
    assert feed(replay, rows[1:]).gaps == []


def test_a_replay_reports_no_gap_of_readings_before_the_position_and_takes_the_stored_state() -> (
    None
):
    s = spec(size=4, hop=2, fill=0)
    dead = [(0, "x", 6 + i, b * P + 10, [float(b), NAN]) for i, b in enumerate(range(6, 20))]
    rows = [*series(0, "x", range(6)), *dead, *series(0, "x", range(20, 24), off0=20)]
    full = Windower(s)
    expected = feed(full, rows)
    assert [(g.start_ms, g.end_ms) for g in expected.gaps] == [(6 * P, 20 * P)]
    first = Windower(s)
    feed(first, rows[:12])  # rows 6-10 final and invalid: the gap is open since row 6
    state = first.gap_state((0, "x"))
    assert state == GapState(6, alerted=True, ever_valid=True)
    commit = first.committable(0)
    assert commit == 11
    replay = Windower(s)
    replay.restore_position(0, 12)
    replay.restore_gap((0, "x"), state)
    head = feed(replay, rows[commit:12])  # below the position: the grid is being rebuilt
    assert (head.gaps, head.alerts, head.gap_changes) == ([], [], [])
    assert replay.gap_state((0, "x")) == state  # what is stored meanwhile
    rest = feed(replay, rows[12:])
    assert (rest.gaps, rest.alerts) == (expected.gaps, [])
    assert rest.gap_changes == [(0, "x")]


def test_a_grid_begun_at_or_after_the_position_keeps_its_own_state() -> None:
    """No reading of the asset was consumed before the commit (or its grid was closed):
    the uninterrupted run's grid for it is new too; a stored state is not taken."""
    s = spec(size=4, hop=2, fill=0)
    w = Windower(s)
    w.restore_position(0, 10)
    w.restore_gap((0, "x"), GapState(-50, alerted=True, ever_valid=True))
    dead = [(0, "x", 10 + i, b * P + 10, [float(b), NAN]) for i, b in enumerate(range(8))]
    out = feed(w, dead)
    assert [(a.start_ms, a.end_ms) for a in out.alerts] == [(0, 4 * P)]


def test_revoke_drops_the_stored_replay_state_of_that_partition() -> None:
    s = spec()
    w = Windower(s)
    w.restore_position(0, 10)
    w.restore_position(1, 10)
    stored = GapState(3, alerted=True, ever_valid=False)
    w.restore_gap((0, "x"), stored)
    w.restore_gap((1, "x"), stored)
    w.revoke([0])
    assert w.positions() == {1: 10}
    assert (w.gap_state((0, "x")), w.gap_state((1, "x"))) == (FRESH_GAP_STATE, stored)


def test_sweep_idle_closes_silent_assets_and_reports_them() -> None:
    w = Windower(spec(size=4, hop=2, lateness=3000), idle_timeout_ms=60_000)
    feed(w, series(0, "a", range(8)), now=1_000)
    feed(w, series(0, "b", range(3), off0=20), now=50_000)
    assert w.sweep_idle(now_ms=61_000).gaps == []  # a last seen at 1000: not yet idle
    r = w.sweep_idle(now_ms=61_001)
    assert len(w) == 1  # b stays
    assert r.gaps == [Gap("a", 7010, 7010, silent=True)]
    # a's open windows were closed: rows up to 7 are final now
    assert sorted(windows(r.windows)) == [(0, "a", 2000), (0, "a", 4000)]
    assert r.late.shape == (0,)
    assert w.committable(0) == 20  # only b holds offsets now
    later = w.sweep_idle(now_ms=200_000)
    assert [g.asset_id for g in later.gaps] == ["b"]
    assert len(w) == 0


def test_sweep_idle_reports_the_trailing_gap_of_an_asset() -> None:
    w = Windower(spec(size=4, hop=2, fill=0), idle_timeout_ms=10)
    feed(
        w, [*series(0, "a", range(4)), (0, "a", 4, 4010, [4.0, NAN]), (0, "a", 5, 5010, [5.0, NAN])]
    )
    r = w.sweep_idle(now_ms=100)
    assert r.gaps == [Gap("a", 4000, 6000), Gap("a", 5010, 5010, silent=True)]


def test_sweep_idle_without_timeout_does_nothing() -> None:
    w = Windower(spec())
    feed(w, series(0, "a", range(3)))
    r = w.sweep_idle(now_ms=10**15)
    assert len(w) == 1
    assert len(r.windows) == 0
    assert r.gaps == []


def test_throughput_1000_assets() -> None:
    """Measured, not asserted: 1000 assets x 8 channels, W=64, H=16, batches of 20k."""
    n_assets, n_ch, batch, n_batches = 1000, 8, 20_000, 8
    s = GridSpec(period_ms=1000, size=64, hop=16, lateness_ms=5000, fill_limit=3, n_channels=n_ch)
    w = Windower(s)
    rng = np.random.default_rng(0)
    names = [f"asset-{i:04d}" for i in range(n_assets)]
    per = batch // n_assets
    spent = 0.0
    emitted = 0
    for k in range(n_batches):
        a = np.tile(np.arange(n_assets), per)
        b = np.repeat(np.arange(k * per, (k + 1) * per), n_assets)
        ts = b * 1000 + rng.integers(0, 1000, len(b))
        vals = rng.standard_normal((len(b), n_ch))
        ids = [names[i] for i in a.tolist()]
        t0 = time.perf_counter()
        r = w.process(ids, a % 6, np.arange(k * batch, (k + 1) * batch), ts, vals, now_ms=0)
        spent += time.perf_counter() - t0
        emitted += len(r.windows)
    assert emitted == n_assets * ((n_batches * per - 5 - 64) // 16 + 1)
    print(
        f"\nwindowing throughput: {n_batches * batch / spent:,.0f} readings/s "
        f"({spent / n_batches * 1e3:.1f} ms per batch of {batch:,}; {emitted} windows)"
    )
