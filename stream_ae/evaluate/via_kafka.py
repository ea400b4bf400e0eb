"""``stream-ae evaluate --via-kafka``: the same labelled data through a real broker
and the running scorer, checked against the in-process backtest.

Each file is one independent run (the scorer starts with no state, as the
in-process backtest resets it per file):

1. fresh topics ``stream_ae.eval.<run id>.<n>.{readings,anomalies,scores,quality}``
   and ``<readings>.dlq``, made with the :class:`~stream_ae.io.kafka.Admin` wrapper
   and deleted afterwards (``keep_topics`` keeps them). The readings topic keeps
   its records forever (``retention.ms = -1``): a file's timestamps may be years
   old, and time-based retention would otherwise delete them under the scorer.
2. The file's readings, in time order (the order
   :func:`~stream_ae.readings_io.to_windows` feeds its windower), are produced as
   the production wide JSON messages (key = asset id, ``ts`` = the file's time =
   event time, also the record timestamp, as the simulator does).
3. ``stream-ae score`` runs as a child process: the real command, with its
   settings loading, model verification, consumer group and SIGTERM handling.
   It gets the user's settings (broker address, SASL/TLS, batch sizes, lateness)
   with these changes: the run's topics, ``topics.publish_scores`` on (every
   window's score comes back), hot swap off (a champion announced on the cluster
   must not replace the model under test), at-least-once, CPU / torch / float32
   (as the in-process side scores), the backtest's ``window.fill_limit``.
4. End of data. The scorer has no "end of input": a window waits until newer
   readings make its rows final (the watermark). An asset silent for
   ``window.idle_timeout_ms`` (wall clock) has its open windows closed and a
   ``silent_asset`` data-quality event published: the production path for a
   machine that stops. The run sets that timeout short (``flush_idle_s``), waits
   for every asset's silent event *at its last reading's time*, then stops the
   scorer with SIGTERM (flush, commit, exit 0). Nothing special is sent and no
   code path the production scorer lacks is used. A silent event before an
   asset's last reading means the scorer paused longer than the timeout in the
   middle of the data (``early_closes``): its windows then differ, and the
   comparison says so.
5. Scores, anomaly events, dead letters and data-quality events are read back;
   per-reading decisions are rebuilt with
   :func:`~stream_ae.evaluate.backtest.live_decisions`, the in-process rule.

:func:`compare` lines the two paths up window by window (asset, window end):
windows only one side has, scores beyond float tolerance, per-reading decisions,
and the scorer's own anomaly events against the in-process verdicts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
from pydantic import SecretStr

from stream_ae.errors import KafkaIOError
from stream_ae.evaluate.backtest import FileRun, ModelSpec, live_decisions, window_verdicts
from stream_ae.readings_io import Readings
from stream_ae.schemas import H_REASON, AnomalyEvent, DataQualityEvent, ScoreRecord
from stream_ae.settings import Settings

EVAL_PREFIX = "stream_ae.eval"
#: Scores are float32 model outputs; the broker path batches windows differently.
SCORE_RTOL = 1e-5
SCORE_ATOL = 1e-7
#: How many differing windows / rows a comparison lists by name.
SHOW = 5

_SCORER = "from stream_ae.cli import console_main; console_main()"

_T = TypeVar("_T")


@dataclass(frozen=True)
class EvalTopics:
    """One run's topics (the scorer derives the dead-letter topic from readings)."""

    readings: str
    anomalies: str
    scores: str
    data_quality: str

    @classmethod
    def for_run(cls, prefix: str, run_id: str, n: int) -> EvalTopics:
        base = f"{prefix}.{run_id}.{n}"
        return cls(f"{base}.readings", f"{base}.anomalies", f"{base}.scores", f"{base}.quality")

    @property
    def dead_letter(self) -> str:
        return f"{self.readings}.dlq"

    def all(self) -> list[str]:
        return [self.readings, self.dead_letter, self.anomalies, self.scores, self.data_quality]


@dataclass(frozen=True)
class ScorerSetup:
    """What the scorer runs with besides the user's settings."""

    model_dir: Path
    #: the in-process backtest's ``ModelSpec.fill_limit``
    fill_limit: int = 3
    #: warm-up re-baselining (``skab-streaming``'s second variant)
    rebaseline_s: float = 0.0
    #: ``decide.persistence_k/n``: used only when the artifact records none
    persistence: tuple[int, int] = (1, 1)


@dataclass
class KafkaRun:
    """What came back from the broker for one file."""

    name: str
    topics: EvalTopics
    produced: int
    scores: list[ScoreRecord]
    events: list[AnomalyEvent]
    quality: list[DataQualityEvent]
    dead_letters: Counter[str]
    #: assets never closed at their last reading (the run timed out or the scorer died)
    unclosed: list[str]
    #: assets closed by the idle timeout before their last reading
    early_closes: list[str]
    scorer_exit: int | None
    produce_s: float
    score_s: float
    wall_s: float
    log_tail: str = ""


# -- pure helpers --------------------------------------------------------------------------


class _Wide(msgspec.Struct):
    asset_id: str
    ts: int
    values: dict[str, float | None]


def reading_messages(readings: Readings) -> list[tuple[bytes, bytes, int]]:
    """(key, value, timestamp) per reading, in time order (stable, as ``to_windows``
    feeds its windower): wide JSON, a missing value as ``null``."""
    enc = msgspec.json.Encoder()
    order = np.argsort(readings.ts_ms, kind="stable").tolist()
    chans = readings.channels
    ts = readings.ts_ms.tolist()
    rows = readings.values.tolist()
    ids = readings.asset_ids
    out = []
    for i in order:
        values = {c: (None if math.isnan(v) else v) for c, v in zip(chans, rows[i], strict=True)}
        out.append((ids[i].encode(), enc.encode(_Wide(ids[i], ts[i], values)), ts[i]))
    return out


def _decoded(messages: Iterable[Any], kind: type[_T]) -> list[_T]:
    """Each record's JSON value, decoded as a ``kind``."""
    return [msgspec.json.decode(m.value() or b"", type=kind) for m in messages]


def expected_last_ts(readings: Readings, *, now_ms: int, max_future_ms: int) -> dict[str, int]:
    """Per asset, the time of its last reading the scorer accepts (a reading further
    ahead of the wall clock than ``max_future_ms`` is a dead letter)."""
    last: dict[str, int] = {}
    limit = now_ms + max_future_ms
    for a, t in zip(readings.asset_ids, readings.ts_ms.tolist(), strict=True):
        if t <= limit and t > last.get(a, -(2**62)):
            last[a] = t
    return last


def close_state(
    quality: list[DataQualityEvent], expected: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """→ (assets not yet closed at their last reading, assets closed before it)."""
    closed: set[str] = set()
    early: set[str] = set()
    for q in quality:
        if q.kind != "silent_asset" or q.asset_id not in expected:
            continue
        if q.end_ms >= expected[q.asset_id]:
            closed.add(q.asset_id)
        else:
            early.add(q.asset_id)
    return sorted(set(expected) - closed), sorted(early)


def _plain(v: Any) -> Any:
    """Settings values as JSON types, secrets unwrapped (they go to the child's env)."""
    if isinstance(v, SecretStr):
        return v.get_secret_value()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def scorer_settings(
    settings: Settings,
    topics: EvalTopics,
    setup: ScorerSetup,
    *,
    group_id: str,
    idle_timeout_ms: int,
    partitions: int,
) -> dict[str, Any]:
    """The scorer's settings tree (plain JSON types): the user's, with the run's changes."""
    tree: dict[str, Any] = _plain(settings.model_dump())
    tree["topics"].update(
        readings=topics.readings,
        dead_letter=topics.dead_letter,
        anomalies=topics.anomalies,
        scores=topics.scores,
        data_quality=topics.data_quality,
        publish_scores=True,
        publish_latents=False,
        partitions=partitions,
    )
    tree["window"].update(fill_limit=setup.fill_limit, idle_timeout_ms=idle_timeout_ms)
    tree["model"].update(
        path=str(setup.model_dir.resolve()),
        hot_swap=False,
        rebaseline_s=setup.rebaseline_s,
        device="cpu",
        runtime="torch",
        precision="float32",
    )
    tree["decide"].update(persistence_k=setup.persistence[0], persistence_n=setup.persistence[1])
    tree["scorer"].update(group_id=group_id, exactly_once=False)
    Settings.model_validate(tree)  # fail here, not in the child
    return tree


def scorer_env(
    tree: Mapping[str, Any], base: Mapping[str, str], config_file: Path
) -> dict[str, str]:
    """The child's environment: ``base`` without any ``STREAM_AE_*`` variable, the
    settings tree as one JSON variable per section, and an empty settings file (so
    neither the caller's variables nor ``config/stream_ae.toml`` can change it)."""
    env = {k: v for k, v in base.items() if not k.startswith("STREAM_AE_")}
    env["STREAM_AE_CONFIG"] = str(config_file)
    for key, value in tree.items():
        env[f"STREAM_AE_{key.upper()}"] = (
            json.dumps(value) if isinstance(value, dict) else str(value)
        )
    return env


# -- the broker run ------------------------------------------------------------------------


class BrokerEval:
    """Runs files through the broker and a ``stream-ae score`` child, one at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        keep_topics: bool = False,
        flush_idle_s: float = 5.0,
        prefix: str = EVAL_PREFIX,
        run_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.keep_topics = keep_topics
        self.flush_idle_ms = int(flush_idle_s * 1000)
        self.prefix = prefix
        self.run_id = run_id or (f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
        self._n = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="stream-ae-eval-")
        self._dir = Path(self._tmp.name)
        (self._dir / "empty.toml").write_text("")

    def close(self) -> None:
        """Remove the run's temporary folder (scorer logs, saved models)."""
        self._tmp.cleanup()

    @property
    def artifact_dir(self) -> Path:
        """Where models fitted in memory are saved for the scorer (temporary)."""
        return self._dir / "artifacts"

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers

    def check_reachable(self) -> None:
        """Fail fast (two attempts) with what to do when no broker answers."""
        from stream_ae.io.kafka import Admin

        kafka = self.settings.kafka.model_copy(
            update={"connect_attempts": min(2, self.settings.kafka.connect_attempts)}
        )
        try:
            Admin(kafka).wait_until_reachable()
            return
        except KafkaIOError:
            pass
        # raised here, not in the handler: no context that would hold the client
        raise KafkaIOError(
            f"--via-kafka needs a Kafka broker, and none answers at {self.bootstrap} "
            "(kafka.bootstrap_servers)",
            hint="start the local one with `stream-ae kafka up`, or point "
            "kafka.bootstrap_servers (--set, STREAM_AE_KAFKA__BOOTSTRAP_SERVERS) at yours",
        )

    def run(self, name: str, readings: Readings, setup: ScorerSetup) -> KafkaRun:
        """One file through the broker and a fresh scorer (see the module docstring)."""
        from stream_ae.io.kafka import Admin

        started = time.perf_counter()
        n = self._n
        self._n += 1
        topics = EvalTopics.for_run(self.prefix, self.run_id, n)
        s = self.settings
        partitions = max(1, min(s.topics.partitions, len(set(readings.asset_ids))))
        admin = Admin(s.kafka)
        admin.ensure_topics(
            topics.all(),
            partitions=partitions,
            replication_factor=s.topics.replication_factor,
            config={topics.readings: {"retention.ms": "-1"}},
        )
        try:
            t0 = time.perf_counter()
            produced = self._produce(topics.readings, readings)
            produce_s = time.perf_counter() - t0
            tree = scorer_settings(
                s,
                topics,
                setup,
                group_id=f"{self.prefix}.{self.run_id}.{n}",
                idle_timeout_ms=self.flush_idle_ms,
                partitions=partitions,
            )
            expected = expected_last_ts(
                readings,
                now_ms=time.time_ns() // 1_000_000,
                max_future_ms=s.window.max_future_ms,
            )
            t1 = time.perf_counter()
            code, unclosed, early, tail = self._score(tree, topics, expected, len(readings), n)
            score_s = time.perf_counter() - t1
            scores = _decoded(self._read(topics.scores), ScoreRecord)
            events = _decoded(self._read(topics.anomalies), AnomalyEvent)
            # read whole once more: the scorer may have published more while stopping
            quality = _decoded(self._read(topics.data_quality), DataQualityEvent)
            dead: Counter[str] = Counter()
            for m in self._read(topics.dead_letter):
                headers = dict(m.headers() or [])
                dead[(headers.get(H_REASON) or b"?").decode()] += 1
        finally:
            if not self.keep_topics:
                admin.delete_topics(topics.all())
        return KafkaRun(
            name=name,
            topics=topics,
            produced=produced,
            scores=scores,
            events=events,
            quality=quality,
            dead_letters=dead,
            unclosed=unclosed,
            early_closes=early,
            scorer_exit=code,
            produce_s=produce_s,
            score_s=score_s,
            wall_s=time.perf_counter() - started,
            log_tail=tail,
        )

    def _produce(self, topic: str, readings: Readings) -> int:
        from stream_ae.io.kafka import OutputProducer

        producer = OutputProducer(self.settings.kafka)
        messages = reading_messages(readings)
        for key, value, ts in messages:
            producer.send(topic, value, key=key, timestamp_ms=ts)
        producer.flush()
        return len(messages)

    def _read(self, topic: str) -> list[Any]:
        from stream_ae.io.kafka import read_range

        return [m for batch in read_range(self.settings.kafka, topic) for m in batch]

    def _score(
        self,
        tree: Mapping[str, Any],
        topics: EvalTopics,
        expected: Mapping[str, int],
        n_readings: int,
        n: int,
    ) -> tuple[int | None, list[str], list[str], str]:
        """Run the scorer until every asset is closed at its last reading (or the child
        dies, or a generous deadline passes); → (exit code, unclosed, early, log tail).

        The data-quality topic (made by :meth:`run`, empty until the scorer starts) is
        followed by one consumer, its new records added up every half second."""
        from stream_ae.io.kafka import TopicFollower

        log_path = self._dir / f"scorer-{n}.log"
        env = scorer_env(tree, os.environ, self._dir / "empty.toml")
        follower = TopicFollower(self.settings.kafka, topics.data_quality)
        try:
            # start-up (imports, model check, group join) + the flush timeout + scoring time
            deadline = time.monotonic() + 120 + self.flush_idle_ms / 1000 + n_readings / 1000
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _SCORER, "score"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                unclosed, early = sorted(expected), list[str]()
                quality: list[DataQualityEvent] = []
                try:
                    while proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.5)
                        quality += _decoded(follower.poll(), DataQualityEvent)
                        unclosed, early = close_state(quality, expected)
                        if not unclosed:
                            break
                finally:
                    code = _stop(proc)
        finally:
            follower.close()
        tail = log_path.read_text(errors="replace")[-3000:]
        return code, unclosed, early, tail


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM (the scorer flushes, commits and exits 0); SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        return None


# -- comparison ---------------------------------------------------------------------------


@dataclass
class FileComparison:
    """One file, in-process vs via Kafka. ``equal`` is the verdict."""

    name: str
    readings: int
    windows_in_process: int
    windows_via_kafka: int
    missing: int = 0  # windows only in-process
    extra: int = 0  # windows only via Kafka
    #: the first few of them, and of the readings decided differently, by name
    examples: list[str] = field(default_factory=list)
    duplicates: int = 0  # windows published more than once (same score: harmless)
    scores_differ: int = 0
    max_score_diff: float = 0.0
    thresholds_differ: int = 0
    decisions_differ: int = 0
    events: int = 0
    events_expected: int = 0
    events_differ: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    unclosed: list[str] = field(default_factory=list)
    early_closes: list[str] = field(default_factory=list)
    scorer_exit: int | None = 0
    topics: list[str] = field(default_factory=list)
    produce_s: float = 0.0
    score_s: float = 0.0
    wall_s: float = 0.0
    in_process_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (
            self.missing
            or self.extra
            or self.scores_differ
            or self.thresholds_differ
            or self.decisions_differ
            or self.events_differ
            or self.unclosed
            or self.early_closes
            or self.scorer_exit != 0
        )

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["equal"] = self.equal
        for k in ("produce_s", "score_s", "wall_s", "in_process_s"):
            d[k] = round(d[k], 2)
        return d


def kafka_file_run(
    ref: FileRun, readings: Readings, run: KafkaRun, spec: ModelSpec, *, period_ms: int
) -> FileRun:
    """A :class:`FileRun` from what the scorer published: windows in (asset, start)
    order, first copy of a duplicate, decisions by the in-process rule with the
    thresholds the scorer used. Channel shares are not on the scores topic (NaN)."""
    first: dict[tuple[str, int], ScoreRecord] = {}
    for r in run.scores:
        first.setdefault((r.asset_id, r.window_start_ms), r)
    recs = [first[k] for k in sorted(first)]
    assets = [r.asset_id for r in recs]
    starts = np.array([r.window_start_ms for r in recs], np.int64)
    scores = np.array([r.score for r in recs], np.float64)
    thresholds = np.array([r.threshold for r in recs], np.float64)
    pred = live_decisions(readings, assets, starts, scores, thresholds, spec, period_ms=period_ms)
    return dataclasses.replace(
        ref,
        pred=pred,
        window_end_ms=np.array([r.window_end_ms for r in recs], np.int64),
        window_assets=assets,
        window_scores=scores,
        window_shares=np.full((len(recs), len(ref.channels)), np.nan),
        info={**ref.info, "via_kafka": True, "thresholds": thresholds},
    )


def compare(
    ref: FileRun,
    got: FileRun,
    run: KafkaRun,
    spec: ModelSpec,
    *,
    period_ms: int,
    in_process_s: float = 0.0,
) -> FileComparison:
    """Window by window (asset, window end), then reading by reading."""
    c = FileComparison(
        name=ref.name,
        readings=len(ref.pred),
        windows_in_process=len(ref.window_scores),
        windows_via_kafka=len(got.window_scores),
        duplicates=len(run.scores) - len(got.window_scores),
        events=len({(e.asset_id, e.window_end_ms) for e in run.events}),
        dead_letters=dict(run.dead_letters),
        unclosed=run.unclosed,
        early_closes=run.early_closes,
        scorer_exit=run.scorer_exit,
        topics=run.topics.all(),
        produce_s=run.produce_s,
        score_s=run.score_s,
        wall_s=run.wall_s,
        in_process_s=in_process_s,
    )
    mine = _by_window(ref.window_assets, ref.window_end_ms)
    theirs = _by_window(got.window_assets, got.window_end_ms)
    # each window's threshold in process: per asset when the model has them
    own_thresholds = np.asarray(
        ref.info.get("window_thresholds", np.full(len(ref.window_scores), ref.threshold)),
        np.float64,
    )
    missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    c.missing, c.extra = len(missing), len(extra)
    c.examples += [f"window only in-process: {_label(k)}" for k in missing[:SHOW]]
    c.examples += [f"window only via Kafka: {_label(k)}" for k in extra[:SHOW]]
    both = sorted(set(mine) & set(theirs))
    if both:
        a = ref.window_scores[[mine[k] for k in both]]
        b = got.window_scores[[theirs[k] for k in both]]
        diff = np.abs(a - b)
        c.max_score_diff = float(diff.max())
        c.scores_differ = int((~np.isclose(b, a, rtol=SCORE_RTOL, atol=SCORE_ATOL)).sum())
        used = np.asarray(got.info["thresholds"])[[theirs[k] for k in both]]
        c.thresholds_differ = int((used != own_thresholds[[mine[k] for k in both]]).sum())
    differ = np.flatnonzero(ref.pred != got.pred)
    c.decisions_differ = len(differ)
    c.examples += [
        f"reading {i} ({_when(int(ref.ts_ms[i]))}): in-process {ref.pred[i]}, "
        f"via Kafka {got.pred[i]}"
        for i in differ[:SHOW].tolist()
    ]
    # the scorer's own decider (events) against the in-process verdicts
    alarms = window_verdicts(
        ref.window_assets,
        ref.window_end_ms - spec.window * period_ms,
        ref.window_scores,
        own_thresholds,
        spec,
    )
    expected = {k for k, i in mine.items() if alarms[i]}
    published = {(e.asset_id, e.window_end_ms) for e in run.events}
    c.events_expected = len(expected)
    c.events_differ = len(expected ^ published)
    if run.early_closes:
        c.notes.append(
            f"the scorer closed {', '.join(run.early_closes)} before their last reading: "
            "it paused longer than the idle timeout mid-data; raise --flush-idle-s"
        )
    if run.unclosed:
        c.notes.append(
            f"{', '.join(run.unclosed)} never closed at their last reading "
            f"(scorer exit {run.scorer_exit}); scorer log:\n{run.log_tail}"
        )
    elif run.scorer_exit != 0:
        c.notes.append(f"the scorer exited with {run.scorer_exit}; log:\n{run.log_tail}")
    return c


def _by_window(assets: list[str], end_ms: np.ndarray) -> dict[tuple[str, int], int]:
    return {(a, int(e)): i for i, (a, e) in enumerate(zip(assets, end_ms.tolist(), strict=True))}


def _label(key: tuple[str, int]) -> str:
    asset, end = key
    return f"{asset} ending {_when(end)}"


def _when(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%dT%H:%M:%S}Z"


def save_for_scorer(trained: Any, threshold: float, spec: ModelSpec, out_dir: Path) -> Path:
    """An in-memory fit (``skab-streaming``) as an artifact the scorer can load, with
    the backtest's rule: its threshold (after ``threshold_factor``, one for every
    asset) and its persistence."""
    from stream_ae.model.artifact import save_artifact

    md = trained.metadata
    rule = {k: v for k, v in md.threshold.items() if k != "per_asset"}
    rule["value"] = float(threshold)
    rule["params"] = {
        **rule.get("params", {}),
        "persistence_k": spec.persistence_k,
        "persistence_n": spec.persistence_n,
    }
    fitted = dataclasses.replace(trained, metadata=md.model_copy(update={"threshold": rule}))
    return save_artifact(fitted, out_dir)
