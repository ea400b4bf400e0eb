"""Simulated industrial pumps/motors with faults that develop over time.

The simulator produces, for ``n_assets`` centrifugal pump sets (a VFD-driven
induction motor and a pump), one reading per sample period with these channels:

================  ======  ====================================================
channel           unit    meaning (typical range at rated speed)
================  ======  ====================================================
``vibration_rms``  mm/s    bearing-housing velocity RMS (0.8–2.2, ISO 10816)
``motor_current``  A       phase current (10–300, no-load share 25–40 %)
``pressure``       bar     discharge pressure (3–11)
``bearing_temp``   °C      pump bearing temperature (40–65)
``motor_temp``     °C      motor winding temperature (55–90)
``flow``           m³/h    delivered flow (40–400)
``voltage``        V       supply line voltage (≈400 ± 1 %)
``speed_rpm``      rpm     shaft speed (≈1480 or ≈2960 at rated, VFD driven)
================  ======  ====================================================

Normal operation (every asset has its own operating point, drawn from
``(seed, asset index)``):

* the speed set-point steps through three operating modes (70, 85, 100 % of
  rated) in a shift pattern low → mid → high → mid → …, one step every
  10–25 min on average (normal operation), the duty alternates
  between a high and a low level every 20–40 min (smooth square wave) and
  demand oscillates slowly (period 5–20 min); the VFD follows the demand with
  a few seconds of lag;
* affinity laws: flow ∝ speed, pressure ∝ speed², shaft power ∝ speed³; a
  slow process disturbance (valve throttling) moves flow and pressure in
  opposite directions; current = no-load share + power share, scaled by the
  supply voltage, which wanders slowly;
* motor and bearing temperatures follow I² losses and friction through
  first-order thermal lags (τ 5–10 min and 3–7 min) from the ambient
  temperature, which follows a daily cycle;
* vibration grows with speed²; every channel gets measurement noise and is
  rounded to its sensor resolution.

Faults (:class:`FaultSpec`) start at ``onset_ts_ms`` and grow over ``ramp_s``
seconds to full size, then stay there. Growth is quadratic (``p = r²``, subtle
at first) for the physical faults and linear for the sensor faults; sizes below
are at ``severity=1`` and scale linearly with it:

* ``bearing_wear`` → ``vibration_rms`` ×(1 + 0.5·p) plus impulsive noise
  (+0.2 × baseline·p·|N|), ``bearing_temp`` + 6 °C·p;
* ``cavitation`` → ``pressure`` −35 %·p, ``flow`` −10 %·p with ±8 %·p
  random fluctuation, ``vibration_rms`` + baseline·p·(0.25 + 0.4·|N|) (noisy);
* ``imbalance`` → ``vibration_rms`` + 0.6 × baseline·p·speed², modulated ±40 %
  by the 1×-speed component (seen aliased at the sample rate), and a
  ``motor_current`` 1×-speed ripple of ±10 % of rated current·p;
* ``sensor_drift`` → the chosen channel (default ``pressure``) drifts linearly
  by one *fault unit* over the ramp, then stays offset. Units (≈ 3 × the
  channel's standard deviation over normal operation): vibration 0.35 ×
  baseline, current/flow 30 % of rated, pressure 45 % of rated, bearing 6 °C,
  motor 12 °C, voltage 10 V, speed 25 % of rated;
* ``stuck_sensor`` → the chosen channel (default ``flow``) freezes at its last
  reading before onset (with a ramp, its response fades out over the ramp).

Readings before a fault's onset are bit-identical to a run without the fault,
and channels a fault does not affect stay bit-identical too (faults draw from
their own random streams).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from stream_ae.errors import ConfigError

__all__ = [
    "CHANNELS",
    "DEFAULT_CHANNEL",
    "DEFAULT_RAMP_S",
    "FAULT_KINDS",
    "GARBAGE_REASONS",
    "FaultSpec",
    "FaultSpecError",
    "LabelledCsvWriter",
    "Message",
    "MessageSink",
    "SimBlock",
    "Simulator",
    "encode_batch",
    "encode_narrow",
    "encode_wide",
    "format_iso_ms",
    "garbage_messages",
    "parse_duration_s",
    "parse_fault_spec",
    "utc_now_ms",
    "write_csv",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

CHANNELS: Final[list[str]] = [
    "vibration_rms",
    "motor_current",
    "pressure",
    "bearing_temp",
    "motor_temp",
    "flow",
    "voltage",
    "speed_rpm",
]
_VIB, _CUR, _PRES, _TB, _TM, _FLOW, _VOLT, _RPM = range(8)
_CH_INDEX: Final[dict[str, int]] = {c: i for i, c in enumerate(CHANNELS)}
# sensor resolution (decimals) per channel, CHANNELS order
_DECIMALS: Final[tuple[int, ...]] = (3, 2, 3, 2, 2, 2, 1, 1)
_ROUND_SCALE: Final[F64] = 10.0 ** np.array(_DECIMALS, dtype=np.float64)

FAULT_KINDS: Final[tuple[str, ...]] = (
    "bearing_wear",
    "cavitation",
    "imbalance",
    "sensor_drift",
    "stuck_sensor",
)
_SENSOR_FAULTS: Final[frozenset[str]] = frozenset({"sensor_drift", "stuck_sensor"})
_PHYSICAL_CHANNELS: Final[dict[str, tuple[str, ...]]] = {
    "bearing_wear": ("vibration_rms", "bearing_temp"),
    "cavitation": ("pressure", "flow", "vibration_rms"),
    "imbalance": ("vibration_rms", "motor_current"),
}
#: ramp used by :func:`parse_fault_spec` when the spec names none
DEFAULT_RAMP_S: Final[dict[str, float]] = {
    "bearing_wear": 300.0,
    "cavitation": 60.0,
    "imbalance": 120.0,
    "sensor_drift": 300.0,
    "stuck_sensor": 0.0,
}
#: channel a sensor fault hits when the spec names none
DEFAULT_CHANNEL: Final[dict[str, str]] = {"sensor_drift": "pressure", "stuck_sensor": "flow"}

#: every reason :func:`garbage_messages` can give
GARBAGE_REASONS: Final[tuple[str, ...]] = (
    "decode_error",
    "schema_error",
    "non_finite",
    "future_timestamp",
)

_ASSET_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]+$")


class FaultSpecError(ConfigError, ValueError):
    """A fault spec (object or CLI string) is invalid; the message names the bad part."""


class MessageSink(Protocol):
    """Where encoded messages go (a Kafka producer, a list in tests)."""

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None: ...

    def flush(self) -> None: ...


#: (key, value, Kafka timestamp in epoch ms)
Message = tuple[bytes, bytes, int]


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault on one asset.

    ``onset_ts_ms`` is absolute (epoch ms); the fault reaches full size
    ``ramp_s`` seconds later. ``channel`` is only for ``sensor_drift`` and
    ``stuck_sensor`` (default :data:`DEFAULT_CHANNEL`); it is filled in when
    left ``None``. ``severity`` scales the fault's size (ignored by
    ``stuck_sensor``, which always freezes). :func:`parse_fault_spec` builds
    one from a CLI string.
    """

    asset_id: str
    kind: str
    onset_ts_ms: int
    ramp_s: float
    severity: float = 1.0
    channel: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultSpecError(
                f"unknown fault kind {self.kind!r}", hint=f"use one of {', '.join(FAULT_KINDS)}"
            )
        if not self.asset_id:
            raise FaultSpecError("fault asset id is empty")
        if not (math.isfinite(self.ramp_s) and self.ramp_s >= 0):
            raise FaultSpecError(f"fault ramp {self.ramp_s!r} s must be a finite number >= 0")
        if not (math.isfinite(self.severity) and self.severity > 0):
            raise FaultSpecError(f"fault severity {self.severity!r} must be a finite number > 0")
        if self.kind in _SENSOR_FAULTS:
            if self.channel is None:
                object.__setattr__(self, "channel", DEFAULT_CHANNEL[self.kind])
            elif self.channel not in _CH_INDEX:
                raise FaultSpecError(
                    f"unknown channel {self.channel!r} for {self.kind}",
                    hint=f"use one of {', '.join(CHANNELS)}",
                )
        elif self.channel is not None:
            raise FaultSpecError(
                f"channel={self.channel} does not apply to {self.kind}",
                hint="only sensor_drift and stuck_sensor take a channel",
            )

    @property
    def affected_channels(self) -> tuple[str, ...]:
        """The channels this fault moves."""
        if self.kind in _SENSOR_FAULTS:
            assert self.channel is not None
            return (self.channel,)
        return _PHYSICAL_CHANNELS[self.kind]

    @property
    def end_ts_ms(self) -> int:
        """When the fault reaches full size."""
        return self.onset_ts_ms + round(self.ramp_s * 1000)

    def describe(self) -> str:
        """A CLI-style rendering (absolute onset as ISO time)."""
        extra = f",channel={self.channel}" if self.channel else ""
        return (
            f"{self.asset_id}:{self.kind}@{format_iso_ms(self.onset_ts_ms)}"
            f"+ramp={self.ramp_s:g}s,severity={self.severity:g}{extra}"
        )


_DURATION_RE: Final = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|sec|m|min|h)?\s*$", re.IGNORECASE
)
_DURATION_UNIT_S: Final[dict[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}


def parse_duration_s(text: str) -> float:
    """``"90"``, ``"90s"``, ``"1.5m"``, ``"2h"``, ``"500ms"`` → seconds (``ValueError`` else)."""
    m = _DURATION_RE.match(text)
    if m is None:
        raise ValueError(f"bad duration {text!r} (expected e.g. 120s, 2m, 1h, 500ms)")
    return float(m.group(1)) * _DURATION_UNIT_S[(m.group(2) or "s").lower()]


def parse_fault_spec(text: str, start_ts_ms: int) -> FaultSpec:
    """Parse ``ASSET:KIND@ONSET[+ramp=DUR][,severity=X][,channel=NAME]``.

    ``ONSET`` is relative to ``start_ts_ms`` (``120s``, ``2m``, ``90``). Options
    may be joined by ``+`` or ``,``. Without ``ramp`` the kind's
    :data:`DEFAULT_RAMP_S` applies. Raises :class:`FaultSpecError` (a
    ``ValueError``) naming the bad part.
    """
    spec = text.strip()
    where = f"fault spec {text!r}"
    asset, sep, rest = spec.partition(":")
    if not sep:
        raise FaultSpecError(
            f"{where}: missing ':' after the asset id",
            hint="expected ASSET:KIND@ONSET[+ramp=DUR][,severity=X][,channel=NAME]",
        )
    asset = asset.strip()
    if not asset:
        raise FaultSpecError(f"{where}: empty asset id before ':'")
    kind, sep, when = rest.partition("@")
    kind = kind.strip()
    if not sep:
        raise FaultSpecError(f"{where}: missing '@ONSET' after the fault kind", hint="e.g. @120s")
    if kind not in FAULT_KINDS:
        raise FaultSpecError(
            f"{where}: unknown fault kind {kind!r}", hint=f"use one of {', '.join(FAULT_KINDS)}"
        )
    parts = re.split(r"[+,]", when)
    onset_text = parts[0].strip()
    try:
        onset_s = parse_duration_s(onset_text)
    except ValueError:
        raise FaultSpecError(
            f"{where}: bad onset {onset_text!r}", hint="expected a duration like 120s, 2m, 1h"
        ) from None
    opts: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key or not value:
            raise FaultSpecError(f"{where}: bad option {part!r}", hint="expected KEY=VALUE")
        if key not in ("ramp", "severity", "channel"):
            raise FaultSpecError(
                f"{where}: unknown option {key!r}", hint="options are ramp, severity, channel"
            )
        if key in opts:
            raise FaultSpecError(f"{where}: option {key!r} given twice")
        opts[key] = value
    ramp_s = DEFAULT_RAMP_S[kind]
    if "ramp" in opts:
        try:
            ramp_s = parse_duration_s(opts["ramp"])
        except ValueError:
            raise FaultSpecError(
                f"{where}: bad ramp {opts['ramp']!r}", hint="expected a duration like 60s"
            ) from None
    severity = 1.0
    if "severity" in opts:
        try:
            severity = float(opts["severity"])
        except ValueError:
            raise FaultSpecError(f"{where}: bad severity {opts['severity']!r}") from None
    try:
        return FaultSpec(
            asset_id=asset,
            kind=kind,
            onset_ts_ms=start_ts_ms + round(onset_s * 1000),
            ramp_s=ramp_s,
            severity=severity,
            channel=opts.get("channel"),
        )
    except FaultSpecError as e:
        raise FaultSpecError(f"{where}: {e.args[0]}", hint=e.hint) from None


# --------------------------------------------------------------------------- block


@dataclass(frozen=True, slots=True)
class SimBlock:
    """``n_steps`` consecutive steps for all assets.

    ``values[t, a]`` is asset ``a``'s reading at step ``t`` in ``channels``
    order. ``ts_ms`` is the nominal step time; ``reading_ts_ms`` the time the
    reading carries (equal to ``ts_ms`` unless the simulator jitters, never
    past the end of its ``ts // period`` bucket). ``present`` is False for
    dropped readings (their values are still filled in). ``labels`` is True
    from a fault's onset on; ``fault_mask`` has bit ``i`` set while fault kind
    ``FAULT_KINDS[i]`` is active. ``fault_kind[a]`` names the kinds active on
    asset ``a`` anywhere in the block (joined with ``+``), or None.
    """

    ts_ms: I64
    values: F64
    labels: Bool
    fault_kind: list[str | None]
    asset_ids: tuple[str, ...]
    channels: tuple[str, ...]
    reading_ts_ms: I64
    present: Bool
    fault_mask: npt.NDArray[np.uint8]
    first_step: int = 0

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_readings(self) -> int:
        """Readings actually delivered (not dropped)."""
        return int(np.count_nonzero(self.present))

    def row_fault_kind(self, t: int, a: int) -> str:
        """Kinds active at step ``t`` on asset ``a`` (``+``-joined), ``""`` if none."""
        return _mask_name(int(self.fault_mask[t, a]))


@lru_cache(maxsize=64)
def _mask_name(mask: int) -> str:
    return "+".join(k for i, k in enumerate(FAULT_KINDS) if mask >> i & 1)


# --------------------------------------------------------------------------- simulator


def _linear_recurrence(b: F64, a: F64, y0: F64) -> F64:
    """``y[t] = a * y[t-1] + b[t]`` along axis 0 with ``y[-1] = y0`` (``0 <= a < 1``).

    A log-depth doubling scan: every pass is one vectorised operation, so it is
    fast for long blocks and many assets alike, and stable (only powers ``a^k``
    <= 1 appear).
    """
    y = b.copy()
    y[0] += a * y0
    n = y.shape[0]
    ak = a.copy()
    k = 1
    while k < n and float(np.max(ak)) > 1e-18:
        y[k:] = y[k:] + ak * y[:-k]
        ak = ak * ak
        k *= 2
    return y


@dataclass(slots=True)
class _Params:
    """Per-asset operating point (arrays of shape (n_assets,))."""

    rpm_r: F64
    flow_r: F64
    pres_r: F64
    pres_s: F64
    cur_r: F64
    i0: F64
    vib0: F64
    t_amb: F64
    dt_motor: F64
    dt_bearing: F64
    tau_motor: F64
    tau_bearing: F64
    v_nom: F64
    sin_period: F64
    sin_amp: F64
    sin_phase: F64
    duty_period: F64
    duty_depth: F64
    duty_phase: F64
    sp0: F64
    mode0: npt.NDArray[np.int64]
    sp_interval: F64
    amb_phase: F64
    delta0: F64
    grid0: F64

    @staticmethod
    def draw(seed: int, n_assets: int) -> _Params:
        u = np.empty((n_assets, 24))
        for i in range(n_assets):
            u[i] = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, i))).random(24)
        u = u.T
        two_pole = u[0] < 0.35
        rpm_r = np.where(two_pole, 2960.0, 1480.0) * (0.985 + 0.015 * u[1])
        flow_r = 40.0 * 10.0 ** u[2]  # 40–400 m³/h, log-uniform
        pres_r = 3.0 + 7.0 * u[3]  # dynamic part at rated speed, bar
        pres_s = 0.3 + 1.2 * u[4]  # static head, bar
        shaft_kw = flow_r / 3600.0 * (pres_r + pres_s) * 1e5 / 1000.0 / (0.6 + 0.15 * u[5])
        cur_r = shaft_kw * 1000.0 / (math.sqrt(3) * 400.0 * 0.86 * 0.93)
        return _Params(
            rpm_r=rpm_r,
            flow_r=flow_r,
            pres_r=pres_r,
            pres_s=pres_s,
            cur_r=cur_r,
            i0=0.25 + 0.15 * u[6],
            vib0=0.8 + 1.4 * u[7],
            t_amb=18.0 + 14.0 * u[8],
            dt_motor=35.0 + 20.0 * u[9],
            dt_bearing=15.0 + 15.0 * u[10],
            tau_motor=300.0 + 300.0 * u[11],
            tau_bearing=200.0 + 200.0 * u[12],
            v_nom=400.0 * (0.99 + 0.02 * u[13]),
            sin_period=300.0 + 900.0 * u[14],
            sin_amp=0.02 + 0.04 * u[15],
            sin_phase=2 * math.pi * u[16],
            duty_period=1200.0 + 1200.0 * u[17],
            duty_depth=np.where(u[18] < 0.2, 0.0, 0.12 * u[18]),
            duty_phase=2 * math.pi * u[19],
            sp0=_SP_LEVELS[_MODE_CYCLE[(u[20] * len(_MODE_CYCLE)).astype(np.int64)]],
            mode0=(u[20] * len(_MODE_CYCLE)).astype(np.int64),
            sp_interval=600.0 + 900.0 * u[21],
            amb_phase=2 * math.pi * u[22],
            delta0=np.sqrt(2.0) * _erfinv_approx(2 * u[23] - 1),
            grid0=np.zeros(n_assets),
        )


def _erfinv_approx(x: F64) -> F64:
    """Inverse error function (Winitzki approximation; good enough for a start state)."""
    a = 0.147
    ln = np.log1p(-np.clip(x * x, 0, 1 - 1e-12))
    t = 2 / (math.pi * a) + ln / 2
    return np.asarray(np.sign(x) * np.sqrt(np.sqrt(t * t - ln / a) - t), dtype=np.float64)


_TAU_VFD_S: Final = 4.0
_TAU_DELTA_S: Final = 40.0
_TAU_GRID_S: Final = 180.0
#: Operating modes (speed set-point, fraction of rated). A plant runs a few modes and
#: revisits them, so a couple of hours of normal data cover normal operation.
_SP_LEVELS = np.array([0.7, 0.85, 1.0])
#: Modes follow a shift pattern low → mid → high → mid → low …, at random times.
_MODE_CYCLE = np.array([0, 1, 2, 1])


@dataclass(slots=True)
class _FaultState:
    spec: FaultSpec
    asset: int
    kind: int
    channel: int  # CHANNELS index (sensor faults) or -1
    rng: np.random.Generator
    phase: float = 0.0  # running 1x-speed phase (imbalance), rad
    phase2: float = 0.0  # current-ripple phase offset
    stuck_value: float | None = None


class Simulator:
    """Deterministic multi-asset pump simulator (see the module docstring).

    ``step_block(n)`` returns the next ``n`` steps of every asset; repeated
    calls continue the same series, and any split of the same total number of
    steps gives identical data. ``ts_jitter`` (fraction of the period, in
    ``[0, 1)``) moves readings later by up to that fraction, never past their
    ``ts // period`` bucket; ``drop_rate`` marks readings as missing.
    """

    def __init__(
        self,
        n_assets: int,
        *,
        seed: int,
        sample_period_ms: int = 1000,
        start_ts_ms: int,
        faults: Sequence[FaultSpec] = (),
        asset_prefix: str = "pump",
        channels: Sequence[str] = CHANNELS,
        ts_jitter: float = 0.0,
        drop_rate: float = 0.0,
    ) -> None:
        if n_assets < 1:
            raise ConfigError(f"n_assets must be >= 1, got {n_assets}")
        if sample_period_ms < 1:
            raise ConfigError(f"sample_period_ms must be >= 1, got {sample_period_ms}")
        if not 0.0 <= ts_jitter < 1.0:
            raise ConfigError(f"ts_jitter must be in [0, 1), got {ts_jitter}")
        if not 0.0 <= drop_rate < 1.0:
            raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if not _ASSET_PREFIX_RE.match(asset_prefix):
            raise ConfigError(
                f"asset_prefix {asset_prefix!r} must be letters, digits, '_', '.' or '-'"
            )
        chans = tuple(channels)
        bad = [c for c in chans if c not in _CH_INDEX]
        if bad or not chans or len(set(chans)) != len(chans):
            raise ConfigError(
                f"channels {list(chans)!r} must be distinct names from {CHANNELS}"
                + (f" (unknown: {', '.join(bad)})" if bad else "")
            )
        self.n_assets = n_assets
        self.seed = seed
        self.sample_period_ms = sample_period_ms
        self.start_ts_ms = start_ts_ms
        self.ts_jitter = ts_jitter
        self.drop_rate = drop_rate
        self.channels: tuple[str, ...] = chans
        self._cols: npt.NDArray[np.intp] | None = (
            None if chans == tuple(CHANNELS) else np.array([_CH_INDEX[c] for c in chans])
        )
        width = max(3, len(str(n_assets - 1)))
        self.asset_ids: tuple[str, ...] = tuple(
            f"{asset_prefix}-{i:0{width}d}" for i in range(n_assets)
        )
        index = {a: i for i, a in enumerate(self.asset_ids)}
        self.faults: tuple[FaultSpec, ...] = tuple(faults)

        self._dt = sample_period_ms / 1000.0
        self._step = 0
        p = self._p = _Params.draw(seed, n_assets)
        self._sigma = np.stack(
            [
                0.025 * p.vib0,
                0.004 * p.cur_r,
                0.003 * (p.pres_r + p.pres_s),
                np.full(n_assets, 0.15),
                np.full(n_assets, 0.2),
                0.005 * p.flow_r,
                np.full(n_assets, 0.6),
                0.0015 * p.rpm_r,
            ],
            axis=1,
        )
        # fault unit per channel (size of a severity-1 sensor drift)
        self._unit = np.stack(
            [
                0.35 * p.vib0,
                0.3 * p.cur_r,
                0.45 * (p.pres_r + p.pres_s),
                np.full(n_assets, 6.0),
                np.full(n_assets, 12.0),
                0.3 * p.flow_r,
                np.full(n_assets, 10.0),
                0.25 * p.rpm_r,
            ],
            axis=1,
        )
        self._a_vfd = np.full(n_assets, math.exp(-self._dt / _TAU_VFD_S))
        self._a_delta = np.full(n_assets, math.exp(-self._dt / _TAU_DELTA_S))
        self._a_grid = np.full(n_assets, math.exp(-self._dt / _TAU_GRID_S))
        self._a_motor = np.exp(-self._dt / p.tau_motor)
        self._a_bearing = np.exp(-self._dt / p.tau_bearing)
        self._p_event = np.minimum(self._dt / p.sp_interval, 1.0)

        root = np.random.SeedSequence(seed, spawn_key=(1,))
        s_noise, s_proc, s_event, s_jitter, s_drop = root.spawn(5)
        self._rng_noise = np.random.default_rng(s_noise)
        self._rng_proc = np.random.default_rng(s_proc)
        # one stream per asset: an asset's mode changes do not depend on the fleet size
        self._rng_event = [np.random.default_rng(s) for s in s_event.spawn(n_assets)]
        self._rng_jitter = np.random.default_rng(s_jitter)
        self._rng_drop = np.random.default_rng(s_drop)

        # dynamic state, initialised at steady state so there is no warm-up transient
        self._sp = p.sp0.copy()
        self._mode = p.mode0.copy()
        self._delta = p.delta0.copy()
        self._grid = p.grid0.copy()
        d0 = self._demand(np.zeros(1), self._sp[None, :])[0]
        self._speed = d0
        _, _, _, heat_m, heat_b = self._hydraulics(d0, self._delta, self._grid)
        self._heat_m = heat_m
        self._heat_b = heat_b
        self._last_row: F64 | None = None  # last pre-stuck row (for stuck sensors)

        states: list[_FaultState] = []
        seen: dict[tuple[int, int], int] = {}
        for f in self.faults:
            if f.asset_id not in index:
                raise FaultSpecError(
                    f"fault {f.kind} names unknown asset {f.asset_id!r}",
                    hint=f"assets are {self.asset_ids[0]} … {self.asset_ids[-1]}",
                )
            if f.channel is not None and f.channel not in chans:
                raise FaultSpecError(
                    f"fault {f.kind} on {f.asset_id} uses channel {f.channel!r}, "
                    f"which this simulator does not emit"
                )
            a, k = index[f.asset_id], FAULT_KINDS.index(f.kind)
            occ = seen.get((a, k), 0)
            seen[(a, k)] = occ + 1
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, a, k, occ)))
            states.append(
                _FaultState(
                    spec=f,
                    asset=a,
                    kind=k,
                    channel=_CH_INDEX[f.channel] if f.channel else -1,
                    rng=rng,
                    phase=float(rng.uniform(0, 2 * math.pi)),
                    phase2=float(rng.uniform(0, 2 * math.pi)),
                )
            )
        # physical faults first, then drift, then stuck (a stuck sensor freezes what it saw)
        states.sort(key=lambda s: (s.kind, s.spec.onset_ts_ms))
        self._faults = states
        self._has_stuck = any(f.spec.kind == "stuck_sensor" for f in states)

    # ------------------------------------------------------------------ physics

    @property
    def step_index(self) -> int:
        """Steps generated so far."""
        return self._step

    @property
    def next_ts_ms(self) -> int:
        """Nominal timestamp of the next step."""
        return self.start_ts_ms + self._step * self.sample_period_ms

    def _demand(self, t_s: F64, sp: F64) -> F64:
        """Speed demand (fraction of rated) for times ``t_s`` (n,) and set-points (n, A)."""
        p = self._p
        t = t_s[:, None]
        duty = 1.0 - p.duty_depth * (
            0.5 + 0.5 * np.tanh(4.0 * np.sin(2 * np.pi * t / p.duty_period + p.duty_phase))
        )
        wave = 1.0 + p.sin_amp * np.sin(2 * np.pi * t / p.sin_period + p.sin_phase)
        return np.asarray(sp * duty * wave, dtype=np.float64)

    def _hydraulics(self, s: F64, delta: F64, grid: F64) -> tuple[F64, F64, F64, F64, F64]:
        """flow, pressure, current, motor heat, bearing heat (all shaped like ``s``)."""
        p = self._p
        flow = p.flow_r * s * (1.0 - 0.04 * delta)
        pres = p.pres_s + p.pres_r * s * s * (1.0 + 0.05 * delta)
        load = s * s * s * (1.0 - 0.02 * delta)
        volt_ratio = 1.0 / (1.0 + 0.007 * grid)
        cur = p.cur_r * (p.i0 + (1.0 - p.i0) * load) * volt_ratio
        heat_m = (cur / p.cur_r) ** 2
        heat_b = 0.3 + 0.7 * s * s
        return flow, pres, cur, heat_m, heat_b

    def step_block(self, n_steps: int) -> SimBlock:
        """Generate the next ``n_steps`` steps for all assets."""
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        n, na, p = n_steps, self.n_assets, self._p
        steps = self._step + np.arange(n, dtype=np.int64)
        ts = self.start_ts_ms + steps * self.sample_period_ms
        t_s = steps.astype(np.float64) * self._dt

        # set-point steps (normal operation): the next mode of the shift pattern
        u = np.stack([g.random(n) for g in self._rng_event], axis=1)
        mode = self._mode[None, :] + np.cumsum(u < self._p_event, axis=0)
        sp = _SP_LEVELS[_MODE_CYCLE[mode % len(_MODE_CYCLE)]]
        self._mode = mode[-1] % len(_MODE_CYCLE)
        self._sp = sp[-1].copy()

        demand = self._demand(t_s, sp)
        a = self._a_vfd
        s = _linear_recurrence((1.0 - a) * demand, a, self._speed)
        self._speed = s[-1].copy()

        z = self._rng_proc.standard_normal((n, na, 2))
        a = self._a_delta
        delta = _linear_recurrence(np.sqrt(1.0 - a * a) * z[:, :, 0], a, self._delta)
        self._delta = delta[-1].copy()
        a = self._a_grid
        grid = _linear_recurrence(np.sqrt(1.0 - a * a) * z[:, :, 1], a, self._grid)
        self._grid = grid[-1].copy()

        flow, pres, cur, heat_m, heat_b = self._hydraulics(s, delta, grid)
        a = self._a_motor
        heat_m = _linear_recurrence((1.0 - a) * heat_m, a, self._heat_m)
        self._heat_m = heat_m[-1].copy()
        a = self._a_bearing
        heat_b = _linear_recurrence((1.0 - a) * heat_b, a, self._heat_b)
        self._heat_b = heat_b[-1].copy()

        day_s = ((ts // 1000) % 86400).astype(np.float64)[:, None]
        amb = p.t_amb + 3.0 * np.sin(2 * np.pi * day_s / 86400.0 + p.amb_phase)

        values = self._rng_noise.standard_normal((n, na, 8))
        values *= self._sigma
        values[:, :, _VIB] += p.vib0 * (0.3 + 0.7 * s * s)
        values[:, :, _CUR] += cur
        values[:, :, _PRES] += pres
        values[:, :, _TB] += amb + p.dt_bearing * heat_b
        values[:, :, _TM] += amb + p.dt_motor * heat_m
        values[:, :, _FLOW] += flow
        values[:, :, _VOLT] += p.v_nom * (1.0 + 0.007 * grid)
        values[:, :, _RPM] += p.rpm_r * s

        labels = np.zeros((n, na), dtype=np.bool_)
        mask = np.zeros((n, na), dtype=np.uint8)
        stuck: list[tuple[_FaultState, int, F64]] = []
        for f in self._faults:
            noise = f.rng.standard_normal((n, 2))
            if f.spec.kind == "imbalance":  # running 1x phase, kept for every block
                inc = 2 * np.pi * (p.rpm_r[f.asset] / 60.0) * s[:, f.asset] * self._dt
                phase = f.phase + np.cumsum(inc) - inc  # phase at each step
                f.phase = float((f.phase + inc.sum()) % (2 * np.pi))
            else:
                phase = np.zeros(n)
            i0 = int(np.searchsorted(ts, f.spec.onset_ts_ms, side="left"))
            if i0 >= n:
                continue
            labels[i0:, f.asset] = True
            mask[i0:, f.asset] |= np.uint8(1 << f.kind)
            ramp_ms = f.spec.ramp_s * 1000.0
            el = (ts[i0:] - f.spec.onset_ts_ms).astype(np.float64)
            r = np.clip(el / ramp_ms, 0.0, 1.0) if ramp_ms > 0 else np.ones(n - i0)
            if f.spec.kind == "stuck_sensor":
                stuck.append((f, i0, r))
                continue
            self._apply_fault(
                f, values[i0:, f.asset], r, s=s[i0:, f.asset], z=noise[i0:], phase=phase[i0:]
            )

        np.maximum(values, 0.0, out=values)
        values *= _ROUND_SCALE
        np.rint(values, out=values)
        values /= _ROUND_SCALE

        if self._has_stuck:
            prev = self._last_row
            self._last_row = values[-1].copy()
            for f, i0, r in stuck:
                col = values[:, f.asset, f.channel]
                if f.stuck_value is None:
                    if i0 > 0:
                        f.stuck_value = float(col[i0 - 1])
                    elif prev is not None and self._step > 0:
                        f.stuck_value = float(prev[f.asset, f.channel])
                    else:
                        f.stuck_value = float(col[0])
                v_on = f.stuck_value
                seg = v_on + (1.0 - r) * (col[i0:] - v_on)
                scale = _ROUND_SCALE[f.channel]
                col[i0:] = np.where(r >= 1.0, v_on, np.rint(seg * scale) / scale)

        if self.ts_jitter > 0:
            room = self.sample_period_ms - 1 - ts % self.sample_period_ms  # stay in bucket
            off = self._rng_jitter.random((n, na)) * (self.ts_jitter * room[:, None] + 1)
            reading_ts = ts[:, None] + np.floor(off).astype(np.int64)
            np.minimum(reading_ts, (ts + room)[:, None], out=reading_ts)
        else:
            reading_ts = np.broadcast_to(ts[:, None], (n, na)).copy()
        if self.drop_rate > 0:
            present = self._rng_drop.random((n, na)) >= self.drop_rate
        else:
            present = np.ones((n, na), dtype=np.bool_)

        any_mask = np.bitwise_or.reduce(mask, axis=0)
        kinds = [_mask_name(int(m)) or None for m in any_mask]
        out_values = values if self._cols is None else values[:, :, self._cols]
        block = SimBlock(
            ts_ms=ts,
            values=out_values,
            labels=labels,
            fault_kind=kinds,
            asset_ids=self.asset_ids,
            channels=self.channels,
            reading_ts_ms=reading_ts,
            present=present,
            fault_mask=mask,
            first_step=self._step,
        )
        self._step += n
        return block

    def _apply_fault(self, f: _FaultState, v: F64, r: F64, *, s: F64, z: F64, phase: F64) -> None:
        """Apply a non-stuck fault in place to one asset's rows ``v`` (m, 8) from onset on."""
        p, a, sev = self._p, f.asset, f.spec.severity
        kind = f.spec.kind
        if kind == "sensor_drift":
            v[:, f.channel] += sev * self._unit[a, f.channel] * r
            return
        q = sev * r * r  # physical faults start subtly
        vib0 = p.vib0[a]
        if kind == "bearing_wear":
            v[:, _VIB] *= 1.0 + 0.5 * q
            v[:, _VIB] += 0.2 * vib0 * q * np.abs(z[:, 0])
            v[:, _TB] += 6.0 * q
        elif kind == "cavitation":
            v[:, _PRES] *= 1.0 - 0.35 * np.minimum(q, 2.5)
            v[:, _FLOW] *= (1.0 - 0.1 * np.minimum(q, 5.0)) * (1.0 + 0.08 * q * z[:, 0])
            v[:, _VIB] += vib0 * q * (0.25 + 0.4 * np.abs(z[:, 1]))
        elif kind == "imbalance":
            v[:, _VIB] += 0.6 * vib0 * q * s * s * (1.0 + 0.4 * np.sin(phase))
            v[:, _CUR] += 0.1 * p.cur_r[a] * q * np.sin(phase + f.phase2)
        else:  # pragma: no cover - guarded by FaultSpec
            raise AssertionError(kind)

    def blocks(self, total_steps: int, block_steps: int = 1000) -> Iterator[SimBlock]:
        """Yield blocks of at most ``block_steps`` until ``total_steps`` more steps are done."""
        left = total_steps
        while left > 0:
            n = min(block_steps, left)
            yield self.step_block(n)
            left -= n


# --------------------------------------------------------------------------- encoders


class _WideMsg(msgspec.Struct):
    asset_id: str
    ts: int | str
    values: msgspec.Struct


class _Reading(msgspec.Struct):
    ts: int | str
    values: msgspec.Struct


class _BatchMsg(msgspec.Struct):
    asset_id: str
    readings: list[_Reading]


class _NarrowMsg(msgspec.Struct):
    asset_id: str
    ts: int | str
    sensor: str
    value: float


@lru_cache(maxsize=16)
def _values_struct(channels: tuple[str, ...]) -> type[msgspec.Struct]:
    return msgspec.defstruct("Values", [(c, float) for c in channels])


_ENC: Final = msgspec.json.Encoder()


def format_iso_ms(ts_ms: int) -> str:
    """Epoch ms → ``2024-01-01T00:00:00.000Z``."""
    return str(np.datetime_as_string(np.datetime64(ts_ms, "ms"), unit="ms")) + "Z"


def _iso_array(ts_ms: I64) -> npt.NDArray[np.str_]:
    s = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms")
    return np.char.add(s, "Z")


def _ts_lists(block: SimBlock, iso_ts: bool) -> tuple[list[Any], list[list[int]] | None]:
    """Per-step timestamps to emit, plus per-reading ones when jittered."""
    jittered = not bool((block.reading_ts_ms == block.ts_ms[:, None]).all())
    kafka_ts: list[list[int]] | None = block.reading_ts_ms.tolist() if jittered else None
    if jittered:
        src: Any = _iso_array(block.reading_ts_ms).tolist() if iso_ts else kafka_ts
    else:
        src = _iso_array(block.ts_ms).tolist() if iso_ts else block.ts_ms.tolist()
    return src, kafka_ts


def encode_wide(block: SimBlock, *, iso_ts: bool = False) -> list[Message]:
    """One message per reading: ``{"asset_id", "ts", "values": {channel: float}}``.

    Time-major order (all assets at t, then t+1); dropped readings are omitted.
    The Kafka timestamp is the reading's epoch ms.
    """
    values_t = _values_struct(block.channels)
    ids = block.asset_ids
    keys = [a.encode() for a in ids]
    ts_src, kafka_ts = _ts_lists(block, iso_ts)
    rows = block.values.tolist()
    enc = _ENC.encode
    out: list[Message] = []
    append = out.append
    all_present = bool(block.present.all())
    present = None if all_present else block.present.tolist()
    step_ts = block.ts_ms.tolist()
    for t, row_t in enumerate(rows):
        if kafka_ts is None:
            ts_v, kts = ts_src[t], step_ts[t]
            if present is None:
                for key, aid, row in zip(keys, ids, row_t, strict=True):
                    append((key, enc(_WideMsg(aid, ts_v, values_t(*row))), kts))
            else:
                for key, aid, row, ok in zip(keys, ids, row_t, present[t], strict=True):
                    if ok:
                        append((key, enc(_WideMsg(aid, ts_v, values_t(*row))), kts))
        else:
            ts_row, k_row = ts_src[t], kafka_ts[t]
            pres_row = present[t] if present is not None else [True] * len(ids)
            for a, (key, aid, row, ok) in enumerate(zip(keys, ids, row_t, pres_row, strict=True)):
                if ok:
                    append((key, enc(_WideMsg(aid, ts_row[a], values_t(*row))), k_row[a]))
    return out


def _reading_ts(block: SimBlock, iso_ts: bool) -> tuple[list[list[Any]], list[list[int]]]:
    kafka = block.reading_ts_ms.tolist()
    if iso_ts:
        return _iso_array(block.reading_ts_ms).tolist(), kafka
    return kafka, kafka


def encode_batch(
    block: SimBlock, readings_per_message: int, *, iso_ts: bool = False
) -> list[Message]:
    """Messages of up to ``readings_per_message`` consecutive steps of one asset.

    ``{"asset_id", "readings": [{"ts", "values": {...}}, ...]}``. Batches never
    span blocks (the last one of a block may be shorter); order is time-major
    by batch (all assets' batch k, then batch k+1). The Kafka timestamp is the
    last reading's. Dropped readings are left out; an all-dropped batch is not sent.
    """
    if readings_per_message < 1:
        raise ValueError(f"readings_per_message must be >= 1, got {readings_per_message}")
    values_t = _values_struct(block.channels)
    ts_v, kafka = _reading_ts(block, iso_ts)
    rows = block.values.tolist()
    present = block.present.tolist()
    enc = _ENC.encode
    out: list[Message] = []
    n = block.n_steps
    for t0 in range(0, n, readings_per_message):
        t1 = min(n, t0 + readings_per_message)
        for a, aid in enumerate(block.asset_ids):
            readings = [
                _Reading(ts_v[t][a], values_t(*rows[t][a])) for t in range(t0, t1) if present[t][a]
            ]
            if not readings:
                continue
            last = max(t for t in range(t0, t1) if present[t][a])
            out.append((aid.encode(), enc(_BatchMsg(aid, readings)), kafka[last][a]))
    return out


def encode_narrow(block: SimBlock, *, iso_ts: bool = False) -> list[Message]:
    """One message per sensor value: ``{"asset_id", "ts", "sensor", "value"}``.

    Time-major, then asset, then channel order; dropped readings are omitted.
    """
    ts_v, kafka = _reading_ts(block, iso_ts)
    rows = block.values.tolist()
    present = block.present.tolist()
    chans = block.channels
    enc = _ENC.encode
    out: list[Message] = []
    append = out.append
    keys = [a.encode() for a in block.asset_ids]
    for t, row_t in enumerate(rows):
        for a, (key, aid, row) in enumerate(zip(keys, block.asset_ids, row_t, strict=True)):
            if not present[t][a]:
                continue
            tv, kt = ts_v[t][a], kafka[t][a]
            for c, x in zip(chans, row, strict=True):
                append((key, enc(_NarrowMsg(aid, tv, c, x)), kt))
    return out


# --------------------------------------------------------------------------- garbage

_GOOD_VALUES: Final[dict[str, float]] = {
    "vibration_rms": 1.42,
    "motor_current": 48.1,
    "pressure": 6.35,
    "bearing_temp": 47.2,
    "motor_temp": 66.8,
    "flow": 152.4,
    "voltage": 401.2,
    "speed_rpm": 1476.3,
}


def _msg(asset: str, ts: Any, values: Any) -> bytes:
    return msgspec.json.encode({"asset_id": asset, "ts": ts, "values": values})


def _with_raw_value(asset: str, ts: int, channel: str, raw: str) -> bytes:
    """A wide message whose ``channel`` value is the raw JSON text ``raw``."""
    vals = ",".join(
        f'"{c}":{raw if c == channel else msgspec.json.encode(v).decode()}'
        for c, v in _GOOD_VALUES.items()
    )
    return f'{{"asset_id":"{asset}","ts":{ts},"values":{{{vals}}}}}'.encode()


def _garbage_cases(rng: np.random.Generator, asset: str, now_ms: int) -> list[tuple[bytes, str]]:
    ok_ts = now_ms - int(rng.integers(0, 60_000))
    ch = CHANNELS[int(rng.integers(len(CHANNELS)))]
    good = _msg(asset, ok_ts, _GOOD_VALUES)
    cut = int(rng.integers(5, len(good) - 5))
    future = now_ms + int(rng.integers(86_400_000, 365 * 86_400_000))
    bad_values = dict(_GOOD_VALUES)
    bad_values[ch] = "high"  # type: ignore[assignment]
    return [
        # not JSON at all
        (b"\xff\xfe" + rng.bytes(int(rng.integers(4, 40))), "decode_error"),
        (good[:cut], "decode_error"),  # truncated
        (b"", "decode_error"),
        (_with_raw_value(asset, ok_ts, ch, "NaN"), "decode_error"),  # JSON has no NaN
        (_with_raw_value(asset, ok_ts, ch, "-Infinity"), "decode_error"),
        # JSON, wrong shape or types
        (b"42", "schema_error"),
        (b'"hello"', "schema_error"),
        (b"null", "schema_error"),
        (b"[1, 2, 3]", "schema_error"),
        (b"{}", "schema_error"),
        (msgspec.json.encode({"ts": ok_ts, "values": _GOOD_VALUES}), "schema_error"),
        (msgspec.json.encode({"asset_id": asset, "values": _GOOD_VALUES}), "schema_error"),
        (msgspec.json.encode({"asset_id": asset, "ts": ok_ts}), "schema_error"),
        (_msg(asset, ok_ts, bad_values), "schema_error"),
        (_msg(asset, ok_ts, list(_GOOD_VALUES.values())), "schema_error"),
        (_msg(asset, "yesterday", _GOOD_VALUES), "schema_error"),
        (
            msgspec.json.encode({"asset_id": 17, "ts": ok_ts, "values": _GOOD_VALUES}),
            "schema_error",
        ),
        # overflowing numbers (inf in most JSON parsers; msgspec says "Number out of range")
        (_with_raw_value(asset, ok_ts, ch, "1e400"), "non_finite"),
        (_with_raw_value(asset, ok_ts, ch, "-1e400"), "non_finite"),
        # valid except for a timestamp 1 day to 1 year ahead of now
        (_msg(asset, future, _GOOD_VALUES), "future_timestamp"),
    ]


_N_GARBAGE_CASES: Final = 20


def garbage_messages(
    rng: np.random.Generator,
    n: int,
    now_ms: int,
    *,
    asset_ids: Sequence[str] = ("pump-000",),
) -> list[tuple[bytes, bytes, str]]:
    """``n`` bad messages ``(key, value, expected reason)``.

    Reasons are :data:`GARBAGE_REASONS`: ``decode_error`` (not JSON: random
    bytes, truncated, empty, raw ``NaN``/``-Infinity`` tokens), ``schema_error``
    (JSON that is not an object, lacks ``asset_id``/``ts``/``values``, or has a
    wrongly typed field), ``non_finite`` (a value ``1e400``/``-1e400``, which
    overflows to ±inf — note ``msgspec`` itself rejects it with
    ``ValidationError("Number out of range")``) and ``future_timestamp`` (a
    valid reading 1 day to 1 year after ``now_ms``). Cases are cycled through
    in shuffled rounds, so any ``n >= 20`` contains every case.
    """
    out: list[tuple[bytes, bytes, str]] = []
    order: list[int] = []
    while len(order) < n:
        order.extend(int(i) for i in rng.permutation(_N_GARBAGE_CASES))
    for i in order[:n]:
        asset = asset_ids[int(rng.integers(len(asset_ids)))]
        value, reason = _garbage_cases(rng, asset, now_ms)[i]
        out.append((asset.encode(), value, reason))
    return out


# --------------------------------------------------------------------------- CSV


class LabelledCsvWriter:
    """Incremental labelled CSV: ``timestamp,asset_id,<channels>,anomaly,fault``.

    ``timestamp`` is ISO-8601 UTC with ms (``...T00:00:01.000Z``), ``anomaly``
    0/1, ``fault`` the active kind(s) (``+``-joined) or empty. Rows are
    time-major; dropped readings are not written. Use as a context manager.
    """

    def __init__(self, path: str | Path, channels: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.channels: tuple[str, ...] | None = tuple(channels) if channels else None
        self.rows = 0
        self._fh = self.path.open("w", encoding="utf-8", newline="")
        if self.channels is not None:
            self._header()

    def _header(self) -> None:
        assert self.channels is not None
        w = csv.writer(self._fh, lineterminator="\n")
        w.writerow(["timestamp", "asset_id", *self.channels, "anomaly", "fault"])

    def write(self, block: SimBlock) -> int:
        """Append one block; returns the rows written."""
        if self.channels is None:
            self.channels = block.channels
            self._header()
        elif block.channels != self.channels:
            raise ValueError(f"block channels {block.channels} != CSV channels {self.channels}")
        iso = _iso_array(block.reading_ts_ms).tolist()
        rows = block.values.tolist()
        lab = block.labels.tolist()
        mask = block.fault_mask.tolist()
        present = block.present.tolist()
        enc = _ENC.encode
        lines: list[str] = []
        for t in range(block.n_steps):
            for a, aid in enumerate(block.asset_ids):
                if not present[t][a]:
                    continue
                vals = enc(rows[t][a])[1:-1].decode()
                kind = _mask_name(mask[t][a])
                lines.append(f"{iso[t][a]},{aid},{vals},{int(lab[t][a])},{kind}\n")
        self._fh.write("".join(lines))
        self.rows += len(lines)
        return len(lines)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> LabelledCsvWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_csv(
    path: str | Path, blocks: Iterable[SimBlock], *, channels: Sequence[str] | None = None
) -> int:
    """Write every block of ``blocks`` to one labelled CSV; returns the rows written."""
    with LabelledCsvWriter(path, channels) as w:
        for block in blocks:
            w.write(block)
        return w.rows


def utc_now_ms() -> int:
    """Wall-clock epoch ms."""
    return int(datetime.now(UTC).timestamp() * 1000)
