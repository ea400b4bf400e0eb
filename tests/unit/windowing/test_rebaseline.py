"""Warm-up re-baselining: warm-up windows feed the baseline, later ones are shifted."""

from __future__ import annotations

import numpy as np

from stream_ae.windowing.rebaseline import Rebaseliner
from stream_ae.windowing.windower import Gap, WindowBatch


def _batch(asset: str, starts: list[int], level: float, c: int = 2, w: int = 4) -> WindowBatch:
    n = len(starts)
    values = np.full((n, c, w), level, np.float32)
    values[:, 1] += 10.0
    s = np.array(starts, np.int64)
    return WindowBatch([asset] * n, np.zeros(n, np.int64), s, s + w * 1000, values)


def test_warmup_windows_are_not_scored_and_set_the_level() -> None:
    rb = Rebaseliner(warmup_ms=3000, reference_mean=np.array([1.0, 11.0]))
    out = rb.apply(_batch("a", [0, 1000, 2000, 3000, 4000], level=5.0))
    assert out.start_ms.tolist() == [3000, 4000]
    assert rb.warmup_windows == 3
    # the asset runs 4 units above the training mean: shifted back onto it
    np.testing.assert_allclose(out.values[:, 0], 1.0)
    np.testing.assert_allclose(out.values[:, 1], 11.0)


def test_each_asset_has_its_own_baseline_and_a_reset_starts_a_new_warmup() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    rb.apply(_batch("a", [0, 1000], level=3.0))
    rb.apply(_batch("b", [0, 1000], level=-2.0))
    a = rb.apply(_batch("a", [2000], level=4.0))  # 1 above a's own level
    b = rb.apply(_batch("b", [2000], level=-2.0))
    np.testing.assert_allclose(a.values[0, 0], 1.0)
    np.testing.assert_allclose(b.values[0, 0], 0.0)
    rb.reset([(0, "a")])
    again = rb.apply(_batch("a", [9000], level=4.0))
    assert len(again) == 0  # a new warm-up after the reset


def test_a_fault_after_the_warmup_stays_visible() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    rb.apply(_batch("a", [0, 1000], level=7.0))
    out = rb.apply(_batch("a", [2000, 3000], level=7.0))
    faulty = _batch("a", [4000], level=7.0)
    faulty.values[0, 0, 2:] += 5.0  # a step inside the window
    shifted = rb.apply(faulty)
    np.testing.assert_allclose(out.values[:, 0], 0.0)
    assert shifted.values[0, 0].tolist() == [0.0, 0.0, 5.0, 5.0]


def _run(batches: list[WindowBatch], gaps: list[Gap], note_before: int) -> WindowBatch:
    """Apply ``batches`` in order; the gaps are noted just before batch ``note_before``
    (the step in which the windower reported them)."""
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    out = []
    for i, b in enumerate(batches):
        if i == note_before:
            rb.note_gaps(gaps)
        out.append(rb.apply(b))
    kept = [o for o in out if len(o)]
    return WindowBatch(
        [a for o in kept for a in o.asset_ids],
        np.concatenate([o.partitions for o in kept]),
        np.concatenate([o.start_ms for o in kept]),
        np.concatenate([o.end_ms for o in kept]),
        np.concatenate([o.values for o in kept]),
    )


def _before_and_after_gap() -> tuple[WindowBatch, WindowBatch]:
    """Asset a at level 3 until 4 s, a hole [8 s, 20 s), then level 6 from 20 s."""
    return _batch("a", [0, 1000, 2000, 3000, 4000], 3.0), _batch(
        "a", [20_000, 21_000, 22_000, 23_000], 6.0
    )


def test_a_gap_restarts_the_warmup_at_the_first_window_after_it_wherever_batches_split() -> None:
    before, after = _before_and_after_gap()
    gap = [Gap("a", 8000, 20_000)]
    whole = _run([_cat(before, after)], gap, note_before=0)
    split = _run([before, after], gap, note_before=1)
    early = _run([before, after], gap, note_before=0)  # reported before the windows after it
    for got in (split, early):
        assert got.start_ms.tolist() == whole.start_ms.tolist()
        np.testing.assert_array_equal(got.values, whole.values)
    # 2000..4000 shifted by a's first baseline; 20000, 21000 warm up again; then level 6 → 0
    assert whole.start_ms.tolist() == [2000, 3000, 4000, 22_000, 23_000]
    np.testing.assert_allclose(whole.values[:, 0], 0.0)


def test_a_silence_restarts_only_windows_that_start_after_the_last_reading() -> None:
    before, after = _before_and_after_gap()
    silent = [Gap("a", 4000, 4000, silent=True)]  # last reading at 4 s, then idle
    got = _run([before, after], silent, note_before=1)
    assert got.start_ms.tolist() == [2000, 3000, 4000, 22_000, 23_000]
    # a window starting exactly at the last reading belongs to the old run
    kept = _run([_cat(before, after)], silent, note_before=0)
    assert kept.start_ms.tolist() == got.start_ms.tolist()


def _cat(a: WindowBatch, b: WindowBatch) -> WindowBatch:
    return WindowBatch(
        a.asset_ids + b.asset_ids,
        np.concatenate([a.partitions, b.partitions]),
        np.concatenate([a.start_ms, b.start_ms]),
        np.concatenate([a.end_ms, b.end_ms]),
        np.concatenate([a.values, b.values]),
    )
