"""Readings from files (CSV) and from topic ranges, as column arrays.

Both paths end in the same :class:`~stream_ae.windowing.Windower` the scorer uses,
so training sees exactly the windows production would build.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from stream_ae.decode import parse_ts
from stream_ae.errors import DataError
from stream_ae.settings import Settings
from stream_ae.windowing import GridSpec, WindowBatch, Windower

TIME_COLUMNS = ("timestamp", "datetime", "ts", "time")
#: Columns never taken as channels.
RESERVED = {*TIME_COLUMNS, "asset_id", "anomaly", "changepoint", "fault"}


@dataclass
class Readings:
    """Readings in arrival order. ``values`` is (N, C) float64, NaN where missing."""

    asset_ids: list[str]
    ts_ms: np.ndarray  # (N,) int64
    values: np.ndarray  # (N, C)
    channels: list[str]
    labels: np.ndarray | None = None  # (N,) int8 when the file has a label column
    changepoints: np.ndarray | None = None  # (N,) int8 when it has a changepoint column

    def __len__(self) -> int:
        return len(self.asset_ids)

    def select(self, mask: np.ndarray) -> Readings:
        idx = np.flatnonzero(mask)
        return Readings(
            [self.asset_ids[i] for i in idx.tolist()],
            self.ts_ms[idx],
            self.values[idx],
            self.channels,
            None if self.labels is None else self.labels[idx],
            None if self.changepoints is None else self.changepoints[idx],
        )


def read_csv(
    path: Path,
    *,
    channels: Sequence[str] | None = None,
    sep: str = ",",
    time_column: str | None = None,
    asset_column: str = "asset_id",
    label_column: str = "anomaly",
    changepoint_column: str = "changepoint",
    default_asset: str | None = None,
) -> Readings:
    """Read a CSV of readings: a time column (ISO-8601, zone assumed UTC when absent,
    or epoch ms), an optional asset column, numeric channel columns, an optional 0/1
    label column. Rows may come in any order (windowing sorts them by time)."""
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: the file is empty") from None
        tcol = time_column or next((h for h in header if h.lower() in TIME_COLUMNS), None)
        if tcol is None or tcol not in header:
            looked = time_column or "/".join(TIME_COLUMNS)
            raise DataError(
                f"{path}: no time column (looked for {looked})", hint="name it with --time-column"
            )
        own = {
            tcol,
            asset_column,
            label_column,
            changepoint_column,
        }  # named columns are never channels
        chans = (
            list(channels)
            if channels
            else [h for h in header if h.lower() not in RESERVED and h not in own]
        )
        missing = [c for c in chans if c not in header]
        if missing:
            raise DataError(f"{path}: channel columns {missing} not in the header {header}")
        if not chans:
            raise DataError(f"{path}: no channel columns found in {header}")
        ti = header.index(tcol)
        ai = header.index(asset_column) if asset_column in header else None
        li = header.index(label_column) if label_column in header else None
        ci = [header.index(c) for c in chans]
        asset_default = default_asset or path.stem
        assets: list[str] = []
        stamps: list[int] = []
        rows: list[list[float]] = []
        labels: list[int] = []
        cpi = header.index(changepoint_column) if changepoint_column in header else None
        cps: list[int] = []
        for lineno, rec in enumerate(reader, start=2):
            if not rec:
                continue
            try:
                ts = _csv_ts(rec[ti].strip())
                row = [float(rec[i]) if rec[i].strip() else np.nan for i in ci]
                if any(math.isinf(v) for v in row) or any(
                    rec[i].strip().lower() == "nan" for i in ci
                ):
                    raise ValueError("a channel value is not finite (leave the cell empty)")
                asset = rec[ai] if ai is not None else asset_default
                label = int(float(rec[li] or 0)) if li is not None else 0
                cp = int(float(rec[cpi] or 0)) if cpi is not None else 0
            except Exception as exc:
                raise DataError(f"{path}, line {lineno}: cannot parse ({exc})") from None
            rows.append(row)
            stamps.append(ts)
            assets.append(asset)
            if li is not None:
                labels.append(label)
            if cpi is not None:
                cps.append(cp)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return Readings(
        assets,
        np.array(stamps, np.int64),
        np.array(rows, np.float64),
        chans,
        np.array(labels, np.int8) if li is not None else None,
        np.array(cps, np.int8) if cpi is not None else None,
    )


def _csv_ts(text: str) -> int:
    """Epoch ms digits, or ISO-8601 (a space may separate date and time; no zone = UTC)."""
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace(" ", "T", 1))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return parse_ts(dt.isoformat())


def to_windows(readings: Readings, spec: GridSpec) -> WindowBatch:
    """All complete windows of a bounded set of readings (the scorer's own windowing).

    Readings are fed in time order (stable), so a file's row order does not matter
    and none is late."""
    w = Windower(spec)
    n = len(readings)
    order = np.argsort(readings.ts_ms, kind="stable")
    ids = readings.asset_ids
    first = w.process(
        [ids[i] for i in order.tolist()],
        np.zeros(n, np.int64),
        np.arange(n, dtype=np.int64),
        readings.ts_ms[order],
        readings.values[order],
        now_ms=int(readings.ts_ms.max()) if n else 0,
    )
    rest = w.flush_all()
    return concat_windows([first.windows, rest.windows], spec)


def concat_windows(batches: Sequence[WindowBatch], spec: GridSpec) -> WindowBatch:
    batches = [b for b in batches if len(b)]
    if not batches:
        return WindowBatch.empty(spec.n_channels, spec.size)
    return WindowBatch(
        [a for b in batches for a in b.asset_ids],
        np.concatenate([b.partitions for b in batches]),
        np.concatenate([b.start_ms for b in batches]),
        np.concatenate([b.end_ms for b in batches]),
        np.concatenate([b.values for b in batches]),
    )


def read_topic(
    settings: Settings, start: str, end: str | None, channels: Sequence[str] | None
) -> tuple[Readings, str]:
    """Readings of the readings topic between two times (record timestamps)."""
    from stream_ae.decode import ReadingDecoder
    from stream_ae.io.kafka import read_range

    start_ms = parse_ts(start)
    end_ms = parse_ts(end) if end else None
    if not channels:
        raise DataError(
            "training from a topic needs the channel list",
            hint="pass --channels a,b,c (the channels the model should use)",
        )
    decoder = ReadingDecoder(channels, max_future_ms=settings.window.max_future_ms)
    assets: list[str] = []
    stamps: list[np.ndarray] = []
    values: list[np.ndarray] = []
    topic = settings.topics.readings
    now = int(time.time() * 1000)
    for batch in read_range(settings.kafka, topic, start_ms=start_ms, end_ms=end_ms):
        d = decoder.decode(batch, now_ms=now)
        assets.extend(d.asset_ids)
        stamps.append(d.ts_ms)
        values.append(d.values)
    if not assets:
        raise DataError(f"no readings on {topic} between {start} and {end or 'now'}")
    readings = Readings(
        assets, np.concatenate(stamps), np.concatenate(values), list(channels), None
    )
    return readings, f"{topic} [{start}, {end or 'now'})"


def readings_from_arrays(
    asset_ids: Sequence[str],
    ts_ms: np.ndarray,
    values: np.ndarray,
    present: np.ndarray,
    channels: list[str],
) -> Readings:
    """Readings from time-major arrays: ``ts_ms`` (T,) or (T, A), ``values`` (T, A, C),
    ``present`` (T, A) — the simulator's block layout."""
    t, a = present.shape
    ts = np.broadcast_to(ts_ms if ts_ms.ndim == 2 else ts_ms[:, None], (t, a))
    mask = present.reshape(-1)
    names = np.array(asset_ids, dtype=object)
    ids = np.broadcast_to(names[None, :], (t, a)).reshape(-1)[mask]
    return Readings(
        ids.tolist(),
        ts.reshape(-1)[mask].astype(np.int64),
        values.reshape(t * a, -1)[mask].astype(np.float64),
        channels,
    )
