"""Warm-up re-baselining: warm-up windows feed the baseline, later ones are shifted."""

from __future__ import annotations

import numpy as np

from stream_ae.windowing.rebaseline import Rebaseliner
from stream_ae.windowing.windower import WindowBatch


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
