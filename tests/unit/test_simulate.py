"""Tests for the plant simulator, its encoders, garbage generator, CSV and CLI."""

from __future__ import annotations

import csv
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from stream_ae.cli.simulate_cmd import register
from stream_ae.errors import ConfigError
from stream_ae.simulate import (
    CHANNELS,
    DEFAULT_RAMP_S,
    FAULT_KINDS,
    GARBAGE_REASONS,
    FaultSpec,
    FaultSpecError,
    SimBlock,
    Simulator,
    encode_batch,
    encode_narrow,
    encode_wide,
    garbage_messages,
    parse_duration_s,
    parse_fault_spec,
    write_csv,
)

START = 1_704_067_200_000  # 2024-01-01T00:00:00Z
CH = {c: i for i, c in enumerate(CHANNELS)}


def _sim(n: int = 4, **kw: Any) -> Simulator:
    kw.setdefault("seed", 7)
    kw.setdefault("start_ts_ms", START)
    return Simulator(n, **kw)


# --------------------------------------------------------------------------- basics


def test_shapes_dtypes_and_ids() -> None:
    sim = _sim(3, sample_period_ms=500)
    b = sim.step_block(10)
    assert b.ts_ms.shape == (10,) and b.ts_ms.dtype == np.int64
    assert b.values.shape == (10, 3, len(CHANNELS)) and b.values.dtype == np.float64
    assert b.labels.shape == (10, 3) and b.labels.dtype == np.bool_
    assert b.reading_ts_ms.shape == (10, 3) and b.present.all()
    assert b.fault_kind == [None, None, None]
    assert b.asset_ids == ("pump-000", "pump-001", "pump-002")
    assert b.channels == tuple(CHANNELS)
    assert np.array_equal(b.ts_ms, START + 500 * np.arange(10))
    assert np.isfinite(b.values).all() and (b.values >= 0).all()
    b2 = sim.step_block(5)
    assert b2.ts_ms[0] == START + 500 * 10 and b2.first_step == 10
    assert sim.step_index == 15 and sim.next_ts_ms == START + 500 * 15


def test_asset_prefix_and_wide_ids() -> None:
    sim = _sim(1001, asset_prefix="motor")
    assert sim.asset_ids[0] == "motor-0000" and sim.asset_ids[-1] == "motor-1000"
    with pytest.raises(ConfigError):
        _sim(2, asset_prefix="bad prefix")


def test_deterministic_for_a_seed() -> None:
    faults = [FaultSpec("pump-001", "cavitation", START + 20_000, 30)]
    a = _sim(5, faults=faults).step_block(100)
    b = _sim(5, faults=faults).step_block(100)
    c = _sim(5, faults=faults, seed=8).step_block(100)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.values, c.values)


def test_repeated_calls_continue_the_series() -> None:
    faults = [
        FaultSpec("pump-001", "stuck_sensor", START + 50_000, 20),
        FaultSpec("pump-002", "imbalance", START + 30_000, 20),
        FaultSpec("pump-002", "sensor_drift", START + 70_000, 20, channel="voltage"),
        FaultSpec("pump-003", "stuck_sensor", START + 100_000, 0, channel="speed_rpm"),
    ]
    kw: dict[str, Any] = {"faults": faults, "ts_jitter": 0.3, "drop_rate": 0.1}
    whole = _sim(4, **kw).step_block(200)
    sim = _sim(4, **kw)
    parts = [sim.step_block(k) for k in (1, 49, 1, 49, 50, 50)]
    for name in ("values", "labels", "reading_ts_ms", "present", "fault_mask", "ts_ms"):
        joined = np.concatenate([getattr(p, name) for p in parts])
        assert np.array_equal(getattr(whole, name), joined), name


def test_operating_point_is_per_asset() -> None:
    # an asset's nominal operating point does not depend on how many assets there are
    small = _sim(2).step_block(600).values.mean(axis=0)
    big = _sim(6).step_block(600).values.mean(axis=0)
    assert np.allclose(small[:, CH["flow"]], big[:2, CH["flow"]], rtol=0.1)
    assert np.allclose(small[:, CH["speed_rpm"]], big[:2, CH["speed_rpm"]], rtol=0.1)
    # ... and assets differ from one another
    assert np.unique(np.round(big[:, CH["flow"]])).size == 6


def test_correlated_physics() -> None:
    v = _sim(6, seed=11).step_block(4 * 3600).values
    for a in range(6):
        col = v[:, a]
        if col[:, CH["speed_rpm"]].std() < 10:  # no load change in this run
            continue
        r = np.asarray(np.corrcoef(col.T))
        assert r[CH["flow"], CH["speed_rpm"]] > 0.75
        assert r[CH["pressure"], CH["speed_rpm"]] > 0.8
        assert r[CH["motor_current"], CH["speed_rpm"]] > 0.8
        assert r[CH["vibration_rms"], CH["speed_rpm"]] > 0.5
    # thermal lag: motor temperature is much smoother than current
    cur, tm = v[:, 0, CH["motor_current"]], v[:, 0, CH["motor_temp"]]
    assert np.diff(tm).std() / tm.std() < np.diff(cur).std() / cur.std()


def test_channel_subset_and_order() -> None:
    full = _sim(2).step_block(20).values
    sub = _sim(2, channels=["flow", "pressure"]).step_block(20)
    assert sub.channels == ("flow", "pressure")
    assert np.array_equal(sub.values, full[:, :, [CH["flow"], CH["pressure"]]])
    with pytest.raises(ConfigError, match="unknown: nope"):
        _sim(2, channels=["flow", "nope"])


def test_jitter_stays_in_bucket_and_drops() -> None:
    sim = _sim(50, ts_jitter=0.9, drop_rate=0.2, sample_period_ms=1000)
    b = sim.step_block(200)
    off = b.reading_ts_ms - b.ts_ms[:, None]
    assert off.min() >= 0 and off.max() < 1000 and off.max() > 500
    assert np.array_equal(
        b.reading_ts_ms // 1000, np.broadcast_to(b.ts_ms[:, None] // 1000, off.shape)
    )
    assert 0.15 < 1 - b.present.mean() < 0.25
    assert b.n_readings == int(b.present.sum())
    # unaligned start: still inside the bucket
    b = _sim(5, ts_jitter=0.9, start_ts_ms=START + 700).step_block(50)
    assert np.array_equal(
        b.reading_ts_ms // 1000, np.broadcast_to(b.ts_ms[:, None] // 1000, (50, 5))
    )


def test_bad_simulator_arguments() -> None:
    with pytest.raises(ValueError, match="unknown asset 'pump-009'"):
        _sim(3, faults=[FaultSpec("pump-009", "cavitation", START, 10)])
    with pytest.raises(ValueError, match="does not emit"):
        _sim(3, channels=["pressure"], faults=[FaultSpec("pump-000", "stuck_sensor", START, 0)])
    with pytest.raises(ConfigError):
        _sim(0)
    with pytest.raises(ConfigError):
        _sim(2, ts_jitter=1.0)
    with pytest.raises(ValueError):
        _sim(2).step_block(0)


# --------------------------------------------------------------------------- faults

ONSET_S, RAMP_S, N_STEPS = 1800, 300, 2700


def _fault_run(spec: FaultSpec, n_assets: int = 3) -> tuple[SimBlock, SimBlock]:
    normal = _sim(n_assets, seed=21).step_block(N_STEPS)
    faulty = _sim(n_assets, seed=21, faults=[spec]).step_block(N_STEPS)
    return normal, faulty


@pytest.mark.parametrize(
    ("kind", "channel"),
    [
        ("bearing_wear", None),
        ("cavitation", None),
        ("imbalance", None),
        ("sensor_drift", None),
        ("sensor_drift", "bearing_temp"),
        ("sensor_drift", "speed_rpm"),
        ("stuck_sensor", None),
        ("stuck_sensor", "pressure"),
    ],
)
def test_fault_moves_its_channels_after_onset_only(kind: str, channel: str | None) -> None:
    spec = FaultSpec("pump-001", kind, START + ONSET_S * 1000, RAMP_S, channel=channel)
    normal, faulty = _fault_run(spec)
    d = faulty.values - normal.values
    # other assets untouched, nothing before onset, unaffected channels untouched
    assert not d[:, [0, 2]].any()
    assert not d[:ONSET_S].any()
    affected = [CH[c] for c in spec.affected_channels]
    others = [i for i in range(len(CHANNELS)) if i not in affected]
    assert not d[:, 1, others].any()
    # every affected channel moves after onset
    after = d[ONSET_S:, 1]
    for c in affected:
        assert np.abs(after[:, c]).max() > 0, CHANNELS[c]
    if kind == "stuck_sensor":
        return  # see test_stuck_sensor
    # subtle start, clearly visible once developed (vs. the channel's normal variation)
    std = normal.values[:, 1].std(axis=0)
    early = np.abs(d[ONSET_S : ONSET_S + RAMP_S // 4, 1]).mean(axis=0) / std
    full = np.abs(d[ONSET_S + RAMP_S : ONSET_S + 2 * RAMP_S, 1]).mean(axis=0) / std
    best = max(full[c] for c in affected)
    # std here includes the mode changes of normal operation (up to 30 % of rated speed)
    assert best > 2.0, (kind, full)
    assert all(early[c] < 0.5 * full[c] for c in affected), (early, full)


def test_physical_faults_default_and_severity_scaling() -> None:
    specs = [
        FaultSpec("pump-001", "bearing_wear", START + ONSET_S * 1000, RAMP_S, s) for s in (1, 2)
    ]
    normal = _sim(3, seed=21).step_block(N_STEPS)
    diffs = [
        _sim(3, seed=21, faults=[s]).step_block(N_STEPS).values[:, 1, CH["bearing_temp"]]
        - normal.values[:, 1, CH["bearing_temp"]]
        for s in specs
    ]
    late = slice(ONSET_S + RAMP_S, None)
    assert diffs[1][late].mean() == pytest.approx(2 * diffs[0][late].mean(), rel=0.05)


def test_sensor_drift_is_linear() -> None:
    spec = FaultSpec(
        "pump-001", "sensor_drift", START + ONSET_S * 1000, RAMP_S, channel="motor_temp"
    )
    normal, faulty = _fault_run(spec)
    d = (faulty.values - normal.values)[:, 1, CH["motor_temp"]]
    ramp = d[ONSET_S : ONSET_S + RAMP_S + 1]
    expected = 12.0 * np.arange(RAMP_S + 1) / RAMP_S
    assert np.abs(ramp - expected).max() < 0.02  # only sensor rounding
    assert np.abs(d[ONSET_S + RAMP_S :] - 12.0).max() < 0.02


def test_stuck_sensor() -> None:
    spec = FaultSpec("pump-001", "stuck_sensor", START + ONSET_S * 1000, 0, channel="speed_rpm")
    normal, faulty = _fault_run(spec)
    col = faulty.values[:, 1, CH["speed_rpm"]]
    assert np.all(col[ONSET_S:] == normal.values[ONSET_S - 1, 1, CH["speed_rpm"]])
    # with a ramp the response fades out, then freezes
    spec = FaultSpec("pump-001", "stuck_sensor", START + ONSET_S * 1000, 60, channel="flow")
    _, faulty = _fault_run(spec)
    col = faulty.values[:, 1, CH["flow"]]
    assert np.all(col[ONSET_S + 60 :] == col[ONSET_S - 1])
    assert np.unique(col[ONSET_S : ONSET_S + 50]).size > 10


def test_stuck_sensor_onset_before_start_and_at_block_edge() -> None:
    spec = FaultSpec("pump-000", "stuck_sensor", START - 10_000, 0)
    b = _sim(2, faults=[spec]).step_block(30)
    assert np.unique(b.values[:, 0, CH["flow"]]).size == 1 and b.labels[:, 0].all()
    spec = FaultSpec("pump-000", "stuck_sensor", START + 10_000, 0)
    sim = _sim(2, faults=[spec])
    first = sim.step_block(10)
    second = sim.step_block(10)
    assert np.all(second.values[:, 0, CH["flow"]] == first.values[-1, 0, CH["flow"]])


def test_labels_align_with_onset() -> None:
    faults = [
        FaultSpec("pump-000", "imbalance", START + 10_500, 5),
        FaultSpec("pump-002", "cavitation", START + 25_000, 5),
        FaultSpec("pump-002", "bearing_wear", START + 40_000, 5),
    ]
    sim = _sim(3, faults=faults)
    b1, b2 = sim.step_block(30), sim.step_block(30)
    labels = np.concatenate([b1.labels, b2.labels])
    ts = np.concatenate([b1.ts_ms, b2.ts_ms])
    assert np.array_equal(labels[:, 0], ts >= START + 10_500)
    assert not labels[:, 1].any()
    assert np.array_equal(labels[:, 2], ts >= START + 25_000)
    assert b1.fault_kind == ["imbalance", None, "cavitation"]
    assert b2.fault_kind == ["imbalance", None, "bearing_wear+cavitation"]
    assert b2.row_fault_kind(0, 2) == "cavitation"  # t = 30 s
    assert b2.row_fault_kind(10, 2) == "bearing_wear+cavitation"  # t = 40 s
    assert b1.row_fault_kind(0, 0) == ""


# --------------------------------------------------------------------------- FaultSpec


def test_fault_spec_affected_channels_and_defaults() -> None:
    assert FaultSpec("p", "bearing_wear", 0, 1).affected_channels == (
        "vibration_rms",
        "bearing_temp",
    )
    assert set(FaultSpec("p", "cavitation", 0, 1).affected_channels) == {
        "pressure",
        "flow",
        "vibration_rms",
    }
    assert FaultSpec("p", "imbalance", 0, 1).affected_channels == ("vibration_rms", "motor_current")
    assert FaultSpec("p", "sensor_drift", 0, 1).affected_channels == ("pressure",)
    assert FaultSpec("p", "stuck_sensor", 0, 1, channel="voltage").affected_channels == ("voltage",)
    assert FaultSpec("p", "stuck_sensor", 0, 1).channel == "flow"
    assert FaultSpec("p", "cavitation", 1000, 2.5).end_ts_ms == 3500


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "explosion"}, "unknown fault kind 'explosion'"),
        ({"ramp_s": -1}, "ramp"),
        ({"severity": 0}, "severity"),
        ({"severity": math.nan}, "severity"),
        ({"kind": "sensor_drift", "channel": "humidity"}, "unknown channel 'humidity'"),
        ({"channel": "flow"}, "channel=flow does not apply to cavitation"),
        ({"asset_id": ""}, "asset id"),
    ],
)
def test_fault_spec_validation(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {"asset_id": "pump-000", "kind": "cavitation", "onset_ts_ms": 0}
    base["ramp_s"] = 10.0
    with pytest.raises(ValueError, match=match):
        FaultSpec(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "pump-003:bearing_wear@120s",
            FaultSpec("pump-003", "bearing_wear", START + 120_000, DEFAULT_RAMP_S["bearing_wear"]),
        ),
        (
            "pump-003:bearing_wear@120s+ramp=60s",
            FaultSpec("pump-003", "bearing_wear", START + 120_000, 60.0),
        ),
        (
            "pump-003:cavitation@2m+ramp=1m,severity=2",
            FaultSpec("pump-003", "cavitation", START + 120_000, 60.0, 2.0),
        ),
        (
            "pump-001:sensor_drift@90,channel=pressure,severity=0.5",
            FaultSpec("pump-001", "sensor_drift", START + 90_000, 300.0, 0.5, "pressure"),
        ),
        (
            " pump-001:stuck_sensor@1.5h,ramp=500ms,channel=speed_rpm ",
            FaultSpec("pump-001", "stuck_sensor", START + 5_400_000, 0.5, 1.0, "speed_rpm"),
        ),
        ("m-1:imbalance@0s", FaultSpec("m-1", "imbalance", START, 120.0)),
    ],
)
def test_parse_fault_spec(text: str, expected: FaultSpec) -> None:
    assert parse_fault_spec(text, START) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("pump-003", "missing ':'"),
        (":bearing_wear@1s", "empty asset id"),
        ("pump-003:bearing_wear", "missing '@ONSET'"),
        ("pump-003:bearing@10s", "unknown fault kind 'bearing'"),
        ("pump-003:bearing_wear@soon", "bad onset 'soon'"),
        ("pump-003:bearing_wear@10s+ramp=fast", "bad ramp 'fast'"),
        ("pump-003:bearing_wear@10s,severity=lots", "bad severity 'lots'"),
        ("pump-003:bearing_wear@10s,severity=-1", "severity"),
        ("pump-003:bearing_wear@10s,colour=red", "unknown option 'colour'"),
        ("pump-003:bearing_wear@10s,ramp", "bad option 'ramp'"),
        ("pump-003:bearing_wear@10s,ramp=1s,ramp=2s", "given twice"),
        ("pump-003:sensor_drift@10s,channel=temp", "unknown channel 'temp'"),
        ("pump-003:imbalance@10s,channel=flow", "does not apply to imbalance"),
    ],
)
def test_parse_fault_spec_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_fault_spec(text, START)
    assert isinstance(info.value, FaultSpecError) and isinstance(info.value, ConfigError)
    assert repr(text) in str(info.value)


def test_parse_duration() -> None:
    assert parse_duration_s("90") == 90.0
    assert parse_duration_s("2m") == 120.0
    assert parse_duration_s("1.5h") == 5400.0
    assert parse_duration_s("250ms") == 0.25
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration_s("-1s")


# --------------------------------------------------------------------------- encoders


def _block(**kw: Any) -> SimBlock:
    return _sim(3, **kw).step_block(7)


def test_encode_wide_round_trip_and_order() -> None:
    b = _block()
    msgs = encode_wide(b)
    assert len(msgs) == 21
    for i, (key, value, ts) in enumerate(msgs):
        t, a = divmod(i, 3)  # time-major
        obj = msgspec.json.decode(value)
        assert set(obj) == {"asset_id", "ts", "values"}
        assert key == obj["asset_id"].encode() == b.asset_ids[a].encode()
        assert obj["ts"] == ts == int(b.ts_ms[t])
        assert list(obj["values"]) == CHANNELS
        assert list(obj["values"].values()) == b.values[t, a].tolist()


def test_encode_wide_iso_jitter_and_drops() -> None:
    b = _block(ts_jitter=0.5, drop_rate=0.3, seed=3)
    msgs = encode_wide(b, iso_ts=True)
    assert len(msgs) == b.n_readings < 21
    expect = [(t, a) for t in range(7) for a in range(3) if b.present[t, a]]
    for (t, a), (key, value, ts) in zip(expect, msgs, strict=True):
        obj = msgspec.json.decode(value)
        assert ts == int(b.reading_ts_ms[t, a])
        assert obj["ts"].endswith("Z")
        assert round(datetime.fromisoformat(obj["ts"]).timestamp() * 1000) == ts
        assert key == b.asset_ids[a].encode()


def test_encode_batch() -> None:
    b = _block(drop_rate=0.2, seed=4)
    msgs = encode_batch(b, 3)
    seen: list[tuple[str, int]] = []
    for key, value, ts in msgs:
        obj = msgspec.json.decode(value)
        assert set(obj) == {"asset_id", "readings"} and key == obj["asset_id"].encode()
        assert 1 <= len(obj["readings"]) <= 3
        a = b.asset_ids.index(obj["asset_id"])
        for r in obj["readings"]:
            t = int(np.searchsorted(b.ts_ms, r["ts"]))
            assert list(r["values"].values()) == b.values[t, a].tolist()
            seen.append((obj["asset_id"], t))
        assert ts == obj["readings"][-1]["ts"]
        ts_list = [r["ts"] for r in obj["readings"]]
        assert ts_list == sorted(ts_list)
    assert len(seen) == b.n_readings == len(set(seen))
    # time-major by batch: steps 0-2 of every asset come before steps 3-5
    firsts = [msgspec.json.decode(v)["readings"][0]["ts"] for _, v, _ in msgs]
    batch_no = [(ts - START) // 3000 for ts in firsts]
    assert batch_no == sorted(batch_no)
    with pytest.raises(ValueError):
        encode_batch(b, 0)


def test_encode_narrow() -> None:
    b = _block(channels=["flow", "pressure"])
    msgs = encode_narrow(b, iso_ts=False)
    assert len(msgs) == 7 * 3 * 2
    obj = msgspec.json.decode(msgs[0][1])
    assert obj == {
        "asset_id": "pump-000",
        "ts": START,
        "sensor": "flow",
        "value": b.values[0, 0, 0],
    }
    obj = msgspec.json.decode(msgs[-1][1])
    assert (obj["asset_id"], obj["sensor"], obj["value"]) == (
        "pump-002",
        "pressure",
        b.values[6, 2, 1],
    )
    assert (
        msgspec.json.decode(encode_narrow(b, iso_ts=True)[0][1])["ts"] == "2024-01-01T00:00:00.000Z"
    )


# --------------------------------------------------------------------------- garbage


def _reference_reason(value: bytes, now_ms: int) -> str | None:
    """How a msgspec-based validator is expected to classify a message (None = valid)."""
    try:
        obj = msgspec.json.decode(value)
    except msgspec.ValidationError as e:  # msgspec: 1e400 → "Number out of range"
        return "non_finite" if "out of range" in str(e) else "schema_error"
    except msgspec.DecodeError:
        return "decode_error"
    if not isinstance(obj, dict) or not {"asset_id", "ts", "values"} <= set(obj):
        return "schema_error"
    if not isinstance(obj["asset_id"], str) or not isinstance(obj["ts"], int):
        return "schema_error"
    vals = obj["values"]
    if not isinstance(vals, dict):
        return "schema_error"
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in vals.values()):
        return "schema_error"
    if any(not math.isfinite(v) for v in vals.values()):
        return "non_finite"
    if obj["ts"] > now_ms + 3_600_000:
        return "future_timestamp"
    return None


def test_garbage_messages_reasons() -> None:
    now = START + 3_600_000
    rng = np.random.default_rng(0)
    bad = garbage_messages(rng, 100, now, asset_ids=["pump-000", "pump-001"])
    assert len(bad) == 100
    assert {r for _, _, r in bad} == set(GARBAGE_REASONS)
    for key, value, reason in bad:
        assert key in (b"pump-000", b"pump-001")
        assert reason in GARBAGE_REASONS
        assert _reference_reason(value, now) == reason, (value, reason)
    # the first round of 20 covers every case once
    first = garbage_messages(np.random.default_rng(1), 20, now)
    assert len({v for _, v, _ in first}) == 20
    again = garbage_messages(np.random.default_rng(1), 20, now)
    assert first == again
    # valid wide messages pass the reference check
    for _, value, _ in encode_wide(_block()):
        assert _reference_reason(value, START + 3_600_000) is None


# --------------------------------------------------------------------------- CSV


def test_write_csv(tmp_path: Path) -> None:
    faults = [FaultSpec("pump-001", "cavitation", START + 5_000, 2)]
    sim = _sim(3, faults=faults, drop_rate=0.1, seed=9)
    blocks = [sim.step_block(6), sim.step_block(6)]
    path = tmp_path / "train.csv"
    rows_written = write_csv(path, blocks)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["timestamp", "asset_id", *CHANNELS, "anomaly", "fault"]
    assert rows_written == len(rows) == sum(b.n_readings for b in blocks)
    flat = [(b, t, a) for b in blocks for t in range(6) for a in range(3) if b.present[t, a]]
    for row, (b, t, a) in zip(rows, flat, strict=True):
        assert row["asset_id"] == b.asset_ids[a]
        assert row["timestamp"].endswith("Z")
        ts = round(datetime.fromisoformat(row["timestamp"]).timestamp() * 1000)
        assert ts == b.reading_ts_ms[t, a]
        assert [float(row[c]) for c in CHANNELS] == b.values[t, a].tolist()
        assert row["anomaly"] == str(int(b.labels[t, a]))
        assert row["fault"] == ("cavitation" if b.labels[t, a] else "")
    assert any(r["anomaly"] == "1" for r in rows)


# --------------------------------------------------------------------------- CLI


class _ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, int]] = []
        self.flushed = 0

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.sent.append((key, value, timestamp_ms))

    def flush(self) -> None:
        self.flushed += 1


def _cli() -> tuple[typer.Typer, list[str], _ListSink]:
    app = typer.Typer()

    @app.callback()
    def _main() -> None:
        """test app"""

    topics: list[str] = []
    sink = _ListSink()

    def get_sink(topic: str) -> _ListSink:
        topics.append(topic)
        return sink

    register(app, get_sink)
    return app, topics, sink


def test_cli_produces_with_faults_and_garbage() -> None:
    app, topics, sink = _cli()
    args = ["simulate", "--assets", "4", "--duration", "300", "--seed", "3"]
    args += ["--start", "2024-01-01T00:00:00Z", "--garbage-rate", "0.05", "--topic", "raw"]
    args += ["--fault", "pump-002:bearing_wear@60s+ramp=30s", "--fault", "pump-001:stuck_sensor@1m"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert topics == ["raw"] and sink.flushed == 1
    valid = [m for m in sink.sent if _reference_reason(m[1], START + 10**9) is None]
    assert len(valid) == 1200
    assert 20 <= len(sink.sent) - len(valid) <= 120
    assert "pump-002 bearing_wear" in result.output and "+60s" in result.output
    assert "1,200" in result.output


def test_cli_csv_only_does_not_call_get_sink(tmp_path: Path) -> None:
    app, topics, _ = _cli()
    path = tmp_path / "out.csv"
    args = ["simulate", "--assets", "2", "--steps", "50", "--start", "2024-01-01"]
    args += ["--csv", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert topics == []
    with path.open() as fh:
        assert sum(1 for _ in fh) == 101


@pytest.mark.parametrize("shape", ["batch", "narrow"])
def test_cli_shapes(shape: str) -> None:
    app, _, sink = _cli()
    result = CliRunner().invoke(
        app, ["simulate", "--assets", "2", "--steps", "20", "--shape", shape, "--iso-ts"]
    )
    assert result.exit_code == 0, result.output
    expected = 2 * 2 if shape == "batch" else 2 * 20 * len(CHANNELS)
    assert len(sink.sent) == expected


def test_cli_errors() -> None:
    app, _, _ = _cli()
    result = CliRunner().invoke(app, ["simulate", "--steps", "5", "--fault", "pump-001:boom@1s"])
    assert isinstance(result.exception, FaultSpecError)
    assert "unknown fault kind 'boom'" in str(result.exception)
    result = CliRunner().invoke(app, ["simulate", "--steps", "5", "--duration", "5"])
    assert isinstance(result.exception, ConfigError)
    result = CliRunner().invoke(app, ["simulate"])
    assert isinstance(result.exception, ConfigError)
    result = CliRunner().invoke(app, ["simulate", "--steps", "5", "--start", "yesterday"])
    assert isinstance(result.exception, ConfigError)


# --------------------------------------------------------------------------- speed


@pytest.mark.slow
def test_speed_one_million_wide_readings(capsys: pytest.CaptureFixture[str]) -> None:
    faults = [
        FaultSpec(f"pump-{i:03d}", k, START + 300_000, 120) for i, k in enumerate(FAULT_KINDS)
    ]
    t0 = time.perf_counter()
    sim = Simulator(1000, seed=0, start_ts_ms=START, faults=faults)
    n = 0
    gen = 0.0
    for _ in range(10):
        t1 = time.perf_counter()
        block = sim.step_block(100)
        gen += time.perf_counter() - t1
        n += len(encode_wide(block))
    total = time.perf_counter() - t0
    assert n == 1_000_000
    with capsys.disabled():
        print(f"\n1,000,000 wide readings: generate {gen:.2f} s, total with encoding {total:.2f} s")
