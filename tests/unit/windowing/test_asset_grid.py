"""AssetGrid, one asset at a time, against hand-computed rows, windows, gaps, alerts
and pins."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence

import numpy as np
import pytest

from stream_ae.windowing.asset_grid import NO_PIN, Alert, AssetGrid, Emitted, GridSpec

P = 1000
NAN = float("nan")

Reading = tuple[int, Sequence[float]]  # (ts_ms, values); NaN = channel not carried


def spec(
    *,
    size: int = 4,
    hop: int = 2,
    lateness: int = 0,
    fill: int = 1,
    channels: int = 2,
    alert: int | None = None,
) -> GridSpec:
    return GridSpec(
        period_ms=P,
        size=size,
        hop=hop,
        lateness_ms=lateness,
        fill_limit=fill,
        n_channels=channels,
        gap_alert=alert,
    )


class Feeder:
    """Feeds readings to one grid; pins are consecutive offsets starting at 0."""

    def __init__(self, s: GridSpec) -> None:
        self.spec = s
        self.grid: AssetGrid | None = None
        self.offset = 0
        self.windows: dict[int, np.ndarray] = {}  # start bucket -> (W, C)
        self.gaps: list[tuple[int, int]] = []
        self.alerts: list[Alert] = []
        self.given = 0

    def _collect(self, out: Emitted) -> tuple[list[int], list[tuple[int, int]]]:
        for s, v in zip(out.window_starts, out.window_values, strict=True):
            assert s not in self.windows, f"window {s} emitted twice"
            assert v.shape == (self.spec.size, self.spec.n_channels)
            assert v.dtype == np.float32
            self.windows[s] = v
        self.gaps.extend(out.gaps)
        self.alerts.extend(out.alerts)
        return list(out.window_starts), list(out.gaps)

    def add(self, readings: Sequence[Reading]) -> tuple[list[bool], list[int]]:
        """One call with all ``readings``; returns (late mask, window starts emitted)."""
        ts = np.array([r[0] for r in readings], np.int64)
        vals = np.array([r[1] for r in readings], np.float64).reshape(len(readings), -1)
        pins = np.arange(self.offset, self.offset + len(readings), dtype=np.int64)
        self.offset += len(readings)
        self.given += len(readings)
        if self.grid is None:
            self.grid = AssetGrid(self.spec, int(ts[0]))
        out = Emitted()
        late = self.grid.add(ts, vals, pins, out)
        starts, _ = self._collect(out)
        return late.tolist(), starts

    def one_by_one(self, readings: Sequence[Reading]) -> list[bool]:
        return [self.add([r])[0][0] for r in readings]

    def flush(self) -> list[int]:
        assert self.grid is not None
        out = Emitted()
        self.grid.flush(out)
        starts, _ = self._collect(out)
        return starts

    def rows(self, start: int) -> list[list[float]]:
        values: list[list[float]] = self.windows[start].tolist()
        return values


def row(b: int, ch: int = 2) -> list[float]:
    """Values of the reading for bucket b: (b, 10 b, b + 0.25, b + 0.375, ...)."""
    return [float(b), 10.0 * b, *(b + 0.125 * k for k in range(2, ch))]


def wide(buckets: Sequence[int], *, ch: int = 2) -> list[Reading]:
    """One complete reading per bucket b, at ts b*P + 250."""
    return [(b * P + 250, row(b, ch)) for b in buckets]


def rows_of(buckets: Sequence[int], *, ch: int = 2) -> list[list[float]]:
    return [row(b, ch) for b in buckets]


def total(grid: AssetGrid) -> int:
    a = grid.acct
    return a.scored + a.unwindowed + a.incomplete + a.late + grid.pending_readings()


# -- in-order data -------------------------------------------------------------------------


def test_in_order_windows_starts_and_values() -> None:
    f = Feeder(spec(size=4, hop=2))
    late, starts = f.add(wide(range(10)))
    assert late == [False] * 10
    # lateness 0: closed = bucket of the newest reading (9), rows 0..8 are final
    assert starts == [0, 2, 4]
    assert f.rows(0) == rows_of([0, 1, 2, 3])
    assert f.rows(2) == rows_of([2, 3, 4, 5])
    assert f.rows(4) == rows_of([4, 5, 6, 7])
    assert f.flush() == [6]
    assert f.rows(6) == rows_of([6, 7, 8, 9])
    assert f.gaps == []


def test_windows_start_on_absolute_multiples_of_hop() -> None:
    f = Feeder(spec(size=4, hop=4))
    f.add(wide(range(5, 20)))
    f.flush()
    # the first aligned start at or after bucket 5 is 8; [8,12) and [12,16); 16 lacks rows
    assert sorted(f.windows) == [8, 12, 16]
    assert f.rows(8) == rows_of([8, 9, 10, 11])
    assert f.rows(16) == rows_of([16, 17, 18, 19])


def test_one_by_one_equals_one_call() -> None:
    a, b = Feeder(spec()), Feeder(spec())
    a.add(wide(range(12)))
    for r in wide(range(12)):
        b.add([r])
    a.flush()
    b.flush()
    assert sorted(a.windows) == sorted(b.windows) == [0, 2, 4, 6, 8]
    for s, v in a.windows.items():
        assert np.array_equal(v, b.windows[s])


def test_negative_timestamps_get_windows_too() -> None:
    f = Feeder(spec(size=4, hop=2))
    f.add(wide(range(-10, 0)))
    f.flush()
    assert sorted(f.windows) == [-10, -8, -6, -4]
    assert f.rows(-4) == rows_of([-4, -3, -2, -1])


# -- lateness ----------------------------------------------------------------------------------


def test_out_of_order_within_lateness_lands_in_its_bucket() -> None:
    f = Feeder(spec(lateness=2000))
    order = [0, 1, 3, 2, 4, 6, 5, 7, 9, 8]
    late, _ = f.add(wide(order))
    assert late == [False] * 10
    f.flush()
    assert sorted(f.windows) == [0, 2, 4, 6]
    for s in f.windows:
        assert f.rows(s) == rows_of(range(s, s + 4))


def test_beyond_lateness_is_late_and_counted() -> None:
    f = Feeder(spec(lateness=1000))
    late, _ = f.add(wide(range(5)))
    assert late == [False] * 5
    # newest ts 4250 → closed = (4250 - 1000) // 1000 = 3: buckets 0..2 are final
    late, _ = f.add([(1500, [-1.0, -1.0]), (3000, [33.0, 330.0]), (2999, [-2.0, -2.0])])
    assert late == [True, False, True]
    assert f.grid is not None
    assert f.grid.acct.late == 2
    f.flush()
    # the late readings changed nothing; the on-time one in bucket 3 arrived last there
    assert f.rows(0) == [*rows_of([0, 1, 2, 3])[:3], [33.0, 330.0]]
    assert total(f.grid) == f.given


def test_lateness_is_judged_at_each_readings_arrival() -> None:
    readings = wide([0, 4, 3, 2, 6, 4])
    # lateness 1000: newest ts before each arrival 250, 250, 4250, 4250, 4250, 6250
    # → closed -1, -1, 3, 3, 3, 5
    expected = [False, False, False, True, False, True]
    batch = Feeder(spec(lateness=1000))
    assert batch.add(readings)[0] == expected
    single = Feeder(spec(lateness=1000))
    assert single.one_by_one(readings) == expected


def test_reading_in_the_first_open_bucket_is_not_late() -> None:
    f = Feeder(spec(lateness=2000))
    f.add([(10_000, [1.0, 1.0])])
    # closed = (10000 - 2000) // 1000 = 8
    late, _ = f.add([(8000, [1.0, 1.0]), (7999, [1.0, 1.0])])
    assert late == [False, True]


# -- rows: duplicates, narrow readings ---------------------------------------------------------


def test_duplicates_in_a_bucket_last_arrival_wins_per_channel() -> None:
    f = Feeder(spec(size=4, hop=4, lateness=5000))
    f.add(wide([0]))
    f.add([(1000, [1.0, 2.0]), (1500, [5.0, NAN])])  # same bucket, same call
    f.add(wide([2, 3]))
    f.add([(1200, [NAN, 7.0])])  # same bucket, a later call, earlier ts
    f.flush()
    assert f.rows(0) == [[0.0, 0.0], [5.0, 7.0], [2.0, 20.0], [3.0, 30.0]]
    assert f.grid is not None
    assert f.grid.acct.scored == 6  # every reading of the row counts


def test_duplicate_pending_rows_merged_in_arrival_order_across_calls() -> None:
    f = Feeder(spec(size=4, hop=4, lateness=5000))
    f.add([(1000, [1.0, 1.0]), (0, [0.0, 0.0])])
    f.add([(1999, [9.0, NAN]), (2000, [2.0, 20.0]), (1001, [NAN, 8.0]), (3000, [3.0, 30.0])])
    f.add([(1000, [4.0, NAN])])
    f.flush()
    assert f.rows(0) == [[0.0, 0.0], [4.0, 8.0], [2.0, 20.0], [3.0, 30.0]]


def test_narrow_readings_assemble_one_row() -> None:
    f = Feeder(spec(size=2, hop=2, channels=3))
    narrow: list[Reading] = []
    for b in range(4):
        for c in (2, 0, 1):
            v = [NAN, NAN, NAN]
            v[c] = b + c / 10
            narrow.append((b * P + 100 * c, v))
    f.add(narrow)
    f.flush()
    assert sorted(f.windows) == [0, 2]
    assert np.allclose(f.rows(0), [[0.0, 0.1, 0.2], [1.0, 1.1, 1.2]])
    assert np.allclose(f.rows(2), [[2.0, 2.1, 2.2], [3.0, 3.1, 3.2]])
    assert f.grid is not None
    assert f.grid.acct.scored == 12
    assert f.grid.acct.incomplete == 0


# -- fill and gaps ------------------------------------------------------------------------------


def test_forward_fill_within_limit() -> None:
    f = Feeder(spec(size=4, hop=2, fill=2))
    f.add(wide([0, 1, 2, 3, 4, 7, 8, 9]))  # rows 5, 6 missing: filled from row 4
    f.flush()
    assert sorted(f.windows) == [0, 2, 4, 6]
    assert f.rows(4) == rows_of([4, 4, 4, 7])
    assert f.rows(6) == rows_of([4, 7, 8, 9])
    assert f.gaps == []


def test_channel_fill_uses_its_own_last_actual_value() -> None:
    f = Feeder(spec(size=4, hop=4, fill=2))
    f.add([(0, [0.0, 0.0]), (1000, [1.0, NAN]), (2000, [2.0, NAN]), (3000, [3.0, 30.0])])
    f.flush()
    assert f.rows(0) == [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 30.0]]


def test_fill_never_chains_through_filled_values() -> None:
    # channel b is missing in rows 1..3 with fill_limit 2: row 3 is 3 rows from b's last
    # actual value, so it is invalid even though row 2 was filled
    f = Feeder(spec(size=2, hop=1, fill=2))
    f.add([(0, [0.0, 0.0]), (1000, [1.0, NAN]), (2000, [2.0, NAN]), (3000, [3.0, NAN])])
    f.add(wide([4, 5]))
    f.flush()
    assert sorted(f.windows) == [0, 1, 4]
    assert f.rows(1) == [[1.0, 0.0], [2.0, 0.0]]
    assert f.gaps == [(3, 4)]


def test_hole_beyond_fill_limit_is_a_gap_and_no_window_spans_it() -> None:
    f = Feeder(spec(size=4, hop=2, fill=2))
    # rows 5..8 missing: 5, 6 filled from row 4; 7, 8 invalid → gap [7, 9)
    f.add(wide([0, 1, 2, 3, 4, 9, 10, 11, 12, 13]))
    f.flush()
    assert f.gaps == [(7, 9)]
    # 0, 2 before the gap; 4 would need row 7; the run restarts at 9, next start 10
    assert sorted(f.windows) == [0, 2, 10]
    assert f.rows(2) == rows_of([2, 3, 4, 4])
    assert f.rows(10) == rows_of([10, 11, 12, 13])
    for s in f.windows:
        assert s + 4 <= 7 or s >= 9


def test_gap_reported_when_data_resumes() -> None:
    f = Feeder(spec(size=4, hop=2, fill=0))
    f.add(wide(range(5)))
    f.add(wide([8]))
    assert f.gaps == []  # rows 5..7 final, but data has not resumed in a final row
    f.add(wide([9]))
    assert f.gaps == [(5, 8)]


def test_first_rows_before_every_channel_is_known_are_not_a_gap() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1))
    f.add([(0, [1.0, NAN]), (1000, [2.0, NAN]), (2000, [NAN, 5.0]), (3000, [3.0, 6.0])])
    f.add(wide(range(4, 8)))
    f.flush()
    assert f.gaps == []
    # rows 0, 1 invalid (b never seen); row 2 valid (a filled from row 1): run starts at 2
    assert sorted(f.windows) == [2, 4]
    assert f.rows(2) == [[2.0, 5.0], [3.0, 6.0], [4.0, 40.0], [5.0, 50.0]]
    assert f.grid is not None
    assert f.grid.acct.incomplete == 2


def test_silent_end_reports_the_trailing_gap_on_flush() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, lateness=0))
    f.add(wide(range(6)))
    f.add([(6000, [6.0, NAN]), (7000, [7.0, NAN]), (8000, [8.0, NAN])])
    f.flush()
    # b's last value is at row 5: row 6 filled, rows 7, 8 invalid
    assert f.gaps == [(7, 9)]
    assert sorted(f.windows) == [0, 2]  # [4, 8) would need row 7


def test_flush_emits_the_remaining_complete_windows() -> None:
    f = Feeder(spec(size=4, hop=2, lateness=3000))
    _, starts = f.add(wide(range(10)))
    # closed = (9250 - 3000) // 1000 = 6: rows 0..5 final
    assert starts == [0, 2]
    assert f.flush() == [4, 6]
    assert f.rows(6) == rows_of([6, 7, 8, 9])
    assert f.grid is not None
    assert f.grid.pending_readings() == 0


def test_flush_does_not_fill_past_the_last_reading() -> None:
    f = Feeder(spec(size=4, hop=2, fill=3))
    f.add(wide(range(7)))
    f.flush()
    assert sorted(f.windows) == [0, 2]  # [4, 8) would need an invented row 7


def test_long_jump_is_one_gap_and_allocates_little() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, channels=8))
    f.add(wide(range(10), ch=8))
    day = 86_400  # buckets at P = 1 s
    tracemalloc.start()
    try:
        f.add(wide([day, day + 1, day + 2, day + 3, day + 4], ch=8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    f.flush()
    # a day of rows × 8 channels × 8 bytes is 5.5 MB; the jump must not build it
    assert peak < 200_000
    assert f.gaps == [(11, day)]  # row 10 is filled from row 9
    # [8, 12) would need row 11; after the gap the run starts at `day` (a multiple of 2)
    assert sorted(f.windows) == [0, 2, 4, 6, day]
    assert f.rows(day) == rows_of(range(day, day + 4), ch=8)
    assert f.grid is not None
    assert len(f.grid.run_vals) < 1000


# -- gap alerts ----------------------------------------------------------------------------------


def without(channel: int, buckets: Sequence[int], *, ch: int = 2) -> list[Reading]:
    """Like :func:`wide`, with ``channel`` not carried."""
    return [
        (ts, [NAN if c == channel else v for c, v in enumerate(vals)])
        for ts, vals in wide(buckets, ch=ch)
    ]


def test_open_gap_is_alerted_once_when_it_has_lasted_the_span() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, alert=5))
    f.add(wide(range(6)))
    # b's last value is at row 5: row 6 filled, rows 7.. invalid; row 11 is the 5th
    for b in range(6, 12):
        f.add(without(1, [b]))
    assert f.alerts == []  # rows up to 10 final
    f.add(without(1, [12]))  # row 11 final
    assert f.alerts == [Alert(7, 12, (1,))]
    f.add(without(1, range(13, 40)))
    assert f.alerts == [Alert(7, 12, (1,))]  # once per gap
    assert f.gaps == []  # still open
    f.add(wide(range(40, 44)))
    assert f.gaps == [(7, 40)]  # the gap itself when data resumes
    assert f.alerts == [Alert(7, 12, (1,))]


def test_alert_names_only_the_channels_without_a_usable_value() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, channels=4, alert=6))
    f.add(wide(range(6), ch=4))
    # b (1) stops after row 5, d (3) after row 8; a and c keep arriving
    rows = [
        (b * P + 250, [float(b), NAN, b + 0.25, b + 0.375 if b < 9 else NAN]) for b in range(6, 20)
    ]
    f.add(rows)
    # the gap opens at row 7 (b's fill ends); at row 12 d is 4 rows old, beyond fill 1
    assert f.alerts == [Alert(7, 13, (1, 3))]


def test_never_valid_asset_is_alerted_and_its_gap_reported() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1))  # alert after one window: 4 rows
    f.add(without(1, range(10)))  # b never seen
    assert f.alerts == [Alert(0, 4, (1,))]
    assert f.windows == {} and f.gaps == []
    f.add(wide(range(10, 16)))
    assert f.gaps == [(0, 10)]
    assert sorted(f.windows) == [10]


def test_never_valid_asset_gap_on_flush_once_alerted() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, alert=3))
    f.add(without(1, range(6)))
    assert f.alerts == [Alert(0, 3, (1,))]
    f.flush()  # the asset went silent
    assert f.gaps == [(0, 6)]


def test_gap_shorter_than_the_span_is_not_alerted() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, alert=5))
    f.add(wide(range(6)))
    f.add(without(1, range(6, 11)))  # rows 7..10 invalid: 4 rows
    f.add(wide(range(11, 16)))
    assert f.gaps == [(7, 11)]
    assert f.alerts == []


def test_short_incomplete_start_is_neither_alerted_nor_a_gap() -> None:
    f = Feeder(spec(size=4, hop=2, fill=0, alert=3))
    f.add([(0, [1.0, NAN]), (1000, [2.0, NAN]), *wide(range(2, 10))])
    f.flush()
    assert (f.alerts, f.gaps) == ([], [])


def test_hole_without_readings_is_not_alerted() -> None:
    # the whole asset was quiet: the gap (or the silence) reports it, not an alert
    f = Feeder(spec(size=4, hop=2, fill=1, alert=3))
    f.add(wide(range(5)))
    f.add(wide(range(30, 36)))
    assert f.gaps == [(6, 30)]
    assert f.alerts == []


def test_hole_then_incomplete_rows_alert_at_the_first_row_with_readings() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, alert=3))
    f.add(wide(range(5)))
    f.add(without(1, range(30, 36)))  # back after a hole, b still missing
    assert f.alerts == [Alert(6, 31, (1,))]
    assert f.gaps == []


def test_alert_off() -> None:
    f = Feeder(spec(size=4, hop=2, fill=1, alert=0))
    f.add(without(1, range(50)))
    f.flush()
    assert (f.alerts, f.gaps) == ([], [])


@pytest.mark.parametrize("lateness", [0, 3000])
def test_alert_is_the_same_however_the_readings_are_batched(lateness: int) -> None:
    readings = [*wide(range(6)), *without(1, range(6, 30)), *wide(range(30, 40))]
    whole = Feeder(spec(fill=1, lateness=lateness, alert=5))
    whole.add(readings)
    whole.flush()
    assert whole.alerts == [Alert(7, 12, (1,))]
    replayed = Feeder(spec(fill=1, lateness=lateness, alert=5))
    replayed.one_by_one(readings)
    replayed.flush()
    assert (replayed.alerts, replayed.gaps) == (whole.alerts, whole.gaps)


# -- accounting -----------------------------------------------------------------------------------


def test_reading_level_accounting() -> None:
    f = Feeder(spec(size=4, hop=4, fill=0, lateness=1000))
    f.add(wide(range(6)))
    f.add([(6000, [6.0, NAN])])  # row 6 incomplete (fill 0)
    f.add(wide([7, 7, 8, 9, 10, 11, 12]))  # row 7 twice
    f.add([(100, [0.0, 0.0])])  # late
    f.flush()
    # windows [0,4) and [8,12); row 4, 5 unwindowed (run 0..5 too short for [4, 8))
    assert sorted(f.windows) == [0, 8]
    g = f.grid
    assert g is not None
    assert g.acct.scored == 4 + 4
    assert g.acct.unwindowed == 2 + 2 + 1  # rows 4, 5; row 7 (two readings); row 12
    assert g.acct.incomplete == 1
    assert g.acct.late == 1
    assert g.pending_readings() == 0
    assert total(g) == f.given == 15


def test_accounting_holds_while_open() -> None:
    f = Feeder(spec(size=4, hop=2, lateness=2000))
    f.add(wide([0, 1, 3, 2, 5, 4, 6]))
    assert f.grid is not None
    assert f.grid.pending_readings() > 0
    assert total(f.grid) == f.given


# -- delivery pins --------------------------------------------------------------------------------


def test_min_pin_is_the_oldest_reading_a_future_window_needs() -> None:
    f = Feeder(spec(size=4, hop=4, fill=1))
    assert f.grid is None
    f.add(wide(range(6)))  # offsets 0..5 = buckets 0..5
    g = f.grid
    assert g is not None
    # window 0 emitted, next is [4, 8): rows from 4 - fill = 3 are still needed
    assert sorted(f.windows) == [0]
    assert g.min_pin() == 3
    f.add(wide(range(6, 10)))
    assert sorted(f.windows) == [0, 4]
    assert g.min_pin() == 7
    f.flush()
    assert g.min_pin() == NO_PIN


def test_min_pin_keeps_fill_sources_in_invalid_rows() -> None:
    # row 0 is invalid (b unknown yet) but its a is the fill source of row 1, whose window
    # [1, 3) is not emitted yet: a replay must start at row 0's reading
    f = Feeder(spec(size=2, hop=1, fill=2))
    f.add([(0, [1.0, NAN]), (1000, [NAN, 2.0])])
    g = f.grid
    assert g is not None
    assert g.min_pin() == 0
    replay = Feeder(spec(size=2, hop=1, fill=2))
    replay.add([(0, [1.0, NAN]), (1000, [NAN, 2.0]), (2000, [3.0, 4.0])])
    replay.flush()
    assert replay.rows(1000 // P) == [[1.0, 2.0], [3.0, 4.0]]


def test_pin_history_stays_small_without_min_pin_calls() -> None:
    f = Feeder(spec(size=8, hop=4, fill=2, lateness=2000))
    for b in range(3000):
        f.add(wide([b]))
    g = f.grid
    assert g is not None
    assert len(g.history) <= 33
    assert sum(len(h[0]) for h in g.history) <= 33 + 8 + 4 + 2
    # closed = (2999250 - 2000) // 1000 = 2997: last window [2988, 2996), next [2992, 3000)
    # may fill from row 2990 on
    assert g.min_pin() == 2990


def test_min_pin_keeps_fill_sources_before_the_current_run() -> None:
    s = spec(size=4, hop=4, fill=2)
    readings: list[Reading] = [
        *wide(range(4)),  # offsets 0..3
        (4000, [4.0, NAN]),  # rows 4, 5: b filled from row 3
        (5000, [5.0, NAN]),
        (6000, [6.0, NAN]),  # b 3 rows old: invalid
        (7000, [7.0, NAN]),  # invalid, but its a fills row 8
        (8000, [NAN, 80.0]),  # offset 8: valid with a from row 7; the run starts here
        (9000, [9.0, 90.0]),
    ]
    f = Feeder(s)
    f.add(readings)
    g = f.grid
    assert g is not None
    assert sorted(f.windows) == [0]
    assert (g.run_start, g.next_win) == (8, 8)
    # [8, 12) is still to come and may take values from rows 6, 7: their readings are pinned
    assert g.min_pin() == 6
    replay = Feeder(s)
    replay.add(readings[g.min_pin() :] + wide([10, 11]))
    replay.flush()
    assert replay.rows(8) == [[7.0, 80.0], [9.0, 90.0], [10.0, 100.0], [11.0, 110.0]]


def test_min_pin_between_runs_covers_fill_sources_of_the_next_rows() -> None:
    f = Feeder(spec(size=4, hop=4, fill=2))
    f.add(wide(range(6)))  # offsets 0..5; window 0 emitted, run 0..4 final, 5 pending
    f.add([(6000, [6.0, NAN]), (7000, [7.0, NAN]), (8000, [8.0, NAN]), (9000, [NAN, NAN])])
    g = f.grid
    assert g is not None
    # rows 6, 7 filled from row 5; row 8 invalid (b 3 rows old) ends the run; closed = 9
    assert g.run_len == 0
    assert sorted(f.windows) == [0, 4]
    # the next run starts at 9 or later and may fill from rows ≥ 7 (offsets 7, 8)
    assert g.min_pin() == 7


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_min_pin_never_passes_an_unemitted_windows_readings(fill: int, seed: int) -> None:
    """Replay from min_pin after every reading rebuilds exactly the windows still to come."""
    rng = np.random.default_rng(seed)
    s = spec(size=6, hop=3, fill=fill, lateness=0, channels=2)
    readings: list[Reading] = []
    for b in range(120):
        if rng.random() < 0.2:
            continue
        v = [float(b), float(-b)]
        if rng.random() < 0.4:
            v[int(rng.integers(2))] = NAN
        readings.append((b * P + int(rng.integers(P)), v))
    full = Feeder(s)
    full.add(readings)
    full.flush()
    run = Feeder(s)
    for k, r in enumerate(readings):
        run.add([r])
        assert run.grid is not None
        pin = run.grid.min_pin()
        start = k + 1 if pin == NO_PIN else pin
        assert start <= k + 1
        replay = Feeder(s)
        if start < len(readings):
            replay.add(readings[start:])
            replay.flush()
        for w, want in full.windows.items():
            if w in run.windows:
                assert np.array_equal(run.windows[w], want)
                continue
            assert w in replay.windows, f"window {w} lost after a crash at reading {k}"
            assert np.array_equal(replay.windows[w], want)
        for w, got in replay.windows.items():
            assert np.array_equal(got, full.windows[w])
