"""Decider: which windows become events, severity bands, top channels, ids; quality events."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from stream_ae.decide.events import Decider, quality_events, severity_of
from stream_ae.windowing import WindowBatch
from stream_ae.windowing.windower import Gap, GapAlert

CHANNELS = ["vibration_rms", "bearing_temp", "pressure", "flow"]
# README example: window [18:58:56, 19:00:00), detected 19:00:05.120
START = 1_764_097_136_000
END = 1_764_097_200_000
NOW = 1_764_097_205_120
# the namespace is part of the wire contract: ids must not change between releases
NAMESPACE = uuid.UUID("6f1c9a52-3a8e-4c63-9a0b-1f7d2f0c5e11")


def batch(n: int, *, assets: list[str] | None = None, step_ms: int = 16_000) -> WindowBatch:
    starts = START + step_ms * np.arange(n, dtype=np.int64)
    return WindowBatch(
        asset_ids=assets or [f"pump-{i:03d}" for i in range(n)],
        partitions=np.zeros(n, np.int64),
        start_ms=starts,
        end_ms=starts + (END - START),
        values=np.zeros((n, len(CHANNELS), 4), np.float32),
    )


def flat_shares(n: int) -> np.ndarray:
    return np.full((n, len(CHANNELS)), 1 / len(CHANNELS))


def decider(**kw: object) -> Decider:
    args: dict[str, object] = {"threshold": 0.25, "model_version": "v1", "channels": CHANNELS}
    args.update(kw)
    return Decider(**args)  # type: ignore[arg-type]


def test_only_scores_strictly_above_threshold_become_events_in_input_order() -> None:
    scores = np.array([0.1, 0.25, 0.26, 0.0, 3.0])
    w = batch(5)
    events = decider().events(w, scores, flat_shares(5), now_ms=NOW)
    assert [e.asset_id for e in events] == ["pump-002", "pump-004"]
    assert [e.score for e in events] == [pytest.approx(0.26), 3.0]


def test_no_event_when_nothing_exceeds() -> None:
    assert decider().events(batch(2), np.array([0.25, 0.1]), flat_shares(2), now_ms=NOW) == []


def test_severity_bands_at_exact_ratio_boundaries() -> None:
    # threshold 0.25; binary-exact scores give exact ratios 1.5, 1.99.., 2, 3, 4, 8
    scores = np.array([0.375, 0.4999, 0.5, 0.75, 1.0, 2.0])
    events = decider().events(batch(6), scores, flat_shares(6), now_ms=NOW)
    assert [e.score_ratio for e in events] == [1.5, pytest.approx(1.9996), 2.0, 3.0, 4.0, 8.0]
    assert [e.severity for e in events] == [
        "warning",
        "warning",
        "high",  # ratio == high_ratio
        "high",
        "critical",  # ratio == critical_ratio
        "critical",
    ]


def test_severity_uses_the_configured_ratios() -> None:
    d = decider(high_ratio=1.5, critical_ratio=3.0)
    events = d.events(batch(3), np.array([0.3, 0.375, 0.75]), flat_shares(3), now_ms=NOW)
    assert [e.severity for e in events] == ["warning", "high", "critical"]
    assert severity_of(1.4999, 1.5, 3.0) == "warning"
    assert severity_of(2.9999, 1.5, 3.0) == "high"


def test_zero_threshold_gives_infinite_ratio_and_critical() -> None:
    (e,) = decider(threshold=0.0).events(batch(1), np.array([0.01]), flat_shares(1), now_ms=NOW)
    assert e.score_ratio == float("inf")
    assert e.severity == "critical"


def test_top_channels_largest_share_first_limited_and_rounded() -> None:
    shares = np.array([[0.1, 0.123456, 0.7, 0.076544]])
    (e,) = decider(top_channels=3).events(batch(1), np.array([1.0]), shares, now_ms=NOW)
    assert [(c.channel, c.share) for c in e.top_channels] == [
        ("pressure", 0.7),
        ("bearing_temp", 0.1235),
        ("vibration_rms", 0.1),
    ]


def test_top_channels_per_window_and_ties_keep_channel_order() -> None:
    shares = np.array(
        [
            [0.0, 0.0, 0.0, 1.0],  # not anomalous: its shares must not leak into others
            [0.4, 0.1, 0.4, 0.1],  # tie between channels 0 and 2: channel order
            [0.1, 0.6, 0.2, 0.1],
        ]
    )
    events = decider(top_channels=2).events(batch(3), np.array([0.1, 1.0, 1.0]), shares, now_ms=NOW)
    assert [[c.channel for c in e.top_channels] for e in events] == [
        ["vibration_rms", "pressure"],
        ["bearing_temp", "pressure"],
    ]


def test_top_channels_capped_at_the_number_of_channels() -> None:
    (e,) = decider(top_channels=10).events(batch(1), np.array([1.0]), flat_shares(1), now_ms=NOW)
    assert len(e.top_channels) == len(CHANNELS)


def test_event_fields_and_iso_times() -> None:
    (e,) = decider().events(
        batch(1, assets=["pump-003"]), np.array([0.5]), flat_shares(1), now_ms=NOW
    )
    assert e.schema_version == 1
    assert e.asset_id == "pump-003"
    assert (e.window_start_ms, e.window_end_ms) == (START, END)
    assert e.window_start == "2025-11-25T18:58:56.000Z"
    assert e.window_end == "2025-11-25T19:00:00.000Z"
    assert e.detected_at == "2025-11-25T19:00:05.120Z"
    assert e.threshold == 0.25
    assert e.model_version == "v1"
    assert type(e.score) is float


def test_event_id_is_uuid5_of_asset_window_and_version() -> None:
    w = batch(1, assets=["pump-003"])
    (e,) = decider().events(w, np.array([0.5]), flat_shares(1), now_ms=NOW)
    expected = uuid.uuid5(NAMESPACE, f"pump-003|{START}|{END}|v1")
    assert e.event_id == str(expected)


def test_event_id_deterministic_for_same_window_and_model() -> None:
    w = batch(1, assets=["pump-003"])
    a = decider().events(w, np.array([0.5]), flat_shares(1), now_ms=NOW)[0]
    # another score, another detection time, other shares: still the same window
    b = decider().events(w, np.array([9.0]), np.eye(1, 4), now_ms=NOW + 60_000)[0]
    assert a.event_id == b.event_id
    other_version = decider(model_version="v2").events(
        w, np.array([0.5]), flat_shares(1), now_ms=NOW
    )
    assert other_version[0].event_id != a.event_id
    later_window = batch(2, assets=["pump-003", "pump-003"])
    ids = [
        e.event_id
        for e in decider().events(later_window, np.array([0.5, 0.5]), flat_shares(2), now_ms=NOW)
    ]
    assert ids[0] == a.event_id
    assert ids[1] != a.event_id


def test_score_records_one_per_window() -> None:
    recs = decider().score_records(batch(2), np.array([0.1, 0.9]))
    assert [(r.asset_id, r.window_start_ms, r.window_end_ms, r.score) for r in recs] == [
        ("pump-000", START, END, pytest.approx(0.1)),
        ("pump-001", START + 16_000, END + 16_000, pytest.approx(0.9)),
    ]
    assert {(r.threshold, r.model_version) for r in recs} == {(0.25, "v1")}


# -- data quality ----------------------------------------------------------------------------


def test_gap_event() -> None:
    (q,) = quality_events([Gap("pump-1", 10_000, 17_000)], now_ms=NOW, period_ms=1000)
    assert q.kind == "gap"
    assert (q.asset_id, q.start_ms, q.end_ms) == ("pump-1", 10_000, 17_000)
    assert q.detail.startswith("7 grid steps without usable data")
    assert q.detected_at == "2025-11-25T19:00:05.120Z"
    assert q.event_id == str(uuid.uuid5(NAMESPACE, "gap|pump-1|10000|17000"))


def test_silent_asset_event() -> None:
    gaps = [Gap("pump-2", START, START, silent=True)]
    (q,) = quality_events(gaps, now_ms=NOW, period_ms=1000)
    assert q.kind == "silent_asset"
    assert (q.start_ms, q.end_ms) == (START, START)
    assert "no reading since 2025-11-25T18:58:56.000Z" in q.detail
    assert q.event_id == str(uuid.uuid5(NAMESPACE, f"silent_asset|pump-2|{START}|{START}"))


def test_quality_event_ids_differ_by_kind_and_bounds() -> None:
    qs = quality_events(
        [Gap("a", 0, 1000), Gap("a", 0, 2000), Gap("a", 0, 1000, silent=True), Gap("b", 0, 1000)],
        now_ms=NOW,
        period_ms=1000,
    )
    assert len({q.event_id for q in qs}) == 4
    assert quality_events([], now_ms=NOW, period_ms=1000) == []


def test_channels_missing_event_names_the_channels_and_what_to_do() -> None:
    alert = GapAlert("pump-3", 10_000, 74_000, (1, 3))
    (q,) = quality_events([], now_ms=NOW, period_ms=1000, alerts=[alert], channels=CHANNELS)
    assert q.kind == "channels_missing"
    assert (q.asset_id, q.start_ms, q.end_ms) == ("pump-3", 10_000, 74_000)
    assert q.detail == (
        "no usable row for 64 grid steps and still none: no value within the fill limit for "
        "bearing_temp, flow. No window of this asset is scored until they return: check the "
        "sensors, or retrain a model without these channels"
    )
    # one id per open gap: its asset and first row
    assert q.event_id == str(uuid.uuid5(NAMESPACE, "channels_missing|pump-3|10000"))
