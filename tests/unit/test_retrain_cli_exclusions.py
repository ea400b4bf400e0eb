"""``stream-ae retrain`` leaves out what ``trainer run`` leaves out (no broker: the
readings topic and the anomalies/feedback topics are faked)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tiny_models import anomaly_event

from stream_ae.errors import DataError
from stream_ae.readings_io import Readings, readings_from_arrays
from stream_ae.registry import Registry
from stream_ae.schemas import FeedbackEvent
from stream_ae.simulate import Simulator, write_csv

T0 = 1_764_000_000_000
FROM = str(T0)  # epoch ms: --from accepts it
SETTINGS = (
    *("--set", "window.size=16", "--set", "window.hop=8", "--set", "train.epochs=2"),
    *("--set", "trainer.registry=reg", "--set", "trainer.far_factor=1e9"),
)


def _block() -> Any:
    return Simulator(2, seed=3, start_ts_ms=T0).step_block(2400)


@pytest.fixture(scope="module")
def readings() -> Readings:
    b = _block()
    return readings_from_arrays(b.asset_ids, b.reading_ts_ms, b.values, b.present, list(b.channels))


class _Message:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def _fake_broker(
    monkeypatch: pytest.MonkeyPatch,
    readings: Readings,
    topics: dict[str, list[Any]],
) -> list[tuple[str, int | None]]:
    """The readings topic gives ``readings``; ``topics`` the records of the others
    (a topic not named does not exist). Returns the reads: (topic, start_ms)."""
    from stream_ae import readings_io
    from stream_ae.errors import BrokerError
    from stream_ae.io import kafka

    reads: list[tuple[str, int | None]] = []

    def read_topic(settings: Any, start: str, end: str | None, channels: Any) -> Any:
        assert list(channels) == readings.channels
        return readings, f"{settings.topics.readings} [{start}, {end or 'now'})"

    def read_range(_kafka: Any, topic: str, *, start_ms: int | None = None, **_: Any) -> Iterator:
        reads.append((topic, start_ms))
        if topic not in topics:
            raise BrokerError(f"topic {topic} does not exist")
        yield [_Message(topic, i, msgspec.json.encode(r)) for i, r in enumerate(topics[topic])]

    monkeypatch.setattr(readings_io, "read_topic", read_topic)
    monkeypatch.setattr(kafka, "read_range", read_range)
    return reads


def _retrain(*args: str) -> Any:
    from typer.testing import CliRunner

    from stream_ae import cli

    return CliRunner().invoke(
        cli.app, [*SETTINGS, "retrain", *args, "--no-announce"], env={"COLUMNS": "250"}
    )


def test_a_topic_range_leaves_out_events_and_maintenance_and_says_how_much(
    readings: Readings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_state: None
) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = sorted(set(readings.asset_ids))
    reads = _fake_broker(
        monkeypatch,
        readings,
        {
            "maintenance.anomalies": [anomaly_event(a, T0, T0 + 20_000)],
            "maintenance.feedback": [
                FeedbackEvent(asset_id=b, kind="maintenance", start_ms=T0, end_ms=T0 + 40_000)
            ],
        },
    )
    result = _retrain("--from", FROM, "--channels", ",".join(readings.channels))
    assert result.exit_code == 0, result.output
    # the anomalies from the range's start, the feedback from the beginning, as the trainer
    assert ("maintenance.anomalies", T0) in reads and ("maintenance.feedback", 0) in reads
    [info] = Registry(tmp_path / "reg").versions()
    ex = Registry(tmp_path / "reg").show(info.version)["report"]["data"]["exclusions"]
    assert ex["by_reason"]["anomaly_event"] > 0 and ex["by_reason"]["maintenance_or_fault"] > 0
    assert (
        ex["excluded"] == ex["by_reason"]["anomaly_event"] + ex["by_reason"]["maintenance_or_fault"]
    )
    assert "1 anomaly events on maintenance.anomalies, 1 feedback records" in result.output
    summary = f"{ex['share']:.2%} of the windows ({ex['excluded']:,} of {ex['windows']:,};"
    assert 0 < ex["share"] < 0.5 and summary in " ".join(result.output.split())


def test_a_topic_range_of_mostly_faults_is_refused_by_max_excluded_share(
    readings: Readings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_state: None
) -> None:
    monkeypatch.chdir(tmp_path)
    faults = [
        FeedbackEvent(asset_id=asset, kind="acknowledged_fault", start_ms=T0)  # still open
        for asset in sorted(set(readings.asset_ids))
    ]
    _fake_broker(monkeypatch, readings, {"maintenance.feedback": faults})  # no anomalies topic
    result = _retrain("--from", FROM, "--channels", ",".join(readings.channels))
    assert isinstance(result.exception, DataError), result.output
    assert "refusing to train: 100% of" in str(result.exception)
    assert "more than the allowed 50%" in str(result.exception)
    assert not (tmp_path / "reg" / "versions").is_dir() or not list(
        (tmp_path / "reg" / "versions").iterdir()
    )


def test_a_csv_says_only_its_labels_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_state: None
) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "plain.csv", [_block()])
    with (tmp_path / "plain.csv").open() as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("anomaly")
    for row in rows[1:201]:  # 200 readings labelled anomalous
        row[col] = "1"
    with (tmp_path / "normal.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    result = _retrain("--csv", "normal.csv")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "CSV input: no exclusions apply beyond the file's anomaly labels" in text
    assert "(200 readings labelled anomalous)" in text
    assert "no event, feedback or champion exclusions (CSV input); 200 readings" in text
