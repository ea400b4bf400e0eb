"""Where one ``Scorer.score()`` call spends its time: the whole call against the model pass.

    python benchmarks/score_phases.py [--device cuda] [--architecture conv] \
        [--precisions float32,float16] [--batches 1,256,4096] [--calls 100]

A benchmark, not a test: it asserts nothing. For each precision (float16 needs
CUDA) and batch size B it prints the mean milliseconds of

* ``score``: the whole call (input checks, scaling in numpy, the model pass,
  scores and shares), as the live scorer makes it;
* ``model pass``: :meth:`Scorer.chunk_errors` alone on already-scaled windows
  (copy to the device, the model, per-channel errors back on the host).

The difference is host work that no faster model or runtime removes. Same
artifact as ``benchmarks/runtimes.py`` (random weights; speed does not depend on
them). Figures: docs/benchmarks.md ("On a GPU").
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from runtimes import _make_artifact

from stream_ae.model.artifact import load_artifact
from stream_ae.model.scorer import Scorer, resolve_device


def _mean_ms(fn: object, calls: int) -> float:
    assert callable(fn)
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e3


def _phases(scorer: Scorer, windows: np.ndarray, calls: int) -> tuple[float, float]:
    scaled = scorer.scaler.transform(windows)

    def model_pass() -> None:
        with torch.inference_mode():
            scorer.chunk_errors(scaled)

    return _mean_ms(lambda: scorer.score(windows), calls), _mean_ms(model_pass, calls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--architecture", default="conv", choices=["conv", "lstm"])
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--precisions", default="float32,float16", help="float16 is skipped off CUDA")
    p.add_argument("--batches", default="1,256,4096")
    p.add_argument("--calls", type=int, default=100, help="timed calls per cell (after 10 warm-up)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = [s for s in args.precisions.split(",") if s]
    if device.type != "cuda" and "float16" in precisions:
        precisions.remove("float16")
    rng = np.random.default_rng(1)
    print(
        f"# {args.architecture} C={args.channels} W={args.window}, device {device}, "
        f"torch {torch.__version__}, {args.threads} thread(s), mean of {args.calls} calls"
    )
    print("| precision | B | score ms | model pass ms | host share |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="stream-ae-phases-") as tmp:
        vdir = _make_artifact(Path(tmp), args.architecture, args.channels, args.window, 0)
        for precision in precisions:
            scorer = load_artifact(
                vdir, device=str(device), runtime="torch", precision=precision
            ).scorer
            for b in (int(x) for x in args.batches.split(",")):
                raw = rng.standard_normal((b, args.channels, args.window)) * 2 + 5
                score_ms, pass_ms = _phases(scorer, raw.astype(np.float32), args.calls)
                share = 1 - pass_ms / score_ms
                print(
                    f"| {precision} | {b} | {score_ms:.3f} | {pass_ms:.3f} | {share:.0%} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
