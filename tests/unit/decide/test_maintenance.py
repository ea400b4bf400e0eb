"""MaintenancePeriods: feedback records → periods per asset, which windows they cover,
and that closed periods are dropped once no window to come can overlap them."""

from __future__ import annotations

from typing import Any

from stream_ae.decide.maintenance import MaintenancePeriods
from stream_ae.schemas import FeedbackEvent

HOUR = 3_600_000


def fb(kind: str, start_ms: int, end_ms: int | None = None, asset: str = "pump-3") -> FeedbackEvent:
    kw: dict[str, Any] = {"asset_id": asset, "kind": kind, "start_ms": start_ms, "end_ms": end_ms}
    return FeedbackEvent(**kw)


def test_an_open_maintenance_covers_every_window_ending_after_its_start() -> None:
    m = MaintenancePeriods()
    assert m.note(fb("maintenance_start", 100)) == "opened"
    assert not m.covers("pump-3", 0, 100)  # ends exactly at the start: outside
    assert m.covers("pump-3", 0, 101)
    assert m.covers("pump-3", 10**9, 10**9 + 10)  # open-ended
    assert not m.covers("pump-4", 0, 10**9)  # another asset
    assert m.periods("pump-3") == [(100, None)]


def test_an_end_closes_the_open_maintenance() -> None:
    m = MaintenancePeriods()
    m.note(fb("maintenance_start", 100))
    assert m.note(fb("maintenance_end", 200)) == "closed"
    assert m.open_since("pump-3") is None
    assert m.periods("pump-3") == [(100, 200)]
    assert m.covers("pump-3", 199, 300)
    assert not m.covers("pump-3", 200, 300)  # starts exactly at the end: outside
    assert not m.covers("pump-3", 0, 100)


def test_a_whole_period_and_one_without_end() -> None:
    m = MaintenancePeriods()
    assert m.note(fb("maintenance", 100, 200)) == "period"
    assert m.covers("pump-3", 150, 160)
    assert not m.covers("pump-3", 200, 260)
    assert m.note(fb("maintenance", 100, 100)) == "empty"
    assert m.note(fb("maintenance", 300)) == "opened"  # no end_ms: open, as the trainer reads it
    assert m.periods("pump-3") == [(100, 200), (300, None)]


def test_the_first_start_stands_and_stray_ends_close_nothing() -> None:
    m = MaintenancePeriods()
    assert m.note(fb("maintenance_end", 50)) == "nothing_to_close"  # no start: no crash
    m.note(fb("maintenance_start", 100))
    assert m.note(fb("maintenance_start", 150)) == "already_open"
    assert m.note(fb("maintenance_start", 80)) == "already_open"
    assert m.open_since("pump-3") == 100
    assert m.note(fb("maintenance_end", 99)) == "nothing_to_close"  # before the start
    assert m.open_since("pump-3") == 100
    assert m.note(fb("maintenance_end", 120)) == "closed"
    assert m.note(fb("false_alarm", 0, 10)) == "other"
    assert m.note(fb("acknowledged_fault", 0, 10)) == "other"
    assert m.periods("pump-3") == [(100, 120)]


def test_an_end_at_its_start_closes_it_empty() -> None:
    # Times rounded to the minute: start and end may be equal. Left open, every later
    # event of the asset would be tagged, and a consumer filtering on the tag would
    # miss its real alarms.
    m = MaintenancePeriods()
    m.note(fb("maintenance_start", 100))
    assert m.note(fb("maintenance_end", 100)) == "closed"
    assert m.open_since("pump-3") is None
    assert m.periods("pump-3") == []
    assert not m.covers("pump-3", 100, 10**11)


def test_a_record_read_twice_adds_one_period() -> None:
    m = MaintenancePeriods()
    m.note(fb("maintenance", 100, 200))
    m.note(fb("maintenance", 100, 200))
    assert m.size() == 1


def test_closed_periods_a_day_behind_the_newest_window_are_dropped_open_ones_kept() -> None:
    m = MaintenancePeriods()
    m.note(fb("maintenance", 0, HOUR))  # read at start-up, before any window
    m.note(fb("maintenance", 0, HOUR, asset="elsewhere"))  # an asset another scorer owns
    m.note(fb("maintenance_start", 0, asset="open"))
    m.advance(25 * HOUR - 1)  # HOUR is not yet 24 h behind
    assert m.size() == 3
    m.advance(25 * HOUR + 6 * HOUR)  # a sweep (keep_ms / 4 later): both closed ones go
    assert m.periods("pump-3") == m.periods("elsewhere") == []
    assert m.periods("open") == [(0, None)]
    m.note(fb("maintenance", 0, HOUR))  # too old to overlap a window to come: not kept
    assert m.size() == 1


def test_the_clock_never_moves_back_and_sweeps_are_spaced() -> None:
    m = MaintenancePeriods(keep_ms=4 * HOUR)
    m.advance(10 * HOUR)
    m.note(fb("maintenance", 5 * HOUR, 7 * HOUR))
    m.advance(2 * HOUR)  # an older window (a replay): the clock stays
    m.note(fb("maintenance", 5 * HOUR, 6 * HOUR + 1))
    assert m.size() == 2
    m.advance(10 * HOUR + HOUR // 2)  # floor 6.5 h, but no sweep before 10 h + keep / 4
    assert m.size() == 2
    m.advance(11 * HOUR)  # floor 7 h: (5 h, 7 h) ended at it, (5 h, 6 h + 1) before
    assert m.size() == 0


def test_an_open_maintenance_tags_for_at_most_open_max_ms_and_says_so_once() -> None:
    # A forgotten maintenance_end must not tag the asset's real alarms for ever.
    m = MaintenancePeriods(open_max_ms=24 * HOUR)
    m.note(fb("maintenance_start", 0))
    assert m.covers("pump-3", 23 * HOUR, 24 * HOUR + 10)  # starts inside the limit
    assert m.take_overdue() == []
    assert not m.covers("pump-3", 24 * HOUR, 24 * HOUR + 10)
    assert not m.covers("pump-3", 30 * HOUR, 30 * HOUR + 10)
    assert m.take_overdue() == [("pump-3", 0)]  # once per open period
    assert m.take_overdue() == []
    m.note(fb("maintenance_end", 31 * HOUR))  # closed: the whole period tags again
    assert m.covers("pump-3", 30 * HOUR, 30 * HOUR + 10)
    m.note(fb("maintenance_start", 40 * HOUR))  # a new one is reported again
    assert not m.covers("pump-3", 70 * HOUR, 70 * HOUR + 10)
    assert m.take_overdue() == [("pump-3", 40 * HOUR)]


def test_no_limit_by_default() -> None:
    m = MaintenancePeriods()
    m.note(fb("maintenance_start", 0))
    assert m.covers("pump-3", 1000 * HOUR, 1000 * HOUR + 10)
    assert m.take_overdue() == []
