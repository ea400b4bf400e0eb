"""Windowing with many assets: throughput and memory (no broker, no model).

    .venv/bin/python benchmarks/many_assets.py [--assets 10000] [--steps 200]

Feeds ``assets`` × ``steps`` wide readings (8 channels, time-major, 1 s period)
through the scorer's Windower in batches of a few steps for every asset, and
prints readings/s, windows emitted, the bytes of numpy state the grids hold, and
the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from stream_ae.windowing import GridSpec, Windower


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--steps-per-batch", type=int, default=2)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--hop", type=int, default=16)
    args = ap.parse_args()
    c = 8
    spec = GridSpec(
        period_ms=1000,
        size=args.window,
        hop=args.hop,
        lateness_ms=5000,
        fill_limit=3,
        n_channels=c,
    )
    w = Windower(spec)
    ids = [f"asset-{i:05d}" for i in range(args.assets)]
    rng = np.random.default_rng(0)
    t0_ms = 1_764_000_000_000
    windows = readings = 0
    busy = 0.0
    for s0 in range(0, args.steps, args.steps_per_batch):
        k = min(args.steps_per_batch, args.steps - s0)
        n = k * args.assets
        ts = np.repeat(t0_ms + np.arange(s0, s0 + k, dtype=np.int64) * 1000, args.assets)
        vals = rng.normal(size=(n, c))
        t = time.perf_counter()
        out = w.process(
            ids * k,
            np.zeros(n, np.int64),
            np.arange(readings, readings + n),
            ts,
            vals,
            now_ms=t0_ms + s0 * 1000,
        )
        busy += time.perf_counter() - t
        windows += len(out.windows)
        readings += n
    held = sum(
        v.nbytes for g in w._grids.values() for v in vars(g).values() if isinstance(v, np.ndarray)
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"assets={args.assets} readings={readings} windows={windows}")
    print(f"windowing readings/s={readings / busy:,.0f} (busy {busy:.1f} s)")
    print(
        f"grid arrays held={held / 1e6:.1f} MB ({held / args.assets / 1e3:.1f} kB/asset), "
        f"process peak RSS={rss_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
