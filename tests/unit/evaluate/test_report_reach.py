"""The published rule's unreachable rows travel with the run and are drawn in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream_ae.evaluate.backtest import ModelSpec, run_split_file
from stream_ae.evaluate.decisions import published_reach
from stream_ae.evaluate.report import plot_file


def test_published_runs_carry_the_rows_the_rule_can_flag(skab_dir: Path, tmp_path: Path) -> None:
    spec = ModelSpec(window=20, epochs=1)
    path = skab_dir / "other" / "1.csv"
    published = run_split_file(path, spec, rule="published", seed=0)
    causal = run_split_file(path, spec, rule="causal", seed=0)
    n = len(published.ts_ms)
    assert published.can_flag is not None
    np.testing.assert_array_equal(published.can_flag, published_reach(n, 20))
    assert not published.pred[~published.can_flag].any()  # never flagged there
    assert causal.can_flag is None
    plot_file(published, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
