"""Readings through the real broker and the real scorer: events, dead letters."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from harness import (
    PERIOD_MS,
    STREAM_START,
    Env,
    ScorerThread,
    W,
    events_of,
    read_all,
    scores_of,
    simulator,
    stream_messages,
    wait_until,
)

from stream_ae.schemas import H_REASON, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_STAGE
from stream_ae.simulate import FaultSpec, garbage_messages

pytestmark = pytest.mark.integration


def test_injected_faults_become_events_naming_the_right_asset_and_channels(env: Env) -> None:
    onset = STREAM_START + 300 * PERIOD_MS
    faults = [
        FaultSpec("pump-001", "bearing_wear", onset, ramp_s=120, severity=1.5),
        FaultSpec("pump-004", "cavitation", onset, ramp_s=60, severity=1.5),
    ]
    settings = env.settings()
    env.create_topics(settings)
    msgs = stream_messages(simulator(faults), 1200)
    env.produce(settings, msgs)
    scorer = ScorerThread(settings).start()
    scorer.wait_for(len(msgs))
    scorer.stop()

    events = events_of(settings)
    by_asset: dict[str, list] = {}
    for e in events:
        by_asset.setdefault(e.asset_id, []).append(e)
    for f in faults:
        after = [e for e in by_asset.get(f.asset_id, []) if e.window_end_ms > f.onset_ts_ms]
        assert len(after) >= 10, f"{f.kind} on {f.asset_id}: only {len(after)} events"
        named = {c.channel for e in after for c in e.top_channels[:2]}
        assert named & set(f.affected_channels), (f.kind, named)
        assert all(e.model_version == after[0].model_version for e in after)
    counts = {a: len(v) for a, v in by_asset.items()}
    least_faulty = min(counts.get(f.asset_id, 0) for f in faults)
    healthy = {a: n for a, n in counts.items() if a not in {f.asset_id for f in faults}}
    assert all(n * 2 < least_faulty for n in healthy.values()), (counts, least_faulty)
    # ids are deterministic and unique per window
    assert len({e.event_id for e in events}) == len(events)


def test_every_kind_of_bad_message_is_dead_lettered_while_good_readings_score(env: Env) -> None:
    settings = env.settings(topics={"publish_scores": True})
    env.create_topics(settings, partitions=1)
    good = stream_messages(simulator(), 300)
    rng = np.random.default_rng(3)
    now = STREAM_START + 400 * PERIOD_MS
    bad = garbage_messages(rng, 12, int(time.time() * 1000), asset_ids=["pump-002"])
    # a reading far behind its asset's watermark: late
    late_value = b'{"asset_id": "pump-000", "ts": %d, "values": {"vibration_rms": 1.0}}' % (
        STREAM_START + 10 * PERIOD_MS
    )
    mixed = (
        good[:900]
        + [(k, v, now) for k, v, _ in bad]
        + good[900:]
        + [(b"pump-000", late_value, now)]
    )
    env.produce(settings, mixed)
    expected_reason = {900 + i: reason for i, (_k, _v, reason) in enumerate(bad)}
    expected_reason[len(mixed) - 1] = "late"

    scorer = ScorerThread(settings).start()
    scorer.wait_for(len(mixed))
    scorer.stop()

    letters = read_all(settings, settings.topics.dead_letter_topic)
    got = {}
    for m in letters:
        h = dict(m.headers())
        assert h[H_SOURCE_PARTITION] == b"0"
        got[int(h[H_SOURCE_OFFSET])] = (h[H_REASON].decode(), h[H_STAGE].decode(), m.value())
    assert {o: r for o, (r, _s, _v) in got.items()} == expected_reason
    for offset, (_reason, _stage, value) in got.items():
        assert value == mixed[offset][1], "dead letter must carry the original bytes"
    # the good readings still made windows for every asset
    scored_assets = {s.asset_id for s in scores_of(settings)}
    assert scored_assets == {f"pump-{i:03d}" for i in range(6)}
    m = scorer.service.pipeline.metrics
    assert sum(m.dead_letters.values()) == len(expected_reason)


def test_gaps_and_silent_assets_become_data_quality_events(env: Env) -> None:
    settings = env.settings(window={"idle_timeout_ms": 2000, "fill_limit": 3})
    env.create_topics(settings, partitions=1)
    msgs = stream_messages(simulator(), 400)
    # pump-002 sends nothing for steps 200..259: a 60 s hole, far beyond the fill limit
    hole = range(STREAM_START + 200 * PERIOD_MS, STREAM_START + 260 * PERIOD_MS)
    kept = [m for m in msgs if not (m[0] == b"pump-002" and m[2] in hole)]
    # pump-004's bearing_temp sensor dies at step 300; its other channels go on
    dead_from = STREAM_START + 300 * PERIOD_MS
    kept = [_without(m, "bearing_temp") if _of(m, b"pump-004", dead_from) else m for m in kept]
    env.produce(settings, kept)
    scorer = ScorerThread(settings).start()
    scorer.wait_for(len(kept))
    wait_until(lambda: scorer.service.pipeline.metrics.quality_events >= 9, 30, "quality events")
    scorer.stop()
    from stream_ae.schemas import decode_quality_event

    events = [
        decode_quality_event(m.value()) for m in read_all(settings, settings.topics.data_quality)
    ]
    gaps = [e for e in events if e.kind == "gap"]
    assert [(e.asset_id, e.start_ms, e.end_ms) for e in gaps if e.asset_id == "pump-002"] == [
        ("pump-002", STREAM_START + 203 * PERIOD_MS, STREAM_START + 260 * PERIOD_MS)
    ]  # steps 200..202 are filled forward from step 199 (fill_limit 3); 203 is the first hole
    # the dead sensor: alerted once while the gap is open (one window, W = 32 rows, after
    # its first unfillable row), then closed as a gap when the asset went silent
    (alert,) = [e for e in events if e.kind == "channels_missing"]
    first = STREAM_START + 303 * PERIOD_MS
    assert (alert.asset_id, alert.start_ms, alert.end_ms) == ("pump-004", first, first + W * 1000)
    assert "bearing_temp" in alert.detail and "vibration_rms" not in alert.detail
    assert [(e.asset_id, e.start_ms) for e in gaps if e.asset_id != "pump-002"] == [
        ("pump-004", first)
    ]
    silent = {e.asset_id for e in events if e.kind == "silent_asset"}
    assert silent == {f"pump-{i:03d}" for i in range(6)}
    # no window spans the hole
    acct = scorer.service.pipeline.windower.accounting()
    assert acct.late == 0


def _of(message: tuple[bytes, bytes, int], key: bytes, from_ms: int) -> bool:
    return message[0] == key and message[2] >= from_ms


def _without(message: tuple[bytes, bytes, int], channel: str) -> tuple[bytes, bytes, int]:
    """The wide reading without ``channel`` (its sensor sends nothing)."""
    doc = json.loads(message[1])
    del doc["values"][channel]
    return message[0], json.dumps(doc).encode(), message[2]
