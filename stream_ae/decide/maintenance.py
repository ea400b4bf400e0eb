"""Maintenance periods per asset, from the feedback topic: which windows fall in one.

While a technician works on a pump its readings are wildly abnormal, and the
events the model raises then look exactly like a real fault. They are still
published (an event the maintenance team never gets is the worst failure), but
an event whose window ``[start, end)`` overlaps a maintenance period the scorer
knows of for its asset carries ``during_maintenance = true``
(:class:`~stream_ae.schemas.AnomalyEvent`), so consumers can filter on it;
severity and ``event_id`` are unchanged.

Feedback records take effect in the order they are read. Per asset that is the
order they were written (key = asset id: one partition), so a pair written in
order always works. The rules, simple on purpose:

* ``maintenance_start`` at ``s`` opens ``[s, ∞)``. A start while one is open
  changes nothing (the first start stands: the same maintenance reported twice).
* ``maintenance_end`` at ``e`` closes the open period as ``[s, e)`` when
  ``e >= s`` (``e == s``, times rounded to the minute say: an empty period, closed
  all the same, or every later event would be tagged). With nothing open, or
  before the open start (an end written before its start, or of an older
  maintenance), it closes nothing; the caller logs it. An end read before its
  start therefore leaves the period open until the next end: write the pair in
  order, or one ``maintenance`` record.
* ``maintenance`` ``[s, e)`` is one closed period (empty when ``e <= s``);
  without ``end_ms`` it opens ``[s, ∞)`` like a start (as the trainer reads it).
* ``acknowledged_fault`` and ``false_alarm`` are not maintenance.
* An open period tags for at most ``open_max_ms`` after its start
  (``decide.maintenance_open_max_h``; 0 = no limit): a forgotten
  ``maintenance_end`` must not tag the asset's real alarms for ever, which a
  consumer filtering on the tag would never see. The first window past it is
  reported once (:meth:`MaintenancePeriods.take_overdue`) for the caller to log.

State stays bounded: per asset at most one open period, and the closed periods
that can still overlap a window to come. A closed period is dropped once it
ended ``keep_ms`` (24 h) before the newest window start this scorer has seen,
of any asset: one clock for the fleet, so the periods of assets another scorer
owns (every scorer reads all feedback) go too. A window that still comes later
than that (an asset lagging a day behind the fleet) is merely not tagged: its
event goes out as an ordinary one, the safe side. Pure Python, no Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stream_ae.schemas import FeedbackEvent

#: closed periods are kept this long (event time) behind the newest window start
KEEP_MS = 24 * 3_600_000

#: What a feedback record did (:meth:`MaintenancePeriods.note`), for the caller's log:
#: ``opened`` a period, ``closed`` the open one, added a whole ``period``, or nothing:
#: ``already_open`` (a start while one is open), ``nothing_to_close`` (an end with
#: nothing open before it), ``empty`` (a period with end <= start), ``other`` (not
#: about maintenance).
Note = Literal["opened", "closed", "period", "already_open", "nothing_to_close", "empty", "other"]


@dataclass
class MaintenancePeriods:
    """The maintenance periods known per asset id (see the module docstring)."""

    keep_ms: int = KEEP_MS
    #: an open period tags windows starting before ``start + open_max_ms``; 0: no limit
    open_max_ms: int = 0
    #: asset -> start of its open maintenance (no end reported yet)
    _open: dict[str, int] = field(default_factory=dict)
    #: asset -> closed periods [start, end), in the order noted
    _closed: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: the newest window start seen (any asset); None before the first window
    _clock_ms: int | None = None
    #: the clock at the last sweep of every asset's closed periods
    _swept_ms: int | None = None
    #: open periods found outlasted by a window, not yet taken (take_overdue)
    _overdue: list[tuple[str, int]] = field(default_factory=list)
    #: asset -> starts of its open periods already reported overdue
    _overdue_seen: dict[str, set[int]] = field(default_factory=dict)

    def note(self, fb: FeedbackEvent) -> Note:
        """Take one feedback record into account (the rules are in the module docstring)."""
        asset = fb.asset_id
        if fb.kind == "maintenance_start" or (fb.kind == "maintenance" and fb.end_ms is None):
            if asset in self._open:
                return "already_open"
            self._open[asset] = fb.start_ms
            return "opened"
        if fb.kind == "maintenance_end":
            began = self._open.get(asset)
            if began is None or fb.start_ms < began:
                return "nothing_to_close"
            del self._open[asset]
            self._overdue_seen.pop(asset, None)
            if fb.start_ms > began:  # at its start (times rounded): an empty period
                self._add(asset, began, fb.start_ms)
            return "closed"
        if fb.kind == "maintenance":
            assert fb.end_ms is not None  # the open form was handled above
            if fb.end_ms <= fb.start_ms:
                return "empty"
            self._add(asset, fb.start_ms, fb.end_ms)
            return "period"
        return "other"

    def open_since(self, asset_id: str) -> int | None:
        """Start of ``asset_id``'s open maintenance, None when none is open."""
        return self._open.get(asset_id)

    def periods(self, asset_id: str) -> list[tuple[int, int | None]]:
        """``asset_id``'s known periods as (start, end), the open one last with end None."""
        out: list[tuple[int, int | None]] = list(self._closed.get(asset_id, []))
        if (began := self._open.get(asset_id)) is not None:
            out.append((began, None))
        return out

    def covers(self, asset_id: str, start_ms: int, end_ms: int) -> bool:
        """Whether the window ``[start_ms, end_ms)`` overlaps one of the asset's periods."""
        began = self._open.get(asset_id)
        if began is not None and began < end_ms:
            if not self.open_max_ms or start_ms < began + self.open_max_ms:
                return True
            if began not in self._overdue_seen.setdefault(asset_id, set()):
                self._overdue_seen[asset_id].add(began)
                self._overdue.append((asset_id, began))
        return any(s < end_ms and e > start_ms for s, e in self._closed.get(asset_id, ()))

    def take_overdue(self) -> list[tuple[str, int]]:
        """(asset, start) of each open period a window outlasted ``open_max_ms`` since
        the last call: no longer tagging, each reported once."""
        out, self._overdue = self._overdue, []
        return out

    def advance(self, newest_start_ms: int) -> None:
        """Windows up to ``newest_start_ms`` were seen: move the clock, and drop the
        closed periods that ended ``keep_ms`` before it (every asset, at most once per
        ``keep_ms / 4`` of clock, so a batch costs nothing in between)."""
        if self._clock_ms is not None and newest_start_ms <= self._clock_ms:
            return
        self._clock_ms = newest_start_ms
        if self._swept_ms is not None and newest_start_ms < self._swept_ms + self.keep_ms // 4:
            return
        self._swept_ms = newest_start_ms
        floor = newest_start_ms - self.keep_ms
        for asset in list(self._closed):
            kept = [p for p in self._closed[asset] if p[1] > floor]
            if kept:
                self._closed[asset] = kept
            else:
                del self._closed[asset]

    def size(self) -> int:
        """Periods held, open ones included (to see that the state stays bounded)."""
        return len(self._open) + sum(len(v) for v in self._closed.values())

    def _add(self, asset: str, start: int, end: int) -> None:
        if self._clock_ms is not None and end <= self._clock_ms - self.keep_ms:
            return  # could only overlap windows that are already a day old
        spans = self._closed.setdefault(asset, [])
        if (start, end) not in spans:  # a record read twice adds nothing
            spans.append((start, end))
