"""Scoring speed of each model runtime: eager torch, TorchScript, ONNX Runtime.

    python benchmarks/runtimes.py [--architecture conv] [--channels 8] [--window 64] \
        [--batches 1,16,256] [--threads 1] [--device cpu] [--half] [--seconds 3] \
        [--rounds 3] [--exporter auto]

A benchmark, not a test: it asserts nothing about speed. Figures and how to read
them: docs/benchmarks.md ("Model runtimes").

What it does (progress on stderr, a markdown table on stdout):

1. Builds the model (``--architecture``, default hyperparameters, random
   weights from ``--seed``: speed does not depend on the weights) for
   ``--channels`` x ``--window`` windows and saves it as an artifact in a
   temporary directory.
2. Exports it with ``stream_ae.model.export.export_model`` to TorchScript and
   ONNX (each export is checked against eager torch, as always) on
   ``--device``; ``--half`` exports float16 instead (CUDA only).
3. Loads one scorer per runtime with ``load_artifact(..., runtime=...)``.
4. For each batch size B: random raw windows ``(B, C, W)``; per runtime a
   warm-up (5 calls), then ``Scorer.score`` is timed call by call
   (``perf_counter``; the result is on the host when it returns). The runtimes
   take turns in ``--rounds`` rounds of ``--seconds / --rounds`` each, so a
   change in machine load hits all of them alike.

Reported per runtime and B: windows/s (= B x calls / time spent in the calls),
the median and 95th percentile of one call's latency, and windows/s relative
to eager torch. A call is the whole ``score()``: input checks, scaling (numpy),
the model pass in the runtime, and the scores and shares (numpy), the same for
every runtime.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.errors import StreamAEError
from stream_ae.model.artifact import TrainedModel, load_artifact, new_metadata, save_artifact
from stream_ae.model.export import export_model
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.scorer import Scorer, resolve_device
from stream_ae.model.variants import build_variant_model

RUNTIMES = ("torch", "torchscript", "onnxruntime")
FORMAT_OF = {"torchscript": "torchscript", "onnxruntime": "onnx"}


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _make_artifact(root: Path, architecture: str, channels: int, window: int, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_variant_model(architecture, channels, window, {})
    rng = np.random.default_rng(seed)
    scaler = ChannelScaler(mean=rng.normal(0, 10, channels), std=rng.uniform(0.5, 3, channels))
    meta = new_metadata(
        model,
        architecture=architecture,
        hparams={},
        channels=[f"ch{i}" for i in range(channels)],
        sample_period_ms=1000,
        window=window,
        hop=max(1, window // 4),
        scaler=scaler,
        threshold=ThresholdSpec("quantile", {"q": 0.999}, 1.0),
    )
    return save_artifact(TrainedModel(model, scaler, meta), root)


def _time_calls(scorer: Scorer, windows: np.ndarray, seconds: float, out: list[float]) -> None:
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        scorer.score(windows)
        t1 = time.perf_counter()
        out.append(t1 - t0)
        if t1 >= deadline and len(out) >= 3:
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--architecture", default="conv", choices=["conv", "lstm"])
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--batches", default="1,16,256", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--half", action="store_true", help="float16 exports (CUDA only)")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per runtime and B")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"])
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.half and device.type != "cuda":
        p.error("--half runs on CUDA only: add --device cuda")
    precision = "float16" if args.half else "float32"
    batches = [int(b) for b in args.batches.split(",")]
    names = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="stream-ae-runtimes-") as tmp:
        vdir = _make_artifact(Path(tmp), args.architecture, args.channels, args.window, args.seed)
        for name in list(names):
            if name in FORMAT_OF:
                t0 = time.perf_counter()
                try:
                    res = export_model(
                        vdir,
                        FORMAT_OF[name],
                        half=args.half,
                        device=str(device),
                        exporter=args.exporter,
                    )
                except StreamAEError as exc:  # e.g. float16 ONNX without onnxruntime-gpu
                    _progress(f"skipping {name}: {exc}")
                    names.remove(name)
                    continue
                _progress(
                    f"exported {res.path.name} in {time.perf_counter() - t0:.1f} s "
                    f"({res.record.exporter}); {res.record.check.summary()}"
                )
        scorers = {
            name: load_artifact(vdir, device=str(device), runtime=name, precision=precision).scorer
            for name in names
        }
        rng = np.random.default_rng(args.seed + 1)
        mean = np.asarray(scorers[names[0]].scaler.mean, np.float32)[:, None]
        std = np.asarray(scorers[names[0]].scaler.std, np.float32)[:, None]
        rows = []
        for b in batches:
            scaled = rng.standard_normal((b, args.channels, args.window)).astype(np.float32)
            windows = (scaled * std + mean).astype(np.float32)
            lat: dict[str, list[float]] = {n: [] for n in names}
            for name in names:
                for _ in range(5):
                    scorers[name].score(windows)
            for _ in range(args.rounds):
                for name in names:
                    _time_calls(scorers[name], windows, args.seconds / args.rounds, lat[name])
            for name in names:
                arr = np.asarray(lat[name])
                rows.append(
                    (name, b, b * arr.size / arr.sum(), np.median(arr), np.quantile(arr, 0.95))
                )
            _progress(f"B={b} done")

    providers = onnxruntime.get_available_providers()
    base = {b: wps for name, b, wps, _, _ in rows if name == "torch"}
    now = datetime.now(UTC)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(
        f"# {now:%Y-%m-%d %H:%M} UTC; {_cpu_name()}, {os.cpu_count()} CPUs; GPU: {gpu}; "
        f"device {device}, {precision}; threads {args.threads}; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__} ({', '.join(providers)}); "
        f"{args.architecture} C={args.channels} "
        f"W={args.window}; {args.seconds:g} s per cell in {args.rounds} rounds"
    )
    print()
    print("| runtime | B | windows/s | median ms/batch | p95 ms/batch | vs torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, b, wps, med, p95 in rows:
        rel = f"{wps / base[b]:.2f}x" if b in base else "-"
        print(f"| {name} | {b} | {wps:,.0f} | {med * 1e3:.3f} | {p95 * 1e3:.3f} | {rel} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
