"""ReadingDecoder: accepted shapes, timestamps, channels, and every dead-letter reason."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from stream_ae.decode import MIN_TS_MS, DecodedBatch, ReadingDecoder, parse_ts

CHANNELS = ["a", "b", "c"]
NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MAX_FUTURE = 60_000
T = NOW - 5_000


@dataclass
class Msg:
    raw: bytes | None
    off: int = 0
    part: int = 3
    top: str = "readings"
    k: bytes | None = b"pump-1"

    def value(self) -> bytes | None:
        return self.raw

    def key(self) -> bytes | None:
        return self.k

    def topic(self) -> str | None:
        return self.top

    def partition(self) -> int | None:
        return self.part

    def offset(self) -> int | None:
        return self.off


def decode(*raws: bytes | None, now: int = NOW) -> DecodedBatch:
    dec = ReadingDecoder(CHANNELS, max_future_ms=MAX_FUTURE)
    return dec.decode([Msg(r, off=100 + i) for i, r in enumerate(raws)], now_ms=now)


def rows(batch: DecodedBatch) -> list[list[float | None]]:
    """Values with NaN spelled as None (NaN != NaN would hide mistakes in comparisons)."""
    return [[None if math.isnan(v) else v for v in row] for row in batch.values.tolist()]


def the_dead_letter(batch: DecodedBatch) -> tuple[str, str | None]:
    assert len(batch) == 0
    assert len(batch.dead_letters) == 1
    d = batch.dead_letters[0]
    return d.reason, d.asset_id


# -- shapes --------------------------------------------------------------------------------


def test_wide_reading() -> None:
    b = decode(b'{"asset_id": "p1", "ts": %d, "values": {"c": -3, "a": 1, "b": 2.5}}' % T)
    assert b.asset_ids == ["p1"]
    assert b.ts_ms.dtype == np.int64
    assert b.ts_ms.tolist() == [T]
    assert b.values.dtype == np.float64
    assert b.values.shape == (1, 3)
    assert rows(b) == [[1.0, 2.5, -3.0]]
    assert b.msg_index.tolist() == [0]
    assert b.dead_letters == []
    assert b.unknown_channels == Counter()
    assert b.messages == 1


def test_wide_missing_channel_is_nan() -> None:
    b = decode(b'{"asset_id": "p1", "ts": %d, "values": {"b": 2}}' % T)
    assert rows(b) == [[None, 2.0, None]]


def test_batch_array_of_wide_readings() -> None:
    raw = (
        b'[{"asset_id": "p1", "ts": %d, "values": {"a": 1, "b": 2, "c": 3}},'
        b' {"asset_id": "p2", "ts": %d, "values": {"a": 4, "b": 5, "c": 6}}]' % (T, T + 1000)
    )
    b = decode(raw)
    assert b.asset_ids == ["p1", "p2"]
    assert b.ts_ms.tolist() == [T, T + 1000]
    assert rows(b) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert b.msg_index.tolist() == [0, 0]
    assert b.dead_letters == []


def test_batch_object_with_readings() -> None:
    raw = (
        b'{"asset_id": "p9", "readings": ['
        b'{"ts": %d, "values": {"a": 1, "b": 2, "c": 3}},'
        b'{"ts": "2023-11-14T22:13:21Z", "values": {"a": 7}}]}' % T
    )
    b = decode(raw)
    assert b.asset_ids == ["p9", "p9"]
    assert b.ts_ms.tolist() == [T, NOW + 1000]
    assert rows(b) == [[1.0, 2.0, 3.0], [7.0, None, None]]
    assert b.msg_index.tolist() == [0, 0]


def test_narrow_reading_fills_one_channel() -> None:
    b = decode(b'{"asset_id": "p1", "ts": %d, "sensor": "b", "value": 4.5}' % T)
    assert b.asset_ids == ["p1"]
    assert rows(b) == [[None, 4.5, None]]


def test_narrow_unknown_sensor_is_ignored_and_counted() -> None:
    b = decode(b'{"asset_id": "p1", "ts": %d, "sensor": "zz", "value": 1}' % T)
    assert len(b) == 0
    assert b.dead_letters == []
    assert b.unknown_channels == Counter({"zz": 1})
    assert b.no_model_channel == 1


def test_narrow_without_value_is_schema_error() -> None:
    b = decode(b'{"asset_id": "p1", "ts": %d, "sensor": "a"}' % T)
    assert the_dead_letter(b) == ("schema_error", "p1")


def test_several_messages_keep_their_index() -> None:
    good = b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % T
    b = decode(good, b"garbage", good)
    assert b.msg_index.tolist() == [0, 2]
    assert b.messages == 3
    assert [d.source_offset for d in b.dead_letters] == [101]


def test_no_messages() -> None:
    b = decode()
    assert len(b) == 0
    assert b.values.shape == (0, 3)
    assert b.ts_ms.shape == (0,)
    assert b.msg_index.shape == (0,)
    assert b.messages == 0


# -- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (b"1700000000000", NOW),
        (b"1700000000000.75", NOW),  # float epoch ms, floored
        (b"1.7e12", NOW),
        (b'"2023-11-14T22:13:20Z"', NOW),
        (b'"2023-11-14T22:13:20.123Z"', NOW + 123),
        (b'"2023-11-14T22:13:20.123999Z"', NOW + 123),  # microseconds floored
        (b'"2023-11-15T00:13:20.5+02:00"', NOW + 500),
        (b'"2023-11-14T17:13:20-05:00"', NOW),
        (b'"2023-11-14T22:13:20+00:00"', NOW),
    ],
)
def test_timestamp_forms(ts: bytes, expected: int) -> None:
    b = decode(b'{"asset_id": "p1", "ts": %s, "values": {"a": 1}}' % ts)
    assert b.dead_letters == []
    assert b.ts_ms.tolist() == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # dt.timestamp() * 1000 truncated these to one millisecond less
        ("6394-01-10T02:46:44.076Z", 139_608_758_804_076),
        ("1969-12-31T23:59:59.999Z", -1),
        ("1969-12-31T23:59:59.9995Z", -1),  # floored, not truncated towards zero
    ],
)
def test_iso_conversion_is_exact(text: str, expected: int) -> None:
    assert parse_ts(text) == expected


def test_negative_float_epoch_is_floored() -> None:
    assert parse_ts(-1.5) == -2


@pytest.mark.parametrize(
    "ts", [b'"2023-11-14T22:13:20"', b'"2023-11-14"', b'"yesterday"', b'"1700000000000"']
)
def test_naive_or_unparseable_iso_is_schema_error(ts: bytes) -> None:
    b = decode(b'{"asset_id": "p1", "ts": %s, "values": {"a": 1}}' % ts)
    assert the_dead_letter(b) == ("schema_error", "p1")
    assert "ts" in b.dead_letters[0].error


def test_future_timestamp_boundary() -> None:
    at = decode(b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % (NOW + MAX_FUTURE))
    assert at.ts_ms.tolist() == [NOW + MAX_FUTURE]
    beyond = decode(b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % (NOW + MAX_FUTURE + 1))
    assert the_dead_letter(beyond) == ("future_timestamp", "p1")
    assert "ahead of the wall clock" in beyond.dead_letters[0].error


def test_microsecond_stamps_are_future_not_a_crash() -> None:
    b = decode(b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % (NOW * 1000))
    assert the_dead_letter(b) == ("future_timestamp", "p1")
    huge = decode(b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % (10**30))
    assert the_dead_letter(huge) == ("future_timestamp", "p1")


@pytest.mark.parametrize("ts", [b"-1e20", b"-%d" % (10**30), b"%d" % (MIN_TS_MS - 1)])
def test_timestamp_below_range_is_schema_error_not_overflow(ts: bytes) -> None:
    b = decode(b'{"asset_id": "p1", "ts": %s, "values": {"a": 1}}' % ts)
    assert the_dead_letter(b) == ("schema_error", "p1")
    assert "outside years" in b.dead_letters[0].error


# -- channels ---------------------------------------------------------------------------------


def test_null_value_is_missing_not_an_error() -> None:
    b = decode(b'{"asset_id": "p1", "ts": %d, "values": {"a": null, "b": 2, "c": null}}' % T)
    assert b.dead_letters == []
    assert rows(b) == [[None, 2.0, None]]


def test_unknown_channels_ignored_and_counted_per_reading() -> None:
    one = b'{"asset_id": "p1", "ts": %d, "values": {"a": 1, "x": 9, "y": null}}' % T
    two = b'{"asset_id": "p2", "ts": %d, "values": {"b": 2, "x": 8}}' % T
    b = decode(one, two)
    assert rows(b) == [[1.0, None, None], [None, 2.0, None]]
    assert b.unknown_channels == Counter({"x": 2, "y": 1})


def test_a_reading_with_only_unknown_channels_is_skipped_and_counted() -> None:
    b = decode(
        b'{"asset_id": "p1", "ts": %d, "values": {"x": 1}}' % T,
        b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % T,
    )
    assert rows(b) == [[1.0, None, None]]
    assert b.dead_letters == []
    assert b.unknown_channels == Counter({"x": 1})
    assert b.no_model_channel == 1


def test_unknown_channels_of_a_dead_lettered_message_are_not_counted() -> None:
    raw = (
        b'[{"asset_id": "p1", "ts": %d, "values": {"a": 1, "x": 1}},'
        b' {"asset_id": "p1", "ts": %d, "values": {"x": 2}},'
        b' {"asset_id": "p1", "ts": %d, "values": {"a": 2}}]' % (T, T, NOW + MAX_FUTURE + 1)
    )
    b = decode(raw)
    assert the_dead_letter(b) == ("future_timestamp", "p1")
    assert b.unknown_channels == Counter()
    assert b.no_model_channel == 0


def test_a_value_beyond_float32_dead_letters_its_message_only() -> None:
    # Once, 1e39 became inf in the float32 windows and stopped the scoring of the whole
    # batch; the scorer exited, and a restart replayed the batch into the same failure.
    first = b'{"asset_id": "p1", "ts": %d, "values": {"a": 1, "x": 1}}' % T
    bad = (
        b'[{"asset_id": "p2", "ts": %d, "values": {"a": 2, "b": 1e39, "y": 1}},'
        b' {"asset_id": "p2", "ts": %d, "values": {"y": 2}}]' % (T, T)
    )
    last = b'{"asset_id": "p3", "ts": %d, "values": {"c": 3.4e38, "z": 1}}' % T  # fits
    b = decode(first, bad, last)
    assert b.asset_ids == ["p1", "p3"]
    assert b.msg_index.tolist() == [0, 2]
    assert rows(b) == [[1.0, None, None], [None, None, pytest.approx(3.4e38)]]
    assert b.ts_ms.tolist() == [T, T]
    (d,) = b.dead_letters
    assert (d.reason, d.asset_id, d.source_offset, d.value) == ("non_finite", "p2", 101, bad)
    assert "value 1e+39 of channel 'b'" in d.error
    assert "float32" in d.error
    assert b.unknown_channels == Counter({"x": 1, "z": 1})  # not the dead letter's "y"
    assert b.no_model_channel == 0


# -- dead letters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "decode_error"),
        (b"", "decode_error"),
        (b'{"asset_id": "p\xff1", "ts": 1, "values": {"a": 1}}', "decode_error"),  # bad UTF-8
        (b'{"asset_id": "p1", "ts": 1, "values": {"a": NaN}}', "decode_error"),
        (b"42", "schema_error"),
        (b'"a string"', "schema_error"),
        (b'{"foo": 1}', "schema_error"),
        (b'{"ts": 1, "values": {"a": 1}}', "schema_error"),  # no asset_id
        (b'{"asset_id": "", "ts": 1, "values": {"a": 1}}', "schema_error"),
        (b'{"asset_id": "p1", "values": {"a": 1}}', "schema_error"),  # no ts
        (b'{"asset_id": "p1", "ts": 1}', "schema_error"),  # no values
        (b'{"asset_id": "p1", "ts": 1, "values": {}}', "schema_error"),
        (b'{"asset_id": "p1", "ts": 1, "values": {"a": "1.0"}}', "schema_error"),
        (b'{"asset_id": "p1", "ts": 1, "values": {"a": true}}', "schema_error"),
        (b'{"asset_id": "p1", "ts": true, "values": {"a": 1}}', "schema_error"),
        (b'{"asset_id": 7, "ts": 1, "values": {"a": 1}}', "schema_error"),
        (b"[]", "schema_error"),
        (b"[[]]", "schema_error"),
        (b'{"asset_id": "p1", "readings": []}', "schema_error"),
        (b'{"asset_id": "p1", "ts": 1, "values": {"a": 1e400}}', "non_finite"),
        (b'{"asset_id": "p1", "ts": 1, "values": {"a": -1e400}}', "non_finite"),
        (b'{"asset_id": "p1", "ts": 1e400, "values": {"a": 1}}', "non_finite"),
        # finite float64 but beyond float32, the windows' type: inf there
        (b'{"asset_id": "p1", "ts": 1, "values": {"a": 1, "b": 1e39}}', "non_finite"),
        (b'{"asset_id": "p1", "ts": 1, "values": {"a": -3.5e38}}', "non_finite"),
        (b'{"asset_id": "p1", "ts": 1, "sensor": "c", "value": 1e39}', "non_finite"),
        (b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % (NOW + 10**9), "future_timestamp"),
    ],
)
def test_dead_letter_reason(raw: bytes, reason: str) -> None:
    dec = ReadingDecoder(CHANNELS, max_future_ms=MAX_FUTURE)
    msg = Msg(raw, off=4242, part=5, top="plant.readings", k=b"the-key")
    b = dec.decode([msg], now_ms=NOW)
    assert len(b) == 0
    assert b.values.shape == (0, 3)
    (d,) = b.dead_letters
    assert d.reason == reason
    assert d.stage == "decode"
    assert d.source_topic == "plant.readings"
    assert d.source_partition == 5
    assert d.source_offset == 4242
    assert d.key == b"the-key"
    assert d.value == raw
    assert d.error
    assert not d.partial


def test_tombstone_is_dead_lettered() -> None:
    dec = ReadingDecoder(CHANNELS, max_future_ms=MAX_FUTURE)
    b = dec.decode([Msg(None, off=9, part=1)], now_ms=NOW)
    (d,) = b.dead_letters
    assert d.reason == "schema_error"
    assert "tombstone" in d.error
    assert d.value == b""
    assert (d.source_partition, d.source_offset) == (1, 9)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            b'{"asset_id": "p1", "ts": %d, "values": {"a": 2}}' % (NOW + MAX_FUTURE + 1),
            "future_timestamp",
        ),
        (b'{"asset_id": "p1", "ts": "2023-11-14T22:13:20", "values": {"a": 2}}', "schema_error"),
        (b'{"asset_id": "p1", "ts": %d, "values": {}}' % T, "schema_error"),
        (b'{"asset_id": "p1", "ts": %d, "values": {"a": "x"}}' % T, "schema_error"),
        (b'{"asset_id": "p1", "ts": %d, "values": {"a": 1e999}}' % T, "non_finite"),
        (b'{"asset_id": "p1", "ts": %d, "values": {"a": 1e39}}' % T, "non_finite"),
        (b'{"ts": %d, "values": {"a": 2}}' % T, "schema_error"),
    ],
)
def test_batch_with_one_bad_reading_is_dead_lettered_whole(bad: bytes, reason: str) -> None:
    good1 = b'{"asset_id": "p1", "ts": %d, "values": {"a": 1}}' % T
    good2 = b'{"asset_id": "p1", "ts": %d, "values": {"a": 3}}' % (T + 1000)
    raw = b"[" + good1 + b"," + bad + b"," + good2 + b"]"
    ok = b'{"asset_id": "p2", "ts": %d, "values": {"b": 5}}' % T
    b = decode(raw, ok)
    # only the separate good message survives; nothing of the bad batch leaks through
    assert b.asset_ids == ["p2"]
    assert b.msg_index.tolist() == [1]
    (d,) = b.dead_letters
    assert d.reason == reason
    assert d.value == raw
    assert d.source_offset == 100


def test_batch_object_with_one_bad_reading_is_dead_lettered_whole() -> None:
    raw = (
        b'{"asset_id": "p9", "readings": [{"ts": %d, "values": {"a": 1}},'
        b' {"ts": "not a time", "values": {"a": 2}}]}' % T
    )
    b = decode(raw)
    assert the_dead_letter(b) == ("schema_error", "p9")
