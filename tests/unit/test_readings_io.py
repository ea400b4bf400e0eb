"""read_csv and read_parquet (time formats, separators, asset/label/channel columns,
errors), read_readings (suffixes, folders), to_windows, readings_from_arrays."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_ae.errors import DataError
from stream_ae.readings_io import (
    Readings,
    read_csv,
    read_parquet,
    read_readings,
    readings_from_arrays,
    to_windows,
)
from stream_ae.windowing import GridSpec

NEW_YEAR = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def csv_file(tmp_path: Path, text: str, name: str = "plant.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def nan_as_none(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in values.tolist()]


# -- read_csv: formats -----------------------------------------------------------------------


def test_iso_z_asset_and_label_columns(tmp_path: Path) -> None:
    r = read_csv(
        csv_file(
            tmp_path,
            "timestamp,asset_id,vibration,pressure,anomaly\n"
            "2025-01-01T00:00:00Z,p1,1.5,6.0,0\n"
            "2025-01-01T00:00:01.250Z,p2,,6.1,1\n"
            "2025-01-01T00:00:02Z,p1,1.25,-2,0\n",
        )
    )
    assert r.channels == ["vibration", "pressure"]  # timestamp/asset_id/anomaly are reserved
    assert r.asset_ids == ["p1", "p2", "p1"]
    assert r.ts_ms.tolist() == [NEW_YEAR, NEW_YEAR + 1250, NEW_YEAR + 2000]
    assert r.ts_ms.dtype == np.int64
    assert nan_as_none(r.values) == [[1.5, 6.0], [None, 6.1], [1.25, -2.0]]
    assert r.labels is not None
    assert r.labels.tolist() == [0, 1, 0]
    assert r.labels.dtype == np.int8
    assert len(r) == 3


def test_naive_timestamps_are_utc_and_offsets_are_honoured(tmp_path: Path) -> None:
    r = read_csv(
        csv_file(
            tmp_path,
            "datetime,a\n"
            "2025-01-01 00:00:00,1\n"  # space separator, no zone
            "2025-01-01T00:00:01.500,2\n"  # no zone, fraction
            "2025-01-01T01:00:02+01:00,3\n"  # explicit positive offset
            "2025-01-01T00:00:03+00:00,4\n",
        )
    )
    assert r.ts_ms.tolist() == [NEW_YEAR, NEW_YEAR + 1500, NEW_YEAR + 2000, NEW_YEAR + 3000]


def test_negative_utc_offset_is_honoured(tmp_path: Path) -> None:
    r = read_csv(csv_file(tmp_path, "timestamp,a\n2024-12-31T19:00:00-05:00,1\n"))
    assert r.ts_ms.tolist() == [NEW_YEAR]


def test_epoch_milliseconds(tmp_path: Path) -> None:
    r = read_csv(csv_file(tmp_path, "ts,a\n1700000000000,1\n1700000001000,2\n-1000,3\n"))
    assert r.ts_ms.tolist() == [1_700_000_000_000, 1_700_000_001_000, -1000]
    assert r.values.tolist() == [[1.0], [2.0], [3.0]]


def test_semicolon_separator(tmp_path: Path) -> None:
    r = read_csv(
        csv_file(tmp_path, "time;asset_id;a;b\n1000;m1;1.5;2\n2000;m1;3;\n"),
        sep=";",
    )
    assert r.channels == ["a", "b"]
    assert r.ts_ms.tolist() == [1000, 2000]
    assert nan_as_none(r.values) == [[1.5, 2.0], [3.0, None]]


def test_without_asset_column_the_file_stem_is_the_asset(tmp_path: Path) -> None:
    f = csv_file(tmp_path, "timestamp,a\n0,1\n1000,2\n", name="pump-07.csv")
    assert read_csv(f).asset_ids == ["pump-07", "pump-07"]
    assert read_csv(f, default_asset="m9").asset_ids == ["m9", "m9"]
    assert read_csv(f).labels is None


def test_channel_selection_and_order(tmp_path: Path) -> None:
    f = csv_file(tmp_path, "timestamp,a,b,c\n0,1,2,3\n1000,4,5,6\n")
    r = read_csv(f, channels=["c", "a"])
    assert r.channels == ["c", "a"]
    assert r.values.tolist() == [[3.0, 1.0], [6.0, 4.0]]


def test_explicitly_named_columns_are_not_channels(tmp_path: Path) -> None:
    f = csv_file(tmp_path, "when,machine,a,bad\n5000,m1,1.5,1\n")
    r = read_csv(f, time_column="when", asset_column="machine", label_column="bad")
    assert r.channels == ["a"]
    assert r.ts_ms.tolist() == [5000]
    assert r.asset_ids == ["m1"]
    assert r.values.tolist() == [[1.5]]
    assert r.labels is not None
    assert r.labels.tolist() == [1]


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    r = read_csv(csv_file(tmp_path, "timestamp,a\n0,1\n\n1000,2\n"))
    assert r.ts_ms.tolist() == [0, 1000]


# -- read_csv: errors ------------------------------------------------------------------------


def test_missing_channel_is_named(tmp_path: Path) -> None:
    f = csv_file(tmp_path, "timestamp,a,b\n0,1,2\n")
    with pytest.raises(DataError, match=r"\['temp'\] not in the header"):
        read_csv(f, channels=["a", "temp"])


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("timestamp,a\n0,1\n1000,abc\n", 3),  # bad number
        ("timestamp,a\n0,1\nyesterday,2\n", 3),  # bad timestamp
        ("timestamp,a\n0,1\n\n1000,2\n2000\n", 5),  # short row after a blank line
        ("ts;a\n1700000000000;1,5\n", 2),  # decimal comma is not a number
    ],
)
def test_unparsable_line_is_named(tmp_path: Path, text: str, line: int) -> None:
    f = csv_file(tmp_path, text)
    sep = ";" if text.startswith("ts;") else ","
    with pytest.raises(DataError, match=rf"plant\.csv, line {line}: cannot parse"):
        read_csv(f, sep=sep)


def test_unparsable_label_is_a_data_error(tmp_path: Path) -> None:
    f = csv_file(tmp_path, "timestamp,a,anomaly\n0,1,0\n1000,2,yes\n")
    with pytest.raises(DataError, match="line 3"):
        read_csv(f)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_csv(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="empty"):
        read_csv(csv_file(tmp_path, ""))
    with pytest.raises(DataError, match="no time column"):
        read_csv(csv_file(tmp_path, "when,a\n0,1\n"))
    with pytest.raises(DataError, match="no channel columns"):
        read_csv(csv_file(tmp_path, "timestamp,asset_id,anomaly\n0,p,0\n"))
    with pytest.raises(DataError, match="no data rows"):
        read_csv(csv_file(tmp_path, "timestamp,a\n"))


def test_select_keeps_labels_aligned(tmp_path: Path) -> None:
    r = read_csv(csv_file(tmp_path, "timestamp,a,anomaly\n0,1,0\n1000,2,1\n2000,3,0\n"))
    assert r.labels is not None
    normal = r.select(r.labels == 0)
    assert normal.ts_ms.tolist() == [0, 2000]
    assert normal.values.tolist() == [[1.0], [3.0]]
    assert normal.labels is not None
    assert normal.labels.tolist() == [0, 0]


def test_excel_utf8_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    p = tmp_path / "excel.csv"
    p.write_bytes("\ufefftimestamp,temp\n2025-01-01T00:00:00Z,1.5\n".encode())
    r = read_csv(p)
    assert (r.ts_ms.tolist(), r.channels) == ([NEW_YEAR], ["temp"])


def test_a_csv_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "latin1.csv"
    text = "timestamp,temp,asset_id\n0,1,a\n1000,2,caf\u00e9\n2000,3,a\n"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_readings(p)
    msg = str(info.value)
    assert f"{p}, line 3: not UTF-8 text" in msg
    assert "save it as UTF-8" in msg


def test_a_required_label_column_that_is_missing_is_named_with_the_columns(
    tmp_path: Path,
) -> None:
    p = csv_file(tmp_path, "timestamp,temp,label\n0,1,0\n")
    with pytest.raises(DataError) as info:
        read_readings(p, require_labels=True)
    assert "no label column 'anomaly' (columns found: timestamp, temp, label)" in str(info.value)
    assert "--label-column" in str(info.value)
    assert read_readings(p).labels is None  # not required: all normal, as before
    pq.write_table(pa.table({"timestamp": [0], "temp": [1.0]}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match="no label column 'anomaly'"):
        read_readings(tmp_path / "p.parquet", require_labels=True)


@pytest.mark.parametrize(
    ("start", "end", "said"),
    [
        ("yesterday", None, "--from 'yesterday' is neither epoch milliseconds nor ISO-8601"),
        ("2026-11-26T00:00", None, "--from '2026-11-26T00:00' has no time zone"),
        ("2026-11-26T00:00Z", "soon", "--to 'soon' is neither"),
        # a date or epoch seconds would silently read as milliseconds in January 1970
        ("20260101", None, "--from '20260101' is not epoch milliseconds (too few digits"),
        ("2026-11-26T00:00Z", "1764115200", "--to '1764115200' is not epoch milliseconds"),
    ],
)
def test_read_topic_times_name_the_flag(start: str, end: str | None, said: str) -> None:
    from stream_ae.errors import ConfigError
    from stream_ae.readings_io import read_topic
    from stream_ae.settings import Settings

    with pytest.raises(ConfigError) as info:  # before any broker is contacted
        read_topic(Settings(), start, end, ["temp"])
    assert said in str(info.value)


# -- read_parquet ----------------------------------------------------------------------------

PLANT_CSV = (
    "timestamp,asset_id,vibration,pressure,anomaly,changepoint\n"
    "2025-01-01T00:00:00Z,p1,1.5,6.0,0,0\n"
    "2025-01-01T00:00:01.250Z,p2,,6.1,1,1\n"
    "2025-01-01T00:00:02Z,p1,1.25,-2,0,0\n"
)
PLANT_TS = [NEW_YEAR, NEW_YEAR + 1250, NEW_YEAR + 2000]


def parquet_file(tmp_path: Path, columns: dict[str, Any], name: str = "plant.parquet") -> Path:
    p = tmp_path / name
    pq.write_table(pa.table(columns), p)
    return p


def plant_columns(time: pa.Array) -> dict[str, Any]:
    return {
        "timestamp": time,
        "asset_id": pa.array(["p1", "p2", "p1"]),
        "vibration": pa.array([1.5, None, 1.25]),
        "pressure": pa.array([6.0, 6.1, -2.0]),
        "anomaly": pa.array([0, 1, 0], pa.int8()),
        "changepoint": pa.array([False, True, False]),
    }


def assert_same(a: Readings, b: Readings) -> None:
    assert a.asset_ids == b.asset_ids
    assert a.channels == b.channels
    assert a.ts_ms.dtype == b.ts_ms.dtype == np.int64
    assert a.ts_ms.tolist() == b.ts_ms.tolist()
    assert a.values.dtype == b.values.dtype == np.float64
    np.testing.assert_array_equal(a.values, b.values)  # NaN == NaN here
    for x, y in ((a.labels, b.labels), (a.changepoints, b.changepoints)):
        assert (x is None) == (y is None)
        if x is not None and y is not None:
            assert x.dtype == y.dtype == np.int8
            assert x.tolist() == y.tolist()


def _utc(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


NEW_YORK = timezone(timedelta(hours=-5))
TIME_COLUMNS = {
    "timestamp[ms, UTC]": pa.array([_utc(t) for t in PLANT_TS], pa.timestamp("ms", tz="UTC")),
    "timestamp[us], no zone": pa.array(
        [_utc(t).replace(tzinfo=None) for t in PLANT_TS], pa.timestamp("us")
    ),
    "timestamp[ns, -05:00]": pa.array(
        [_utc(t).astimezone(NEW_YORK) for t in PLANT_TS], pa.timestamp("ns", tz="-05:00")
    ),
    "ISO text with zones": pa.array(
        ["2025-01-01T00:00:00Z", "2024-12-31T19:00:01.250-05:00", "2025-01-01 00:00:02"]
    ),
    "epoch ms int64": pa.array(PLANT_TS, pa.int64()),
    "epoch ms as dictionary text": pa.array([str(t) for t in PLANT_TS]).dictionary_encode(),
}


@pytest.mark.parametrize("kind", list(TIME_COLUMNS))
def test_parquet_and_csv_of_the_same_data_read_the_same(tmp_path: Path, kind: str) -> None:
    from_csv = read_csv(csv_file(tmp_path, PLANT_CSV))
    from_parquet = read_parquet(parquet_file(tmp_path, plant_columns(TIME_COLUMNS[kind])))
    assert from_parquet.ts_ms.tolist() == PLANT_TS
    assert_same(from_parquet, from_csv)
    assert_same(read_readings(tmp_path / "plant.parquet"), from_csv)


def test_second_timestamps_and_dates(tmp_path: Path) -> None:
    secs = pa.array([_utc(NEW_YEAR), _utc(NEW_YEAR + 5000)], pa.timestamp("s"))
    r = read_parquet(parquet_file(tmp_path, {"ts": secs, "a": [1.0, 2.0]}))
    assert r.ts_ms.tolist() == [NEW_YEAR, NEW_YEAR + 5000]
    days = pa.array([date(2025, 1, 1), date(2025, 1, 2)], pa.date32())
    r = read_parquet(parquet_file(tmp_path, {"time": days, "a": [1.0, 2.0]}))
    assert r.ts_ms.tolist() == [NEW_YEAR, NEW_YEAR + 86_400_000]


def test_sub_millisecond_timestamps_are_floored_like_the_decoder(tmp_path: Path) -> None:
    ns = pa.array([1_999_999, -1], pa.int64()).cast(pa.timestamp("ns"))
    r = read_parquet(parquet_file(tmp_path, {"timestamp": ns, "a": [1.0, 2.0]}))
    assert r.ts_ms.tolist() == [1, -1]


def test_parquet_column_options_types_and_default_asset(tmp_path: Path) -> None:
    f = parquet_file(
        tmp_path,
        {
            "when": pa.array([5000, 6000], pa.int32()),
            "machine": pa.array(["m1", "m2"]).dictionary_encode(),
            "rpm": pa.array([1500, None], pa.int64()),
            "open": pa.array([True, False]),
            "load": pa.array([1.5, 2.25], pa.float32()),
            "bad": pa.array([None, 1], pa.int64()),
        },
        name="pump-07.pq",
    )
    r = read_readings(f, time_column="when", asset_column="machine", label_column="bad")
    assert r.channels == ["rpm", "open", "load"]
    assert r.asset_ids == ["m1", "m2"]
    assert nan_as_none(r.values) == [[1500.0, 1.0, 1.5], [None, 0.0, 2.25]]
    assert r.labels is not None
    assert r.labels.tolist() == [0, 1]  # a null label counts as 0, like an empty CSV cell
    r = read_parquet(f, time_column="when", channels=["load"])
    assert r.asset_ids == ["pump-07", "pump-07"]  # "machine" is not the asset column here
    assert r.values.tolist() == [[1.5], [2.25]]
    assert r.labels is None and r.changepoints is None


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (
            {"ts": [0, 1000], "a": [1.0, float("nan")]},
            r"row 2, column 'a': value nan is not finite",
        ),
        ({"ts": [0, 1000], "a": [float("-inf"), 1.0]}, r"row 1, column 'a': value -inf"),
        ({"ts": [0, None], "a": [1.0, 2.0]}, r"row 2, column 'ts': value is missing"),
        ({"ts": ["2025-01-01", "yesterday"], "a": [1.0, 2.0]}, r"row 2, column 'ts': cannot"),
        ({"ts": [0.0, 1000.0], "a": [1.0, 2.0]}, r"time column 'ts' is double"),
        ({"ts": [0, 1000], "a": [1.0, 2.0], "status": ["ok", "ok"]}, r"column 'status' is string"),
        ({"ts": [0], "asset_id": [None], "a": [1.0]}, r"row 1, column 'asset_id'"),
        ({"ts": [0], "a": [1.0], "anomaly": [float("inf")]}, r"column 'anomaly'"),
        ({"ts": [0], "a": [1.0], "anomaly": ["yes"]}, r"label column 'anomaly' is string"),
        ({"when": [0], "a": [1.0]}, "no time column"),
        ({"ts": pa.array([], pa.int64()), "a": pa.array([], pa.float64())}, "no data rows"),
    ],
)
def test_parquet_errors_name_file_row_and_column(
    tmp_path: Path, columns: dict[str, Any], match: str
) -> None:
    f = parquet_file(tmp_path, columns)
    with pytest.raises(DataError, match=match) as err:
        read_parquet(f)
    assert "plant.parquet" in str(err.value)


def test_parquet_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_parquet(tmp_path / "absent.parquet")
    not_parquet = csv_file(tmp_path, PLANT_CSV, name="plant.parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_parquet(not_parquet)
    f = parquet_file(tmp_path, {"ts": [0], "a": [1.0]})
    with pytest.raises(DataError, match=r"\['b'\] not in the header"):
        read_parquet(f, channels=["a", "b"])


# -- read_readings -----------------------------------------------------------------------------


def test_a_folder_of_csv_and_parquet_files_is_read_in_name_order(tmp_path: Path) -> None:
    csv_file(tmp_path, "timestamp,b,a,anomaly\n0,2,1,1\n", name="m1.csv")
    parquet_file(tmp_path, {"ts": [1000], "a": [3.0], "b": [4.0]}, name="m2.pq")
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / ".m0.csv").write_text("hidden")
    r = read_readings(tmp_path)
    assert r.asset_ids == ["m1", "m2"]
    assert r.channels == ["b", "a"]  # the first file's order; the second is reordered
    assert r.values.tolist() == [[2.0, 1.0], [4.0, 3.0]]
    assert r.ts_ms.tolist() == [0, 1000]
    assert r.labels is not None
    assert r.labels.tolist() == [1, 0]  # a file without labels counts as normal
    assert r.changepoints is None


def test_a_folder_whose_files_have_different_channels_is_refused(tmp_path: Path) -> None:
    csv_file(tmp_path, "timestamp,a,b\n0,1,2\n", name="m1.csv")
    parquet_file(tmp_path, {"ts": [1000], "a": [3.0]}, name="m2.parquet")
    with pytest.raises(DataError, match=r"m2\.parquet: channels \['a'\] differ") as err:
        read_readings(tmp_path)
    assert "--channels" in (err.value.hint or "")
    assert read_readings(tmp_path, channels=["a"]).values.tolist() == [[1.0], [3.0]]


def test_read_readings_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_readings(tmp_path / "absent.csv")
    with pytest.raises(DataError, match=r"no \.csv, \.parquet or \.pq files"):
        read_readings(tmp_path)
    with pytest.raises(DataError, match=r"unknown file type '\.json'"):
        read_readings(csv_file(tmp_path, "{}", name="plant.json"))


# -- to_windows ------------------------------------------------------------------------------

SPEC = GridSpec(period_ms=1000, size=4, hop=2, lateness_ms=0, fill_limit=0, n_channels=1)


def test_to_windows_all_complete_windows_of_every_asset() -> None:
    # x: buckets 0..9 with value = bucket; y: buckets 0..5 with value = 100 + bucket;
    # interleaved in time like a real file
    rows = [("x", k, float(k)) for k in range(10)] + [("y", k, 100.0 + k) for k in range(6)]
    rows.sort(key=lambda r: (r[1], r[0]))
    r = Readings(
        [a for a, _, _ in rows],
        np.array([k * 1000 for _, k, _ in rows], np.int64),
        np.array([[v] for _, _, v in rows]),
        ["a"],
    )
    w = to_windows(r, SPEC)
    got = sorted(zip(w.asset_ids, w.start_ms.tolist(), w.end_ms.tolist(), strict=True))
    assert got == [
        ("x", 0, 4000),
        ("x", 2000, 6000),
        ("x", 4000, 8000),
        ("x", 6000, 10000),
        ("y", 0, 4000),
        ("y", 2000, 6000),
    ]
    assert w.values.shape == (6, 1, 4)
    assert w.values.dtype == np.float32
    assert w.partitions.tolist() == [0] * 6
    i = list(zip(w.asset_ids, w.start_ms.tolist(), strict=True)).index(("y", 2000))
    assert w.values[i, 0].tolist() == [102.0, 103.0, 104.0, 105.0]


def test_to_windows_no_window_spans_a_gap() -> None:
    buckets = [0, 1, 2, 3, 5, 6, 7, 8, 9]  # bucket 4 missing, fill_limit 0
    r = Readings(
        ["x"] * len(buckets),
        np.array(buckets, np.int64) * 1000,
        np.ones((len(buckets), 1)),
        ["a"],
    )
    assert to_windows(r, SPEC).start_ms.tolist() == [0, 6000]


def test_to_windows_of_too_little_data_is_empty() -> None:
    r = Readings(["x"] * 3, np.array([0, 1000, 2000], np.int64), np.ones((3, 1)), ["a"])
    w = to_windows(r, SPEC)
    assert len(w) == 0
    assert w.values.shape == (0, 1, 4)


# -- readings_from_arrays --------------------------------------------------------------------


def test_readings_from_arrays_time_major_with_presence() -> None:
    ts = np.array([0, 1000, 2000], np.int64)
    values = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)  # (T, A, C)
    present = np.array([[True, False], [True, True], [False, True]])
    r = readings_from_arrays(["a0", "a1"], ts, values, present, ["c0", "c1"])
    assert r.asset_ids == ["a0", "a0", "a1", "a1"]
    assert r.ts_ms.tolist() == [0, 1000, 1000, 2000]
    assert r.values.tolist() == [[0.0, 1.0], [4.0, 5.0], [6.0, 7.0], [10.0, 11.0]]
    assert r.values.dtype == np.float64
    assert r.ts_ms.dtype == np.int64
    assert r.channels == ["c0", "c1"]
    assert r.labels is None


def test_readings_from_arrays_with_per_asset_times() -> None:
    ts = np.array([[0, 5], [1000, 1005]], np.int64)  # (T, A)
    values = np.zeros((2, 2, 1))
    present = np.ones((2, 2), bool)
    r = readings_from_arrays(["a0", "a1"], ts, values, present, ["c"])
    assert r.asset_ids == ["a0", "a1", "a0", "a1"]
    assert r.ts_ms.tolist() == [0, 5, 1000, 1005]
