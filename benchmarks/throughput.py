"""End-to-end scorer throughput against a bare confluent-kafka consumer, same run.

    python benchmarks/throughput.py [--readings 1000000] [--assets 1000] \
        [--batch-size N] [--partitions 6] [--bootstrap HOST:PORT] \
        [--threads N] [--profile FILE]

A benchmark, not a test: it asserts nothing about speed. Figures and how to read
them: docs/benchmarks.md.

What it does (progress on stderr, figures on stdout, ``ratio=<value>`` last):

1. Starts a private local Kafka broker on free ports with a temporary state dir
   (or uses ``--bootstrap``), creates a uniquely named readings topic.
2. Simulates ``--assets`` pumps (8 channels): a short stretch of normal
   operation trains a small conv autoencoder (W=64, H=16, CPU, few epochs) in a
   child process (so this process holds what a scorer process holds); the next
   ``ceil(readings / assets)`` steps are produced to the topic as wide JSON
   readings (one message per reading, key = asset id).
3. Bare loop: a ``confluent_kafka.Consumer`` with a fresh group, the same fetch
   settings as ``stream_ae.io.kafka.InputConsumer``, ``consume(num_messages=
   batch size)``, touching ``.value()`` once per message and counting, until
   every produced message was read. Run before and after the scorer; the
   faster of the two is the reference.
4. Scorer: ``ScorerService(settings, binding).run()`` in this process, fresh
   group, same topic. It stops itself (``request_stop`` from ``on_output``) once
   the pipeline has seen every produced message.
5. Model alone: ``scorer.score`` on random float32 ``(1024, 8, 64)`` batches.

Timing (both consumers measured the same way): the clock starts when the first
non-empty batch comes back from ``consume`` (group join, assignment and the
first fetch are excluded) and stops when the last message has been processed:
for the bare loop when it is counted, for the scorer when the ``on_output``
callback of the batch that completes the topic runs (its events are produced
and ``poll``-ed; the periodic flush+commit every ``commit_interval_s`` within
the interval is included; the final commit/close after stopping is not).
readings/s = readings ÷ that interval.

Stage times of the scorer come from light wrappers (one ``perf_counter`` pair
per batch, per stage) installed on this process's objects only: consume, decode,
windowing, model, decide (``Pipeline._score`` minus the model), publish
(produce + poll + on_output), commit (flush + commit); the rest of
``Pipeline.step`` (partition/offset extraction, metrics) is "step other".
Per stage the main thread's CPU time is kept too, and a ``gc.callbacks`` hook
adds up the time the cyclic garbage collector ran during the interval (that time
is inside the stages, mostly decode). ``--profile FILE`` runs the scorer under
cProfile (slower: use it for where time goes, not for the rate).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import multiprocessing
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

W, H, CHANNELS = 64, 16, 8
MODEL_BATCH = 1024


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- timing helpers -----------------------------------------------------------------------


class Stages:
    """Accumulated wall time and main-thread CPU time per stage (seconds), call counts."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.gc: dict[str, float] = {}
        self.active = True

    def add(self, name: str, wall: float, cpu: float) -> None:
        if self.active:
            self.seconds[name] += wall
            self.cpu[name] += cpu
            self.calls[name] += 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        pc, tt = time.perf_counter, time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = pc(), tt()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, pc() - t0, tt() - c0)

        return timed


# -- set-up -------------------------------------------------------------------------------


def start_broker(args: argparse.Namespace) -> tuple[str, Callable[[], None]]:
    if args.bootstrap:
        return args.bootstrap, lambda: None
    from stream_ae.io import local_broker as lb

    state = Path(tempfile.mkdtemp(prefix="stream_ae_bench_"))
    port = lb.free_port()
    controller = lb.free_port()
    while controller == port:
        controller = lb.free_port()
    cfg = lb.BrokerConfig(state_dir=state, port=port, controller_port=controller, heap="1g")
    say(f"starting a private Kafka broker on 127.0.0.1:{port} (state {state})")
    t0 = time.monotonic()
    info = lb.start(cfg, timeout_s=120)
    say(f"broker ready in {time.monotonic() - t0:.1f} s")

    def stop() -> None:
        say("stopping the private broker")
        try:
            lb.stop(cfg, wipe=True)
        finally:
            shutil.rmtree(state, ignore_errors=True)

    return info.bootstrap, stop


def make_settings(args: argparse.Namespace, bootstrap: str, run: str, work: Path) -> Any:
    from stream_ae.settings import load_settings

    return load_settings(
        flags={
            "kafka": {"bootstrap_servers": bootstrap, "client_id": f"bench-{run}"},
            "topics": {
                "readings": f"bench.{run}.readings",
                "anomalies": f"bench.{run}.anomalies",
                "data_quality": f"bench.{run}.data_quality",
                "dead_letter": f"bench.{run}.dlq",
                "scores": f"bench.{run}.scores",
                "publish_scores": False,
                "partitions": args.partitions,
            },
            "window": {"size": W, "hop": H, "sample_period_ms": 1000},
            "model": {"device": "cpu", "path": work / "artifacts", "threads": args.threads},
            "scorer": {"group_id": f"bench-{run}-scorer", "batch_size": args.batch_size},
            "train": {
                "architecture": "conv",
                "epochs": args.epochs,
                "output_dir": work / "artifacts",
                "seed": 0,
            },
        }
    )


def train_model(settings: Any, sim: Any, steps: int, epochs: int, work: Path) -> Path:
    """Train on the simulator's next ``steps`` steps (normal operation); the artifact path."""
    from stream_ae.readings_io import readings_from_arrays
    from stream_ae.training import train

    t0 = time.monotonic()
    block = sim.step_block(steps)
    readings = readings_from_arrays(
        block.asset_ids, block.reading_ts_ms, block.values, block.present, list(block.channels)
    )
    say(f"training conv W={W} H={H} on {len(readings):,} readings, {epochs} epochs")
    path, info = train(readings, settings, source="benchmark", out_dir=work / "artifacts")
    say(f"trained on {info['windows']:,} windows in {time.monotonic() - t0:.1f} s")
    return path


def train_in_child(
    args: argparse.Namespace, bootstrap: str, run: str, work: Path, start_ms: int
) -> Path:
    from stream_ae.simulate import Simulator

    settings = make_settings(args, bootstrap, run, work)
    period = settings.window.sample_period_ms
    sim = Simulator(args.assets, seed=args.seed, sample_period_ms=period, start_ts_ms=start_ms)
    return train_model(settings, sim, args.train_steps, args.epochs, work)


def fill_topic(settings: Any, sim: Any, steps: int) -> tuple[int, float]:
    """Produce ``steps`` simulator steps of every asset; return (messages, seconds)."""
    from stream_ae.io.kafka import OutputProducer
    from stream_ae.simulate import encode_wide

    producer = OutputProducer(settings.kafka, linger_ms=50)
    topic = settings.topics.readings
    send = producer.send
    sent = 0
    t0 = time.monotonic()
    chunk = max(1, 100_000 // sim.n_assets)
    done = 0
    next_report = 0.0
    while done < steps:
        n = min(chunk, steps - done)
        for key, value, ts in encode_wide(sim.step_block(n)):
            send(topic, value, key=key, timestamp_ms=ts)
        sent += n * sim.n_assets
        done += n
        if time.monotonic() >= next_report:
            say(f"  produced {sent:,} readings")
            next_report = time.monotonic() + 10
    producer.flush(120)
    return sent, time.monotonic() - t0


# -- measurements -------------------------------------------------------------------------


def bare_consume(settings: Any, expected: int, batch_size: int, tag: str) -> float:
    """readings/s of a consume-and-count loop on the readings topic."""
    from confluent_kafka import Consumer

    from stream_ae.io.kafka import client_config

    # the same properties as stream_ae.io.kafka.InputConsumer (fresh group)
    conf = client_config(
        settings.kafka,
        **{
            "group.id": f"{settings.scorer.group_id}-bare-{tag}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_uncommitted",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 10485760,
            "queued.max.messages.kbytes": 262144,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 300000,
        },
    )
    consumer = Consumer(conf)
    consumer.subscribe([settings.topics.readings])
    count = 0
    nbytes = 0
    t_first: float | None = None
    deadline = time.monotonic() + 120
    try:
        while count < expected:
            msgs = consumer.consume(num_messages=batch_size, timeout=0.5)
            if msgs and t_first is None:
                t_first = time.perf_counter()
            for m in msgs:
                v = m.value()
                if v is not None:
                    nbytes += len(v)
                    count += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare loop read only {count:,} of {expected:,} in 120 s")
        t_end = time.perf_counter()
    finally:
        consumer.close()
    assert t_first is not None
    rate = count / (t_end - t_first)
    say(
        f"bare loop ({tag}): {count:,} messages ({nbytes / count:.0f} B avg) in "
        f"{t_end - t_first:.2f} s = {rate:,.0f}/s"
    )
    return rate


def run_scorer(
    settings: Any, loaded: Any, expected: int, profile_path: str | None
) -> tuple[float, dict[str, Any], Stages, float]:
    """(readings/s, pipeline metrics, stage times, measured seconds)."""
    import stream_ae.service as service_mod
    from stream_ae.io.kafka import InputConsumer
    from stream_ae.pipeline import StepOutput
    from stream_ae.service import ScorerService, bind_model

    stages = Stages()
    marks: dict[str, float] = {}
    service: ScorerService

    class TimedConsumer(InputConsumer):
        def consume(self, max_messages: int, timeout_s: float) -> list[Any]:
            t0, c0 = time.perf_counter(), time.thread_time()
            msgs = super().consume(max_messages, timeout_s)
            if msgs and "first" not in marks:
                marks["first"] = time.perf_counter()
                marks["first_thread_cpu"] = time.thread_time()
                marks["first_process_cpu"] = time.process_time()
            elif "first" in marks and "end" not in marks:
                stages.add("consume", time.perf_counter() - t0, time.thread_time() - c0)
            return msgs

    def on_output(_out: StepOutput) -> None:
        if "end" not in marks and service.pipeline.metrics.messages >= expected:
            marks["end"] = time.perf_counter()
            marks["end_thread_cpu"] = time.thread_time()
            marks["end_process_cpu"] = time.process_time()
            stages.active = False
            service.request_stop()

    service = ScorerService(settings, bind_model(loaded, settings), on_output=on_output)
    p = service.pipeline
    # wrappers on this process's instances only (and the consumer class the service uses)
    patches: list[tuple[object, str, str]] = [
        (loaded.scorer, "score", "model"),
        (p, "step", "step"),
        (p.decoder, "decode", "decode"),
        (p.windower, "process", "windowing"),
        (p, "_score", "score+decide"),
        (service, "_publish", "publish"),
        (service, "_commit", "commit"),
    ]
    for obj, attr, stage in patches:
        setattr(obj, attr, stages.wrap(stage, getattr(obj, attr)))
    gc_stats = {"seconds": 0.0, "t0": 0.0, "gen0": 0, "gen1": 0, "gen2": 0}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_stats["t0"] = time.perf_counter()
        elif stages.active and "first" in marks:
            gc_stats["seconds"] += time.perf_counter() - gc_stats["t0"]
            gc_stats[f"gen{info['generation']}"] += 1

    gc.callbacks.append(on_gc)
    tracked_at_start = len(gc.get_objects())
    original = service_mod.InputConsumer  # type: ignore[attr-defined]
    setattr(service_mod, "InputConsumer", TimedConsumer)  # noqa: B010
    prof = cProfile.Profile() if profile_path else None
    try:
        if prof:
            prof.enable()
        summary = service.run(max_idle_s=60.0)
    finally:
        if prof:
            prof.disable()
        setattr(service_mod, "InputConsumer", original)  # noqa: B010
        gc.callbacks.remove(on_gc)
        for obj, attr, _stage in patches:
            vars(obj).pop(attr, None)
    if "end" not in marks:
        raise RuntimeError(
            f"scorer stopped after {service.pipeline.metrics.messages:,} of {expected:,} messages"
        )
    elapsed = marks["end"] - marks["first"]
    stages.cpu["main_thread_total"] = marks["end_thread_cpu"] - marks["first_thread_cpu"]
    stages.cpu["process_total"] = marks["end_process_cpu"] - marks["first_process_cpu"]
    stages.gc = {k: v for k, v in gc_stats.items() if k != "t0"}
    stages.gc["tracked_objects_at_start"] = tracked_at_start
    metrics: dict[str, Any] = summary.metrics
    if prof and profile_path:
        prof.dump_stats(profile_path)
        st = pstats.Stats(prof, stream=sys.stderr).strip_dirs()
        say(f"cProfile of the scorer run written to {profile_path}; top functions by tottime:")
        st.sort_stats("tottime").print_stats(25)
        st.sort_stats("cumulative").print_stats(30)
    return metrics["readings"] / elapsed, metrics, stages, elapsed


def model_alone(loaded: Any, seconds: float = 4.0) -> float:
    scorer = loaded.scorer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((MODEL_BATCH, CHANNELS, W)).astype(np.float32)
    for _ in range(3):
        scorer.score(x)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        scorer.score(x)
        n += 1
    return n * MODEL_BATCH / (time.perf_counter() - t0)


# -- main ---------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def code_sha() -> str:
    """Short hash of the stream_ae sources, to tie figures to a code state."""
    import hashlib

    import stream_ae

    root = Path(stream_ae.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--assets", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=10_000, help="scorer.batch_size")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of a private one")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs (throughput only)")
    ap.add_argument(
        "--train-steps", type=int, default=192, help="simulated steps per asset to train on"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="model.threads (torch intra-op threads); default: the settings' (torch's own)",
    )
    ap.add_argument("--profile", default=None, help="cProfile the scorer run into this file")
    ap.add_argument("--seed", type=int, default=11)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from stream_ae.io.kafka import Admin
    from stream_ae.service import load_model, output_topics
    from stream_ae.simulate import Simulator

    run = time.strftime("%Y%m%d%H%M%S") + f"-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="stream_ae_bench_work_"))
    steps = math.ceil(args.readings / args.assets)
    t_all = time.monotonic()
    load_start = os.getloadavg()
    bootstrap, stop_broker = start_broker(args)
    settings = make_settings(args, bootstrap, run, work)
    created: list[str] = []
    try:
        admin = Admin(settings.kafka)
        admin.wait_until_reachable()
        topics = [settings.topics.readings, *output_topics(settings)]
        created = admin.ensure_topics(topics, partitions=args.partitions, replication_factor=1)

        # simulated data ending now: training stretch first, then the benchmark stretch
        period = settings.window.sample_period_ms
        now = int(time.time() * 1000) // period * period
        start = now - (args.train_steps + steps) * period
        sim = Simulator(args.assets, seed=args.seed, sample_period_ms=period, start_ts_ms=start)
        assert len(sim.channels) == CHANNELS

        # train in a child process: training pulls in torch modules (dynamo, sympy, ...) a
        # scorer process never imports, and their objects would inflate this process's GC cost
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            path = pool.submit(train_in_child, args, bootstrap, run, work, start).result()
        settings.model.path = path
        sim.step_block(args.train_steps)  # the scored stretch follows the training stretch
        say(f"producing {steps * args.assets:,} readings ({args.assets} assets x {steps} steps)")
        expected, fill_s = fill_topic(settings, sim, steps)
        say(f"topic filled in {fill_s:.1f} s ({expected / fill_s:,.0f}/s)")
        del sim

        bare1 = bare_consume(settings, expected, args.batch_size, "before")

        loaded = load_model(settings)
        assert loaded.metadata.window == W and loaded.metadata.hop == H
        say(f"scorer: batch_size={args.batch_size}, torch threads={torch.get_num_threads()}")
        load_scorer = os.getloadavg()
        gc.collect()  # drop the set-up garbage (simulator, training data) before measuring
        rate, metrics, stages, elapsed = run_scorer(settings, loaded, expected, args.profile)
        say(
            f"scorer: {metrics['readings']:,} readings, {metrics['windows']:,} windows, "
            f"{metrics['events']:,} events in {elapsed:.2f} s = {rate:,.0f} readings/s"
        )

        bare2 = bare_consume(settings, expected, args.batch_size, "after")
        bare = max(bare1, bare2)

        say("model alone: scoring random (1024, 8, 64) batches")
        wps = model_alone(loaded)
    finally:
        if created and args.bootstrap:
            try:
                Admin(settings.kafka).delete_topics(created)
            except Exception as exc:  # best effort on someone else's broker
                say(f"could not delete the benchmark topics: {exc}")
        stop_broker()
        shutil.rmtree(work, ignore_errors=True)

    total = time.monotonic() - t_all
    tracked = dict(stages.seconds)
    model_s = tracked.get("model", 0.0)
    decide_s = tracked.get("score+decide", 0.0) - model_s
    step_other = (
        tracked.get("step", 0.0)
        - tracked.get("decode", 0.0)
        - tracked.get("windowing", 0.0)
        - tracked.get("score+decide", 0.0)
    )
    breakdown = {
        "consume": tracked.get("consume", 0.0),
        "decode": tracked.get("decode", 0.0),
        "windowing": tracked.get("windowing", 0.0),
        "model": model_s,
        "decide": decide_s,
        "step_other": step_other,
        "publish": tracked.get("publish", 0.0),
        "commit": tracked.get("commit", 0.0),
    }
    breakdown["loop_other"] = elapsed - sum(breakdown.values())
    cpu = dict(stages.cpu)
    cpu_breakdown = {
        "consume": cpu.get("consume", 0.0),
        "decode": cpu.get("decode", 0.0),
        "windowing": cpu.get("windowing", 0.0),
        "model": cpu.get("model", 0.0),
    }

    cpus = os.cpu_count()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(
        f"machine: {platform.machine()} cpu_model={cpu_model()!r} cpus={cpus} "
        f"usable_cpus={affinity} torch={torch.__version__} torch_threads={torch.get_num_threads()} "
        f"device=cpu python={platform.python_version()}".replace("  ", " ")
    )
    print(
        f"date={time.strftime('%Y-%m-%dT%H:%M:%S%z')} code_sha={code_sha()} "
        f"loadavg_1m_at_start={load_start[0]:.2f} loadavg_1m_before_scorer={load_scorer[0]:.2f}"
    )
    print(
        f"setup: readings={expected} assets={args.assets} channels={CHANNELS} W={W} H={H} "
        f"model=conv partitions={args.partitions} batch_size={args.batch_size} "
        f"broker={'external' if args.bootstrap else 'private-local'} "
        f"commit_interval_s={settings.scorer.commit_interval_s}"
    )
    print(f"fill_readings_per_s={expected / fill_s:.0f}")
    print(f"bare_readings_per_s={bare:.0f} (before={bare1:.0f} after={bare2:.0f})")
    print(
        f"scorer_readings_per_s={rate:.0f} (readings={metrics['readings']} "
        f"windows={metrics['windows']} events={metrics['events']} "
        f"dead_letters={sum(metrics['dead_letters'].values())} seconds={elapsed:.2f})"
    )
    print(
        f"scorer_windows_per_s={metrics['windows'] / elapsed:.0f} "
        f"model_alone_windows_per_s={wps:.0f} (B={MODEL_BATCH})"
    )
    shares = " ".join(f"{k}={v:.2f}s/{100 * v / elapsed:.0f}%" for k, v in breakdown.items())
    print(f"scorer_stages: {shares}")
    cpu_shares = " ".join(f"{k}={v:.2f}s" for k, v in cpu_breakdown.items())
    print(
        f"scorer_cpu: main_thread={cpu['main_thread_total']:.2f}s "
        f"({100 * cpu['main_thread_total'] / elapsed:.0f}% of wall) "
        f"process_all_threads={cpu['process_total']:.2f}s stage_cpu: {cpu_shares}"
    )
    g = stages.gc
    print(
        f"scorer_gc: seconds={g['seconds']:.2f} ({100 * g['seconds'] / elapsed:.0f}% of wall, "
        f"inside the stages above) collections gen0={g['gen0']:.0f} gen1={g['gen1']:.0f} "
        f"gen2={g['gen2']:.0f} tracked_objects_at_start={g['tracked_objects_at_start']:.0f}"
    )
    print(f"total_wall_s={total:.0f}")
    print(f"ratio={rate / bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
