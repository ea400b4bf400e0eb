"""The scorer takes back its marks and decision state when given partitions
(``ScorerService._load_marks``), from records as the marks topic holds them, and
when exactly-once mode rewinds a failed transaction (``ScorerService._rewind``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace

import msgspec
import pytest
from tiny_models import unscored_binding

from stream_ae import service as service_mod
from stream_ae.decide.persistence import Persistence
from stream_ae.errors import KafkaIOError
from stream_ae.io.kafka import TransactionFailed
from stream_ae.pipeline import AssetState
from stream_ae.service import ScorerService
from stream_ae.settings import load_settings
from stream_ae.windowing.rebaseline import BaselineState

CHANNELS = ["a", "b"]


@dataclass
class Record:
    k: bytes
    v: bytes

    def key(self) -> bytes:
        return self.k

    def value(self) -> bytes:
        return self.v


def _state(mark: int, **fields: object) -> bytes:
    return msgspec.json.encode(AssetState(mark, **fields))  # type: ignore[arg-type]


def _service(
    monkeypatch: pytest.MonkeyPatch, records: list[Record], *, exactly_once: bool = False
) -> ScorerService:
    settings = load_settings(
        flags={"model": {"rebaseline_s": 4.0}, "scorer": {"exactly_once": exactly_once}}
    )
    binding = unscored_binding(Persistence(k=2, n=3))
    service = ScorerService(settings, binding)
    monkeypatch.setattr(service_mod, "read_range", lambda *_a, **_k: iter([records]))
    return service


def test_the_latest_record_per_asset_is_taken_back_for_assigned_partitions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settled = BaselineState(warmup_start_ms=0, windows=2, total=[6.0, 8.0], mean=[3.0, 4.0])
    records = [
        Record(b"0|p1", b'{"window_start_ms": 5}'),  # an older scorer's record
        Record(b"0|p1", _state(9, recent=[False, True], baseline=settled, channels=CHANNELS)),
        Record(b"0|p2", _state(7, baseline=settled, channels=["b", "a"])),  # other order
        Record(b"0|p3", b'{"window_start_ms": 3}'),  # only ever written by an older scorer
        Record(b"0|", b'{"window_start_ms": 17}'),  # the partition's consumed position
        Record(b"1|p9", _state(11, recent=[True])),  # not assigned here
    ]
    service = _service(monkeypatch, records)
    with caplog.at_level(logging.WARNING, logger="stream_ae.service"):
        service._load_marks({0})
    pipe = service.pipeline
    assert pipe.marks == {(0, "p1"): 9, (0, "p2"): 7, (0, "p3"): 3}
    assert service._consumed_marks == {0: 17}
    rule = pipe.model.decider.persistence
    assert rule is not None and rule.history((0, "p1")) == [False, True]
    assert rule.history((1, "p9")) is None
    assert pipe.rebaseliner is not None
    assert pipe.rebaseliner.snapshot((0, "p1")) == settled
    assert pipe.rebaseliner.snapshot((0, "p2")) is None  # refused: warms up afresh
    (warning,) = caplog.records
    assert "1 assets' stored baselines are for other channels" in warning.getMessage()
    assert "p2" in warning.getMessage()


def test_the_gap_state_and_the_partitions_position_are_taken_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replay continues the gap open at the commit (same start, alerted or not) from
    the partition's consumed position on; an older record without gap state decodes,
    and that asset's replay keeps its own view of the gap."""
    from stream_ae.pipeline import GapRecord
    from stream_ae.windowing.asset_grid import GapState

    open_gap = GapRecord(start_ms=12_000, alerted=True)
    records = [
        Record(b"0|p1", _state(9, gap=open_gap)),
        Record(b"0|p2", _state(9, gap=GapRecord())),  # none open, valid before
        Record(b"0|p3", b'{"window_start_ms": 3}'),  # an older scorer's: no gap state
        Record(b"0|p4", _state(9, gap=GapRecord(start_ms=12_500))),  # off this grid
        Record(b"0|", b'{"window_start_ms": 40}'),
        Record(b"1|p9", _state(11, gap=open_gap)),  # not assigned here
        Record(b"1|", b'{"window_start_ms": 70}'),
    ]
    service = _service(monkeypatch, records)
    service._load_marks({0})
    w = service.pipeline.windower
    assert w.positions() == {0: 40}
    assert w.gap_state((0, "p1")) == GapState(12, alerted=True, ever_valid=True)
    assert w.gap_state((0, "p2")) == GapState(None, alerted=False, ever_valid=True)
    assert w.gap_state((0, "p3")) is None
    assert w.gap_state((0, "p4")) is None
    assert service.pipeline.asset_state((0, "p1")).gap == open_gap  # stored as it came
    assert msgspec.json.encode(service.pipeline.asset_state((0, "p2"))).endswith(b'"gap":{}}')


def test_a_commit_during_a_replay_never_stores_an_older_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Restarted at position 40, the replay has read up to 25 when it commits: the
    partition's record must keep 40 (the asset records' gap state is as of 40), else a
    second restart takes that state too early and replays readings onto it."""
    records = [Record(b"0|", b'{"window_start_ms": 40}'), Record(b"1|", b'{"window_start_ms": 5}')]
    service = _service(monkeypatch, records)
    service._load_marks({0, 1})
    service._consumed = {0: 25, 1: 30}
    sent: list[tuple[str, bytes, bytes]] = []
    service.producer = SimpleNamespace(  # type: ignore[assignment]
        send=lambda topic, value, key: sent.append((topic, key, value))
    )
    service._send_marks()
    positions = {key: msgspec.json.decode(value, type=AssetState) for _, key, value in sent}
    assert positions[b"0|"].window_start_ms == 40
    assert positions[b"1|"].window_start_ms == 30


class _Producer:
    def __init__(self, abort_fails: bool = False) -> None:
        self.wedged = False
        self.abort_fails = abort_fails
        self.aborted = self.abandoned = False

    def abort(self, _timeout_s: float, stopping: object = None) -> None:
        if self.abort_fails:
            raise TransactionFailed("abort transaction: Local: Timed out")
        self.aborted = True

    def abandon(self) -> None:
        self.abandoned = True


class _Consumer:
    def __init__(self) -> None:
        self.seeks: list[dict[int, int]] = []

    def assignment(self) -> list[int]:
        return [0]

    def committed(self, partitions: list[int]) -> dict[int, int]:
        assert partitions == [0]
        return {0: 40}

    def seek(self, offsets: dict[int, int]) -> None:
        self.seeks.append(offsets)


@pytest.mark.parametrize("abort_fails", [False, True], ids=["aborted", "fenced"])
def test_a_failed_transaction_rewinds_to_the_last_committed_one(
    monkeypatch: pytest.MonkeyPatch, abort_fails: bool
) -> None:
    """What the open transaction changed is dropped; the state, marks and offsets
    are those of the last committed transaction (the marks topic as a
    read_committed reader sees it). A producer that cannot abort is replaced by a
    new one, which fences it."""
    committed = [Record(b"0|p1", _state(9, recent=[False, True])), Record(b"0|", _state(40))]
    service = _service(monkeypatch, committed, exactly_once=True)
    old, new = _Producer(abort_fails), _Producer()
    consumer = _Consumer()
    service.producer, service.consumer = old, consumer  # type: ignore[assignment]
    monkeypatch.setattr(service, "_new_producer", lambda _timeout_s: new)
    pipe = service.pipeline
    # the failed transaction had moved p1 on and seen p2
    pipe.marks = {(0, "p1"): 13, (0, "p2"): 11}
    service._consumed = {0: 55}
    service._in_txn = True

    service._rewind(TransactionFailed("commit transaction: Local: Broker transport failure"))

    assert pipe.marks == {(0, "p1"): 9}
    rule = pipe.model.decider.persistence
    assert rule is not None and rule.history((0, "p1")) == [False, True]
    assert service._consumed == {} and service._consumed_marks == {0: 40}
    assert consumer.seeks == [{0: 40}]
    assert not service._in_txn and service._txn_failed is None
    assert pipe.metrics.transactions_rewound == 1
    assert service.producer is (new if abort_fails else old)
    assert old.abandoned == abort_fails and old.aborted != abort_fails


def test_partitions_lost_during_a_transaction_abort_it_before_any_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The open transaction holds outputs of the lost partitions, whose next owner
    replays them: committing it would publish them twice."""
    service = _service(monkeypatch, [], exactly_once=True)
    service._on_lost([1])  # no transaction open: nothing to abort
    assert service._txn_failed is None
    service._in_txn = True
    service._on_lost([2])
    with pytest.raises(TransactionFailed, match=r"partitions \[2\] were lost"):
        service._commit({0: 5})


def test_rewinds_that_do_not_help_and_a_stop_end_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transaction that fails again and again (replaying brings back what failed)
    stops the scorer instead of looping; so does a stop, without waiting for the
    broker, since nothing more may be committed."""
    service = _service(monkeypatch, [Record(b"0|", _state(40))], exactly_once=True)
    service.producer, service.consumer = _Producer(), _Consumer()  # type: ignore[assignment]
    failure = TransactionFailed("produce to anomalies: Local: Erroneous state")
    for _ in range(service_mod.MAX_REWINDS):
        service._rewind(failure)
    with pytest.raises(KafkaIOError, match="5 transactions in a row failed") as info:
        service._rewind(failure)
    assert "Erroneous state" in str(info.value)
    service._rewinds = 0  # a commit went through
    service.request_stop()
    with pytest.raises(KafkaIOError, match="stopped after a failed transaction") as stopped:
        service._rewind(failure)
    assert "nothing after the last committed transaction was committed" in str(stopped.value)


class _LoopProducer(_Producer):
    """Fails its first commit as librdkafka does when the broker went away."""

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    def begin(self) -> None:
        pass

    def send(self, *_args: object, **_kwargs: object) -> None:
        pass

    def poll(self) -> None:
        pass

    def commit_with_offsets(self, *_args: object, **_kwargs: object) -> None:
        self.commits += 1
        if self.commits == 1:
            raise TransactionFailed("commit transaction: Local: Broker transport failure")


class _LoopConsumer(_Consumer):
    def consume(self, _n: int, timeout_s: float) -> list[object]:
        time.sleep(timeout_s)
        return []

    def offsets_for(self, offsets: dict[int, int]) -> list[object]:
        return list(offsets.items())

    def group_metadata(self) -> object:
        return object()

    def close(self) -> None:
        pass


def test_the_run_loop_rewinds_a_failed_transaction_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wiring: a commit that fails in the loop is rewound (marks read back, the
    consumer moved to the committed offsets), and the loop goes on committing."""
    service = _service(monkeypatch, [Record(b"0|", _state(40))], exactly_once=True)
    service.settings.scorer.commit_interval_s = 0.05
    service.settings.scorer.poll_timeout_s = 0.02
    producer, consumer = _LoopProducer(), _LoopConsumer()
    monkeypatch.setattr(service, "_prepare", lambda: None)
    monkeypatch.setattr(service, "_new_producer", lambda *_a: producer)
    monkeypatch.setattr(service_mod, "InputConsumer", lambda *_a, **_k: consumer)
    service.settings.model.hot_swap = False
    follower = SimpleNamespace(poll=lambda: [], close=lambda: None)  # maintenance reports
    monkeypatch.setattr(service_mod, "TopicFollower", lambda *_a, **_k: follower)
    service.run(max_seconds=1.0)
    assert service.pipeline.metrics.transactions_rewound == 1
    assert consumer.seeks == [{0: 40}]
    assert producer.aborted  # in place: the producer was not wedged
    assert producer.commits > 2  # it went on after the rewind
