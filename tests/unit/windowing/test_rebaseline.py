"""Warm-up re-baselining: warm-up windows feed the baseline, later ones are shifted."""

from __future__ import annotations

import numpy as np

from stream_ae.readings_io import concat_windows
from stream_ae.windowing import GridSpec
from stream_ae.windowing.rebaseline import Rebaseliner
from stream_ae.windowing.windower import Gap, WindowBatch

_SPEC = GridSpec(period_ms=1000, size=4, hop=1, lateness_ms=0, fill_limit=0, n_channels=2)


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
    return _cat(*out)


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


def _cat(*batches: WindowBatch) -> WindowBatch:
    return concat_windows(batches, _SPEC)


# -- maintenance, model swaps, partitions handed away -------------------------------------


def _apply_split(rb: Rebaseliner, batch: WindowBatch, at: int) -> WindowBatch:
    """Apply ``batch`` as two batches split before window ``at``; concatenate the output."""
    parts = [rb.apply(batch.select(np.arange(len(batch)) < at))]
    parts.append(rb.apply(batch.select(np.arange(len(batch)) >= at)))
    return _cat(*parts)


def _maintained() -> WindowBatch:
    """Asset a at level 3 for windows 0..4 s, at level 6 from 5 s (after maintenance)."""
    return _cat(
        _batch("a", [0, 1000, 2000, 3000, 4000], 3.0), _batch("a", [5000, 6000, 7000, 8000], 6.0)
    )


def test_maintenance_end_restarts_the_warmup_at_the_reported_time_wherever_batches_split() -> None:
    results = []
    for split in range(10):
        rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
        rb.note_restart("a", 5000)  # reported before the windows arrive
        out = _apply_split(rb, _maintained(), split)
        results.append((out.start_ms.tolist(), out.values[:, 0, 0].tolist()))
        assert rb.maintenance_restarts == 1
        assert rb.warmup_windows == 4  # [0, 1000] and [5000, 6000]
    assert all(r == results[0] for r in results)
    starts, level = results[0]
    # before: shifted from its own level 3; after: a new warm-up, then its own level 6
    assert starts == [2000, 3000, 4000, 7000, 8000]
    np.testing.assert_allclose(level, 0.0)


def test_without_the_report_the_new_level_stays_shifted_by_the_old_baseline() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    out = rb.apply(_maintained())
    assert out.start_ms.tolist() == [2000, 3000, 4000, 5000, 6000, 7000, 8000]
    np.testing.assert_allclose(out.values[3:, 0, 0], 3.0)  # 6 − 3: what the model sees


def test_an_old_or_repeated_maintenance_report_changes_nothing() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    rb.note_restart("a", -5000)  # before the asset's first window
    rb.note_restart("zz", 1000)  # an asset this scorer never sees
    first = rb.apply(_batch("a", [0, 1000, 2000, 3000], 3.0))
    assert first.start_ms.tolist() == [2000, 3000]
    rb.note_restart("a", 5000)
    rb.apply(_batch("a", [5000, 6000, 7000], 6.0))
    rb.note_restart("a", 5000)  # the same report again, after its warm-up began
    again = rb.apply(_batch("a", [8000, 9000], 6.0))
    assert again.start_ms.tolist() == [8000, 9000]
    np.testing.assert_allclose(again.values[:, 0, 0], 0.0)
    assert rb.maintenance_restarts == 1


def test_a_report_that_comes_late_restarts_at_the_next_window() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    rb.apply(_batch("a", [0, 1000, 2000, 3000], 3.0))
    rb.note_restart("a", 2500)  # windows after 2.5 s were already shifted
    out = rb.apply(_batch("a", [4000, 5000, 6000], 6.0))
    assert out.start_ms.tolist() == [6000]
    np.testing.assert_allclose(out.values[:, 0, 0], 0.0)


def test_a_new_reference_moves_the_shift_and_keeps_the_baseline() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    rb.apply(_batch("a", [0, 1000], 3.0))
    rb.set_reference(np.array([1.0, 12.0]))  # the new model's training mean
    out = rb.apply(_batch("a", [2000], 3.0))
    np.testing.assert_allclose(out.values[0, :, 0], [1.0, 12.0])
    assert rb.warmup_windows == 2
    try:
        rb.set_reference(np.array([1.0, 2.0, 3.0]))
    except ValueError as exc:
        assert "shape (3,)" in str(exc)
    else:
        raise AssertionError("a reference of another shape was accepted")


def _on(partition: int, batch: WindowBatch) -> WindowBatch:
    n = len(batch)
    return WindowBatch(
        batch.asset_ids, np.full(n, partition, np.int64), batch.start_ms, batch.end_ms, batch.values
    )


def test_forgetting_a_partition_drops_only_its_baselines() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    rb.apply(_batch("a", [0, 1000, 2000], 3.0))
    rb.apply(_on(1, _batch("b", [0, 1000, 2000], 3.0)))
    rb.note_gaps([Gap("a", 50_000, 60_000)])
    rb.forget_partitions([0])
    a2 = rb.apply(_batch("a", [3000, 4000, 5000], 3.0))
    b2 = rb.apply(_on(1, _batch("b", [3000], 3.0)))
    assert a2.start_ms.tolist() == [5000]  # warmed up afresh
    assert b2.start_ms.tolist() == [3000]  # kept its baseline
    assert rb._restart_at == {}  # the gap noted for partition 0 went with it


def test_several_pending_maintenance_ends_each_start_a_warmup() -> None:
    rb = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    rb.note_restart("a", 9000)
    rb.note_restart("a", 5000)  # reported out of order, before any window
    windows = [
        _batch("a", [0, 1000, 2000, 3000, 4000], 3.0),
        _batch("a", [5000, 6000, 7000, 8000], 6.0),
        _batch("a", [9000, 10_000, 11_000, 12_000], 9.0),
    ]
    out = [rb.apply(b) for b in windows]
    assert [o.start_ms.tolist() for o in out] == [
        [2000, 3000, 4000],
        [7000, 8000],
        [11_000, 12_000],
    ]
    for o in out:  # each stretch shifted from its own level
        np.testing.assert_allclose(o.values[:, 0, 0], 0.0)
    assert rb.maintenance_restarts == 2


def test_pending_maintenance_survives_a_rebuilt_rebaseliner() -> None:
    old = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    old.apply(_batch("a", [0, 1000, 2000], 3.0))
    old.note_restart("a", 5000)
    new = Rebaseliner(warmup_ms=2000, reference_mean=np.array([1.0, 11.0]))
    new.carry_pending_from(old)
    first = new.apply(_batch("a", [3000, 4000, 5000, 6000, 7000], 3.0))
    assert first.start_ms.tolist() == [7000]  # warm-up 3–4 s, again from 5 s
    assert new.maintenance_restarts == 1


def test_a_snapshot_restored_in_a_new_process_shifts_exactly_as_before() -> None:
    """Mid-warm-up, settled, and with a gap's new warm-up pending: a re-baseliner
    restored from the snapshot (through its JSON form) gives the same windows as the
    one that was never interrupted."""
    import msgspec

    from stream_ae.windowing.rebaseline import BaselineState

    ref = np.array([0.1, 10.3])

    def fresh() -> Rebaseliner:
        return Rebaseliner(warmup_ms=3000, reference_mean=ref)

    batches = [
        _batch("a", [0, 1000], 3.7),  # warm-up under way
        _batch("a", [2000, 3000], 4.1),  # settles, then shifts
        _batch("a", [4000, 5000], 9.3),  # a fault after the warm-up
        _batch("a", [9000, 10_000, 11_000, 12_000], 4.4),  # after the gap: warm-up again
    ]
    gap = Gap("a", 6000, 9000)
    for cut in range(1, len(batches)):
        whole, first = fresh(), fresh()
        expected = []
        for i, b in enumerate(batches):
            if i == 3:
                whole.note_gaps([gap])
            expected.append(whole.apply(b))
        for b in batches[:cut]:
            first.apply(b)
        if cut == 3:
            first.note_gaps([gap])  # noted, no window after it yet
        state = first.snapshot((0, "a"))
        assert state is not None
        stored = msgspec.json.decode(msgspec.json.encode(state), type=BaselineState)
        restarted = fresh()
        assert restarted.restore((0, "a"), stored)
        for i in range(cut, len(batches)):
            if i == 3 and cut < 3:  # the replay meets the gap again (for 3, it is before it)
                restarted.note_gaps([gap])
            got, want = restarted.apply(batches[i]), expected[i]
            assert got.start_ms.tolist() == want.start_ms.tolist(), cut
            assert np.array_equal(got.values, want.values), cut
    assert fresh().snapshot((0, "a")) is None


def test_a_snapshot_with_other_channels_is_refused_and_the_asset_warms_up() -> None:
    two = Rebaseliner(warmup_ms=1000, reference_mean=np.array([0.0, 10.0]))
    two.apply(_batch("a", [0, 1000], 3.0))
    state = two.snapshot((0, "a"))
    assert state is not None and state.mean is not None
    three = Rebaseliner(warmup_ms=1000, reference_mean=np.zeros(3))
    assert not three.restore((0, "a"), state)
    assert len(three.apply(_batch("a", [2000], 3.0, c=3))) == 0  # warming up afresh


def test_carry_from_keeps_baselines_for_a_rebuilt_grid() -> None:
    old = Rebaseliner(warmup_ms=2000, reference_mean=np.array([0.0, 10.0]))
    old.apply(_batch("a", [0, 1000, 2000], 3.0))  # settled at 3
    new = Rebaseliner(warmup_ms=2000, reference_mean=np.array([1.0, 11.0]))
    new.carry_from(old)
    out = new.apply(_batch("a", [3000], 3.0, w=6))  # another window size: no warm-up
    np.testing.assert_allclose(out.values[0, 0], 1.0)  # onto the new reference
    assert new.warmup_windows == 0
