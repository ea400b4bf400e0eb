"""Bytes → readings, in bulk. Bad input becomes a :class:`DeadLetter`, never an exception.

Accepted shapes (JSON, message key = asset id):

* wide:   ``{"asset_id": "pump-07", "ts": T, "values": {"<channel>": <number|null>, ...}}``
* batch:  a JSON array of wide readings, or
          ``{"asset_id": ..., "readings": [{"ts": T, "values": {...}}, ...]}``
* narrow: ``{"asset_id": ..., "ts": T, "sensor": "<channel>", "value": <number>}``

``T`` is epoch milliseconds (integer or float) or an ISO-8601 string with a
zone. A ``null`` channel value means "not measured" (a missing sample), not an
error. Channels the model does not know are ignored and counted.

A message is accepted or dead-lettered as a whole at this stage; lateness is
judged later, per reading, by the windowing step.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np

from stream_ae.schemas import MAX_TS_MS, MIN_TS_MS, DeadLetter, DeadLetterReason, MessageLike

_NAN = float("nan")
#: The windows are float32: a larger magnitude would turn into inf there.
_F32_MAX = float(np.finfo(np.float32).max)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class _Sample(msgspec.Struct):
    ts: int | float | str
    values: dict[str, float | None]


class _Message(msgspec.Struct):
    asset_id: str | None = None
    ts: int | float | str | None = None
    values: dict[str, float | None] | None = None
    sensor: str | None = None
    value: float | None = None
    readings: list[_Sample] | None = None


_decoder = msgspec.json.Decoder(_Message | list[_Message])


class _Reject(Exception):
    def __init__(self, reason: DeadLetterReason, error: str, asset: str | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.asset = asset


@dataclass
class DecodedBatch:
    """Readings of one consumed batch, column-wise.

    ``values[i, c]`` is NaN where reading ``i`` did not carry channel ``c`` (narrow
    readings carry one channel). ``msg_index[i]`` points into the batch's messages.
    """

    asset_ids: list[str]
    ts_ms: np.ndarray  # (N,) int64
    values: np.ndarray  # (N, C) float64
    msg_index: np.ndarray  # (N,) int64
    dead_letters: list[DeadLetter] = field(default_factory=list)
    unknown_channels: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    #: readings (of accepted messages) that carry none of the model's channels: skipped
    no_model_channel: int = 0

    def __len__(self) -> int:
        return len(self.asset_ids)


def parse_ts(ts: int | float | str) -> int:
    """Epoch ms (int/float) or ISO-8601 with a zone → epoch ms (floored). Raises ``_Reject``."""
    if isinstance(ts, int):
        return ts
    if isinstance(ts, float):
        if not math.isfinite(ts):
            raise _Reject("non_finite", f"timestamp {ts!r} is not finite")
        return math.floor(ts)
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        raise _Reject(
            "schema_error", f"ts {ts!r} is neither epoch milliseconds nor ISO-8601"
        ) from None
    if dt.tzinfo is None:
        raise _Reject("schema_error", f"ts {ts!r} has no time zone; add 'Z' or an offset")
    # exact integer arithmetic: dt.timestamp() is a float and loses milliseconds
    return (dt - _EPOCH) // _MS


def _decode_one(raw: bytes | None) -> _Message | list[_Message]:
    """One message's JSON, or ``_Reject`` with the reason."""
    if raw is None:
        raise _Reject("schema_error", "message has no value (tombstone)")
    try:
        decoded: _Message | list[_Message] = _decoder.decode(raw)
        return decoded
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason: DeadLetterReason = "non_finite" if "out of range" in text else "schema_error"
        raise _Reject(reason, text) from None
    except msgspec.DecodeError as exc:
        raise _Reject("decode_error", str(exc)) from None
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a JSON string
        raise _Reject("decode_error", str(exc)) from None


def _decode_bulk(raws: list[bytes | None]) -> list[_Message | list[_Message]] | None:
    """Fast path: the whole batch in one msgspec call, one message per line.

    Only when every value is a single-line JSON document (no newline inside, so
    messages cannot run into each other) and the line count matches; any problem
    → None and the caller decodes message by message to find the bad ones.
    """
    if not raws or any(r is None or b"\n" in r for r in raws):
        return None
    try:
        out = _decoder.decode_lines(b"\n".join(raws))  # type: ignore[arg-type]
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return out if len(out) == len(raws) else None


def _dead_letter(msg: MessageLike, raw: bytes | None, rej: _Reject) -> DeadLetter:
    return DeadLetter(
        reason=rej.reason,
        stage="decode",
        error=rej.error,
        value=raw or b"",
        key=msg.key(),
        source_topic=msg.topic() or "",
        source_partition=msg.partition() or 0,
        source_offset=msg.offset() or 0,
        asset_id=rej.asset,
    )


def _parse_ts(ts: int | float | str, asset: str) -> int:
    try:
        return parse_ts(ts)
    except _Reject as rej:
        rej.asset = asset
        raise


class ReadingDecoder:
    """Decodes batches of messages against a fixed channel list (the model's)."""

    def __init__(self, channels: Sequence[str], *, max_future_ms: int) -> None:
        self.channels = list(channels)
        self._index = {c: i for i, c in enumerate(self.channels)}
        self.max_future_ms = max_future_ms
        self._unknown: list[str] = []
        self._skipped = 0

    def decode(self, messages: Sequence[MessageLike], *, now_ms: int) -> DecodedBatch:
        n_ch = len(self.channels)
        assets: list[str] = []
        stamps: list[int] = []
        rows: list[list[float | None]] = []
        owners: list[int] = []
        dead: list[DeadLetter] = []
        unknown: list[str] = []
        self._unknown = unknown
        skipped: list[int] = []  # per message: its readings with none of the model's channels
        horizon = now_ms + self.max_future_ms
        raws = [m.value() for m in messages]
        bulk = _decode_bulk(raws)
        marks: list[int] = []  # per message: where its unknown channels start
        for i, raw in enumerate(raws):
            mark = len(unknown)
            marks.append(mark)
            self._skipped = 0
            try:
                decoded = bulk[i] if bulk is not None else _decode_one(raw)
                readings = self._readings(decoded)
                for asset, ts, _ in readings:
                    if ts > horizon:
                        raise _Reject(
                            "future_timestamp",
                            f"ts {ts} is {ts - now_ms} ms ahead of the wall clock "
                            f"(window.max_future_ms = {self.max_future_ms}); "
                            "check the sender's clock",
                            asset,
                        )
                    if not MIN_TS_MS <= ts <= MAX_TS_MS:
                        raise _Reject("schema_error", f"ts {ts} is outside years 1..9999", asset)
                for asset, ts, row in readings:
                    assets.append(asset)
                    stamps.append(ts)
                    rows.append(row)
                    owners.append(i)
            except _Reject as rej:
                del unknown[mark:]  # a dead-lettered message's channels are not counted
                self._skipped = 0
                dead.append(_dead_letter(messages[i], raw, rej))
            skipped.append(self._skipped)
        values = (
            np.array(rows, dtype=np.float64).reshape(len(rows), n_ch)
            if rows
            else np.empty((0, n_ch), dtype=np.float64)
        )
        batch = DecodedBatch(
            asset_ids=assets,
            ts_ms=np.array(stamps, dtype=np.int64),
            values=values,
            msg_index=np.array(owners, dtype=np.int64),
            dead_letters=dead,
            unknown_channels=Counter(unknown),
            messages=len(messages),
            no_model_channel=sum(skipped),
        )
        with np.errstate(invalid="ignore"):  # NaN (not measured) compares False
            too_big = np.abs(values) > _F32_MAX
        if too_big.any():
            self._reject_too_big(batch, too_big, messages, raws, unknown, marks, skipped)
        return batch

    def _reject_too_big(
        self,
        batch: DecodedBatch,
        too_big: np.ndarray,
        messages: Sequence[MessageLike],
        raws: list[bytes | None],
        unknown: list[str],
        marks: list[int],
        skipped: list[int],
    ) -> None:
        """Dead-letter (as a whole) each message with a value beyond float32's range.

        JSON numbers are float64; such a value (often a device's error code) would turn
        into inf in the float32 windows and stop the scoring of the whole batch.
        Checked once per batch, vectorised, so the usual batch pays one comparison.
        """
        rows = np.flatnonzero(too_big.any(axis=1))
        bad: dict[int, int] = {}  # message index -> its first offending row
        for r in rows.tolist():
            bad.setdefault(int(batch.msg_index[r]), r)
        for i, r in sorted(bad.items()):
            c = int(np.flatnonzero(too_big[r])[0])
            error = (
                f"value {batch.values[r, c]:.6g} of channel {self.channels[c]!r} is beyond "
                f"float32's range (±{_F32_MAX:.3g}): a device error code? send null for "
                "a missing sample"
            )
            batch.dead_letters.append(
                _dead_letter(messages[i], raws[i], _Reject("non_finite", error, batch.asset_ids[r]))
            )
        keep = ~np.isin(batch.msg_index, np.fromiter(bad, np.int64))
        batch.asset_ids = [a for a, k in zip(batch.asset_ids, keep.tolist(), strict=True) if k]
        batch.ts_ms = batch.ts_ms[keep]
        batch.values = batch.values[keep]
        batch.msg_index = batch.msg_index[keep]
        ends = [*marks[1:], len(unknown)]
        batch.unknown_channels = Counter(
            name
            for i, (a, b) in enumerate(zip(marks, ends, strict=True))
            if i not in bad
            for name in unknown[a:b]
        )
        batch.no_model_channel = sum(n for i, n in enumerate(skipped) if i not in bad)

    def _row(self, values: dict[str, float | None]) -> list[float | None] | None:
        """The model's channels in order; None when the reading has none of them
        (it carries nothing for this model: skipped, and counted, with its channels
        as unknown channels)."""
        if values.keys() <= self._index.keys():
            return list(map(values.get, self.channels))
        others = [k for k in values if k not in self._index]
        self._unknown.extend(others)
        if len(others) == len(values):
            self._skipped += 1
            return None
        return list(map(values.get, self.channels))

    def _readings(
        self, decoded: _Message | list[_Message]
    ) -> list[tuple[str, int, list[float | None]]]:
        items = decoded if isinstance(decoded, list) else [decoded]
        if not items:
            raise _Reject("schema_error", "empty array: no readings")
        out: list[tuple[str, int, list[float | None]]] = []
        for m in items:
            asset = m.asset_id
            if not asset:
                raise _Reject("schema_error", "missing field 'asset_id'")
            if m.readings is not None:
                if not m.readings:
                    raise _Reject("schema_error", "'readings' is empty", asset)
                for s in m.readings:
                    ts = _parse_ts(s.ts, asset)
                    row = self._row(s.values)
                    if row is not None:
                        out.append((asset, ts, row))
                continue
            if m.ts is None:
                raise _Reject("schema_error", "missing field 'ts'", asset)
            ts = _parse_ts(m.ts, asset)
            if m.sensor is not None:
                if m.value is None:
                    raise _Reject("schema_error", "narrow reading without 'value'", asset)
                idx = self._index.get(m.sensor)
                if idx is None:
                    self._unknown.append(m.sensor)
                    self._skipped += 1
                    continue
                narrow: list[float | None] = [_NAN] * len(self.channels)
                narrow[idx] = m.value
                out.append((asset, ts, narrow))
            elif m.values is not None:
                if not m.values:
                    raise _Reject("schema_error", "'values' is empty", asset)
                wide = self._row(m.values)
                if wide is not None:
                    out.append((asset, ts, wide))
            else:
                raise _Reject(
                    "schema_error",
                    "no 'values', 'sensor'/'value' or 'readings': not a reading in any "
                    "accepted shape",
                    asset,
                )
        return out
