"""``evaluate --via-kafka`` without a broker: the messages it produces, the scorer's
settings, the end-of-data signal, the comparison, the per-asset live rule, and the
command's refusals. (The broker run itself: tests/integration/test_evaluate_via_kafka.py.)"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from stream_ae import cli
from stream_ae.decode import ReadingDecoder
from stream_ae.errors import ConfigError, KafkaIOError
from stream_ae.evaluate.backtest import FileRun, ModelSpec, live_decisions
from stream_ae.evaluate.via_kafka import (
    EvalTopics,
    KafkaRun,
    ScorerSetup,
    close_state,
    compare,
    expected_last_ts,
    kafka_file_run,
    reading_messages,
    scorer_env,
    scorer_settings,
)
from stream_ae.readings_io import Readings
from stream_ae.schemas import DataQualityEvent, ScoreRecord
from stream_ae.settings import Settings, load_settings

P = 1000
W = 4
NAN = float("nan")


def readings() -> Readings:
    """Two assets, rows out of time order, one missing value."""
    return Readings(
        asset_ids=["b", "a", "a", "b", "a"],
        ts_ms=np.array([2000, 3000, 1000, 1000, 2000], np.int64),
        values=np.array([[1.0, 2.0], [3.0, NAN], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]),
        channels=["x", "y"],
    )


class _Msg:
    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self._k, self._v, self._o = key, value, offset

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v

    def topic(self) -> str:
        return "r"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o


def test_reading_messages_are_production_json_in_time_order() -> None:
    r = readings()
    msgs = reading_messages(r)
    assert [ts for _k, _v, ts in msgs] == [1000, 1000, 2000, 2000, 3000]
    # stable: equal times keep file order (as to_windows feeds its windower)
    assert [k for k, _v, _ts in msgs] == [b"a", b"b", b"b", b"a", b"a"]
    assert b'"y":null' in msgs[-1][1]
    decoded = ReadingDecoder(["x", "y"], max_future_ms=0).decode(
        [_Msg(k, v, i) for i, (k, v, _t) in enumerate(msgs)], now_ms=10_000
    )
    assert not decoded.dead_letters
    order = np.argsort(r.ts_ms, kind="stable")
    assert decoded.asset_ids == [r.asset_ids[i] for i in order]
    np.testing.assert_array_equal(decoded.ts_ms, r.ts_ms[order])
    np.testing.assert_array_equal(decoded.values, r.values[order])  # NaN stays NaN


def test_expected_last_ts_skips_what_the_scorer_dead_letters_as_future() -> None:
    r = readings()
    assert expected_last_ts(r, now_ms=10_000, max_future_ms=0) == {"a": 3000, "b": 2000}
    assert expected_last_ts(r, now_ms=2_500, max_future_ms=0) == {"a": 2000, "b": 2000}


def _silent(asset: str, at: int) -> DataQualityEvent:
    return DataQualityEvent(
        event_id="e",
        kind="silent_asset",
        asset_id=asset,
        start_ms=at,
        end_ms=at,
        detail="",
        detected_at="",
    )


def test_close_state_waits_for_each_asset_closed_at_its_last_reading() -> None:
    expected = {"a": 3000, "b": 2000}
    assert close_state([], expected) == (["a", "b"], [])
    gap = msgspec.structs.replace(_silent("a", 3000), kind="gap")
    assert close_state([gap, _silent("b", 2000)], expected) == (["a"], [])
    # closed before its last reading (idle timeout mid-data), then again at the end
    assert close_state([_silent("a", 1000), _silent("a", 3000), _silent("b", 2000)], expected) == (
        [],
        ["a"],
    )


def test_scorer_settings_keep_the_users_connection_and_change_only_the_run() -> None:
    s = load_settings(
        flags={
            "kafka": {
                "bootstrap_servers": "k1:9093",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password": "s3cret",
            },
            "window": {"allowed_lateness_ms": 7000},
            "model": {"hot_swap": True, "device": "auto"},
            "scorer": {"exactly_once": True, "batch_size": 123},
        }
    )
    topics = EvalTopics.for_run("p", "run1", 2)
    tree = scorer_settings(
        s,
        topics,
        ScorerSetup(Path("m"), fill_limit=2, rebaseline_s=30.0, persistence=(2, 3)),
        group_id="g",
        idle_timeout_ms=4000,
        partitions=1,
    )
    assert tree["kafka"]["sasl_password"] == "s3cret"  # unwrapped for the child only
    assert tree["kafka"]["bootstrap_servers"] == "k1:9093"
    assert tree["topics"]["readings"] == "p.run1.2.readings"
    assert tree["topics"]["dead_letter"] == "p.run1.2.readings.dlq" == topics.dead_letter
    assert tree["topics"]["publish_scores"] is True
    assert tree["window"] == {
        **s.window.model_dump(),
        "fill_limit": 2,
        "idle_timeout_ms": 4000,
    }
    assert tree["model"]["hot_swap"] is False and tree["model"]["device"] == "cpu"
    assert tree["model"]["path"] == str(Path("m").resolve())
    assert tree["model"]["rebaseline_s"] == 30.0
    assert (tree["decide"]["persistence_k"], tree["decide"]["persistence_n"]) == (2, 3)
    assert tree["scorer"]["exactly_once"] is False and tree["scorer"]["batch_size"] == 123


def test_the_child_reads_exactly_that_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(flags={"kafka": {"sasl_password": "pw", "extra": {"a": "b"}}})
    tree = scorer_settings(
        s,
        EvalTopics.for_run("p", "r", 0),
        ScorerSetup(tmp_path),
        group_id="g",
        idle_timeout_ms=3000,
        partitions=2,
    )
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    base = {"PATH": "/bin", "STREAM_AE_KAFKA__BOOTSTRAP_SERVERS": "elsewhere:1"}
    env = scorer_env(tree, base, empty)
    assert env["PATH"] == "/bin" and "STREAM_AE_KAFKA__BOOTSTRAP_SERVERS" not in env
    for name in list(os.environ):
        if name.startswith("STREAM_AE_"):
            monkeypatch.delenv(name)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    child = load_settings()
    assert isinstance(child.kafka.sasl_password, SecretStr)
    assert child.kafka.sasl_password.get_secret_value() == "pw"
    assert child.kafka.extra == {"a": "b"}
    assert child.topics.readings == "p.r.0.readings" and child.scorer.group_id == "g"
    assert child.window.idle_timeout_ms == 3000 and child.model.hot_swap is False


# -- comparison ---------------------------------------------------------------------------


def _ref(r: Readings, spec: ModelSpec, threshold: float) -> tuple[FileRun, list[ScoreRecord]]:
    """A FileRun with windows starting every second per asset, and its score records."""
    assets, starts, scores = [], [], []
    rng = np.random.default_rng(0)
    for a in ("a", "b"):
        for s in range(0, 6):
            assets.append(a)
            starts.append(s * P)
            scores.append(float(rng.random() * 2 * threshold))
    start = np.array(starts, np.int64)
    sc = np.array(scores)
    pred = live_decisions(r, assets, start, sc, threshold, spec, period_ms=P)
    ref = FileRun(
        name="f",
        channels=r.channels,
        ts_ms=r.ts_ms,
        values=r.values,
        labels=np.zeros(len(r), np.int8),
        changepoints=np.zeros(len(r), np.int8),
        pred=pred,
        counted=np.ones(len(r), bool),
        window_end_ms=start + W * P,
        window_scores=sc,
        window_shares=np.zeros((len(sc), 2)),
        threshold=threshold,
        window_assets=assets,
    )
    records = [
        ScoreRecord(
            asset_id=a,
            window_start_ms=int(s),
            window_end_ms=int(s) + W * P,
            score=float(v),
            threshold=threshold,
            model_version="v",
        )
        for a, s, v in zip(assets, start, sc, strict=True)
    ]
    return ref, records


def _long_readings() -> Readings:
    ts = np.arange(0, 10_000, P, dtype=np.int64)
    return Readings(
        ["a"] * 10 + ["b"] * 10,
        np.concatenate([ts, ts]),
        np.ones((20, 2)),
        ["x", "y"],
    )


def _kafka(records: list[ScoreRecord], **kw: object) -> KafkaRun:
    base: dict[str, object] = {
        "name": "f",
        "topics": EvalTopics.for_run("p", "r", 0),
        "produced": 20,
        "scores": records,
        "events": [],
        "quality": [],
        "dead_letters": Counter(),
        "unclosed": [],
        "early_closes": [],
        "scorer_exit": 0,
        "produce_s": 0.0,
        "score_s": 0.0,
        "wall_s": 0.0,
    }
    base.update(kw)
    return KafkaRun(**base)  # type: ignore[arg-type]


def _events(ref: FileRun, spec: ModelSpec) -> list[object]:
    from stream_ae.evaluate.backtest import window_verdicts
    from stream_ae.schemas import AnomalyEvent

    verdicts = window_verdicts(
        ref.window_assets, ref.window_end_ms - W * P, ref.window_scores, ref.threshold, spec
    )
    return [
        AnomalyEvent(
            event_id="e",
            asset_id=a,
            window_start_ms=int(e) - W * P,
            window_end_ms=int(e),
            window_start="",
            window_end="",
            score=0.0,
            threshold=0.0,
            score_ratio=0.0,
            severity="warning",
            top_channels=[],
            model_version="v",
            detected_at="",
        )
        for a, e, v in zip(ref.window_assets, ref.window_end_ms, verdicts, strict=True)
        if v
    ]


def test_compare_finds_nothing_when_the_broker_path_returned_the_same() -> None:
    r, spec = _long_readings(), ModelSpec(window=W, hop=1, persistence_k=2, persistence_n=3)
    ref, records = _ref(r, spec, 1.0)
    run = _kafka(list(reversed(records)) + records[:2], events=_events(ref, spec))
    got = kafka_file_run(ref, r, run, spec, period_ms=P)
    c = compare(ref, got, run, spec, period_ms=P)
    assert c.equal, c
    assert c.duplicates == 2 and c.windows_via_kafka == c.windows_in_process == 12
    assert c.events == c.events_expected > 0
    np.testing.assert_array_equal(got.pred, ref.pred)


def test_compare_reports_lost_windows_changed_scores_and_decisions() -> None:
    r, spec = _long_readings(), ModelSpec(window=W, hop=1)
    ref, records = _ref(r, spec, 1.0)
    events = _events(ref, spec)
    # window 3 of asset a lost; the highest score of asset b pushed under the threshold
    b_top = max(range(6, 12), key=lambda i: records[i].score)
    changed = msgspec.structs.replace(records[b_top], score=0.5)
    kept = [changed if i == b_top else x for i, x in enumerate(records) if i != 3]
    run = _kafka(kept, events=events, dead_letters=Counter({"late": 1}))
    got = kafka_file_run(ref, r, run, spec, period_ms=P)
    c = compare(ref, got, run, spec, period_ms=P)
    assert not c.equal
    assert (c.missing, c.extra, c.scores_differ) == (1, 0, 1)
    assert c.max_score_diff > 0.4
    assert c.decisions_differ > 0 and c.dead_letters == {"late": 1}
    assert any("window only in-process: a ending" in e for e in c.examples)
    # a scorer that never closed the data is a difference even with equal windows
    run2 = _kafka(records, events=events, unclosed=["b"], scorer_exit=None, log_tail="boom")
    c2 = compare(ref, kafka_file_run(ref, r, run2, spec, period_ms=P), run2, spec, period_ms=P)
    assert not c2.equal and "boom" in c2.notes[0]


def test_live_decisions_are_per_asset() -> None:
    """A reading takes its own asset's latest window, never another asset's."""
    ts = np.arange(0, 8000, P, dtype=np.int64)
    r = Readings(["a"] * 8 + ["b"] * 8, np.concatenate([ts, ts]), np.ones((16, 1)), ["x"])
    spec = ModelSpec(window=2, hop=1)
    # asset b's windows are all anomalous, asset a's none
    assets = ["a"] * 7 + ["b"] * 7
    starts = np.concatenate([np.arange(7), np.arange(7)]) * P
    scores = np.array([0.0] * 7 + [5.0] * 7)
    pred = live_decisions(r, assets, starts, scores, 1.0, spec, period_ms=P)
    assert pred[:8].tolist() == [0] * 8
    assert pred[8:].tolist() == [0] + [1] * 7  # the first reading: no window ended yet


def test_asset_groups_match_a_mask_per_asset() -> None:
    from stream_ae.evaluate.backtest import asset_groups

    rng = np.random.default_rng(0)
    ids = [f"pump-{i}" for i in rng.integers(0, 40, 500)]
    groups = asset_groups(ids)
    assert list(groups) == list(dict.fromkeys(ids))  # first appearance order
    arr = np.asarray(ids, dtype=object)
    for asset, idx in groups.items():
        assert idx.tolist() == np.flatnonzero(arr == asset).tolist()
    assert asset_groups([]) == {}


def test_live_decisions_with_interleaved_assets_equal_one_asset_at_a_time() -> None:
    """Readings and windows of many assets, interleaved: each asset's decisions are
    what it gets alone, with persistence, an asset without windows, and a delay."""
    rng = np.random.default_rng(1)
    spec = ModelSpec(window=4, hop=2, persistence_k=2, persistence_n=3, delay=1)
    alone = {}
    rows, wins = [], []
    for a in range(12):
        asset = f"a{a:02d}"
        ts = np.arange(0, 60 * P, P, dtype=np.int64) + a  # every asset its own phase
        starts = np.arange(0, 57, 2, dtype=np.int64) * P if a != 5 else np.zeros(0, np.int64)
        sc = rng.random(len(starts)) * 2
        one = Readings([asset] * len(ts), ts, np.ones((len(ts), 1)), ["x"])
        alone[asset] = live_decisions(
            one, [asset] * len(starts), starts, sc, 1.0, spec, period_ms=P
        )
        rows += [(t, asset) for t in ts.tolist()]
        wins += [(s, asset, v) for s, v in zip(starts.tolist(), sc.tolist(), strict=True)]
    rng.shuffle(rows)
    rng.shuffle(wins)
    r = Readings(
        [a for _, a in rows], np.array([t for t, _ in rows]), np.ones((len(rows), 1)), ["x"]
    )
    pred = live_decisions(
        r,
        [a for _, a, _ in wins],
        np.array([s for s, _, _ in wins], np.int64),
        np.array([v for _, _, v in wins]),
        1.0,
        spec,
        period_ms=P,
    )
    for i, (t, asset) in enumerate(rows):
        j = (t - int(asset[1:])) // P
        assert pred[i] == alone[asset][j], (asset, t)
    assert pred.sum() > 0 and not alone["a05"].any()


# -- the command ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["skab-published", "skab-causal"])
@pytest.mark.usefixtures("cli_state")
def test_via_kafka_is_refused_for_protocols_that_fit_per_file(protocol: str) -> None:
    result = CliRunner().invoke(cli.app, ["evaluate", "--protocol", protocol, "--via-kafka"])
    assert isinstance(result.exception, ConfigError), result.output
    assert "skab-streaming" in str(result.exception)


@pytest.mark.usefixtures("cli_state")
def test_via_kafka_without_a_broker_names_the_address_and_kafka_up() -> None:
    from stream_ae.io.local_broker import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(
        cli.app,
        [
            "--set",
            f"kafka.bootstrap_servers={address}",
            "--set",
            "kafka.connect_attempts=1",
            "evaluate",
            "--csv",
            "x.csv",
            "--model",
            "m",
            "--via-kafka",
        ],
    )
    assert isinstance(result.exception, KafkaIOError), result.output
    assert address in str(result.exception) and "stream-ae kafka up" in str(result.exception)


def test_settings_tree_is_complete() -> None:
    """Every section goes to the child (a new section must not be forgotten)."""
    tree = scorer_settings(
        Settings(),
        EvalTopics.for_run("p", "r", 0),
        ScorerSetup(Path("m")),
        group_id="g",
        idle_timeout_ms=1000,
        partitions=1,
    )
    assert set(tree) == set(Settings.model_fields)
