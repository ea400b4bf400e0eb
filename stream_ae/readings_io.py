"""Readings from files (CSV, Parquet) and from topic ranges, as column arrays.

Both paths end in the same :class:`~stream_ae.windowing.Windower` the scorer uses,
so training sees exactly the windows production would build. :func:`read_readings`
takes a CSV or Parquet file, or a folder of them, by suffix.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from stream_ae.decode import _Reject, parse_ts
from stream_ae.errors import ConfigError, DataError
from stream_ae.settings import Settings
from stream_ae.windowing import GridSpec, WindowBatch, Windower
from stream_ae.windowing.windower import Gap

TIME_COLUMNS = ("timestamp", "datetime", "ts", "time")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
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

    def project(self, channels: Sequence[str]) -> Readings:
        """The same readings with only ``channels``, in that order (all must exist)."""
        idx = [self.channels.index(c) for c in channels]
        return dataclasses.replace(self, values=self.values[:, idx], channels=list(channels))

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
    require_labels: bool = False,
) -> Readings:
    """Read a CSV of readings: a time column (ISO-8601, zone assumed UTC when absent,
    or epoch ms), an optional asset column, numeric channel columns, an optional 0/1
    label column (required with ``require_labels``). Rows may come in any order
    (windowing sorts them by time).

    The file is UTF-8, with or without the byte-order mark Excel writes ("CSV UTF-8"):
    read as plain UTF-8 the mark would stick to the first column's name."""
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=sep)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise DataError(f"{path}: the file is empty") from None
            tcol, chans = _columns(
                path, header, channels, time_column, asset_column, label_column, changepoint_column
            )
            if require_labels:
                _require_label(path, header, label_column)
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
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
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


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> DataError:
    """The decode error with its line: the text reader decodes ahead in blocks, so the
    line the CSV reader had reached says nothing; the bytes before the bad one do."""
    line = path.read_bytes().count(b"\n", 0, exc.start) + 1
    return DataError(
        f"{path}, line {line}: not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r}"
        f" at offset {exc.start}: {exc.reason})",
        hint="save it as UTF-8, e.g. Excel's 'CSV UTF-8', or `iconv -f latin1 -t utf-8`",
    )


def _columns(
    path: Path,
    header: list[str],
    channels: Sequence[str] | None,
    time_column: str | None,
    asset_column: str,
    label_column: str,
    changepoint_column: str,
) -> tuple[str, list[str]]:
    """The time column and the channel columns of a file (CSV header or Parquet schema)."""
    tcol = time_column or next((h for h in header if h.lower() in TIME_COLUMNS), None)
    if tcol is None or tcol not in header:
        looked = time_column or "/".join(TIME_COLUMNS)
        raise DataError(
            f"{path}: no time column (looked for {looked})", hint="name it with --time-column"
        )
    own = {tcol, asset_column, label_column, changepoint_column}  # never channels
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
    return tcol, chans


def _require_label(path: Path, header: list[str], label_column: str) -> None:
    """A missing label column would count every reading as normal, and a backtest
    would then report numbers that mean nothing: refuse, with the columns found."""
    if label_column not in header:
        raise DataError(
            f"{path}: no label column {label_column!r} (columns found: {', '.join(header)})",
            hint="name the 0/1 label column with --label-column",
        )


def _csv_ts(text: str) -> int:
    """Epoch ms digits, or ISO-8601 (a space may separate date and time; no zone = UTC)."""
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace(" ", "T", 1))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return parse_ts(dt.isoformat())


def read_parquet(
    path: Path,
    *,
    channels: Sequence[str] | None = None,
    time_column: str | None = None,
    asset_column: str = "asset_id",
    label_column: str = "anomaly",
    changepoint_column: str = "changepoint",
    default_asset: str | None = None,
    require_labels: bool = False,
) -> Readings:
    """Read a Parquet file of readings, with :func:`read_csv`'s columns and meaning.

    The time column may be a timestamp of any unit (no zone = UTC, a zone is
    honoured), a date, ISO-8601 strings (as in a CSV) or integer epoch ms. Channel
    columns must be numeric (integers, floats, decimals or booleans); a null is a
    missing sample, and NaN or ±inf is refused (a Parquet file can say "missing"
    exactly, so a non-finite number is taken for a fault upstream). Errors name
    the file, the row (counted from 1) and the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"Parquet file {path} does not exist")
    try:
        pf = pq.ParquetFile(path)
        header = list(pf.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{path}: not a readable Parquet file ({exc})",
            hint="check the file, or give a CSV file a .csv suffix",
        ) from None
    tcol, chans = _columns(
        path, header, channels, time_column, asset_column, label_column, changepoint_column
    )
    if require_labels:
        _require_label(path, header, label_column)
    optional = [c for c in (asset_column, label_column, changepoint_column) if c in header]
    wanted = list(dict.fromkeys([tcol, *chans, *optional]))
    try:
        table = pf.read(columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read the columns {wanted} ({exc})") from None
    n = table.num_rows
    if n == 0:
        raise DataError(f"{path}: no data rows")
    cols = {name: _decoded(table.column(name)) for name in wanted}
    ts = _parquet_ts(path, tcol, cols[tcol])
    values = np.empty((n, len(chans)), np.float64)
    for j, c in enumerate(chans):
        values[:, j] = _numeric(path, c, cols[c], "channel", allow_missing=True)
    if asset_column in cols:
        col = cols[asset_column]
        _no_nulls(path, asset_column, col)
        try:
            assets = [str(a) for a in col.cast(pa.string()).to_pylist()]
        except pa.ArrowException as exc:
            raise DataError(f"{path}: asset column {asset_column!r} is not text ({exc})") from None
    else:
        assets = [default_asset or path.stem] * n
    flags = [
        _numeric(path, c, cols[c], "label", allow_missing=False).astype(np.int8)
        if c in cols
        else None
        for c in (label_column, changepoint_column)
    ]
    return Readings(assets, ts, values, chans, flags[0], flags[1])


def _decoded(col: Any) -> Any:
    """A dictionary-encoded (categorical) column as its plain values."""
    import pyarrow as pa

    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _first(mask: np.ndarray) -> int:
    """The 1-based row of the first True in ``mask``."""
    return int(np.flatnonzero(mask)[0]) + 1


def _no_nulls(path: Path, name: str, col: Any) -> None:
    if col.null_count:
        row = _first(np.asarray(col.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(f"{path}, row {row}, column {name!r}: value is missing (null)")


def _numeric(path: Path, name: str, col: Any, role: str, *, allow_missing: bool) -> np.ndarray:
    """A numeric column as float64: nulls → NaN (``allow_missing``) or 0 (labels, as
    an empty CSV cell); NaN and ±inf → :class:`DataError`."""
    import pyarrow as pa

    t = col.type
    if not (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
    ):
        hint = (
            "channels must be numbers: pick the channel columns with --channels"
            if role == "channel"
            else "store it as 0/1 integers or booleans"
        )
        raise DataError(f"{path}: {role} column {name!r} is {t}, not numeric", hint=hint)
    col = col.cast(pa.float64(), safe=False)  # lossy only for integers beyond 2**53
    out = np.array(col.to_numpy(zero_copy_only=False), np.float64)  # a copy; nulls are NaN
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
    bad = ~np.isfinite(out) & ~null
    if bad.any():
        row = _first(bad)
        raise DataError(
            f"{path}, row {row}, column {name!r}: value {out[row - 1]} is not finite",
            hint="write a missing sample as null, not NaN or infinity",
        )
    out[null] = np.nan if allow_missing else 0.0
    return out


def _parquet_ts(path: Path, name: str, col: Any) -> np.ndarray:
    """The time column as int64 epoch ms (floored, as :func:`~stream_ae.decode.parse_ts`)."""
    import pyarrow as pa

    _no_nulls(path, name, col)
    t = col.type
    if pa.types.is_date(t):
        col, t = col.cast(pa.timestamp("ms")), pa.timestamp("ms")
    if pa.types.is_timestamp(t):
        # stored as UTC ticks whatever the zone; a zone-less timestamp is taken as UTC
        ticks = np.asarray(col.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        per_ms = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}[t.unit]
        return ticks * 1000 if per_ms is None else ticks // per_ms
    if pa.types.is_integer(t):
        return np.array(col.to_numpy(zero_copy_only=False), np.int64)  # a writable copy
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out = np.empty(len(col), np.int64)
        for i, text in enumerate(col.to_pylist()):
            try:
                out[i] = _csv_ts(text.strip())
            except Exception as exc:
                raise DataError(
                    f"{path}, row {i + 1}, column {name!r}: cannot parse the time {text!r} ({exc})",
                    hint="use ISO-8601 (zone assumed UTC when absent) or epoch milliseconds",
                ) from None
        return out
    raise DataError(
        f"{path}: time column {name!r} is {t}",
        hint="store the time as a timestamp, ISO-8601 text or integer epoch milliseconds",
    )


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the CSV and Parquet files directly in the folder ``path``
    (sorted by name; hidden files skipped)."""
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and p.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES
        )
        if not files:
            raise DataError(
                f"{path}: no .csv, .parquet or .pq files in the folder",
                hint="point at a file, or at a folder that holds the files directly",
            )
        return files
    if not path.exists():
        raise DataError(f"{path} does not exist")
    return [path]


def read_readings(
    path: Path,
    *,
    channels: Sequence[str] | None = None,
    sep: str = ",",
    time_column: str | None = None,
    asset_column: str = "asset_id",
    label_column: str = "anomaly",
    changepoint_column: str = "changepoint",
    default_asset: str | None = None,
    require_labels: bool = False,
) -> Readings:
    """Readings from a CSV file (``.csv``), a Parquet file (``.parquet``, ``.pq``) or a
    folder of them, concatenated in name order.

    In a folder, each file without an asset column is its own asset (the file's
    stem, unless ``default_asset``); without ``channels`` every file must have the
    same channel columns. When only some files have a label (changepoint) column,
    the others count as 0, as an empty CSV cell does (with ``require_labels`` every
    file must have one)."""
    parts: list[Readings] = []
    kw: dict[str, Any] = {
        "channels": channels,
        "time_column": time_column,
        "asset_column": asset_column,
        "label_column": label_column,
        "changepoint_column": changepoint_column,
        "default_asset": default_asset,
        "require_labels": require_labels,
    }
    for f in input_files(path):
        suffix = f.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            r = read_parquet(f, **kw)
        elif suffix in CSV_SUFFIXES:
            r = read_csv(f, sep=sep, **kw)
        else:
            raise DataError(
                f"{f}: unknown file type {f.suffix!r}",
                hint="name the file .csv, .parquet or .pq",
            )
        if parts and r.channels != parts[0].channels:
            if set(r.channels) != set(parts[0].channels):
                raise DataError(
                    f"{f}: channels {r.channels} differ from {parts[0].channels} in the first file",
                    hint="pass --channels with the channels every file has",
                )
            r = r.project(parts[0].channels)
        parts.append(r)
    return parts[0] if len(parts) == 1 else _concat(parts)


def _concat(parts: Sequence[Readings]) -> Readings:
    def flags(got: list[np.ndarray | None]) -> np.ndarray | None:
        if all(g is None for g in got):
            return None
        return np.concatenate(
            [np.zeros(len(p), np.int8) if g is None else g for p, g in zip(parts, got, strict=True)]
        )

    return Readings(
        [a for p in parts for a in p.asset_ids],
        np.concatenate([p.ts_ms for p in parts]),
        np.concatenate([p.values for p in parts]),
        parts[0].channels,
        flags([p.labels for p in parts]),
        flags([p.changepoints for p in parts]),
    )


def to_windows(readings: Readings, spec: GridSpec) -> WindowBatch:
    """All complete windows of a bounded set of readings (the scorer's own windowing).

    Readings are fed in time order (stable), so a file's row order does not matter
    and none is late."""
    return windows_and_gaps(readings, spec)[0]


def windows_and_gaps(readings: Readings, spec: GridSpec) -> tuple[WindowBatch, list[Gap]]:
    """:func:`to_windows` plus the gaps the windower reported (holes beyond the fill
    limit; the end of the data is not one)."""
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
    gaps = [g for g in first.gaps + rest.gaps if not g.silent]
    return concat_windows([first.windows, rest.windows], spec), gaps


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

    start_ms = _flag_time("--from", start)
    end_ms = _flag_time("--to", end) if end else None
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


def _flag_time(flag: str, text: str) -> int:
    """A command-line time (``--from``/``--to``) as epoch ms, or a :class:`ConfigError`
    naming the flag (``parse_ts`` raises the decoder's internal rejection)."""
    given = text.strip()
    digits = given.lstrip("-")
    if digits.isdigit():
        # epoch ms has 12+ digits since 1973; fewer is a date (20260101) or epoch
        # seconds (1764097136), which read as ms would silently mean January 1970
        if len(digits) < 12:
            raise ConfigError(
                f"{flag} {text!r} is not epoch milliseconds (too few digits: a date or "
                "epoch seconds?)",
                hint=f"give an ISO-8601 time with a zone, e.g. {flag} 2026-01-01T00:00:00Z, "
                "or epoch milliseconds (13 digits)",
            )
        return int(given)
    try:
        return parse_ts(given)
    except _Reject as exc:
        raise ConfigError(
            f"{flag} {text!r} {exc.error.removeprefix(f'ts {given!r} ')}",
            hint=f"give an ISO-8601 time with a zone, e.g. {flag} 2026-01-01T00:00:00Z",
        ) from None


def readings_from_arrays(
    asset_ids: Sequence[str],
    ts_ms: np.ndarray,
    values: np.ndarray,
    present: np.ndarray,
    channels: list[str],
    labels: np.ndarray | None = None,
) -> Readings:
    """Readings from time-major arrays: ``ts_ms`` (T,) or (T, A), ``values`` (T, A, C),
    ``present`` (T, A) — the simulator's block layout; ``labels`` (T, A), when given,
    become the readings' int8 labels."""
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
        None if labels is None else labels.reshape(-1)[mask].astype(np.int8),
    )
