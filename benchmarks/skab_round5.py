"""Round 5 of the SKAB tuning: the conv autoencoder's size (``hidden``, ``latent``).

Like the earlier rounds this never reads a labelled SKAB file. The validation
set is :func:`skab_tuning.build_synthetic` (20 segments × 1,100 rows of
``anomaly-free.csv``, one injected fault each, rows ``[0, 400)`` clean and the
fitting part). Every earlier round kept the conv model's default size (hidden 32
channels, latent 16). A bottleneck that is too wide reconstructs faults as well
as normal data; one that is too narrow reconstructs neither. Here one model per
(segment, size, seed) is fitted with the product's fit
(:func:`stream_ae.evaluate.backtest.fit_trained`: W = 60, hop 1, up to 30
epochs with early stopping, ``error_norm="holdout"``) for hidden ∈ {16, 32, 64}
× latent ∈ {4, 8, 16, 32}, and scored by the product's scorer. Thresholds:
``quantile(held-out window scores, q) × f``.

**Criteria (pre-registered: written before the full run; a smoke test on 2
segments and seed 0 ran first, and nothing was changed after it).** A size is
adopted for a rule only if, pooled over segments and seeds, its pick beats the
default size's (32/16, same segments and seeds) by at least 2 FAR points:

* published rule: the lowest FAR among settings with F1 ≥ 0.83 and MAR ≤ 23 %;
* causal rule (W = 60; delay ∈ {0, 10}; k-of-n ∈ {1/1, 3/5, 5/10, 10/20}): the
  lowest FAR among settings with F1 ≥ 0.78, MAR ≤ 25 % and NAB standard ≥ 28;
  if the default size has no such setting, a size needs one of its own.

If a size is adopted for a rule, that rule's real protocol is run once with its
pick.

    .venv/bin/python benchmarks/skab_round5.py --seeds 0,1,2 --out /tmp/skab_tuning/round5.json
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import numpy as np
from skab_round4 import (  # benchmarks/ is sys.path[0]
    CAUSAL_TARGET,
    PUBLISHED_TARGET,
    Fitted,
    adopted_over,
    grid,
    pick,
    setup,
    show,
    write_out,
)
from skab_tuning import PERIOD_MS

from stream_ae.evaluate.backtest import (
    SKAB_TRAIN_ROWS,
    ModelSpec,
    _rows,
    _spec,
    fit_trained,
)
from stream_ae.readings_io import Readings, to_windows

WINDOW = 60
SIZES = [(h, z) for h in (16, 32, 64) for z in (4, 8, 16, 32)]
DEFAULT_SIZE = (32, 16)
TARGETS = {"published": PUBLISHED_TARGET, "causal": CAUSAL_TARGET}


def fit_one(readings: Readings, name: str, size: tuple[int, int], seed: int) -> Fitted:
    """The product's fit and scores, as round 4's span ``all`` (the threshold grid,
    rules and pooling are round 4's :func:`skab_round4.grid`)."""
    hidden, latent = size
    spec = ModelSpec(
        window=WINDOW,
        hop=1,
        epochs=30,
        error_norm="holdout",
        hparams={"hidden": hidden, "latent": latent},
    )
    train, test = _rows(readings, 0, SKAB_TRAIN_ROWS), _rows(readings, SKAB_TRAIN_ROWS)
    wf = to_windows(train, _spec(train, spec, PERIOD_MS))
    wt = to_windows(test, _spec(test, spec, PERIOD_MS))
    tm = fit_trained(train, spec, period_ms=PERIOD_MS, seed=seed)
    scorer = tm.scorer("cpu")
    nh = tm.metadata.training["n_holdout"]
    hold = np.asarray(scorer.score(wf.values[-nh:]).scores, np.float64)
    test_scores = np.asarray(scorer.score(wt.values).scores, np.float64)
    return Fitted(name, WINDOW, seed, test, wt.start_ms // PERIOD_MS, {"all": (hold, test_scores)})


def main() -> None:
    args, seeds, segs = setup(__doc__, "/tmp/skab_tuning/round5.json")

    t0 = time.perf_counter()
    fits: dict[tuple[int, int], list[Fitted]] = {size: [] for size in SIZES}
    for size, seed, seg in itertools.product(SIZES, seeds, segs):
        fits[size].append(fit_one(seg.readings, seg.name, size, seed))
        print(
            f"  hidden {size[0]} latent {size[1]} seed {seed} {seg.name} "
            f"({time.perf_counter() - t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    rows: list[dict[str, Any]] = []
    picks: dict[str, dict[str, Any] | None] = {}
    for rule, size in itertools.product(("published", "causal"), SIZES):
        g = [
            {"hidden": size[0], "latent": size[1], "rule": rule}
            | {k: v for k, v in r.items() if k not in ("span", "rule")}
            for r in grid(fits[size], "all", rule, WINDOW)
        ]
        rows += g
        picks[f"{rule} {size}"] = p = pick(g, TARGETS[rule])
        ok = [r for r in g if r["far"] <= 22.0]
        best = max(ok, key=lambda r: r["f1"]) if ok else None
        print(f"{rule} hidden {size[0]:2d} latent {size[1]:2d} pick: {show(p)}", flush=True)
        print(f"    best F1 at FAR<=22: {show(best)}", flush=True)

    adopted = {
        rule: adopted_over(
            f"{rule}: default {DEFAULT_SIZE}",
            picks[f"{rule} {DEFAULT_SIZE}"],
            {str(z): picks[f"{rule} {z}"] for z in SIZES if z != DEFAULT_SIZE},
        )
        for rule in ("published", "causal")
    }
    write_out(args.out, t0, seeds=seeds, sizes=SIZES, grid=rows, picks=picks, adopted=adopted)


if __name__ == "__main__":
    main()
