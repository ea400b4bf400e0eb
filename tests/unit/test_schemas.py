"""Wire contracts: dead-letter headers, JSON round trips, ISO times."""

from __future__ import annotations

import json

import msgspec
import pytest

from stream_ae.schemas import (
    AnomalyEvent,
    ChannelShare,
    DataQualityEvent,
    DeadLetter,
    ScoreRecord,
    decode_event,
    decode_quality_event,
    encode,
    iso_ms,
)


def letter(**kw: object) -> DeadLetter:
    args: dict[str, object] = {
        "reason": "schema_error",
        "stage": "decode",
        "error": "missing field 'ts'",
        "value": b'{"asset_id": "p"}',
        "key": b"p",
        "source_topic": "sensors.readings",
        "source_partition": 4,
        "source_offset": 1234567,
    }
    args.update(kw)
    return DeadLetter(**args)  # type: ignore[arg-type]


def test_dead_letter_headers_minimal() -> None:
    assert letter().headers() == [
        ("stream_ae.reason", b"schema_error"),
        ("stream_ae.stage", b"decode"),
        ("stream_ae.source_topic", b"sensors.readings"),
        ("stream_ae.source_partition", b"4"),
        ("stream_ae.source_offset", b"1234567"),
        ("stream_ae.error", b"missing field 'ts'"),
    ]


def test_dead_letter_headers_with_asset_and_partial() -> None:
    h = dict(letter(reason="late", stage="windowing", asset_id="pump-ü", partial=True).headers())
    assert h["stream_ae.reason"] == b"late"
    assert h["stream_ae.stage"] == b"windowing"
    assert h["stream_ae.asset_id"] == "pump-ü".encode()
    assert h["stream_ae.partial"] == b"true"
    assert len(h) == 8


def test_dead_letter_header_values_are_bytes_and_error_is_capped() -> None:
    d = letter(error="é" * 1200)  # capped at 1000 characters, never mid-character
    h = dict(d.headers())
    assert all(isinstance(v, bytes) for v in h.values())
    assert h["stream_ae.error"].decode() == "é" * 1000
    assert "stream_ae.asset_id" not in h
    assert "stream_ae.partial" not in h


def test_dead_letter_keeps_original_bytes_and_key() -> None:
    d = letter(value=b"\xff\xfe not json", key=None)
    assert d.value == b"\xff\xfe not json"
    assert d.key is None


def event(**kw: object) -> AnomalyEvent:
    args: dict[str, object] = {
        "event_id": "id-1",
        "asset_id": "pump-003",
        "window_start_ms": 1_764_097_136_000,
        "window_end_ms": 1_764_097_200_000,
        "window_start": "2025-11-25T18:58:56.000Z",
        "window_end": "2025-11-25T19:00:00.000Z",
        "score": 0.81,
        "threshold": 0.066,
        "score_ratio": 12.3,
        "severity": "critical",
        "top_channels": [ChannelShare("vibration_rms", 0.71), ChannelShare("bearing_temp", 0.12)],
        "model_version": "20261125T192606Z-2902ae14",
        "detected_at": "2025-11-25T19:00:05.120Z",
    }
    args.update(kw)
    return AnomalyEvent(**args)  # type: ignore[arg-type]


def test_anomaly_event_round_trip() -> None:
    e = event()
    assert decode_event(encode(e)) == e


def test_anomaly_event_json_matches_the_documented_shape() -> None:
    doc = json.loads(encode(event()))
    assert list(doc) == [
        "schema_version",
        "event_id",
        "asset_id",
        "window_start_ms",
        "window_end_ms",
        "window_start",
        "window_end",
        "score",
        "threshold",
        "score_ratio",
        "severity",
        "top_channels",
        "model_version",
        "detected_at",
        "during_maintenance",
    ]
    assert doc["schema_version"] == 1
    assert doc["during_maintenance"] is False
    assert doc["top_channels"] == [
        {"channel": "vibration_rms", "share": 0.71},
        {"channel": "bearing_temp", "share": 0.12},
    ]


def test_the_maintenance_tag_round_trips_and_an_older_event_decodes_untagged() -> None:
    e = event(during_maintenance=True)
    assert decode_event(encode(e)) == e
    assert json.loads(encode(e))["during_maintenance"] is True
    old = json.loads(encode(event()))
    del old["during_maintenance"]  # written before the field existed
    assert decode_event(json.dumps(old).encode()) == event()
    assert decode_event(json.dumps(old).encode()).during_maintenance is False


def test_decode_event_rejects_an_unknown_severity() -> None:
    doc = json.loads(encode(event()))
    doc["severity"] = "meh"
    with pytest.raises(msgspec.ValidationError, match="severity"):
        decode_event(json.dumps(doc).encode())


def test_quality_event_and_score_record_round_trip() -> None:
    q = DataQualityEvent(
        event_id="q", kind="gap", asset_id="a", start_ms=0, end_ms=5000, detail="d", detected_at="t"
    )
    assert decode_quality_event(encode(q)) == q
    r = ScoreRecord(
        asset_id="a", window_start_ms=0, window_end_ms=64_000, score=0.5, threshold=1.0,
        model_version="v",
    )  # fmt: skip
    assert json.loads(encode(r)) == {
        "schema_version": 1,
        "asset_id": "a",
        "window_start_ms": 0,
        "window_end_ms": 64_000,
        "score": 0.5,
        "threshold": 1.0,
        "model_version": "v",
    }


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1_764_097_200_000, "2025-11-25T19:00:00.000Z"),
        (1_764_097_205_120, "2025-11-25T19:00:05.120Z"),
        (1_700_000_000_999, "2023-11-14T22:13:20.999Z"),
        (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
    ],
)
def test_iso_ms(ms: int, text: str) -> None:
    assert iso_ms(ms) == text


# -- feedback ------------------------------------------------------------------------------


def test_maintenance_end_time_per_feedback_kind() -> None:
    from stream_ae.schemas import FeedbackEvent

    def end(kind: str, end_ms: int | None = None) -> int | None:
        return FeedbackEvent(asset_id="p", kind=kind, start_ms=10, end_ms=end_ms).maintenance_end_ms  # type: ignore[arg-type]

    assert end("maintenance_end") == 10
    assert end("maintenance", 99) == 99
    assert end("maintenance") is None  # a period with no end yet
    assert end("maintenance_start", 99) is None
    assert end("false_alarm", 99) is None


def test_bad_feedback_records_are_named_and_skipped() -> None:
    from dataclasses import dataclass

    from stream_ae.schemas import feedback_events

    @dataclass
    class M:
        raw: bytes | None
        off: int

        def value(self) -> bytes | None:
            return self.raw

        def key(self) -> bytes | None:
            return b"p"

        def topic(self) -> str | None:
            return "maintenance.feedback"

        def partition(self) -> int | None:
            return 2

        def offset(self) -> int | None:
            return self.off

    good = b'{"asset_id": "p", "kind": "maintenance_end", "start_ms": 5}'
    bad_kind = b'{"asset_id": "p", "kind": "repaired", "start_ms": 5}'
    huge = b'{"asset_id": "p", "kind": "maintenance_end", "start_ms": 1e26}'
    huge_int = b'{"asset_id": "p", "kind": "maintenance", "start_ms": 0, "end_ms": %d}' % 10**26
    records = [M(b"not json", 0), M(good, 1), M(bad_kind, 2), M(None, 3), M(huge, 4)]
    events, problems = feedback_events([*records, M(huge_int, 5)])
    assert [(e.asset_id, e.maintenance_end_ms) for e in events] == [("p", 5)]
    assert len(problems) == 5
    assert "end_ms" in problems[4]
    assert "maintenance.feedback partition 2 offset 2" in problems[1]
    assert "kind" in problems[1] and "README" in problems[1]
