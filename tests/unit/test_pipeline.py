"""Pipeline: fake messages and a fake scorer in, events / dead letters / offsets out.

Grid used throughout: period 1 s, W = 4, H = 2, no allowed lateness, no fill, so a
reading at bucket k makes every bucket below k final, and windows start on even
buckets. T0 is on an even bucket, so for one asset fed buckets 0..11 the windows
are [0,4), [2,6), [4,8), [6,10) while streaming and [8,12) at flush.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pytest

from stream_ae.decide.events import Decider
from stream_ae.pipeline import GapRecord, ModelBinding, Pipeline
from stream_ae.schemas import DeadLetter, FeedbackEvent
from stream_ae.windowing import GridSpec

P = 1000
T0 = 1_700_000_000_000  # bucket 1_700_000_000: even
NOW = T0 + 3_600_000
CHANNELS = ["a", "b"]
THRESHOLD = 5.0
TOPIC = "sensors.readings"


@dataclass
class Msg:
    raw: bytes | None
    part: int = 0
    off: int = 0
    k: bytes | None = b"p1"
    top: str = TOPIC

    def value(self) -> bytes | None:
        return self.raw

    def key(self) -> bytes | None:
        return self.k

    def topic(self) -> str | None:
        return self.top

    def partition(self) -> int | None:
        return self.part

    def offset(self) -> int | None:
        return self.off


@dataclass
class MaxAbsScorer:
    """score = max |value| of the window; share of a channel = its share of sum |value|."""

    calls: list[np.ndarray] = field(default_factory=list)

    def score(self, windows: np.ndarray) -> Any:
        self.calls.append(windows.copy())
        mag = np.abs(windows.astype(np.float64))
        per_channel = mag.sum(axis=2)
        return SimpleNamespace(
            scores=mag.max(axis=(1, 2)),
            channel_shares=per_channel / per_channel.sum(axis=1, keepdims=True),
        )


def make(
    *,
    fill_limit: int = 0,
    track_marks: bool = False,
    publish_scores: bool = False,
    idle_timeout_ms: int | None = None,
    tag_maintenance: bool = True,
) -> tuple[Pipeline, MaxAbsScorer]:
    scorer = MaxAbsScorer()
    spec = GridSpec(period_ms=P, size=4, hop=2, lateness_ms=0, fill_limit=fill_limit, n_channels=2)
    decider = Decider(threshold=THRESHOLD, model_version="v1", channels=CHANNELS)
    pipeline = Pipeline(
        ModelBinding(scorer=scorer, decider=decider, spec=spec),
        max_future_ms=60_000,
        idle_timeout_ms=idle_timeout_ms,
        publish_scores=publish_scores,
        track_marks=track_marks,
        tag_maintenance=tag_maintenance,
    )
    return pipeline, scorer


def wide(asset: str, bucket: int, a: float | None = 1.0, b: float | None = 1.0) -> bytes:
    return json.dumps(
        {"asset_id": asset, "ts": T0 + bucket * P, "values": {"a": a, "b": b}}
    ).encode()


def series(
    asset: str, buckets: range, *, part: int = 0, first_off: int = 0, spike: int | None = None
) -> list[Msg]:
    """One wide message per bucket, consecutive offsets; channel b is 10 at ``spike``."""
    return [
        Msg(wide(asset, k, 1.0, 10.0 if k == spike else 1.0), part, first_off + i, asset.encode())
        for i, k in enumerate(buckets)
    ]


def ms(bucket: int) -> int:
    return T0 + bucket * P


def only(letters: list[DeadLetter]) -> DeadLetter:
    assert len(letters) == 1, letters
    return letters[0]


# -- scoring and events ----------------------------------------------------------------------


def test_event_for_the_anomalous_window_only() -> None:
    pipe, scorer = make()
    out = pipe.step(series("p1", range(12), spike=9), now_ms=NOW)
    assert out.windows == 4
    (batch,) = scorer.calls
    assert batch.shape == (4, 2, 4)
    assert batch.dtype == np.float32
    assert batch[3].tolist() == [[1, 1, 1, 1], [1, 1, 1, 10]]  # [6,10): channel-major
    (e,) = out.events
    assert (e.asset_id, e.window_start_ms, e.window_end_ms) == ("p1", ms(6), ms(10))
    assert e.score == 10.0
    assert e.score_ratio == 2.0
    assert e.severity == "high"
    # |a| sums to 4, |b| to 13 over the window
    assert [(c.channel, c.share) for c in e.top_channels] == [
        ("b", round(13 / 17, 4)),
        ("a", round(4 / 17, 4)),
    ]
    assert out.dead_letters == []
    assert out.scores == []  # publish_scores is off


def test_flush_emits_the_remaining_windows() -> None:
    pipe, scorer = make()
    pipe.step(series("p1", range(12), spike=9), now_ms=NOW)
    out = pipe.flush(now_ms=NOW)
    assert out.windows == 1
    assert scorer.calls[-1].shape == (1, 2, 4)
    (e,) = out.events
    assert (e.window_start_ms, e.window_end_ms) == (ms(8), ms(12))
    again = pipe.flush(now_ms=NOW)
    assert (again.windows, again.events, again.quality) == (0, [], [])


def test_no_scoring_call_without_complete_windows() -> None:
    pipe, scorer = make()
    out = pipe.step(series("p1", range(4)), now_ms=NOW)  # bucket 3 still open
    assert out.windows == 0
    assert scorer.calls == []


def test_publish_scores_gives_one_record_per_window() -> None:
    pipe, _ = make(publish_scores=True)
    out = pipe.step(series("p1", range(12), spike=9), now_ms=NOW)
    assert [(r.window_start_ms, r.score) for r in out.scores] == [
        (ms(0), 1.0),
        (ms(2), 1.0),
        (ms(4), 1.0),
        (ms(6), 10.0),
    ]


def test_metrics_count_messages_readings_windows_events_and_dead_letters() -> None:
    pipe, _ = make()
    msgs = [
        *series("p1", range(12), spike=9),
        Msg(b"not json", off=12),
        Msg(json.dumps({"asset_id": "p1", "ts": ms(12), "values": {"zz": 1}}).encode(), off=13),
    ]
    pipe.step(msgs, now_ms=NOW)
    pipe.step([Msg(wide("p1", 3), off=14)], now_ms=NOW)  # late
    pipe.flush(now_ms=NOW)
    m = pipe.metrics
    assert m.messages == 15
    # the bad JSON and the reading with only unknown channels are not readings;
    # the late one was accepted at decoding
    assert m.readings == 13
    assert m.windows == 5
    assert m.events == 2
    assert dict(m.dead_letters) == {"decode_error": 1, "late": 1}
    assert dict(m.unknown_channels) == {"zz": 1}


# -- maintenance: events of windows overlapping a reported period are tagged ---------------
# A spike at bucket 5 makes [2,6) and [4,8) anomalous.


def maint(kind: str, start: int, end: int | None = None, asset: str = "p1") -> FeedbackEvent:
    kw: dict[str, Any] = {"asset_id": asset, "kind": kind, "start_ms": ms(start)}
    if end is not None:
        kw["end_ms"] = ms(end)
    return FeedbackEvent(**kw)


def tagged(pipe: Pipeline, *feedback: FeedbackEvent) -> list[tuple[int, bool]]:
    """(window start bucket, during_maintenance) of the events, feedback noted first."""
    for f in feedback:
        pipe.note_feedback(f)
    out = pipe.step(series("p1", range(12), spike=5), now_ms=NOW)
    return [((e.window_start_ms - T0) // P, e.during_maintenance) for e in out.events]


def test_an_open_maintenance_tags_the_events_of_windows_ending_after_its_start() -> None:
    pipe, _ = make()
    # [2,6) ends where the maintenance starts: just outside
    assert tagged(pipe, maint("maintenance_start", 6)) == [(2, False), (4, True)]
    assert pipe.metrics.as_dict()["events_during_maintenance"] == 1
    assert pipe.metrics.events == 2  # published all the same


def test_a_closed_maintenance_tags_only_the_windows_overlapping_it() -> None:
    pipe, _ = make()
    closed = [maint("maintenance_start", 0), maint("maintenance_end", 4)]
    # [4,8) starts where the maintenance ended: just outside
    assert tagged(pipe, *closed) == [(2, True), (4, False)]


def test_a_whole_maintenance_record_tags_like_a_start_and_an_end() -> None:
    pipe, _ = make()
    assert tagged(pipe, maint("maintenance", 6, 7)) == [(2, False), (4, True)]
    assert pipe.metrics.events_during_maintenance == 1


def test_an_end_without_a_start_and_other_assets_tag_nothing() -> None:
    pipe, _ = make()
    assert pipe.note_feedback(maint("maintenance_end", 4)) == "nothing_to_close"
    other = maint("maintenance", 0, 12, asset="p2")
    assert tagged(pipe, other, maint("false_alarm", 0, 12)) == [(2, False), (4, False)]
    assert pipe.metrics.events_during_maintenance == 0


def test_the_tag_changes_neither_the_event_id_nor_the_rest_of_the_event() -> None:
    plain, _ = make()
    untagged = plain.step(series("p1", range(12), spike=5), now_ms=NOW).events
    pipe, _ = make()
    pipe.note_feedback(maint("maintenance_start", 0))
    events = pipe.step(series("p1", range(12), spike=5), now_ms=NOW).events
    assert [e.during_maintenance for e in events] == [True, True]
    assert [e.event_id for e in events] == [e.event_id for e in untagged]
    assert [msgspec.structs.replace(e, during_maintenance=False) for e in events] == untagged
    assert [e.severity for e in events] == [e.severity for e in untagged]


def test_an_open_maintenance_past_its_limit_stops_tagging_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipe, _ = make()
    assert pipe.maintenance is not None
    pipe.maintenance.open_max_ms = 3 * P  # decide.maintenance_open_max_h, in small
    with caplog.at_level(logging.WARNING, logger="stream_ae.pipeline"):
        assert tagged(pipe, maint("maintenance_start", 0)) == [(2, True), (4, False)]
    (warning,) = caplog.records
    text = " ".join(warning.getMessage().split())
    assert "maintenance on p1 open since" in text and "no longer tagged" in text
    assert "send maintenance_end" in text


def test_maintenance_outlasts_a_model_swap() -> None:
    pipe, _ = make()
    pipe.note_feedback(maint("maintenance_start", 6))
    v2 = dataclasses.replace(pipe.model.decider, model_version="v2")
    pipe.swap_model(dataclasses.replace(pipe.model, decider=v2))
    out = pipe.step(series("p1", range(12), spike=5), now_ms=NOW)
    assert [(e.model_version, e.during_maintenance) for e in out.events] == [
        ("v2", False),
        ("v2", True),
    ]


def test_no_tags_when_tagging_is_off() -> None:
    pipe, _ = make(tag_maintenance=False)
    assert pipe.note_feedback(maint("maintenance_start", 0)) is None
    assert tagged(pipe) == [(2, False), (4, False)]


# -- dead letters ----------------------------------------------------------------------------


def test_bad_messages_become_dead_letters_with_their_source() -> None:
    pipe, _ = make()
    out = pipe.step(
        [
            Msg(wide("p1", 0), part=2, off=40),
            Msg(b"not json", part=2, off=41, k=b"k1"),
            Msg(b'{"asset_id": "p9"}', part=5, off=7, k=None),
        ],
        now_ms=NOW,
    )
    bad, schema = out.dead_letters
    assert (bad.reason, bad.stage) == ("decode_error", "decode")
    assert (bad.source_topic, bad.source_partition, bad.source_offset) == (TOPIC, 2, 41)
    assert (bad.value, bad.key) == (b"not json", b"k1")
    assert (schema.reason, schema.asset_id) == ("schema_error", "p9")
    assert (schema.source_partition, schema.source_offset, schema.key) == (5, 7, None)
    assert out.consumed == {2: 42, 5: 8}


def test_late_message_is_dead_lettered_whole() -> None:
    pipe, _ = make()
    pipe.step(series("p1", range(6)), now_ms=NOW)  # buckets < 5 final
    late_raw = wide("p1", 3, 7.0, 7.0)
    out = pipe.step([Msg(wide("p1", 6), off=6), Msg(late_raw, off=7, k=b"p1")], now_ms=NOW)
    d = only(out.dead_letters)
    assert (d.reason, d.stage, d.partial) == ("late", "windowing", False)
    assert d.value == late_raw
    assert (d.key, d.asset_id, d.source_partition, d.source_offset) == (b"p1", "p1", 0, 7)
    assert "1 of 1 readings" in d.error
    assert "window.allowed_lateness_ms = 0" in d.error
    assert ("stream_ae.partial", b"true") not in d.headers()


def test_batch_partially_late_keeps_just_the_late_readings() -> None:
    pipe, _ = make()
    pipe.step(series("p1", range(6)), now_ms=NOW)
    raw = json.dumps(
        {
            "asset_id": "p1",
            "readings": [
                {"ts": ms(6), "values": {"a": 6.0, "b": 6.0}},
                {"ts": ms(2), "values": {"a": 2.5, "b": None}},  # late (bucket 2 is final)
                {"ts": ms(7), "values": {"a": 7.0, "b": 7.0}},
            ],
        }
    ).encode()
    out = pipe.step([Msg(raw, part=0, off=6)], now_ms=NOW)
    d = only(out.dead_letters)
    assert (d.reason, d.partial, d.asset_id, d.source_offset) == ("late", True, "p1", 6)
    # just the late reading, wide form, missing channel left out
    assert json.loads(d.value) == [{"asset_id": "p1", "ts": ms(2), "values": {"a": 2.5}}]
    assert "1 of 3 readings" in d.error
    assert ("stream_ae.partial", b"true") in d.headers()


# -- offsets ---------------------------------------------------------------------------------


def test_consumed_is_next_offset_per_partition() -> None:
    pipe, _ = make()
    msgs = [
        Msg(wide("p1", 0), part=0, off=10),
        Msg(wide("p2", 0), part=1, off=5),
        Msg(wide("p1", 1), part=0, off=12),
        Msg(b"garbage", part=1, off=7),
        Msg(wide("p1", 2), part=0, off=11),
    ]
    assert pipe.step(msgs, now_ms=NOW).consumed == {0: 13, 1: 8}
    assert pipe.step([], now_ms=NOW).consumed == {}


@pytest.mark.parametrize(("fill_limit", "pin"), [(0, 102), (1, 101)])
def test_committable_stops_at_the_open_windows_first_reading(fill_limit: int, pin: int) -> None:
    pipe, _ = make(fill_limit=fill_limit)
    out = pipe.step(series("p1", range(6), first_off=100), now_ms=NOW)
    # [0,4) was emitted; [2,6) is open and needs bucket 2 (offset 102) on,
    # and with fill_limit 1 bucket 1 (offset 101) as a possible fill source
    assert out.windows == 1
    assert out.consumed == {0: 106}
    assert pipe.committable(out.consumed) == {0: pin}
    assert pipe.committable({0: 50}) == {0: 50}  # never ahead of what was consumed
    assert pipe.committable({3: 9}) == {3: 9}  # a partition with nothing held
    pipe.flush(now_ms=NOW)
    assert pipe.committable(out.consumed) == {0: 106}


def test_committable_is_per_partition() -> None:
    pipe, _ = make()
    out = pipe.step(
        [*series("p1", range(6), part=0, first_off=100), *series("p2", range(3), part=1)],
        now_ms=NOW,
    )
    # p2: no window yet, so its first reading (offset 0) is still needed
    assert pipe.committable(out.consumed) == {0: 102, 1: 0}


# -- exactly-once marks ----------------------------------------------------------------------


def test_track_marks_skips_windows_at_or_before_the_mark() -> None:
    pipe, scorer = make(track_marks=True)
    pipe.marks[(0, "p1")] = ms(2)
    pipe.marks[(1, "p2")] = ms(100)  # another partition's mark: does not apply to p2 on 0
    msgs = [*series("p1", range(12), spike=1), *series("p2", range(6), first_off=12)]
    out = pipe.step(msgs, now_ms=NOW)
    (batch,) = scorer.calls
    assert batch.shape[0] == 3  # p1: [4,8), [6,10); p2: [0,4)
    assert out.windows == 3
    assert out.events == []  # the spike's window [0,4) was published before
    assert pipe.suppressed_windows == 2
    assert pipe.marks == {(0, "p1"): ms(6), (1, "p2"): ms(100), (0, "p2"): ms(0)}
    assert pipe.dirty_marks == {(0, "p1"), (0, "p2")}


def test_without_marks_the_same_input_gives_the_event() -> None:
    pipe, _ = make(track_marks=False)
    pipe.marks[(0, "p1")] = ms(2)  # ignored when marks are not tracked
    out = pipe.step(series("p1", range(12), spike=1), now_ms=NOW)
    assert out.windows == 4
    assert [e.window_start_ms for e in out.events] == [ms(0)]
    assert pipe.suppressed_windows == 0
    assert pipe.dirty_marks == set()


def test_all_windows_suppressed_calls_no_scorer() -> None:
    pipe, scorer = make(track_marks=True)
    pipe.marks[(0, "p1")] = ms(1000)
    out = pipe.step(series("p1", range(12)), now_ms=NOW)
    assert (out.windows, scorer.calls, pipe.suppressed_windows) == (0, [], 4)
    assert pipe.marks == {(0, "p1"): ms(1000)}  # suppressed windows move no mark
    # dirty only because its gap state changed (its first valid row): stored again
    assert pipe.dirty_marks == {(0, "p1")}
    assert pipe.asset_state((0, "p1")).gap == GapRecord()


def test_forget_partitions_drops_state_and_marks() -> None:
    pipe, _ = make(track_marks=True, publish_scores=True)
    out = pipe.step([*series("p1", range(6), part=0), *series("p2", range(6), part=1)], now_ms=NOW)
    assert pipe.marks == {(0, "p1"): ms(0), (1, "p2"): ms(0)}
    pipe.forget_partitions([0])
    assert pipe.marks == {(1, "p2"): ms(0)}
    assert pipe.dirty_marks == {(1, "p2")}
    assert pipe.committable(out.consumed) == {0: 6, 1: 2}  # nothing held on 0 any more
    flushed = pipe.flush(now_ms=NOW)
    assert [(r.asset_id, r.window_start_ms) for r in flushed.scores] == [("p2", ms(2))]


# -- data quality ----------------------------------------------------------------------------


def test_gap_becomes_a_quality_event() -> None:
    pipe, _ = make()
    out = pipe.step([*series("p1", range(6)), *series("p1", range(9, 15), first_off=6)], now_ms=NOW)
    (q,) = out.quality
    assert (q.kind, q.asset_id, q.start_ms, q.end_ms) == ("gap", "p1", ms(6), ms(9))
    assert q.detail.startswith("3 grid steps")
    assert pipe.metrics.quality_events == 1


def dead_b(asset: str, buckets: range, *, first_off: int = 0) -> list[Msg]:
    """Wide messages without channel b (its sensor is dead), consecutive offsets."""
    return [Msg(wide(asset, k, 1.0, None), 0, first_off + i) for i, k in enumerate(buckets)]


def test_a_dead_channel_is_reported_by_name_while_it_lasts() -> None:
    pipe, _ = make()  # alert after one window (4 steps)
    out = pipe.step(dead_b("p1", range(50)), now_ms=NOW)
    assert out.windows == 0
    (q,) = out.quality
    assert (q.kind, q.asset_id, q.start_ms, q.end_ms) == ("channels_missing", "p1", ms(0), ms(4))
    assert "no value within the fill limit for b. No window of this asset is scored" in q.detail
    assert pipe.metrics.quality_events == 1
    # a replay of the same readings (other batches) republishes the same event
    again, _ = make()
    replayed = [
        e
        for part in (range(0, 3), range(3, 50))
        for e in again.step(dead_b("p1", part, first_off=part.start), now_ms=NOW + 5000).quality
    ]
    assert [(e.event_id, e.end_ms) for e in replayed] == [(q.event_id, q.end_ms)]
    # b is back: the gap itself is reported
    back = pipe.step(series("p1", range(50, 56), first_off=50), now_ms=NOW)
    assert [(e.kind, e.start_ms, e.end_ms) for e in back.quality] == [("gap", ms(0), ms(50))]


def test_an_open_gap_alert_does_not_restart_the_warmup() -> None:
    pipe, _ = make_rebaselined()
    pipe.step(series("p1", range(12)), now_ms=NOW)
    out = pipe.step(dead_b("p1", range(12, 30), first_off=12), now_ms=NOW)
    assert [e.kind for e in out.quality] == ["channels_missing"]
    assert pipe.rebaseliner is not None
    state = pipe.rebaseliner.snapshot((0, "p1"))
    assert state is not None and state.restart_at_ms is None
    back = pipe.step(series("p1", range(30, 36), first_off=30), now_ms=NOW)
    assert [e.kind for e in back.quality] == ["gap"]
    state = pipe.rebaseliner.snapshot((0, "p1"))
    assert state is not None and state.warmup_start_ms == ms(30)


def test_tick_closes_silent_assets_after_the_idle_timeout() -> None:
    pipe, _ = make(idle_timeout_ms=60_000)
    pipe.step(series("p1", range(6)), now_ms=NOW)
    quiet = pipe.tick(now_ms=NOW + 60_000)  # not yet longer than the timeout
    assert (quiet.windows, quiet.quality) == (0, [])
    out = pipe.tick(now_ms=NOW + 60_001)
    assert out.windows == 1  # [2,6) closed with the asset
    (q,) = out.quality
    assert (q.kind, q.asset_id, q.start_ms) == ("silent_asset", "p1", ms(5))
    assert pipe.committable({0: 6}) == {0: 6}


def test_reading_before_year_one_does_not_crash_the_pipeline() -> None:
    pipe, _ = make(idle_timeout_ms=1000)
    ancient = -9_000_000_000_000_000  # inside decode's TS_LIMIT_MS, year -283229
    raw = json.dumps({"asset_id": "p1", "ts": ancient, "values": {"a": 1, "b": 1}}).encode()
    pipe.step([Msg(raw)], now_ms=NOW)
    pipe.tick(now_ms=NOW + 2000)  # closes the silent asset: its quality event renders the time


def test_latents_are_published_for_every_scored_window_when_enabled() -> None:
    pipe, _ = make()
    pipe.model = dataclasses.replace(pipe.model, encoder=lambda w: w.mean(axis=2))
    pipe.publish_latents = True
    out = pipe.step(series("p1", range(12)), now_ms=NOW)
    assert out.windows > 0
    assert len(out.latents) == out.windows
    first = out.latents[0]
    assert first.asset_id == "p1" and len(first.vector) == len(CHANNELS)
    assert first.model_version == "v1"


# -- re-baselining: maintenance, swaps, partitions given away ------------------------------


def make_rebaselined(
    persistence: bool = False, *, track_marks: bool = False
) -> tuple[Pipeline, MaxAbsScorer]:
    from stream_ae.decide.persistence import Persistence

    scorer = MaxAbsScorer()
    spec = GridSpec(period_ms=P, size=4, hop=2, lateness_ms=0, fill_limit=0, n_channels=2)
    decider = Decider(
        threshold=THRESHOLD,
        model_version="v1",
        channels=CHANNELS,
        persistence=Persistence(k=2, n=2) if persistence else None,
    )
    binding = ModelBinding(
        scorer=scorer, decider=decider, spec=spec, reference_mean=np.array([1.0, 1.0])
    )
    pipe = Pipeline(binding, max_future_ms=60_000, rebaseline_ms=4 * P, track_marks=track_marks)
    return pipe, scorer


def test_maintenance_end_starts_a_new_warmup_and_is_counted() -> None:
    pipe, scorer = make_rebaselined()
    pipe.step(series("p1", range(12)), now_ms=NOW)  # windows 0, 2 warm up; 4, 6 scored
    assert (pipe.metrics.warmup_windows, len(scorer.calls[0])) == (2, 2)
    assert pipe.note_maintenance("p1", ms(12))
    out = pipe.step(series("p1", range(12, 24), first_off=12), now_ms=NOW)
    # [8,12) and [10,14) keep the baseline; [12,16), [14,18) warm up again; 16, 18 scored
    assert out.windows == 4
    assert pipe.metrics.as_dict()["warmup_windows"] == 4
    assert (pipe.metrics.maintenance_reports, pipe.metrics.maintenance_rebaselines) == (1, 1)


def test_maintenance_is_ignored_without_rebaselining() -> None:
    pipe, _ = make()
    assert not pipe.note_maintenance("p1", ms(12))
    assert pipe.metrics.maintenance_reports == 0


def test_same_grid_swap_moves_the_rebaseline_reference() -> None:
    pipe, _ = make_rebaselined()
    pipe.step(series("p1", range(8)), now_ms=NOW)  # baseline settles at level 1
    new_scorer = MaxAbsScorer()
    binding = dataclasses.replace(
        pipe.model, scorer=new_scorer, reference_mean=np.array([3.0, 5.0])
    )
    assert pipe.swap_model(binding) is False
    pipe.step(series("p1", range(8, 14), first_off=8), now_ms=NOW)
    (batch,) = new_scorer.calls
    # level 1 shifted onto the new model's training mean, not the old one's
    assert batch[0].tolist() == [[3.0] * 4, [5.0] * 4]


def test_forget_partitions_drops_rebaseline_and_persistence_state() -> None:
    pipe, _ = make_rebaselined(persistence=True)
    pipe.step(series("p1", range(12)), now_ms=NOW)
    assert pipe.rebaseliner is not None and pipe.rebaseliner._state
    assert pipe.model.decider.persistence is not None and pipe.model.decider.persistence._recent
    pipe.forget_partitions([0])
    assert pipe.rebaseliner._state == {}
    assert pipe.model.decider.persistence._recent == {}


# -- replay after a crash: marks keep out-of-order windows from coming back changed ---------


def _out_of_order_stream() -> list[Msg]:
    """Partition 0: X at bucket 5, Y at 0 (one reading: its window stays open and pins
    offset 1), X at 4 (out of order, within the lateness), then X at 6..12."""
    rows = [("X", 5, 50.0), ("Y", 0, 0.0), ("X", 4, 40.0)]
    rows += [("X", b, float(10 * b)) for b in range(6, 13)]
    return [Msg(wide(a, b, v, 0.0), 0, i, a.encode()) for i, (a, b, v) in enumerate(rows)]


def _replay_pipeline(track_marks: bool) -> Pipeline:
    spec = GridSpec(period_ms=P, size=2, hop=1, lateness_ms=1000, fill_limit=1, n_channels=2)
    decider = Decider(threshold=THRESHOLD, model_version="v1", channels=CHANNELS)
    return Pipeline(
        ModelBinding(scorer=MaxAbsScorer(), decider=decider, spec=spec),
        max_future_ms=60_000,
        publish_scores=True,
        track_marks=track_marks,
    )


@pytest.mark.parametrize("track_marks", [True, False])
def test_a_replay_from_the_commit_never_republishes_a_window_with_other_values(
    track_marks: bool,
) -> None:
    msgs = _out_of_order_stream()
    first = _replay_pipeline(track_marks)
    out = first.step(msgs, now_ms=NOW)
    published = {(r.asset_id, r.window_start_ms): r.score for r in out.scores}
    assert published[("X", ms(4))] == 50.0  # [4, 6) = X@4, X@5
    commit = first.committable(out.consumed)[0]
    assert commit == 1  # Y's open window pins its reading; X@5 (offset 0) is before it

    restarted = _replay_pipeline(track_marks)
    restarted.marks = dict(first.marks)  # what the marks topic holds after the commit
    again = restarted.step(msgs[commit:], now_ms=NOW)
    changed = {
        (r.asset_id, r.window_start_ms): (published[(r.asset_id, r.window_start_ms)], r.score)
        for r in again.scores
        if (r.asset_id, r.window_start_ms) in published
        and r.score != published[(r.asset_id, r.window_start_ms)]
    }
    if track_marks:
        assert again.scores == []  # every window was published before the commit
        assert restarted.suppressed_windows == len(published)
    else:  # the limitation the marks remove: [4, 6) rebuilt without X@5
        assert changed == {("X", ms(4)): (50.0, 40.0)}


# -- decision state across a restart: persistence verdicts and baselines ---------------------


def _faulty_stream() -> list[Msg]:
    """p1 runs at 3.25 (its own level: the model's reference is 1), with a fault at 8.5
    from bucket 14 on; p2 runs at 2.75 throughout. Both on partition 0, interleaved."""
    rows = []
    for k in range(30):
        rows.append(("p1", k, 8.5 if 14 <= k < 24 else 3.25))
        rows.append(("p2", k, 2.75))
    return [Msg(wide(a, k, v, v), 0, i, a.encode()) for i, (a, k, v) in enumerate(rows)]


def _restarted(first: Pipeline) -> tuple[Pipeline, list[bool]]:
    """A new process that took back the state ``first`` wrote for its dirty keys at a
    commit, through its JSON form, and each partition's consumed position; and what
    each ``restore_asset`` returned."""
    import msgspec

    from stream_ae.pipeline import AssetState

    restarted, _ = make_rebaselined(persistence=True, track_marks=True)
    for p, position in first.consumed.items():  # the partition's record
        restarted.restore_position(p, position)
    taken = [
        restarted.restore_asset(
            key, msgspec.json.decode(msgspec.json.encode(first.asset_state(key)), type=AssetState)
        )
        for key in sorted(first.dirty_marks)
    ]
    return restarted, taken


def _decisions(out: Any) -> list[tuple[str, int, float]]:
    return [(e.asset_id, e.window_start_ms, e.score) for e in out.events]


@pytest.mark.parametrize("cut", [29, 33, 37])  # before, in and after the first alarm
def test_a_restart_decides_every_later_window_as_an_uninterrupted_run(cut: int) -> None:
    """The first process commits after ``cut`` messages; a new one takes the state the
    marks topic holds (as JSON) and replays from the committed offset. With k = n = 2
    and a 4 s warm-up, it must alarm exactly where the uninterrupted run does."""
    msgs = _faulty_stream()
    whole, _ = make_rebaselined(persistence=True, track_marks=True)
    expected = whole.step(msgs, now_ms=NOW)
    expected_flush = whole.flush(now_ms=NOW)
    assert _decisions(expected), "the fault must alarm in the uninterrupted run"

    first, _ = make_rebaselined(persistence=True, track_marks=True)
    out = first.step(msgs[:cut], now_ms=NOW)
    commit = first.committable(out.consumed)[0]
    assert first.dirty_marks == {(0, "p1"), (0, "p2")}
    restarted, taken = _restarted(first)
    assert all(taken)
    again = restarted.step(msgs[commit:], now_ms=NOW)
    again_flush = restarted.flush(now_ms=NOW)
    assert restarted.metrics.warmup_windows == 0  # no asset started a new warm-up
    published = {(a, s) for a, s, _ in _decisions(out)}
    want = [d for d in _decisions(expected) if (d[0], d[1]) not in published]
    assert _decisions(again) == want
    assert _decisions(again_flush) == _decisions(expected_flush)
    assert _decisions(out) + _decisions(again) == _decisions(expected)


def test_a_restart_without_the_state_misses_the_alarm() -> None:
    """What the stored state prevents: the restarted process warms p1 up on the fault
    itself, which then looks normal."""
    msgs = _faulty_stream()
    first, _ = make_rebaselined(persistence=True, track_marks=True)
    out = first.step(msgs[:33], now_ms=NOW)
    commit = first.committable(out.consumed)[0]
    restarted, _ = make_rebaselined(persistence=True, track_marks=True)
    restarted.marks = dict(first.marks)
    again = restarted.step(msgs[commit:], now_ms=NOW)
    assert _decisions(out) == [] and _decisions(again) == []


def test_a_swap_that_rebuilds_the_grid_keeps_baselines_and_verdicts() -> None:
    from stream_ae.decide.persistence import Persistence

    pipe, _ = make_rebaselined(persistence=True)
    pipe.step(_faulty_stream()[:33], now_ms=NOW)  # p1's first window above: 1 of 2
    rule = pipe.model.decider.persistence
    assert rule is not None and rule.history((0, "p1")) == [False, True]
    spec = dataclasses.replace(pipe.model.spec, size=6)
    decider = dataclasses.replace(pipe.model.decider, persistence=Persistence(k=2, n=2))
    assert pipe.swap_model(dataclasses.replace(pipe.model, spec=spec, decider=decider))
    assert decider.persistence is not None
    assert decider.persistence.history((0, "p1")) == [False, True]
    assert pipe.rebaseliner is not None
    assert pipe.rebaseliner.snapshot((0, "p1")) is not None
    warm = pipe.metrics.warmup_windows
    out = pipe.step(_faulty_stream()[28:], now_ms=NOW)  # the replay from the pins
    assert pipe.metrics.warmup_windows == warm  # no new warm-up
    assert any(e.asset_id == "p1" for e in out.events)


def test_a_replay_over_a_gap_the_stored_state_has_seen_keeps_the_baseline() -> None:
    """p2's lone reading holds the commit at offset 0, so the replay meets p1's hole
    (buckets 6–11) again, though p1's warm-up after it is over and stored. Noting
    the gap again would start that warm-up again and leave windows unscored."""
    msgs = [Msg(wide("p2", 0, 1.0, 1.0), 0, 0, b"p2")]
    for k in [*range(6), *range(12, 40)]:
        msgs.append(Msg(wide("p1", k, 3.0, 3.0), 0, len(msgs), b"p1"))
    whole, _ = make_rebaselined(persistence=True, track_marks=True)
    expected = whole.step(msgs, now_ms=NOW)
    first, _ = make_rebaselined(persistence=True, track_marks=True)
    out = first.step(msgs[:25], now_ms=NOW)
    commit = first.committable(out.consumed)[0]
    assert commit == 0
    restarted, _ = _restarted(first)
    again = restarted.step(msgs[commit:], now_ms=NOW)
    assert restarted.metrics.warmup_windows == 0
    assert out.windows + again.windows == expected.windows


def test_a_baseline_is_taken_back_only_for_the_same_channels_in_the_same_order() -> None:
    import msgspec

    first, _ = make_rebaselined(track_marks=True)
    first.step(series("p1", range(12)), now_ms=NOW)
    state = first.asset_state((0, "p1"))
    assert state.baseline is not None and state.channels == CHANNELS
    swapped = msgspec.structs.replace(state, channels=list(reversed(CHANNELS)))
    restarted, _ = make_rebaselined()
    assert not restarted.restore_asset((0, "p1"), swapped)
    assert restarted.marks == {(0, "p1"): state.window_start_ms}  # the mark is kept
    assert restarted.restore_asset((0, "p1"), state)


def test_a_swap_to_other_channels_warms_up_afresh() -> None:
    pipe, _ = make_rebaselined()
    pipe.step(series("p1", range(8)), now_ms=NOW)
    decider = dataclasses.replace(pipe.model.decider, channels=["b", "a"])
    assert pipe.swap_model(dataclasses.replace(pipe.model, decider=decider))
    assert pipe.rebaseliner is not None and pipe.rebaseliner.snapshot((0, "p1")) is None


# -- gaps across a restart and a swap: one alert per gap, ids of an uninterrupted run ---------


def _dead_sensor_stream() -> list[Msg]:
    """Partition 0, one message per asset and bucket. p1: complete rows 0-11, channel b
    dead for rows 12-39, complete again 40-49; p2 (from row 20): b dead for rows 20-29,
    complete 30-39: alerted though never valid before."""
    rows: list[tuple[str, int, float | None]] = []
    for k in range(50):
        rows.append(("p1", k, None if 12 <= k < 40 else 1.0))
        if 20 <= k < 40:
            rows.append(("p2", k, None if k < 30 else 1.0))
    return [Msg(wide(a, k, 1.0, b), 0, i, a.encode()) for i, (a, k, b) in enumerate(rows)]


def _cut_at(msgs: list[Msg], bucket: int) -> int:
    """Index of the first message of ``bucket``."""
    return next(i for i, m in enumerate(msgs) if json.loads(m.raw or b"")["ts"] == ms(bucket))


def _quality(outs: list[Any]) -> list[tuple[str, str, str, int, int]]:
    return [(q.kind, q.event_id, q.asset_id, q.start_ms, q.end_ms) for o in outs for q in o.quality]


def _restarted_from(first: Pipeline, **kw: Any) -> Pipeline:
    """A new process that took back what ``first`` wrote to the marks topic at a commit
    (each dirty asset's state through its JSON form, each partition's consumed position),
    as ``ScorerService._load_marks`` does."""
    from stream_ae.pipeline import AssetState

    restarted, _ = make(track_marks=True, **kw)
    for p, position in first.consumed.items():
        restarted.restore_position(p, position)
    for key in sorted(first.dirty_marks):
        stored = msgspec.json.encode(first.asset_state(key))
        restarted.restore_asset(key, msgspec.json.decode(stored, type=AssetState))
    return restarted


@pytest.mark.parametrize("fill_limit", [0, 2])
def test_a_restart_anywhere_reports_every_gap_as_an_uninterrupted_run(fill_limit: int) -> None:
    """Cut after every message: the events published before the commit and those of the
    replay from it are exactly the uninterrupted run's, ids included: one alert per
    gap, each closing gap with its original start."""
    msgs = _dead_sensor_stream()
    whole, _ = make(track_marks=True, fill_limit=fill_limit)
    expected = sorted(_quality([whole.step(msgs, now_ms=NOW), whole.flush(now_ms=NOW)]))
    assert [e[0] for e in expected] == ["channels_missing", "channels_missing", "gap", "gap"]
    for cut in range(1, len(msgs)):
        first, _ = make(track_marks=True, fill_limit=fill_limit)
        out = first.step(msgs[:cut], now_ms=NOW)
        commit = first.committable(out.consumed)[0]
        restarted = _restarted_from(first, fill_limit=fill_limit)
        again = [restarted.step(msgs[commit:], now_ms=NOW), restarted.flush(now_ms=NOW)]
        assert sorted(_quality([out, *again])) == expected, cut


def test_a_restart_after_the_alert_alerts_no_more_and_closes_the_gap_from_its_start() -> None:
    msgs = _dead_sensor_stream()
    whole, _ = make(track_marks=True)
    expected = _quality([whole.step(msgs, now_ms=NOW)])
    (alert,) = (e for e in expected if e[:3:2] == ("channels_missing", "p1"))
    (gap,) = (e for e in expected if e[:3:2] == ("gap", "p1"))
    assert (alert[3], gap[3], gap[4]) == (ms(12), ms(12), ms(40))
    first, _ = make(track_marks=True)
    cut = _cut_at(msgs, 30)
    out = first.step(msgs[:cut], now_ms=NOW)  # p1's gap alerted, still open
    assert [e[0] for e in _quality([out])] == ["channels_missing", "channels_missing"]
    assert first.asset_state((0, "p1")).gap == GapRecord(start_ms=ms(12), alerted=True)
    commit = first.committable(out.consumed)[0]
    assert commit > 20  # inside p1's gap: the commits moved on
    restarted = _restarted_from(first)
    again = _quality([restarted.step(msgs[commit:], now_ms=NOW)])
    assert [e for e in again if e[2] == "p1"] == [gap]  # same start, same id, no alert


def test_a_restart_before_the_alert_alerts_at_the_same_row_with_the_same_id() -> None:
    msgs = _dead_sensor_stream()
    whole, _ = make(track_marks=True)
    expected = _quality([whole.step(msgs, now_ms=NOW)])
    first, _ = make(track_marks=True)
    out = first.step(msgs[:14], now_ms=NOW)  # p1's rows 12 (gap) and 13 consumed
    assert out.quality == []
    assert first.asset_state((0, "p1")).gap == GapRecord(start_ms=ms(12))
    commit = first.committable(out.consumed)[0]
    assert commit == 13
    restarted = _restarted_from(first)
    again = _quality([restarted.step(msgs[commit:], now_ms=NOW)])
    p1 = sorted(e for e in again if e[2] == "p1")
    assert p1 == sorted(e for e in expected if e[2] == "p1")
    assert [(e[0], e[3], e[4]) for e in p1] == [
        ("channels_missing", ms(12), ms(16)),  # at the same row, with the same id
        ("gap", ms(12), ms(40)),
    ]


def test_a_stored_record_without_gap_state_keeps_the_replays_own_view() -> None:
    """An older scorer's records (no ``gap``) still decode; the replay sees the gap from
    its first replayed row, as before (the limitation the gap state removes)."""
    from stream_ae.pipeline import AssetState

    old = msgspec.json.decode(b'{"window_start_ms": 1700000008000}', type=AssetState)
    assert old.gap is None
    msgs = _dead_sensor_stream()
    first, _ = make(track_marks=True)
    cut = _cut_at(msgs, 30)
    out = first.step(msgs[:cut], now_ms=NOW)
    commit = first.committable(out.consumed)[0]
    restarted, _ = make(track_marks=True)
    restarted.restore_position(0, first.consumed[0])
    restarted.restore_asset((0, "p1"), old)
    assert restarted.windower.gap_state((0, "p1")) is None  # not known
    again = _quality([restarted.step(msgs[commit:], now_ms=NOW)])
    alerts = [e for e in again if e[0] == "channels_missing" and e[2] == "p1"]
    assert len(alerts) == 1 and alerts[0][3] > ms(12)


def test_a_swap_that_rebuilds_the_grid_keeps_the_open_gap() -> None:
    msgs = _dead_sensor_stream()
    whole, _ = make(track_marks=True)
    expected = _quality([whole.step(msgs, now_ms=NOW)])
    pipe, _ = make(track_marks=True)
    cut = _cut_at(msgs, 30)
    out = pipe.step(msgs[:cut], now_ms=NOW)
    replay_from = pipe.committable(out.consumed)[0]
    spec = dataclasses.replace(pipe.model.spec, size=6)  # alerts after 6 rows now
    assert pipe.swap_model(dataclasses.replace(pipe.model, spec=spec))
    assert {(0, "p1"), (0, "p2")} <= pipe.dirty_marks
    again = _quality([pipe.step(msgs[replay_from:], now_ms=NOW)])
    assert [e[0] for e in again] == ["gap", "gap"]  # no alert again
    assert again == [e for e in expected if e[0] == "gap"]


def test_a_swap_to_another_period_sees_the_gaps_afresh() -> None:
    msgs = _dead_sensor_stream()
    pipe, _ = make(track_marks=True)
    cut = _cut_at(msgs, 30)
    out = pipe.step(msgs[:cut], now_ms=NOW)
    replay_from = pipe.committable(out.consumed)[0]
    spec = dataclasses.replace(pipe.model.spec, period_ms=2 * P, size=2, hop=1)
    assert pipe.swap_model(dataclasses.replace(pipe.model, spec=spec))
    assert pipe.asset_state((0, "p1")).gap is None  # not known: the replay's own view
    again = _quality([pipe.step(msgs[replay_from:], now_ms=NOW)])
    # nothing of readings consumed before the swap is reported again
    assert all(e[4] > ms(30) for e in again)


# -- accounting ------------------------------------------------------------------------------


def _outcomes(pipe: Pipeline) -> int:
    """The right-hand side of the stats line's identity (stream_ae.metrics)."""
    a = pipe.windower.accounting()
    return (
        a.scored
        + a.unwindowed
        + a.incomplete
        + a.late
        + pipe.windower.open_readings()
        + pipe.windower.revoked_readings
        + pipe.metrics.replayed_readings
    )


def test_every_reading_is_accounted_for_through_warmup_late_gaps_revoke_and_swap() -> None:
    pipe, _ = make_rebaselined()
    msgs = series("p1", range(20))  # warm-up windows, then scored ones
    msgs += series("p2", [*range(3), *range(9, 20)], part=1, first_off=100)  # a gap
    msgs.append(Msg(wide("p1", 2), 0, 20, b"p1"))  # late
    msgs.append(Msg(b'{"asset_id": "p1", "ts": %d, "values": {"x": 1}}' % ms(21), 0, 21, b"p1"))
    msgs.append(Msg(b"not json", 0, 22, b"p1"))  # a dead letter: not a reading
    msgs += [Msg(wide("p3", k, 1.0, None), 2, k, b"p3") for k in range(3)]  # incomplete
    msgs += series("p4", range(3), part=3)  # open, then revoked
    pipe.step(msgs, now_ms=NOW)
    assert pipe.metrics.warmup_windows > 0
    assert pipe.metrics.readings_no_model_channel == 1
    assert pipe.metrics.as_dict()["readings_no_model_channel"] == 1
    acct = pipe.windower.accounting()
    assert acct.late == 1 and acct.incomplete >= 1
    assert pipe.metrics.readings == _outcomes(pipe)

    pipe.forget_partitions([3])
    assert pipe.windower.revoked_readings == 3
    assert pipe.metrics.readings == _outcomes(pipe)

    # a swap to another grid: the caller replays from the commit position
    pins = pipe.committable({0: 23, 1: 114, 2: 3})
    spec = dataclasses.replace(pipe.model.spec, size=6)
    assert pipe.swap_model(dataclasses.replace(pipe.model, spec=spec))
    assert pipe.metrics.replayed_readings > 0
    assert pipe.metrics.as_dict()["replayed_readings"] == pipe.metrics.replayed_readings
    replay = [m for m in msgs if m.partition() in pins and m.offset() >= pins[m.partition()]]
    pipe.step(replay, now_ms=NOW)
    pipe.flush(now_ms=NOW)
    assert pipe.windower.open_readings() == 0
    assert pipe.metrics.readings == _outcomes(pipe)
