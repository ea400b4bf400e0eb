"""Every backbone × variant on SKAB (both per-file protocols) plus CPU inference speed.

    .venv/bin/python benchmarks/skab_variants.py [--seeds 0] [--epochs 30] \
        [--out /tmp/skab_variants.json] [--table-only]

A benchmark, not a test: it asserts nothing. Results and how to read them:
docs/evaluation.md, section "Every backbone × variant".

What it does (progress on stderr, the Markdown tables on stdout):

1. For every protocol (``skab-published``, ``skab-causal``) × backbone (``conv``,
   ``lstm``) × variant (``plain``, ``denoising``, ``sparse``, ``contractive``,
   ``variational``) it runs ``stream-ae evaluate ... --json`` in a subprocess and
   keeps the last stdout line (one JSON object). The decision settings are the
   ones docs/evaluation.md chose on the synthetic set (no test labels):

   * published: W=60, ``--threshold-quantile 0.999 --threshold-factor 4/3``;
   * causal: ``--window 20 --threshold-quantile 0.999 --threshold-factor 2
     --delay 10 --persistence 10/20``.

   Every variant keeps its default parameters
   (:data:`stream_ae.model.variants.VARIANT_DEFAULTS`); nothing here is tuned.
   "train s" is the CLI's per-seed ``train_seconds``: the wall time of the 34
   per-file fits (``fit_model``), summed, with torch's default thread count.

2. Inference speed per (backbone, variant): one model is fitted with
   :func:`stream_ae.evaluate.backtest.fit_model` on the windows of
   ``anomaly-free/anomaly-free.csv`` (W=60, hop 1, ``--timing-epochs`` epochs;
   the weights' values do not change the cost of a forward pass), then
   ``scorer.score`` is timed on float32 ``(256, 8, 60)`` batches of those raw
   windows with ``torch.set_num_threads(1)``: ``--warmup`` untimed calls, then
   ``--trials`` trials of ``--calls`` calls each; windows/s = 256 × calls ÷ the
   median trial time.

Results are cached in ``--out`` (JSON) keyed by configuration; a rerun skips
what is there (``--fresh`` ignores the cache). ``--table-only`` prints the tables
from the cache.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SKAB = ROOT.parent / "shared" / "data" / "skab"

ARCHITECTURES = ("conv", "lstm")
VARIANTS = ("plain", "denoising", "sparse", "contractive", "variational")
PROTOCOLS: dict[str, list[str]] = {
    "skab-published": ["--threshold-quantile", "0.999", "--threshold-factor", "1.3333333333333333"],
    "skab-causal": [
        "--window",
        "20",
        "--threshold-quantile",
        "0.999",
        "--threshold-factor",
        "2",
        "--delay",
        "10",
        "--persistence",
        "10/20",
    ],
}
BATCH, CHANNELS, TIMING_W = 256, 8, 60


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cli() -> list[str]:
    exe = Path(sys.executable).parent / "stream-ae"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("stream-ae")
    if found:
        return [found]
    return [sys.executable, "-c", "from stream_ae.cli import console_main; console_main()"]


def evaluate_command(protocol: str, arch: str, variant: str, args: argparse.Namespace) -> list[str]:
    cmd = [
        "evaluate",
        "--protocol",
        protocol,
        "--architecture",
        arch,
        "--variant",
        variant,
        "--seeds",
        args.seeds,
        "--epochs",
        str(args.epochs),
        *PROTOCOLS[protocol],
        "--json",
    ]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    return cmd


def run_evaluate(
    protocol: str, arch: str, variant: str, args: argparse.Namespace
) -> dict[str, Any]:
    cmd = cli() + evaluate_command(protocol, arch, variant, args)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    result: dict[str, Any] = json.loads(lines[-1])
    seeds = result.get("seeds", [])
    result["train_seconds_mean"] = (
        statistics.fmean(s["train_seconds"] for s in seeds) if seeds else None
    )
    result["command_wall_s"] = round(wall, 1)
    return result


def time_inference(arch: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from stream_ae.evaluate.backtest import ModelSpec, _spec, fit_model
    from stream_ae.readings_io import read_csv, to_windows

    root = args.data or DEFAULT_SKAB
    readings = read_csv(root / "anomaly-free" / "anomaly-free.csv", sep=";")
    spec = ModelSpec(
        architecture=arch, variant=variant, window=TIMING_W, hop=1, epochs=args.timing_epochs
    )
    torch.set_num_threads(args.fit_threads)
    t0 = time.perf_counter()
    scorer, _ = fit_model(readings, spec, period_ms=1000, seed=0)
    fit_s = time.perf_counter() - t0
    windows = to_windows(readings, _spec(readings, spec, 1000)).values.astype(np.float32)
    assert windows.shape[1:] == (CHANNELS, TIMING_W), windows.shape
    rng = np.random.default_rng(0)
    batches = [
        np.ascontiguousarray(windows[rng.choice(len(windows), BATCH, replace=False)])
        for _ in range(8)
    ]
    torch.set_num_threads(1)
    for i in range(args.warmup):
        scorer.score(batches[i % len(batches)])
    trials = []
    for _ in range(args.trials):
        t = time.perf_counter()
        for i in range(args.calls):
            scorer.score(batches[i % len(batches)])
        trials.append(time.perf_counter() - t)
    med = statistics.median(trials)
    return {
        "windows_per_s": BATCH * args.calls / med,
        "trial_s": trials,
        "fit_s": fit_s,
        "timing_epochs": args.timing_epochs,
        "torch_threads": 1,
        "batch": [BATCH, CHANNELS, TIMING_W],
    }


def fmt(v: Any, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def tables(cache: dict[str, Any]) -> str:
    out = []
    names = {
        "skab-published": "published rule (W=60, q 0.999, ×4/3; not causal)",
        "skab-causal": "causal rule (W=20, q 0.999, ×2, delay 10, 10-of-20; what runs live)",
    }
    for protocol in PROTOCOLS:
        out.append(f"**{protocol}** — {names[protocol]}\n")
        out.append(
            "| backbone | variant | F1 | FAR % | MAR % | NAB std | NAB LowFP | NAB LowFN "
            "| train s |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|")
        for arch in ARCHITECTURES:
            for variant in VARIANTS:
                r = cache.get("evaluate", {}).get(f"{protocol}/{arch}/{variant}")
                if r is None:
                    continue
                out.append(
                    f"| {arch} | {variant} | {fmt(r['f1'], 3)} | {fmt(r['far'], 2)} | "
                    f"{fmt(r['mar'], 2)} | {fmt(r['nab_standard'], 2)} | "
                    f"{fmt(r['nab_low_fp'], 2)} | {fmt(r['nab_low_fn'], 2)} | "
                    f"{fmt(r['train_seconds_mean'], 1)} |"
                )
        out.append("")
    inf = cache.get("inference", {})
    if inf:
        out.append("**CPU inference**, 1 torch thread, `scorer.score` on (256, 8, 60) float32\n")
        out.append("| backbone | variant | windows/s | ms per 256-window batch |")
        out.append("|---|---|---|---|")
        for arch in ARCHITECTURES:
            for variant in VARIANTS:
                r = inf.get(f"{arch}/{variant}")
                if r is None:
                    continue
                wps = r["windows_per_s"]
                out.append(f"| {arch} | {variant} | {wps:,.0f} | {1000 * BATCH / wps:.1f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--data", type=Path, default=None, help="SKAB folder")
    p.add_argument("--out", type=Path, default=Path("/tmp/skab_variants.json"))
    p.add_argument("--architectures", default=",".join(ARCHITECTURES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--no-timing", action="store_true", help="skip the inference timing")
    p.add_argument("--timing-epochs", type=int, default=3)
    p.add_argument("--fit-threads", type=int, default=2, help="torch threads for timing fits")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--fresh", action="store_true", help="ignore the cache in --out")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()

    cache: dict[str, Any] = {}
    if args.out.exists() and not args.fresh:
        cache = json.loads(args.out.read_text())
    cache.setdefault("evaluate", {})
    cache.setdefault("inference", {})

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(cache, indent=1, default=str))

    if not args.table_only:
        cache["meta"] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "seeds": args.seeds,
            "epochs": args.epochs,
        }
        archs = [a for a in args.architectures.split(",") if a]
        variants = [v for v in args.variants.split(",") if v]
        for protocol in [x for x in args.protocols.split(",") if x]:
            for arch in archs:
                for variant in variants:
                    key = f"{protocol}/{arch}/{variant}"
                    if key in cache["evaluate"]:
                        continue
                    say(f"evaluate {key}")
                    r = run_evaluate(protocol, arch, variant, args)
                    say(
                        f"  F1 {r['f1']:.3f} FAR {r['far']:.2f} MAR {r['mar']:.2f} "
                        f"NAB {r['nab_standard']:.2f} train {r['train_seconds_mean']:.1f}s "
                        f"(command {r['command_wall_s']}s)"
                    )
                    cache["evaluate"][key] = r
                    save()
        if not args.no_timing:
            for arch in archs:
                for variant in variants:
                    key = f"{arch}/{variant}"
                    if key in cache["inference"]:
                        continue
                    say(f"inference {key}")
                    r = time_inference(arch, variant, args)
                    say(f"  {r['windows_per_s']:,.0f} windows/s (fit {r['fit_s']:.1f}s)")
                    cache["inference"][key] = r
                    save()
    print(tables(cache))


if __name__ == "__main__":
    main()
