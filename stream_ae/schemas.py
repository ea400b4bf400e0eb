"""Wire contracts: anomaly events, score records, data-quality events, dead letters.

All outgoing records are JSON (msgspec) with a ``schema_version``. Change a
field's meaning only with a new version. The input side (readings in wide,
batch and narrow form) is decoded in :mod:`stream_ae.decode`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal, Protocol

import msgspec

SCHEMA_VERSION = 1

#: Namespace for deterministic event ids (uuid5).
EVENT_NAMESPACE = uuid.UUID("6f1c9a52-3a8e-4c63-9a0b-1f7d2f0c5e11")

Severity = Literal["warning", "high", "critical"]


class MessageLike(Protocol):
    """What the pure core needs from a consumed record (confluent_kafka.Message fits)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


class ChannelShare(msgspec.Struct, frozen=True):
    channel: str
    share: float


class AnomalyEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One window judged anomalous. Published on ``maintenance.anomalies``, key = asset id.

    ``event_id`` is a uuid5 of (asset, window start, window end, model version):
    the same window scored by the same model always gets the same id, so a
    consumer can drop the duplicates that at-least-once delivery may bring.
    Times are epoch milliseconds (UTC); ``window_end_ms`` is exclusive.

    ``during_maintenance``: the window overlaps a maintenance period the scorer
    knows of for the asset (feedback on ``maintenance.feedback``, open or closed;
    :mod:`stream_ae.decide.maintenance`). Such events are still published, with
    the same severity and id, so that no event is lost to a wrong report;
    consumers filter on the flag. Not part of ``event_id``: a replay that learnt
    of the maintenance meanwhile gives the same id. Records written before the
    field existed decode as False.
    """

    schema_version: int = SCHEMA_VERSION
    event_id: str
    asset_id: str
    window_start_ms: int
    window_end_ms: int
    window_start: str
    window_end: str
    score: float
    threshold: float
    score_ratio: float
    severity: Severity
    top_channels: list[ChannelShare]
    model_version: str
    detected_at: str
    during_maintenance: bool = False


class ScoreRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Every scored window (optional ``scores`` topic), anomalous or not."""

    schema_version: int = SCHEMA_VERSION
    asset_id: str
    window_start_ms: int
    window_end_ms: int
    score: float
    threshold: float
    model_version: str


class LatentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A scored window's latent vector (optional ``latents`` topic, key = asset id)."""

    schema_version: int = SCHEMA_VERSION
    asset_id: str
    window_start_ms: int
    window_end_ms: int
    model_version: str
    vector: list[float]


def latent_records(
    asset_ids: Sequence[str],
    start_ms: Iterable[int],
    end_ms: Iterable[int],
    vectors: Iterable[list[float]],
    model_version: str,
) -> list[LatentRecord]:
    """One :class:`LatentRecord` per window (the scorer's topic and ``stream-ae embed``)."""
    return [
        LatentRecord(
            asset_id=a, window_start_ms=s, window_end_ms=e, model_version=model_version, vector=v
        )
        for a, s, e, v in zip(asset_ids, start_ms, end_ms, vectors, strict=True)
    ]


DataQualityKind = Literal[
    "gap",  # [start_ms, end_ms) had no usable row (a channel missing beyond the fill limit)
    "silent_asset",  # no reading since start_ms (= end_ms) for window.idle_timeout_ms
    "channels_missing",  # a gap still open: [start_ms, end_ms) unusable so far; its "gap"
    # event follows when the channels return
]


class DataQualityEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A gap in an asset's data (no window spans it), a gap that lasts (channels missing
    while the others still arrive: the asset is not scored), or an asset that went
    silent. ``event_id`` is a uuid5 of the kind, asset and times, so a replay of the
    same readings republishes the same id."""

    schema_version: int = SCHEMA_VERSION
    event_id: str
    kind: DataQualityKind
    asset_id: str
    start_ms: int
    end_ms: int
    detail: str
    detected_at: str


def event_id(*parts: object) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, "|".join(str(p) for p in parts)))


def iso_ms(ms: int) -> str:
    """Epoch milliseconds → ISO-8601 UTC with millisecond precision and a ``Z``."""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class ModelAnnouncement(msgspec.Struct, frozen=True, kw_only=True):
    """The champion model, on the compacted control topic (``topics.models``, key
    ``champion``). Scorers load ``path``, check that the weights hash to
    ``weights_sha256``, and switch at a batch boundary."""

    schema_version: int = SCHEMA_VERSION
    version: str
    path: str
    weights_sha256: str
    announced_at: str


CHAMPION_KEY = b"champion"

FeedbackKind = Literal[
    "acknowledged_fault",  # a real fault: [start_ms, end_ms) never trains a model
    "false_alarm",  # the anomaly event(s) in [start_ms, end_ms) were normal operation
    "maintenance_start",  # maintenance began at start_ms (end_ms unused)
    "maintenance_end",  # maintenance ended at start_ms
    "maintenance",  # a whole maintenance period [start_ms, end_ms)
]


#: Timestamps must fall in years 1..9999 (what ISO-8601 output can show); this also
#: keeps int64 grid arithmetic exact. Readings outside are dead-lettered, and a
#: feedback time outside is refused when the record is decoded.
MIN_TS_MS = -62_135_596_800_000
MAX_TS_MS = 253_402_300_799_999
TimestampMs = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, le=MAX_TS_MS)]


class FeedbackEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What maintenance teams tell stream_ae, on ``maintenance.feedback`` (key = asset).

    Times are epoch ms. ``event_id`` optionally names the anomaly event the
    feedback answers. The trainer reads this topic to keep training data normal
    (faults and maintenance periods are left out; false alarms are kept as normal
    data and counted as a calibration signal).
    """

    schema_version: int = SCHEMA_VERSION
    asset_id: str
    kind: FeedbackKind
    start_ms: TimestampMs
    end_ms: TimestampMs | None = None
    event_id: str | None = None
    note: str = ""
    author: str = ""
    created_at: str = ""

    @property
    def maintenance_end_ms(self) -> int | None:
        """When the maintenance this record reports ended (``maintenance_end``: its
        ``start_ms``; ``maintenance``: its ``end_ms``), else None."""
        if self.kind == "maintenance_end":
            return self.start_ms
        if self.kind == "maintenance":
            return self.end_ms
        return None


def decode_feedback(data: bytes) -> FeedbackEvent:
    return msgspec.json.decode(data, type=FeedbackEvent)


def feedback_events(messages: Iterable[MessageLike]) -> tuple[list[FeedbackEvent], list[str]]:
    """Decode feedback records → (events, one message per record that is not a
    feedback event, naming its topic, partition and offset). People write this topic
    by hand and by script: a bad record is reported and skipped, never fatal."""
    events: list[FeedbackEvent] = []
    problems: list[str] = []
    for m in messages:
        try:
            events.append(decode_feedback(m.value() or b""))
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            problems.append(
                f"feedback record skipped ({m.topic()} partition {m.partition()} offset "
                f"{m.offset()}): {exc}; the README's Feedback section gives the schema"
            )
    return events, problems


# Dead letters --------------------------------------------------------------------------

DeadLetterReason = Literal[
    "decode_error",  # bytes are not JSON (or not UTF-8)
    "schema_error",  # JSON, but not a reading in any accepted shape
    "non_finite",  # a value or timestamp out of the float range
    "future_timestamp",  # stamped further ahead of the wall clock than window.max_future_ms
    "late",  # arrived after its asset's watermark closed the reading's grid slot
]

DeadLetterStage = Literal["decode", "windowing"]

H_REASON = "stream_ae.reason"
H_STAGE = "stream_ae.stage"
H_SOURCE_TOPIC = "stream_ae.source_topic"
H_SOURCE_PARTITION = "stream_ae.source_partition"
H_SOURCE_OFFSET = "stream_ae.source_offset"
H_ERROR = "stream_ae.error"
H_ASSET = "stream_ae.asset_id"
H_PARTIAL = "stream_ae.partial"


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message (or the late part of one) that could not be used, and why.

    Produced to the dead-letter topic with ``value`` as the record value: the
    original bytes, except when only some readings of a batch message were late,
    where it is a JSON array of just those readings in wide form and the
    ``stream_ae.partial`` header is ``true``. The reason, stage, source
    topic/partition/offset and error text travel as headers.
    """

    reason: DeadLetterReason
    stage: DeadLetterStage
    error: str
    value: bytes
    key: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    asset_id: str | None = None
    partial: bool = False

    def headers(self) -> list[tuple[str, bytes]]:
        h = [
            (H_REASON, self.reason.encode()),
            (H_STAGE, self.stage.encode()),
            (H_SOURCE_TOPIC, self.source_topic.encode()),
            (H_SOURCE_PARTITION, str(self.source_partition).encode()),
            (H_SOURCE_OFFSET, str(self.source_offset).encode()),
            (H_ERROR, self.error[:1000].encode("utf-8", "replace")),
        ]
        if self.asset_id is not None:
            h.append((H_ASSET, self.asset_id.encode("utf-8", "replace")))
        if self.partial:
            h.append((H_PARTIAL, b"true"))
        return h


_encoder = msgspec.json.Encoder()


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def decode_event(data: bytes) -> AnomalyEvent:
    return msgspec.json.decode(data, type=AnomalyEvent)


def decode_quality_event(data: bytes) -> DataQualityEvent:
    return msgspec.json.decode(data, type=DataQualityEvent)
