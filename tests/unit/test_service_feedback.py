"""The scorer follows the feedback topic for maintenance tags (decide.tag_maintenance,
on by default) even without re-baselining, and hands each record to the pipeline
(``ScorerService._follow_maintenance``); warm-ups after maintenance are as before."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from tiny_models import unscored_binding

from stream_ae.schemas import FeedbackEvent
from stream_ae.service import ScorerService
from stream_ae.settings import load_settings

T0 = 1_700_000_000_000


@dataclass
class Rec:
    raw: bytes
    off: int = 0

    def value(self) -> bytes:
        return self.raw

    def key(self) -> bytes:
        return b"pump-3"

    def topic(self) -> str:
        return "maintenance.feedback"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.off


class Follower:
    def __init__(self, *records: FeedbackEvent) -> None:
        self.records = [Rec(msgspec.json.encode(r), i) for i, r in enumerate(records)]

    def poll(self) -> list[Rec]:
        out, self.records = self.records, []
        return out


def service(**flags: dict[str, Any]) -> ScorerService:
    binding = unscored_binding()
    return ScorerService(load_settings(flags=flags), binding)


def fb(kind: str, start_ms: int, end_ms: int | None = None) -> FeedbackEvent:
    kw: dict[str, Any] = {"asset_id": "pump-3", "kind": kind, "start_ms": start_ms}
    return FeedbackEvent(**kw, end_ms=end_ms)


def test_feedback_is_followed_when_tagging_or_rebaselining_is_on() -> None:
    assert service()._follows_feedback()  # tagging is on by default
    assert service(
        model={"rebaseline_s": 4.0}, decide={"tag_maintenance": False}
    )._follows_feedback()
    assert not service(decide={"tag_maintenance": False})._follows_feedback()


def test_a_maintenance_start_is_kept_and_logged_without_rebaselining(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = service()
    s._feedback = Follower(  # type: ignore[assignment]
        fb("maintenance_end", T0 - 5000),  # nothing open: closes nothing
        fb("maintenance_start", T0),
        fb("maintenance_end", T0 + 60_000),
        fb("maintenance_start", T0 + 120_000),
    )
    with caplog.at_level(logging.INFO, logger="stream_ae.service"):
        s._follow_maintenance()
    m = s.pipeline.maintenance
    assert m is not None
    assert m.periods("pump-3") == [(T0, T0 + 60_000), (T0 + 120_000, None)]
    text = caplog.text
    assert (
        "maintenance on pump-3 started at 2023-11-14T22:13:20.000Z: its anomaly events are "
        "tagged during_maintenance until maintenance_end"
    ) in text
    assert "maintenance_end on pump-3 at 2023-11-14T22:13:15.000Z closes nothing" in text
    assert "warm-up" not in text  # re-baselining is off
    assert s.pipeline.metrics.maintenance_reports == 0


def test_with_rebaselining_an_end_both_closes_the_period_and_starts_a_warmup(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = service(model={"rebaseline_s": 4.0})
    s._feedback = Follower(  # type: ignore[assignment]
        fb("maintenance_start", T0), fb("maintenance_end", T0 + 60_000)
    )
    with caplog.at_level(logging.INFO, logger="stream_ae.service"):
        s._follow_maintenance()
    assert s.pipeline.maintenance is not None
    assert s.pipeline.maintenance.periods("pump-3") == [(T0, T0 + 60_000)]
    assert s.pipeline.metrics.maintenance_reports == 1  # the end, as before
    assert "ended at 2023-11-14T22:14:20.000Z: a new warm-up from then" in caplog.text


def test_with_tagging_off_only_warmups_are_taken(caplog: pytest.LogCaptureFixture) -> None:
    s = service(model={"rebaseline_s": 4.0}, decide={"tag_maintenance": False})
    s._feedback = Follower(  # type: ignore[assignment]
        fb("maintenance_start", T0), fb("maintenance", T0, T0 + 60_000)
    )
    with caplog.at_level(logging.INFO, logger="stream_ae.service"):
        s._follow_maintenance()
    assert s.pipeline.maintenance is None
    assert s.pipeline.metrics.maintenance_reports == 1
    assert "tagged" not in caplog.text
