"""Delivery guarantees against the real broker: crash, transactions, rebalance.

Each test compares with a reference: the same readings scored by one
uninterrupted scorer (own topics, own group). Windows are identified by
(asset, start) and events by their deterministic ``event_id``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    PERIOD_MS,
    STREAM_START,
    Env,
    ScorerProcess,
    ScorerThread,
    events_of,
    scores_of,
    simulator,
    stream_messages,
    wait_until,
    window_keys,
)

from stream_ae.io import local_broker
from stream_ae.settings import Settings
from stream_ae.simulate import FaultSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTS = [
    FaultSpec("pump-002", "bearing_wear", STREAM_START + 200 * PERIOD_MS, ramp_s=60, severity=2),
    FaultSpec("pump-005", "cavitation", STREAM_START + 500 * PERIOD_MS, ramp_s=60, severity=2),
]
STEPS = 900
#: the broker's outage in the crash test: longer than the 60 s a flush once waited,
#: and than a transaction may stay open (librdkafka's transaction.timeout.ms)
OUTAGE_S = 70


def _data() -> tuple[list[tuple[bytes, bytes, int]], list[tuple[bytes, bytes, int]]]:
    msgs = stream_messages(simulator(FAULTS), STEPS)
    half = len(msgs) // 2
    return msgs[:half], msgs[half:]


def _reference(env: Env, **sections: dict[str, Any]) -> tuple[set[tuple[str, int]], set[str]]:
    settings = env.settings(**{**sections, "topics": {"publish_scores": True, **_feedback(env)}})
    settings.topics.readings += ".ref"
    settings.topics.anomalies += ".ref"
    settings.topics.scores += ".ref"
    settings.scorer.group_id += "-ref"
    env.create_topics(settings)
    first, second = _data()
    env.produce(settings, first + second)
    scorer = ScorerThread(settings).start()
    scorer.wait_for(len(first) + len(second))
    scorer.stop()
    # the run froze its objects out of the collector's way; stopped, it gives them back
    assert gc.get_freeze_count() == 0
    windows = window_keys(scores_of(settings))
    assert len(windows) == len(set(windows)), "an uninterrupted run scores each window once"
    events = {e.event_id for e in events_of(settings)}
    assert events, "the reference run must see the injected faults"
    return set(windows), events


def _assert_as_reference(
    settings: Settings,
    ref_windows: set[tuple[str, int]],
    ref_events: set[str],
    *,
    exactly_once: bool,
) -> None:
    """The same windows and events as the uninterrupted run; in exactly-once mode,
    each once to a ``read_committed`` reader."""
    windows = window_keys(scores_of(settings, read_committed=exactly_once))
    events = [e.event_id for e in events_of(settings, read_committed=exactly_once)]
    assert not ref_events - set(events), f"{len(ref_events - set(events))} events lost"
    assert not set(events) - ref_events, (
        f"{len(set(events) - ref_events)} events not in the reference"
    )
    assert set(windows) == ref_windows
    if exactly_once:
        dupes = [k for k, n in Counter(windows).items() if n > 1]
        assert not dupes, f"{len(dupes)} windows published twice, e.g. {dupes[:3]}"
        assert len(events) == len(set(events)), "an event published twice"


def _feedback(env: Env) -> dict[str, str]:
    return {"feedback": f"{env.run}.feedback"}


def _kill_and_restart(env: Env, tmp_path: Path, **sections: dict[str, Any]) -> None:
    """SIGKILL a scorer process mid-stream, restart it: it must publish every window
    and every event of the uninterrupted reference run (same ``sections``)."""
    ref_windows, ref_events = _reference(env, **sections)
    settings = env.settings(
        **sections,
        topics={"publish_scores": True, **_feedback(env)},
        scorer={"batch_size": 200, "commit_interval_s": 0.3},
    )
    env.create_topics(settings)
    first, second = _data()
    env.produce(settings, first)
    log = tmp_path / "scorer.log"
    proc = ScorerProcess(settings, log)
    wait_until(lambda: len(scores_of(settings)) > 50, 90, "the first scores")
    proc.kill()  # SIGKILL mid-stream: no flush, no commit
    env.produce(settings, second)
    proc = ScorerProcess(settings, log)
    wait_until(
        lambda: ref_windows <= set(window_keys(scores_of(settings))), 120, "every window again"
    )
    assert proc.terminate() == 0, proc.log_tail()
    events = {e.event_id for e in events_of(settings)}
    missing = ref_events - events
    assert not missing, f"{len(missing)} events lost after SIGKILL"
    extra = events - ref_events
    assert not extra, f"{len(extra)} events the uninterrupted run did not raise"


def test_sigkill_mid_stream_then_restart_loses_no_event(env: Env, tmp_path: Path) -> None:
    _kill_and_restart(env, tmp_path)


def test_sigkill_keeps_the_persistence_verdicts_and_the_baselines(
    env: Env, persistent_model_path: Path, tmp_path: Path
) -> None:
    """With 2-of-3 persistence (recorded in the model) and a 60 s warm-up
    re-baselining, the restarted scorer takes each asset's verdicts and baseline
    back from the marks topic: no asset warms up again (on a fault, it would learn
    the fault as normal) and every alarm comes as in the uninterrupted run."""
    env = dataclasses.replace(env, model_path=persistent_model_path)
    _kill_and_restart(env, tmp_path, model={"rebaseline_s": 60})


def test_exactly_once_mode_gives_no_duplicates_to_a_read_committed_reader(
    env: Env, tmp_path: Path
) -> None:
    ref_windows, ref_events = _reference(env)
    settings = env.settings(
        topics={"publish_scores": True},
        scorer={"batch_size": 200, "commit_interval_s": 0.3, "exactly_once": True},
    )
    env.create_topics(settings)
    first, second = _data()
    env.produce(settings, first)
    log = tmp_path / "scorer.log"
    proc = ScorerProcess(settings, log)
    wait_until(lambda: len(scores_of(settings, read_committed=True)) > 50, 90, "the first scores")
    proc.kill()
    env.produce(settings, second)
    proc = ScorerProcess(settings, log)
    wait_until(
        lambda: ref_windows <= set(window_keys(scores_of(settings, read_committed=True))),
        120,
        "every window",
    )
    assert proc.terminate() == 0, proc.log_tail()
    _assert_as_reference(settings, ref_windows, ref_events, exactly_once=True)


@pytest.mark.parametrize("decision_state", [False, True], ids=["plain", "persistence+warmup"])
def test_two_scorers_in_one_group_score_every_window_through_a_rebalance(
    env: Env, persistent_model_path: Path, decision_state: bool
) -> None:
    """With 2-of-3 persistence and a 60 s warm-up, the partitions' next owner takes
    their assets' verdicts and baselines from the marks: same windows, same events."""
    sections: dict[str, dict[str, Any]] = {}
    if decision_state:
        env = dataclasses.replace(env, model_path=persistent_model_path)
        sections = {"model": {"rebaseline_s": 60}}
    ref_windows, ref_events = _reference(env, **sections)
    settings = env.settings(
        **sections, topics={"publish_scores": True, **_feedback(env)}, scorer={"batch_size": 300}
    )
    env.create_topics(settings, partitions=4)
    first, second = _data()
    env.produce(settings, first)
    a = ScorerThread(settings).start()
    wait_until(lambda: a.service.pipeline.metrics.windows > 0, 60, "scorer A to score")
    b = ScorerThread(settings).start()  # joins: the group rebalances mid-stream
    wait_until(lambda: bool(b.assignment()), 60, "scorer B to get partitions")
    env.produce(settings, second)
    try:
        wait_until(
            lambda: ref_windows <= set(window_keys(scores_of(settings))), 120, "every window"
        )
        assert a.service.pipeline.metrics.messages > 0
        assert b.service.pipeline.metrics.messages > 0, "the second scorer got no partition"
    finally:
        a.stop()
        b.stop()
    assert {e.event_id for e in events_of(settings)} == ref_events


@contextlib.contextmanager
def _own_broker(env: Env, tmp_path: Path) -> Iterator[tuple[Env, local_broker.BrokerConfig]]:
    """A broker of the test's own (state in ``tmp_path``, free ports), to crash; and
    ``env`` pointed at it."""
    cfg = local_broker.BrokerConfig(
        state_dir=tmp_path / "broker",
        port=local_broker.free_port(),
        controller_port=local_broker.free_port(),
    )
    local_broker.start(cfg, timeout_s=120)
    try:
        yield dataclasses.replace(env, bootstrap=cfg.bootstrap), cfg
    finally:
        local_broker.stop(cfg, wipe=True)


def _crash(cfg: local_broker.BrokerConfig) -> None:
    """SIGKILL the broker: no clean shutdown."""
    info = local_broker.status(cfg)
    assert info is not None
    os.kill(info.pid, signal.SIGKILL)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_broker_crash_and_restart_mid_stream_loses_no_event(
    env: Env, tmp_path: Path, exactly_once: bool
) -> None:
    """The broker (its own, in its own state dir) is SIGKILLed as the scorer process
    publishes its first scores, and started again on the same data and ports after
    OUTAGE_S, longer than a flush used to wait and than a transaction's timeout. The
    scorer rides it out: every window and event of the uninterrupted run arrives,
    and no other event; in exactly-once mode a ``read_committed`` reader sees each
    once. Whether outputs are in flight at the kill depends on timing (they usually
    are: the log shows the flush waiting, or the transaction rewound); the wait
    itself is pinned in test_output_producer."""
    ref_windows, ref_events = _reference(env)
    with _own_broker(env, tmp_path) as (own, cfg):
        settings = own.settings(
            topics={"publish_scores": True},
            scorer={"batch_size": 50, "commit_interval_s": 0.3, "exactly_once": exactly_once},
        )
        own.create_topics(settings)
        first, second = _data()
        own.produce(settings, first)
        proc = ScorerProcess(settings, tmp_path / "scorer.log")

        def windows() -> list[tuple[str, int]]:
            return window_keys(scores_of(settings, read_committed=exactly_once))

        wait_until(lambda: len(windows()) > 0, 90, "the first scores")
        _crash(cfg)  # usually with outputs in flight (see above)
        time.sleep(OUTAGE_S)
        assert proc.proc.poll() is None, "the scorer gave up:\n" + proc.log_tail()
        local_broker.start(cfg, timeout_s=180)
        own.produce(settings, second)
        wait_until(
            lambda: ref_windows <= set(windows()) or proc.proc.poll() is not None,
            240,
            "every window",
        )
        assert proc.proc.poll() is None, "the scorer exited:\n" + proc.log_tail()
        assert proc.terminate() == 0, proc.log_tail()
        _assert_as_reference(settings, ref_windows, ref_events, exactly_once=exactly_once)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_sigterm_while_the_broker_is_away_ends_the_wait(
    env: Env, tmp_path: Path, exactly_once: bool
) -> None:
    """The broker (its own) is SIGKILLed and stays down (the final commit has marks
    to flush at least); a SIGTERM then ends the scorer within the stop grace plus
    the close, with an error that says nothing was committed, instead of after the
    delivery timeout or, in exactly-once mode, a transactional call that hangs."""
    with _own_broker(env, tmp_path) as (own, cfg):
        settings = own.settings(
            scorer={"batch_size": 50, "commit_interval_s": 0.3, "exactly_once": exactly_once}
        )
        own.create_topics(settings)
        own.produce(settings, _data()[0])
        proc = ScorerProcess(settings, tmp_path / "scorer.log")
        wait_until(
            lambda: bool(events_of(settings, read_committed=exactly_once)), 90, "the first events"
        )
        _crash(cfg)
        time.sleep(5)
        started = time.monotonic()
        code = proc.terminate(timeout_s=120)
        took = time.monotonic() - started
        log = proc.log_tail()
        assert code != 0, log
        assert took < 30, f"{took:.0f} s after SIGTERM:\n{log}"
        said = (
            "nothing after the last committed transaction was committed"
            if exactly_once
            else "offsets were not committed"
        )
        assert said in " ".join(log.split()), log  # the log wraps its lines
