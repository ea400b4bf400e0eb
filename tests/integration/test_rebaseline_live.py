"""Warm-up re-baselining in the running scorer: a maintenance report on the feedback
topic starts a new warm-up for its asset, from the reported time; garbage on that
topic is skipped, never fatal. An open maintenance tags its asset's anomaly events
``during_maintenance`` (they are still published)."""

from __future__ import annotations

import math

import msgspec
import pytest
from harness import (
    PERIOD_MS,
    STREAM_START,
    Env,
    H,
    ScorerThread,
    events_of,
    scores_of,
    simulator,
    stream_messages,
)

from stream_ae.io.kafka import Admin, OutputProducer
from stream_ae.schemas import FeedbackEvent
from stream_ae.simulate import FaultSpec

pytestmark = pytest.mark.integration

WARMUP_S = 60
STEPS = 600


def test_maintenance_report_starts_a_new_warmup_for_its_asset_only(env: Env) -> None:
    settings = env.settings(
        topics={"publish_scores": True, "feedback": f"{env.run}.feedback"},
        model={"rebaseline_s": WARMUP_S},
    )
    env.create_topics(settings)
    Admin(settings.kafka).ensure_topics(
        [settings.topics.feedback], partitions=3, replication_factor=1
    )
    maintained_until = STREAM_START + 300 * PERIOD_MS
    report = FeedbackEvent(asset_id="pump-002", kind="maintenance_end", start_ms=maintained_until)
    # pump-005 goes into maintenance (never reported ended) and its readings go wild
    opened = STREAM_START + 150 * PERIOD_MS
    start = FeedbackEvent(asset_id="pump-005", kind="maintenance_start", start_ms=opened)
    wild = FaultSpec("pump-005", "cavitation", STREAM_START + 200 * PERIOD_MS, 60, severity=2)
    p = OutputProducer(settings.kafka)
    p.send(settings.topics.feedback, b"{not a feedback record", key=b"pump-002")
    p.send(settings.topics.feedback, msgspec.json.encode(report), key=b"pump-002")
    p.send(settings.topics.feedback, msgspec.json.encode(start), key=b"pump-005")
    p.flush()
    msgs = stream_messages(simulator([wild]), STEPS)
    env.produce(settings, msgs)

    scorer = ScorerThread(settings).start()
    scorer.wait_for(len(msgs))
    scorer.stop()

    m = scorer.service.pipeline.metrics
    assert (m.maintenance_reports, m.maintenance_rebaselines) == (1, 1)
    starts: dict[str, list[int]] = {}
    for r in scores_of(settings):
        starts.setdefault(r.asset_id, []).append(r.window_start_ms)
    assert len(starts) == 6
    hop_ms, warmup_ms = H * PERIOD_MS, WARMUP_S * 1000
    per_warmup = math.ceil(warmup_ms / hop_ms)  # windows on the hop grid in one warm-up
    restart = math.ceil(maintained_until / hop_ms) * hop_ms  # first window from then on
    for asset, s in starts.items():
        # every asset warms up on its first windows (STREAM_START is on the hop grid)
        assert min(s) == STREAM_START + per_warmup * hop_ms, asset
        scored_in_new_warmup = [t for t in s if restart <= t < restart + per_warmup * hop_ms]
        # and scoring resumes right after the new warm-up (or goes on, for the others)
        assert restart + per_warmup * hop_ms in s, asset
        assert max(t for t in s if t < maintained_until) == restart - hop_ms, asset
        if asset == "pump-002":
            assert scored_in_new_warmup == [], "windows of the new warm-up were scored"
        else:
            assert len(scored_in_new_warmup) == per_warmup, asset
    assert m.warmup_windows == 7 * per_warmup  # 6 start-up warm-ups and pump-002's second

    events = events_of(settings)
    tags = [(e.asset_id == "pump-005" and e.window_end_ms > opened) for e in events]
    assert [e.during_maintenance for e in events] == tags
    assert sum(tags) == m.events_during_maintenance > 0, "the maintenance's events are published"
