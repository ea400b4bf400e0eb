"""k-of-n persistence in the live decision step: per asset, across batches."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ae.decide.events import Decider
from stream_ae.decide.persistence import Persistence
from stream_ae.errors import ConfigError
from stream_ae.windowing import WindowBatch


def _batch(assets: list[str], starts: list[int]) -> WindowBatch:
    n = len(assets)
    s = np.array(starts, np.int64)
    return WindowBatch(assets, np.zeros(n, np.int64), s, s + 10, np.zeros((n, 2, 4), np.float32))


def test_two_of_three_across_batches_and_per_asset() -> None:
    p = Persistence(k=2, n=3)
    a1 = p.apply(_batch(["a", "b", "a"], [0, 0, 10]), np.array([True, True, False]))
    assert a1.tolist() == [False, False, False]  # a: [T], b: [T], a: [T, F]
    a2 = p.apply(_batch(["a", "b"], [20, 10]), np.array([True, True]))
    assert a2.tolist() == [True, True]  # a: [T, F, T], b: [T, T]
    a3 = p.apply(_batch(["a"], [30]), np.array([False]))
    assert a3.tolist() == [False]  # a: [F, T, F]


def test_one_of_one_changes_nothing_and_bad_values_are_refused() -> None:
    p = Persistence()
    verdicts = np.array([True, False, True])
    assert p.apply(_batch(["a"] * 3, [0, 10, 20]), verdicts) is verdicts
    with pytest.raises(ConfigError, match="k <= n"):
        Persistence(k=3, n=2)


def test_the_decider_emits_events_only_for_persistent_windows() -> None:
    d = Decider(
        threshold=1.0, model_version="v", channels=["x", "y"], persistence=Persistence(k=2, n=2)
    )
    w = _batch(["a", "a", "a"], [0, 10, 20])
    scores = np.array([2.0, 0.5, 3.0])
    shares = np.full((3, 2), 0.5)
    assert d.events(w, scores, shares, now_ms=0) == []
    w2 = _batch(["a"], [30])
    (e,) = d.events(w2, np.array([2.5]), np.full((1, 2), 0.5), now_ms=0)
    assert e.window_start_ms == 30 and e.score == 2.5


def test_a_partition_given_away_loses_its_history_and_others_keep_theirs() -> None:
    p = Persistence(k=2, n=2)
    two = _batch(["a", "b"], [0, 0])
    two = WindowBatch(two.asset_ids, np.array([0, 1]), two.start_ms, two.end_ms, two.values)
    p.apply(two, np.array([True, True]))
    p.forget_partitions([0])
    again = WindowBatch(
        two.asset_ids, two.partitions, two.start_ms + 10, two.end_ms + 10, two.values
    )
    # a (partition 0) needs two fresh windows again; b (partition 1) has its first one
    assert p.apply(again, np.array([True, True])).tolist() == [False, True]


def test_verdicts_restored_from_history_decide_as_if_never_interrupted() -> None:
    first = Persistence(k=3, n=4)
    first.apply(_batch(["a", "a", "a"], [0, 10, 20]), np.array([True, False, True]))
    assert first.history((0, "a")) == [True, False, True]
    assert first.history((0, "b")) is None

    restarted = Persistence(k=3, n=4)
    restarted.restore((0, "a"), first.history((0, "a")) or [])
    nxt = _batch(["a", "a"], [30, 40])
    verdicts = np.array([True, False])
    assert restarted.apply(nxt, verdicts).tolist() == first.apply(nxt, verdicts).tolist()
    assert restarted.history((0, "a")) == first.history((0, "a")) == [False, True, True, False]
    # without the history the third window above the threshold would not alarm
    assert Persistence(k=3, n=4).apply(nxt, verdicts).tolist() == [False, False]


def test_a_swap_carries_the_verdicts_into_the_new_rule() -> None:
    old = Persistence(k=2, n=3)
    old.apply(_batch(["a", "a", "a"], [0, 10, 20]), np.array([False, False, True]))
    new = Persistence(k=2, n=2)
    new.carry_from(old)
    assert new.history((0, "a")) == [False, True]  # only the newest n count
    assert new.apply(_batch(["a"], [30]), np.array([True])).tolist() == [True]
    off = Persistence()  # 1-of-1 keeps nothing
    off.carry_from(old)
    assert off.history((0, "a")) is None
