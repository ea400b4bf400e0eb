"""Tune the SKAB backtest knobs on synthetic faults, then run the real protocols once.

Never looks at the labelled SKAB files while tuning. The validation set is built
only from ``anomaly-free/anomaly-free.csv`` (9,405 rows of normal operation):

* ``--segments`` overlapping segments of ``--seg-rows`` rows (default 20 × 1,100,
  evenly spaced; a labelled SKAB file averages 1,100 rows);
* in each, rows ``[0, 400)`` stay clean and are the fitting part (as in the SKAB
  split); one fault is injected into the rest: it starts at a uniform row in
  ``[450, 650)`` and lasts a uniform 250–500 rows (clipped at the segment end), so
  about half of the test part is anomalous, like SKAB's 53.7 % (README);
* fault kinds cycle step / ramp / variance / multi-channel shift / drift, sizes
  in units of each channel's std over the segment's own rows ``[0, 400)``;
* labels are 1 on the fault rows; changepoints at the fault's first row and at
  the first row after it (when inside the segment).

``tune`` fits one model per (segment, W, seed) with
:func:`stream_ae.evaluate.backtest.fit_model` and scores the test part with
:func:`~stream_ae.evaluate.backtest.score_rows` (both rules), then re-decides the
cached window scores for every (threshold quantile, factor, delay, k-of-n)
setting. The re-decision is checked to reproduce ``score_rows``'s predictions
and ``fit_model``'s threshold exactly before the grid is searched. Metrics are
pooled over segments with :mod:`stream_ae.evaluate.metrics`.

``real`` runs the three SKAB protocols with given settings through the same
backtest functions (``fit_model``, ``score_rows``,
``stream_file``) plus optional k-of-n smoothing for the causal rule.

    .venv/bin/python benchmarks/skab_tuning.py tune --seeds 0
    .venv/bin/python benchmarks/skab_tuning.py real --seeds 0,1,2 \
        --published W,q,f --causal W,q,f,delay,k,n
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream_ae.decide.threshold import calibrate_quantile
from stream_ae.evaluate.backtest import (
    DEFAULT_SKAB,
    SKAB_TRAIN_ROWS,
    ModelSpec,
    Rule,
    _rows,
    _spec,
    fit_model,
    score_rows,
    skab_files,
    skab_readings,
)
from stream_ae.evaluate.decisions import causal_rule, published_rule
from stream_ae.evaluate.metrics import Evaluation, evaluate_file
from stream_ae.evaluate.smoothing import k_of_n
from stream_ae.readings_io import Readings, read_csv, to_windows

PERIOD_MS = 1000
KINDS = ("step", "ramp", "variance", "multi_shift", "drift")

# grid (kept small: 2 shared cores)
QUANTILES = (0.99, 0.995, 0.999)
FACTORS = (1.0, 1.15, 4 / 3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0)
DELAYS = (0, 10, 30)
SMOOTHING = ((1, 1), (3, 5), (5, 10), (10, 20), (20, 30))

# targets (the published Conv-AE FAR for the published rule; the brief's for causal)
FAR_TARGET = {"published": 13.5, "causal": 20.0}
# the issue's F1 floor and MAR ceiling per rule: the ``targets`` pick is the lowest
# synthetic FAR among settings that meet both on the synthetic set (added in the
# second tuning round, when the FAR-constrained pick had proved degenerate)
TARGET_F1_MAR = {"published": (0.83, 23.0), "causal": (0.78, 25.0)}


# --------------------------------------------------------------------------- synthetic set


@dataclass
class Segment:
    name: str
    kind: str
    readings: Readings  # whole segment, labels + changepoints filled in
    fault: tuple[int, int]
    channels: list[str]


def inject(
    values: np.ndarray, kind: str, s: int, e: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """Add one fault of ``kind`` on rows [s, e) of a copy of ``values`` (N, C)."""
    out = values.copy()
    n_ch = values.shape[1]
    std = np.nanstd(values[:SKAB_TRAIN_ROWS], axis=0)
    std = np.where(std > 0, std, 1.0)
    length = e - s
    t = np.arange(length, dtype=np.float64)

    def sign() -> float:
        return float(rng.choice([-1.0, 1.0]))

    if kind == "multi_shift":
        chans = sorted(rng.choice(n_ch, size=int(rng.integers(3, 6)), replace=False).tolist())
    elif kind == "variance":
        chans = sorted(rng.choice(n_ch, size=int(rng.integers(1, 4)), replace=False).tolist())
    else:
        chans = sorted(rng.choice(n_ch, size=int(rng.integers(1, 3)), replace=False).tolist())
    for c in chans:
        sd = std[c]
        if kind == "step":
            amp = math.exp(rng.uniform(math.log(1.5), math.log(6.0)))
            out[s:e, c] += sign() * amp * sd
        elif kind == "multi_shift":
            amp = rng.uniform(1.0, 3.0)
            out[s:e, c] += sign() * amp * sd
        elif kind == "ramp":
            amp = rng.uniform(2.0, 8.0)  # reached at the fault's last row
            out[s:e, c] += sign() * amp * sd * t / max(length - 1, 1)
        elif kind == "drift":
            amp = rng.uniform(2.0, 6.0)
            tau = length / 3.0
            out[s:e, c] += sign() * amp * sd * (1.0 - np.exp(-t / tau))
        elif kind == "variance":
            factor = rng.uniform(2.0, 4.0)  # std multiplied by this
            out[s:e, c] += rng.normal(0.0, math.sqrt(factor**2 - 1.0) * sd, size=length)
        else:
            raise ValueError(kind)
    return out, chans


def build_synthetic(root: Path, n_segments: int, seg_rows: int, seed: int = 12345) -> list[Segment]:
    af = read_csv(root / "anomaly-free" / "anomaly-free.csv", sep=";", default_asset="af")
    n = len(af)
    starts = np.linspace(0, n - seg_rows, n_segments).round().astype(int)
    out = []
    for i, st in enumerate(starts.tolist()):
        rng = np.random.default_rng(seed + i)
        mask = np.zeros(n, bool)
        mask[st : st + seg_rows] = True
        seg = af.select(mask)
        kind = KINDS[i % len(KINDS)]
        s = int(rng.integers(450, 650))
        e = min(s + int(rng.integers(250, 501)), seg_rows)
        values, chans = inject(seg.values, kind, s, e, rng)
        labels = np.zeros(seg_rows, np.int8)
        labels[s:e] = 1
        cps = np.zeros(seg_rows, np.int8)
        cps[s] = 1
        if e < seg_rows:
            cps[e] = 1
        name = f"seg{i:02d}@{st}:{kind}"
        rd = Readings([name] * seg_rows, seg.ts_ms, values, seg.channels, labels, cps)
        out.append(Segment(name, kind, rd, (s, e), [seg.channels[c] for c in chans]))
    return out


# --------------------------------------------------------------------------- decisions


def holdout_scores(train: Readings, scorer: Any, spec: ModelSpec) -> np.ndarray:
    """Scores of the windows ``fit_autoencoder`` held out (its last ``holdout_fraction``)."""
    w = to_windows(train, _spec(train, spec, PERIOD_MS)).values
    n_hold = math.ceil(len(w) * spec.holdout_fraction)
    return np.asarray(scorer.score(w[len(w) - n_hold :]).scores, np.float64)


def threshold_of(hold: np.ndarray, q: float, f: float) -> float:
    return calibrate_quantile(hold, q).value * f


def decide(
    rule: str,
    row_buckets: np.ndarray,
    starts: np.ndarray,
    scores: np.ndarray,
    thr: float,
    window: int,
    *,
    delay: int = 0,
    k: int = 1,
    n: int = 1,
) -> np.ndarray:
    """``score_rows``'s decision on cached window scores (+ optional k-of-n smoothing)."""
    anomalous = scores > thr
    if rule == "causal":
        if (k, n) != (1, 1):
            anomalous = k_of_n(anomalous, k, n, starts=starts)
        return causal_rule(row_buckets, starts, anomalous, window, delay=delay)
    if (k, n) != (1, 1) or delay:
        raise ValueError("the published rule takes no delay or smoothing")
    row_of_bucket = {int(b): i for i, b in enumerate(row_buckets.tolist())}
    per_row = np.zeros(max(len(row_buckets) - window + 1, 0), bool)
    for b, a in zip(starts.tolist(), anomalous.tolist(), strict=True):
        j = row_of_bucket.get(int(b))
        if j is not None and j < len(per_row):
            per_row[j] = a
    return published_rule(per_row, len(row_buckets), window)


@dataclass
class Cached:
    """One fitted model's test-part window scores (what the grid re-decides)."""

    name: str
    window: int
    seed: int
    hold: np.ndarray
    starts: np.ndarray
    scores: np.ndarray
    test: Readings


def fit_and_score(
    name: str,
    readings: Readings,
    window: int,
    seed: int,
    epochs: int,
    architecture: str = "conv",
    holdout_fraction: float = 0.2,
    error_norm: str = "none",
) -> Cached:
    train, test = _rows(readings, 0, SKAB_TRAIN_ROWS), _rows(readings, SKAB_TRAIN_ROWS)
    spec = ModelSpec(
        architecture=architecture,
        window=window,
        hop=1,
        epochs=epochs,
        holdout_fraction=holdout_fraction,
        error_norm=error_norm,
    )
    scorer, thr = fit_model(train, spec, period_ms=PERIOD_MS, seed=seed)
    hold = holdout_scores(train, scorer, spec)
    assert math.isclose(threshold_of(hold, spec.threshold_quantile, 1.0), thr, rel_tol=1e-9), name
    buckets = test.ts_ms // PERIOD_MS
    rules: tuple[Rule, Rule] = ("published", "causal")
    for rule in rules:
        windows, scores, _, pred, _ = score_rows(
            test,
            scorer,
            thr,
            spec,
            period_ms=PERIOD_MS,
            rule=rule,
        )
        starts = windows.start_ms // PERIOD_MS
        mine = decide(rule, buckets, starts, scores, thr, window)
        assert np.array_equal(mine, pred), f"{name}: re-decision differs from score_rows ({rule})"
    return Cached(name, window, seed, hold, starts, np.asarray(scores, np.float64), test)


def pooled(
    cached: list[Cached], rule: str, q: float, f: float, delay: int, k: int, n: int
) -> dict[str, Any]:
    total = Evaluation()
    for c in cached:
        thr = threshold_of(c.hold, q, f)
        pred = decide(
            rule,
            c.test.ts_ms // PERIOD_MS,
            c.starts,
            c.scores,
            thr,
            c.window,
            delay=delay,
            k=k,
            n=n,
        )
        assert c.test.labels is not None
        total = total + evaluate_file(
            c.test.labels, pred, c.test.ts_ms, changepoints=c.test.changepoints
        )
    s = total.summary()
    return {
        "f1": s["f1"],
        "far": s["far"],
        "mar": s["mar"],
        "nab_standard": s["nab_standard"],
        "detected": s["events"]["detected"],
        "events": s["events"]["n"],
    }


def objective(rule: str, m: dict[str, Any]) -> float:
    """Score to maximise: F1 for the published rule, F1 + NAB_standard/100 for the
    causal rule (its targets include NAB standard ≥ 28)."""
    if rule == "published":
        return float(m["f1"])
    return float(m["f1"]) + (m["nab_standard"] or 0.0) / 100.0


def pick(rule: str, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Two picks per rule, both printed and stored:
    ``constrained`` — max objective subject to synthetic FAR ≤ the FAR target
    (13.5 % published, 20 % causal), the criterion fixed first;
    ``free`` — max objective without the FAR constraint (used when the
    constrained pick gives up most of the recall; see docs/evaluation.md)."""
    cand = [r for r in rows if r["rule"] == rule]
    ok = [r for r in cand if r["far"] <= FAR_TARGET[rule]] or cand
    f1_min, mar_max = TARGET_F1_MAR[rule]
    meets = [r for r in cand if r["f1"] >= f1_min and r["mar"] <= mar_max]
    return {
        "targets": min(meets, key=lambda r: r["far"]) if meets else None,
        "constrained": max(ok, key=lambda r: objective(rule, r)),
        "free": max(cand, key=lambda r: objective(rule, r)),
        "free_no_delay": max(
            (r for r in cand if r["delay"] == 0), key=lambda r: objective(rule, r)
        ),
    }


# --------------------------------------------------------------------------- commands


def cmd_tune(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    segs = build_synthetic(args.data, args.segments, args.seg_rows)
    for s in segs:
        print(f"{s.name}: fault rows {s.fault} on {s.channels}", file=sys.stderr)
    windows = [int(w) for w in args.windows.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    norms = [x.strip() for x in args.error_norms.split(",")]
    cache: dict[tuple[int, str], list[Cached]] = {(w, e): [] for w in windows for e in norms}
    t0 = time.perf_counter()
    for w, e, seed, seg in itertools.product(windows, norms, seeds, segs):
        cache[w, e].append(
            fit_and_score(
                seg.name,
                seg.readings,
                w,
                seed,
                args.epochs,
                args.architecture,
                args.holdout_fraction,
                e,
            )
        )
        print(
            f"  fitted W={w} norm={e} seed={seed} {seg.name} ({time.perf_counter() - t0:.0f}s)",
            file=sys.stderr,
        )
    rows = []
    for w, e in itertools.product(windows, norms):
        c = cache[w, e]
        for q, f in itertools.product(QUANTILES, FACTORS):
            base = {"W": w, "norm": e, "q": q, "f": round(f, 4)}
            rows.append(
                {"rule": "published", **base, "delay": 0, "k": 1, "n": 1}
                | pooled(c, "published", q, f, 0, 1, 1)
            )
            for d, (k, n) in itertools.product(DELAYS, SMOOTHING):
                rows.append(
                    {"rule": "causal", **base, "delay": d, "k": k, "n": n}
                    | pooled(c, "causal", q, f, d, k, n)
                )
    best = {}
    for rule in ("published", "causal"):
        best[rule] = pick(rule, rows)
        base = next(
            (
                r
                for r in rows
                if r["rule"] == rule
                and (r["W"], r["norm"], r["q"], r["f"], r["delay"], r["k"])
                == (60, "none", 0.995, 1.0, 0, 1)
            ),
            None,
        )
        if base is not None:
            print(f"\n{rule}: default      {fmt(base)}")
        for how, r in best[rule].items():
            print(f"{rule}: {how:<12} {fmt(r) if r else 'none meets the F1/MAR targets'}")
    out = {
        "segments": [
            {"name": s.name, "kind": s.kind, "fault": s.fault, "channels": s.channels} for s in segs
        ],
        "seeds": seeds,
        "epochs": args.epochs,
        "architecture": args.architecture,
        "holdout_fraction": args.holdout_fraction,
        "error_norms": norms,
        "grid": rows,
        "best": best,
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"grid ({len(rows)} settings) written to {args.out}")


def fmt(r: dict[str, Any]) -> str:
    nab = r.get("nab_standard")
    return (
        f"W={r['W']} norm={r.get('norm', 'none')} q={r['q']} f={r['f']} delay={r['delay']} "
        f"k/n={r['k']}/{r['n']}: "
        f"F1 {r['f1']:.3f} FAR {r['far']:.1f} MAR {r['mar']:.1f} "
        f"NAB {'-' if nab is None else f'{nab:.1f}'}"
    )


def _settings(text: str, n_fields: int) -> list[float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != n_fields:
        raise SystemExit(f"expected {n_fields} comma-separated values, got {text!r}")
    return parts


def cmd_real(args: argparse.Namespace) -> None:
    """The real protocols, once, with the chosen settings (no tuning happens here)."""
    from stream_ae.evaluate.backtest import stream_file

    settings: list[tuple[str, str, int, float, float, int, int, int]] = []
    w, q, f = _settings(args.published, 3)
    settings.append(("published", "published", int(w), q, f, 0, 1, 1))
    for i, text in enumerate(args.causal):
        w, q, f, d, k, n = _settings(text, 6)
        settings.append((f"causal_{i}", "causal", int(w), q, f, int(d), int(k), int(n)))
    seeds = [int(s) for s in args.seeds.split(",")]
    paths = skab_files(args.data)
    keys = ("f1", "far", "mar", "nab_standard", "nab_low_fp", "nab_low_fn")
    results: dict[str, Any] = {name: [] for name, *_ in settings}
    for seed in seeds:
        totals = {name: Evaluation() for name, *_ in settings}
        for p in paths:
            rd = skab_readings(p)
            train, test = _rows(rd, 0, SKAB_TRAIN_ROWS), _rows(rd, SKAB_TRAIN_ROWS)
            fits: dict[int, tuple[Any, np.ndarray]] = {}
            for name, rule, w, q, f, d, k, n in settings:
                spec = ModelSpec(
                    window=w,
                    hop=1,
                    epochs=args.epochs,
                    threshold_quantile=q,
                    threshold_factor=f,
                    delay=d,
                    error_norm=args.error_norm,
                )
                if w not in fits:  # the fit does not depend on q, f, delay: one per W
                    scorer, thr0 = fit_model(train, spec, period_ms=PERIOD_MS, seed=seed)
                    fits[w] = (scorer, holdout_scores(train, scorer, spec))
                    assert math.isclose(threshold_of(fits[w][1], q, f), thr0, rel_tol=1e-9)
                scorer, hold = fits[w]
                thr = threshold_of(hold, q, f)
                windows, scores, _, pred, counted = score_rows(
                    test,
                    scorer,
                    thr,
                    spec,
                    period_ms=PERIOD_MS,
                    rule=rule,  # type: ignore[arg-type]
                )
                if rule == "causal" and (k, n) != (1, 1):
                    pred = decide(
                        "causal",
                        test.ts_ms // PERIOD_MS,
                        windows.start_ms // PERIOD_MS,
                        np.asarray(scores),
                        thr,
                        w,
                        delay=d,
                        k=k,
                        n=n,
                    )
                assert test.labels is not None
                totals[name] = totals[name] + evaluate_file(
                    test.labels, pred, test.ts_ms, changepoints=test.changepoints, mask=counted
                )
            print(f"  seed {seed} {p.parent.name}/{p.name}", file=sys.stderr, flush=True)
        for name, *_ in settings:
            s = totals[name].summary()
            results[name].append({"seed": seed} | {k2: s[k2] for k2 in keys})
            print(f"{name} seed {seed}: {fmt_m(results[name][-1])}", flush=True)
    if args.streaming:
        af_path = args.data / "anomaly-free" / "anomaly-free.csv"
        af = read_csv(af_path, sep=";")
        for seed in [int(s) for s in args.streaming_seeds.split(",")]:
            sfits: dict[int, tuple[Any, np.ndarray]] = {}
            for name, rule, w, q, f, d, k, n in settings:
                if rule != "causal":
                    continue
                spec = ModelSpec(
                    window=w,
                    hop=1,
                    epochs=args.epochs,
                    threshold_quantile=q,
                    threshold_factor=f,
                    delay=d,
                    error_norm=args.error_norm,
                )
                if w not in sfits:
                    scorer, thr0 = fit_model(af, spec, period_ms=PERIOD_MS, seed=seed)
                    sfits[w] = (scorer, holdout_scores(af, scorer, spec))
                    assert math.isclose(threshold_of(sfits[w][1], q, f), thr0, rel_tol=1e-9)
                scorer, hold = sfits[w]
                thr = threshold_of(hold, q, f)
                for rb in (0.0, 300.0):
                    total = Evaluation()
                    for p in paths:
                        r = stream_file(p, scorer, thr, spec, rebaseline_s=rb)
                        pred = r.pred
                        if (k, n) != (1, 1):
                            starts = (r.window_end_ms - w * PERIOD_MS) // PERIOD_MS
                            pred = decide(
                                "causal",
                                r.ts_ms // PERIOD_MS,
                                starts,
                                np.asarray(r.window_scores),
                                thr,
                                w,
                                delay=d,
                                k=k,
                                n=n,
                            )
                        total = total + evaluate_file(
                            r.labels, pred, r.ts_ms, changepoints=r.changepoints
                        )
                    s = total.summary()
                    key = f"streaming_{name}_" + ("plain" if rb == 0 else "rebaseline_300s")
                    results.setdefault(key, []).append({"seed": seed} | {k2: s[k2] for k2 in keys})
                    print(f"{key} seed {seed}: {fmt_m(results[key][-1])}", flush=True)
    results["settings"] = {
        name: {"rule": rule, "W": w, "q": q, "f": f, "delay": d, "k": k, "n": n}
        for name, rule, w, q, f, d, k, n in settings
    }
    results["seeds"], results["epochs"] = seeds, args.epochs
    results["error_norm"] = args.error_norm
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))
    print(f"written to {args.out}")


def fmt_m(m: dict[str, Any]) -> str:
    return " ".join(f"{k} {'-' if v is None else round(v, 3)}" for k, v in m.items())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tune", help="grid search on the synthetic set (anomaly-free.csv only)")
    t.add_argument("--data", type=Path, default=DEFAULT_SKAB)
    t.add_argument("--segments", type=int, default=20)
    t.add_argument("--seg-rows", type=int, default=1100)
    t.add_argument("--windows", default="20,40,60")
    t.add_argument("--seeds", default="0")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--architecture", default="conv", help="conv (default) or lstm")
    t.add_argument("--holdout-fraction", type=float, default=0.2)
    t.add_argument(
        "--error-norms", default="none", help="comma-separated train.error_norm values to try"
    )
    t.add_argument("--out", type=Path, default=Path("/tmp/skab_tuning/tune.json"))
    t.set_defaults(func=cmd_tune)
    r = sub.add_parser("real", help="run the SKAB protocols once with given settings")
    r.add_argument("--data", type=Path, default=DEFAULT_SKAB)
    r.add_argument("--published", required=True, help="W,q,f")
    r.add_argument("--causal", required=True, action="append", help="W,q,f,delay,k,n (repeatable)")
    r.add_argument("--seeds", default="0")
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument("--error-norm", default="none", help="train.error_norm for every fit")
    r.add_argument("--streaming", action="store_true", help="also skab-streaming (causal settings)")
    r.add_argument("--streaming-seeds", default="0")
    r.add_argument("--out", type=Path, default=Path("/tmp/skab_tuning/real.json"))
    r.set_defaults(func=cmd_real)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
