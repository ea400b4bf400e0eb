"""At-least-once replay with marks (``scorer.replay_marks``), against the real broker.

One partition: pump-000's reading for step 1 comes first, then pump-001's only
reading (its window never completes, so it pins offset 1 and the commit stays
there), then pump-000's step 0 (out of order, within the lateness) and the rest
of pump-000 in order. After a clean stop the committed offset is 1: a restart
replays everything but pump-000's step 1, so the window holding steps 0 and 1 can
only be rebuilt without it. With the marks the restarted scorer skips every window
it had published; without them that window comes again with another score.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from harness import STREAM_START, Env, ScorerThread, scores_of, simulator, stream_messages

pytestmark = pytest.mark.integration

STEPS = 120


def _stream() -> list[tuple[bytes, bytes, int]]:
    msgs = stream_messages(simulator(), STEPS)
    x = [m for m in msgs if m[0] == b"pump-000"]
    y = next(m for m in msgs if m[0] == b"pump-001")
    step1 = msgspec.json.decode(x[1][1])
    step1["values"] = {c: 3.0 * v for c, v in step1["values"].items()}  # a distinct sample
    return [(x[1][0], msgspec.json.encode(step1), x[1][2]), y, x[0], *x[2:]]


@pytest.mark.parametrize("replay_marks", [True, False])
def test_a_restart_never_republishes_a_window_with_another_score(
    env: Env, replay_marks: bool
) -> None:
    settings = env.settings(topics={"publish_scores": True}, scorer={"replay_marks": replay_marks})
    env.create_topics(settings, partitions=1)
    msgs = _stream()
    env.produce(settings, msgs)

    first = ScorerThread(settings).start()
    first.wait_for(len(msgs))
    first.stop()  # flush, marks, commit
    published = scores_of(settings)
    assert ("pump-000", STREAM_START) in {(r.asset_id, r.window_start_ms) for r in published}

    second = ScorerThread(settings).start()
    second.wait_for(len(msgs) - 1)  # offset 1 on: the committed position
    second.stop()
    again = scores_of(settings)[len(published) :]

    by_key: dict[tuple[str, int], set[float]] = {}
    for r in published + again:
        by_key.setdefault((r.asset_id, r.window_start_ms), set()).add(r.score)
    changed = {k: v for k, v in by_key.items() if len(v) > 1}
    if replay_marks:
        assert again == [], Counter((r.asset_id, r.window_start_ms) for r in again)
        assert second.service.pipeline.suppressed_windows == len(published)
    else:  # what the marks prevent
        assert list(changed) == [("pump-000", STREAM_START)]
