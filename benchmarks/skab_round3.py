"""Round 3 of the SKAB published-rule tuning: three ideas, on synthetic faults only.

Like ``skab_tuning.py tune`` this never reads a labelled SKAB file. The validation
set is :func:`skab_tuning.build_synthetic`, built only from
``anomaly-free/anomaly-free.csv``: 20 segments × 1,100 rows, one injected fault
each, rows ``[0, 400)`` clean and the fitting part. One model per (segment, seed)
is fitted with :func:`stream_ae.evaluate.backtest.fit_trained` (conv, W=60, hop 1,
up to 30 epochs with early stopping, ``error_norm="holdout"``): **M1**, the
product's fit and round 2's baseline. Every variant below is decided by the
published rule (W=60) with thresholds ``quantile(reference scores, q) × f`` for
q in :data:`QUANTILES` and f in :data:`FACTORS`, and its metrics are pooled over
all segments and seeds.

1. **Refit on all fit rows (M2).** Same seed, a fresh model and scaler trained on
   the windows of all 400 fit rows (no held-out split) for M1's early-stopped
   epoch count (``best_epoch``, at least 1), with fit_autoencoder's loop (seeded
   shuffle, Adam, batch 64, lr 1e-3, gradient clip 5) and no early stopping. Its
   threshold and normalisation come from the in-sample errors of all the fit
   windows (ref ``all``) or of their last 20 % (ref ``last``).
2. **Mean absolute error.** Each window's per-channel error is the mean absolute
   (``mae``) instead of the mean squared (``mse``) error, without (``none``) or with
   (``hold``) per-channel normalisation by the channel's mean error on the
   reference windows (M1: its held-out windows; M2: ref ``all``/``last``).
3. **Gated level tracking** (M1, MSE, held-out normalisation). The test windows,
   in order, are shifted by a per-channel offset ``o`` (scaled units) before
   scoring; when a window's score is below ``gate × thr_base`` (``thr_base`` = the
   max held-out score), ``o ← (1 − α) o + α × the window's per-channel mean``.
   α ∈ {1/100, 1/300}, gate ∈ {1.0, 1.5}; α = 0 is the untracked score (= M1, MSE,
   holdout norm at q = 1). Thresholds ``thr_base × f`` for f in :data:`FACTORS`.

4. **No early-stopping selection.** M1 keeps the weights of the epoch with the
   lowest held-out error; on this set 13 of the 60 fits pick epoch 1 (the held-out
   windows are the most drifted). **M3**: the same training windows as M1 (the
   purged split), 30 epochs, the last epoch's weights; threshold and normalisation
   from its held-out windows, as M1. **M4**: all fit windows, 30 epochs, the last
   weights; references ``all``/``last`` as M2.

5. **Robust aggregation over channels** (M1, MSE, held-out normalisation): each
   channel's normalised error clipped at 4, 9, 16, 25 or 50 before the mean, or the
   mean of its square root or of ``log1p``, so that one drifting channel weighs
   less. Thresholds from the held-out windows' scores aggregated the same way.

``error_norm`` only rescales the errors after training, so one fit per (segment,
seed) serves all three parts (checked: its weights equal an
``error_norm="none"`` fit's bit for bit).

**Criterion (pre-registered).** Per variant, the ``targets`` pick is the lowest
synthetic FAR among the settings with synthetic F1 ≥ 0.83 and MAR ≤ 23 %
(published rule, W=60). A variant is adopted only if its pick beats the round-2
baseline (M1, MSE, holdout norm) by at least 2 FAR points.

Printed: per variant the ``targets`` pick and the best F1 at FAR ≤ 22 and at
FAR ≤ 15; for tracking the full factor table; then the criterion's verdict.
Progress goes to stderr; ``--out`` gets every grid row of every variant (JSON).

    .venv/bin/python benchmarks/skab_round3.py --seeds 0,1,2 --threads 2 \
        --out /tmp/skab_tuning/round3.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skab_tuning import PERIOD_MS, Segment, build_synthetic, decide  # benchmarks/ is sys.path[0]
from torch import nn

from stream_ae.evaluate.backtest import (
    DEFAULT_SKAB,
    SKAB_TRAIN_ROWS,
    ModelSpec,
    _rows,
    _spec,
    fit_trained,
)
from stream_ae.evaluate.metrics import Evaluation, evaluate_file
from stream_ae.model.autoencoders import build_model, resolve_hparams
from stream_ae.model.scaler import ChannelScaler
from stream_ae.readings_io import Readings, to_windows

SEGMENTS, SEG_ROWS = 20, 1100
SPEC = ModelSpec(window=60, hop=1, epochs=30, error_norm="holdout")
QUANTILES = (0.99, 0.995, 0.999, 1.0)
FACTORS = (1.0, 1.15, 4 / 3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
#: (model, error, normalisation, reference windows)
VARIANTS: list[tuple[str, str, str, str]] = [
    ("m1", e, n, "hold") for e in ("mse", "mae") for n in ("none", "hold")
] + [("m2", e, n, ref) for e in ("mse", "mae") for n in ("none", "hold") for ref in ("all", "last")]
VARIANTS += [("m3", "mse", n, "hold") for n in ("none", "hold")]
VARIANTS += [("m4", "mse", n, ref) for n in ("none", "hold") for ref in ("all", "last")]
#: models whose reference windows are M1's held-out windows (out of sample)
HELD_OUT_MODELS = ("m1", "m3")
BASELINE = ("m1", "mse", "hold", "hold")
#: (alpha, gate); (0.0, 1.0) is the untracked score
TRACKING = ((0.0, 1.0), (1 / 100, 1.0), (1 / 100, 1.5), (1 / 300, 1.0), (1 / 300, 1.5))
F1_MIN, MAR_MAX, FAR_MARGIN = 0.83, 23.0, 2.0
PICK_KEYS = ("q", "f", "f1", "far", "mar", "nab")

Errors = dict[str, np.ndarray]  # "mse"/"mae" -> (N, C) per-channel window errors


@dataclass
class Fitted:
    """One (segment, seed): M1's to M4's errors on the fit and test windows, and the
    tracked scores of the test windows."""

    name: str
    seed: int
    test: Readings
    starts: np.ndarray  # test window starts, in periods
    n_train: int
    n_holdout: int
    best_epoch: int
    errors: dict[str, dict[str, Errors]]  # "m1".."m4" -> "fit"/"test" -> Errors
    thr_base: float  # max held-out score (holdout-normalised MSE)
    tracked: dict[tuple[float, float], np.ndarray]  # (alpha, gate) -> test window scores


# --------------------------------------------------------------------------- fitting


def refit_all(arr: np.ndarray, epochs: int, seed: int) -> tuple[nn.Module, ChannelScaler]:
    """Scaler and model on all of ``arr`` (N, C, W) for ``epochs`` epochs, no holdout."""
    scaler = ChannelScaler.fit(arr)
    x = torch.from_numpy(scaler.transform(arr))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model("conv", arr.shape[1], arr.shape[2], resolve_hparams("conv", {}))
    opt = torch.optim.Adam(model.parameters(), lr=SPEC.lr)
    for _ in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        for s in range(0, len(x), SPEC.batch_size):
            xb = x[order[s : s + SPEC.batch_size]]
            opt.zero_grad(set_to_none=True)
            loss = (model(xb) - xb).square().mean()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
    return model.eval(), scaler


def channel_errors(model: nn.Module, scaler: ChannelScaler, values: np.ndarray) -> Errors:
    x = torch.from_numpy(scaler.transform(np.asarray(values, np.float32)))
    with torch.inference_mode():
        d = model(x) - x
    return {"mse": d.square().mean(2).numpy(), "mae": d.abs().mean(2).numpy()}


def track(
    model: nn.Module,
    x: torch.Tensor,
    error_scale: np.ndarray,
    alpha: float,
    gate_thr: float,
) -> np.ndarray:
    """Scores of the scaled test windows ``x`` (B, C, W), in order, with gated level
    tracking (see the module doc)."""
    level = x.mean(2).numpy()
    offset = np.zeros(x.shape[1], np.float32)
    scores = np.empty(len(x))
    with torch.inference_mode():
        for i in range(len(x)):
            xi = x[i : i + 1] - torch.from_numpy(offset)[None, :, None]
            si = float(((model(xi) - xi).square().mean(2).numpy() / error_scale).mean())
            scores[i] = si
            if si < gate_thr:
                offset = (1 - alpha) * offset + alpha * level[i]
    return scores


def fit_segment(seg: Segment, seed: int) -> Fitted:
    rd = seg.readings
    train, test = _rows(rd, 0, SKAB_TRAIN_ROWS), _rows(rd, SKAB_TRAIN_ROWS)
    wf = to_windows(train, _spec(train, SPEC, PERIOD_MS))
    wt = to_windows(test, _spec(test, SPEC, PERIOD_MS))
    tm = fit_trained(train, SPEC, period_ms=PERIOD_MS, seed=seed)
    tr = tm.metadata.training
    m1 = {
        "fit": channel_errors(tm.model, tm.scaler, wf.values),
        "test": channel_errors(tm.model, tm.scaler, wt.values),
    }
    scorer = tm.scorer("cpu")
    assert scorer.scaler.error_scale is not None
    es = scorer.scaler.error_scale.astype(np.float32)
    chk = scorer.score(wt.values).channel_errors  # the product's scorer agrees
    assert np.allclose(chk, m1["test"]["mse"] / es, rtol=1e-4, atol=1e-6), seg.name

    model2, scaler2 = refit_all(np.asarray(wf.values, np.float32), max(tr["best_epoch"], 1), seed)
    m2 = {
        "fit": channel_errors(model2, scaler2, wf.values),
        "test": channel_errors(model2, scaler2, wt.values),
    }
    arr = np.asarray(wf.values, np.float32)
    later = {}
    for name, part in (("m3", arr[: tr["n_train"]]), ("m4", arr)):
        model_n, scaler_n = refit_all(part, SPEC.epochs, seed)
        later[name] = {
            "fit": channel_errors(model_n, scaler_n, wf.values),
            "test": channel_errors(model_n, scaler_n, wt.values),
        }

    nh = tr["n_holdout"]
    thr_base = float(scorer.score(wf.values[-nh:]).scores.max())
    x = torch.from_numpy(tm.scaler.transform(np.asarray(wt.values, np.float32)))
    tracked = {}
    for alpha, gate in TRACKING:
        if alpha == 0.0:  # untracked (float32, as the scorer's scores)
            tracked[alpha, gate] = (m1["test"]["mse"] / es).mean(1)
        else:
            tracked[alpha, gate] = track(scorer.model, x, es, alpha, gate * thr_base)
    return Fitted(
        name=seg.name,
        seed=seed,
        test=test,
        starts=wt.start_ms // PERIOD_MS,
        n_train=tr["n_train"],
        n_holdout=nh,
        best_epoch=tr["best_epoch"],
        errors={"m1": m1, "m2": m2, **later},
        thr_base=thr_base,
        tracked=tracked,
    )


# --------------------------------------------------------------------------- grids


def pooled(items: list[tuple[Fitted, np.ndarray, float]]) -> dict[str, Any]:
    """Published-rule metrics pooled over (fit, window scores, threshold) items."""
    total = Evaluation()
    for fit, scores, thr in items:
        test = fit.test
        assert test.labels is not None
        pred = decide("published", test.ts_ms // PERIOD_MS, fit.starts, scores, thr, SPEC.window)
        total = total + evaluate_file(test.labels, pred, test.ts_ms, changepoints=test.changepoints)
    return total.summary()


def variant_scores(
    fit: Fitted, model: str, err: str, norm: str, ref: str
) -> tuple[np.ndarray, np.ndarray]:
    """(reference window scores, test window scores) of one variant."""
    m = fit.errors[model]
    ref_err, test_err = m["fit"][err], m["test"][err]
    n = len(ref_err)
    if model in HELD_OUT_MODELS:
        refi = np.arange(n - fit.n_holdout, n)
    elif ref == "all":
        refi = np.arange(n)
    else:
        refi = np.arange(n - int(np.ceil(SPEC.holdout_fraction * n)), n)
    if norm == "hold":
        sc = ref_err[refi].mean(0)
        sc = np.where(sc > 0, sc, 1.0)
        ref_err, test_err = ref_err / sc, test_err / sc
    return ref_err[refi].mean(1), test_err.mean(1)


AGGREGATIONS: dict[str, Any] = {
    **{f"clip{c}": (lambda e, c=c: np.minimum(e, c).mean(1)) for c in (4, 9, 16, 25, 50)},
    "sqrt": lambda e: np.sqrt(e).mean(1),
    "log1p": lambda e: np.log1p(e).mean(1),
}


def aggregation_grid(fits: list[Fitted], name: str) -> list[dict[str, Any]]:
    """M1, MSE, held-out normalisation, channels combined by ``AGGREGATIONS[name]``."""
    agg = AGGREGATIONS[name]
    per = []
    for fit in fits:
        ref, test = fit.errors["m1"]["fit"]["mse"], fit.errors["m1"]["test"]["mse"]
        ref = ref[len(ref) - fit.n_holdout :]
        sc = ref.mean(0)
        sc = np.where(sc > 0, sc, 1.0)
        per.append((fit, agg(ref / sc), agg(test / sc)))
    return quantile_grid(per, {"aggregation": name})


def variant_grid(fits: list[Fitted], variant: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    model, err, norm, ref = variant
    per = [(fit, *variant_scores(fit, *variant)) for fit in fits]
    return quantile_grid(per, {"model": model, "err": err, "norm": norm, "ref": ref})


def metrics_row(keys: dict[str, Any], s: dict[str, Any], nab_digits: int = 2) -> dict[str, Any]:
    """``keys`` followed by the pooled F1, FAR, MAR and NAB standard, rounded."""
    return {
        **keys,
        "f1": round(s["f1"], 4),
        "far": round(s["far"], 2),
        "mar": round(s["mar"], 2),
        "nab": round(s["nab_standard"] or 0, nab_digits),
    }


def quantile_grid(
    per: list[tuple[Fitted, np.ndarray, np.ndarray]], keys: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per (q, f): threshold ``quantile(reference scores, q) × f`` per fit, for
    ``per`` = (fit, reference window scores, test window scores)."""
    rows = []
    for q, f in itertools.product(QUANTILES, FACTORS):
        s = pooled([(fit, t.astype(np.float64), np.quantile(r, q) * f) for fit, r, t in per])
        rows.append(metrics_row({**keys, "q": q, "f": round(f, 3)}, s))
    return rows


def tracking_grid(fits: list[Fitted], alpha: float, gate: float) -> list[dict[str, Any]]:
    rows = []
    for f in FACTORS:
        s = pooled([(fit, fit.tracked[alpha, gate], fit.thr_base * f) for fit in fits])
        rows.append(metrics_row({"alpha": alpha, "gate": gate, "f": round(f, 3)}, s, 1))
    return rows


def targets_pick(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Lowest FAR among the rows with F1 ≥ F1_MIN and MAR ≤ MAR_MAX."""
    meets = [r for r in rows if r["f1"] >= F1_MIN and r["mar"] <= MAR_MAX]
    return min(meets, key=lambda r: r["far"]) if meets else None


def report_pick(label: Any, rows: list[dict[str, Any]], far_caps: tuple[float, ...]) -> Any:
    """Print ``label``'s targets pick and its best F1 at each FAR cap; return the pick."""
    tp = targets_pick(rows)
    parts: list[Any] = [label, "targets:", tp and {k: tp[k] for k in PICK_KEYS}]
    for i, cap in enumerate(far_caps):
        b = best_f1(rows, cap)
        head = f"| bestF1@FAR<={cap:g}:" if i == 0 else f"| @<={cap:g}:"
        parts += [head, b.get("f1"), b.get("far"), b.get("mar")]
    print(*parts, flush=True)
    return tp


def best_f1(rows: list[dict[str, Any]], far_max: float) -> dict[str, Any]:
    ok = [r for r in rows if r["far"] <= far_max]
    return max(ok, key=lambda r: r["f1"]) if ok else {"f1": 0}


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_SKAB)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/skab_tuning/round3.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    segs = build_synthetic(args.data, SEGMENTS, SEG_ROWS)

    t0 = time.perf_counter()
    fits = []
    for seed, seg in itertools.product(seeds, segs):
        fit = fit_segment(seg, seed)
        fits.append(fit)
        print(
            f"  seed {seed} {seg.name}: best_epoch {fit.best_epoch} n_train {fit.n_train} "
            f"n_holdout {fit.n_holdout} ({time.perf_counter() - t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    grid: list[dict[str, Any]] = []
    picks: dict[str, dict[str, Any] | None] = {}
    for variant in VARIANTS:
        rows = variant_grid(fits, variant)
        grid += rows
        picks[str(variant)] = report_pick(variant, rows, (22.0, 15.0))

    tracking: list[dict[str, Any]] = []
    cols = ("f", "f1", "far", "mar", "nab")
    for alpha, gate in TRACKING:
        rows = tracking_grid(fits, alpha, gate)
        tracking += rows
        tp = targets_pick(rows)
        picks[str(("track", alpha, gate))] = tp
        print((alpha, gate), "targets:", tp and tuple(tp[k] for k in cols))
        for r in rows:
            print("   ", tuple(r[k] for k in cols))

    aggregation: list[dict[str, Any]] = []
    for name in AGGREGATIONS:
        rows = aggregation_grid(fits, name)
        aggregation += rows
        picks[f"aggregation {name}"] = report_pick(f"aggregation {name}", rows, (22.0,))

    # the criterion: (alpha 0, gate 1) is the baseline itself, at q = 1
    base = picks[str(BASELINE)]
    base_far = base["far"] if base else None  # no baseline pick: any pick beats it
    candidates = {
        k: p
        for k, p in picks.items()
        if p is not None and k not in (str(BASELINE), str(("track", 0.0, 1.0)))
    }
    adopted = [
        k for k, p in candidates.items() if base_far is None or p["far"] <= base_far - FAR_MARGIN
    ]
    best = min(candidates, key=lambda k: candidates[k]["far"], default=None)
    print(
        f"criterion: baseline {BASELINE} targets FAR {base_far}; "
        f"best other {best} FAR {candidates[best]['far'] if best else None}; "
        f"adopted (FAR <= baseline - {FAR_MARGIN}): {adopted or 'none'}"
    )

    out = {
        "segments": [
            {"name": s.name, "kind": s.kind, "fault": s.fault, "channels": s.channels} for s in segs
        ],
        "seeds": seeds,
        "spec": {"window": SPEC.window, "hop": SPEC.hop, "epochs": SPEC.epochs},
        "fits": [
            {
                "name": f.name,
                "seed": f.seed,
                "best_epoch": f.best_epoch,
                "n_train": f.n_train,
                "n_holdout": f.n_holdout,
                "thr_base": f.thr_base,
            }
            for f in fits
        ],
        "grid": grid,
        "tracking": tracking,
        "aggregation": aggregation,
        "targets": picks,
        "criterion": {
            "f1_min": F1_MIN,
            "mar_max": MAR_MAX,
            "far_margin": FAR_MARGIN,
            "baseline": str(BASELINE),
            "baseline_far": base_far,
            "adopted": adopted,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
