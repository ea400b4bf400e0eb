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
    adopted_over,
    pick,
    setup,
    show,
    write_out,
)
from skab_tuning import PERIOD_MS, decide

from stream_ae.evaluate.backtest import (
    SKAB_TRAIN_ROWS,
    ModelSpec,
    _rows,
    _spec,
    fit_trained,
)
from stream_ae.evaluate.metrics import Evaluation, evaluate_file
from stream_ae.readings_io import Readings, to_windows

WINDOW = 60
SIZES = [(h, z) for h in (16, 32, 64) for z in (4, 8, 16, 32)]
DEFAULT_SIZE = (32, 16)
QUANTILES = (0.99, 0.999, 1.0)
FACTORS = (1.0, 1.15, 4 / 3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0)
DELAYS = (0, 10)
SMOOTHING = ((1, 1), (3, 5), (5, 10), (10, 20))
TARGETS = {
    "published": {"f1": 0.83, "mar": 23.0},
    "causal": {"f1": 0.78, "mar": 25.0, "nab": 28.0},
}

Fit = tuple[Readings, np.ndarray, np.ndarray, np.ndarray]  # test, starts, held-out, test scores


def fit_one(readings: Readings, size: tuple[int, int], seed: int) -> Fit:
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
    return test, wt.start_ms // PERIOD_MS, hold, test_scores


def grid(fits: list[Fit], rule: str) -> list[dict[str, Any]]:
    settings = [(0, (1, 1))] if rule == "published" else list(itertools.product(DELAYS, SMOOTHING))
    rows = []
    for (delay, (k, n)), q, f in itertools.product(settings, QUANTILES, FACTORS):
        total = Evaluation()
        for test, starts, hold, scores in fits:
            assert test.labels is not None
            thr = float(np.quantile(hold, q)) * f
            pred = decide(
                rule, test.ts_ms // PERIOD_MS, starts, scores, thr, WINDOW, delay=delay, k=k, n=n
            )
            total = total + evaluate_file(
                test.labels, pred, test.ts_ms, changepoints=test.changepoints
            )
        s = total.summary()
        rows.append(
            {"W": WINDOW, "q": q, "f": round(f, 3), "delay": delay, "k": k, "n": n,
             "f1": round(s["f1"], 4), "far": round(s["far"], 2), "mar": round(s["mar"], 2),
             "nab": round(s["nab_standard"] or 0.0, 2)}
        )  # fmt: skip
    return rows


def main() -> None:
    args, seeds, segs = setup(__doc__, "/tmp/skab_tuning/round5.json")

    t0 = time.perf_counter()
    fits: dict[tuple[int, int], list[Fit]] = {size: [] for size in SIZES}
    for size, seed, seg in itertools.product(SIZES, seeds, segs):
        fits[size].append(fit_one(seg.readings, size, seed))
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
            {"hidden": size[0], "latent": size[1], "rule": rule, **r}
            for r in grid(fits[size], rule)
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
