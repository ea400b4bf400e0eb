"""The golden-set check of the promotion gate: does the candidate still catch the
faults the champion catches?

A *golden set* is labelled data with known faults:

* a labelled CSV (``anomaly`` column, 1 = fault) or a folder of them, read with
  :func:`stream_ae.readings_io.read_csv` (``;``-separated files such as SKAB's
  are recognised from the header); each file is scored on its own;
* ``sim:SEED[,assets=N][,duration=DUR]``: the simulator (same seed = same
  machines as a simulated plant trained with that seed) with faults of every
  kind injected at known onsets on every other asset; a reading is labelled from
  its asset's fault onset on.

Each model scores it exactly as the live scorer would: its own channels (in its
order), its own grid (period, W, H), its scorer and its decision rule
(:func:`stream_ae.service.bind_model`: threshold and k-of-n persistence from the
artifact), and every reading is decided by the causal rule
(:func:`stream_ae.evaluate.decisions.causal_rule`). Metrics come from
:mod:`stream_ae.evaluate.metrics`, pooled over files and assets.

**The gate's metric is event recall** (share of labelled fault events with at
least one alarm inside), because that is the promise the gate protects — a
fault the champion catches is not missed after a promotion — and because it does
not depend on where exactly a label starts (a ramping fault is invisible for its
first minutes; hand labels are loose at the edges), which dominates point-wise
F1. False alarms have their own gate (recent normal data); F1, FAR and detection
delay on the golden set are recorded next to it for people to read.

The candidate passes when its event recall ≥ the champion's − ``tolerance``.
Without a champion, or with one that cannot be scored (the golden set lacks its
channels, its artifact cannot be loaded), the candidate's numbers are recorded
and the check cannot fail; the reason is written down.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream_ae.errors import ArtifactError, ConfigError, DataError
from stream_ae.evaluate.decisions import causal_rule
from stream_ae.evaluate.metrics import Evaluation, evaluate_file, events_from_labels
from stream_ae.readings_io import Readings, read_csv, readings_from_arrays, to_windows
from stream_ae.settings import Settings

if TYPE_CHECKING:
    from stream_ae.model.artifact import LoadedModel, TrainedModel
    from stream_ae.registry import Registry

__all__ = [
    "METRIC",
    "GoldenPart",
    "GoldenSet",
    "apply_golden_gate",
    "golden_check",
    "golden_from_simulator",
    "load_golden",
    "score_golden",
]

#: the metric the gate compares (see the module docstring for why)
METRIC = "event_recall"
#: A false-alarm rate (percent of the golden set's normal readings) above which the
#: golden set is probably not the plant the model was trained on: a warning, not a
#: verdict (the false-alarm gate judges false alarms on the plant's own data).
SUSPECT_FAR_PCT = 20.0

log = logging.getLogger(__name__)
LABEL_COLUMN = "anomaly"
#: simulated golden sets start here (fixed, so the same spec gives the same data)
SIM_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SIM_DEFAULTS: dict[str, Any] = {"assets": 10, "duration": "2h"}
_HINT = (
    "a golden set is a CSV (or folder of CSVs) with a 0/1 'anomaly' column marking "
    "labelled faults, e.g. `stream-ae simulate --fault pump-001:bearing_wear@10m "
    "--duration 1h --csv golden.csv`, or sim:SEED"
)


@dataclass(frozen=True)
class GoldenPart:
    """One file (or the simulated run): readings with a label per reading."""

    name: str
    readings: Readings  # labels never None


@dataclass(frozen=True)
class GoldenSet:
    source: str
    parts: tuple[GoldenPart, ...]

    @property
    def channels(self) -> list[str]:
        """Channels every part has (in the first part's order)."""
        common = set.intersection(*(set(p.readings.channels) for p in self.parts))
        return [c for c in self.parts[0].readings.channels if c in common]

    def missing(self, channels: Sequence[str]) -> list[str]:
        have = set(self.channels)
        return [c for c in channels if c not in have]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": len(self.parts),
            "readings": sum(len(p.readings) for p in self.parts),
            "assets": sum(len(set(p.readings.asset_ids)) for p in self.parts),
            "labelled_events": sum(_n_events(p.readings) for p in self.parts),
            "channels": self.channels,
        }


def _per_asset(readings: Readings) -> list[np.ndarray]:
    """Row indices of each asset, in time order."""
    ids = np.asarray(readings.asset_ids, dtype=object)
    out = []
    for asset in sorted(set(readings.asset_ids)):
        rows = np.flatnonzero(ids == asset)
        out.append(rows[np.argsort(readings.ts_ms[rows], kind="stable")])
    return out


def _n_events(readings: Readings) -> int:
    assert readings.labels is not None
    labels = readings.labels
    return sum(len(events_from_labels(labels[rows])) for rows in _per_asset(readings))


# ----------------------------------------------------------------------------- loading


def load_golden(spec: str | Path, *, sample_period_ms: int) -> GoldenSet:
    """A golden set from a CSV path, a folder of CSVs, or ``sim:SEED[,k=v…]``.

    ``sample_period_ms`` is the simulator's period (the candidate's grid)."""
    text = str(spec).strip()
    if text.startswith("sim:"):
        return _simulated(text, sample_period_ms)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise DataError(f"golden set folder {path} holds no *.csv file", hint=_HINT)
    elif path.is_file():
        files = [path]
    else:
        raise DataError(
            f"golden set {path} does not exist",
            hint="set trainer.golden_set (or --golden) to a CSV, a folder of CSVs or sim:SEED",
        )
    parts = tuple(_read_labelled(f) for f in files)
    if not any(_n_events(p.readings) for p in parts):
        where = str(files[0]) if len(files) == 1 else f"{path} ({len(files)} files)"
        raise DataError(
            f"golden set {where} has no labelled fault (every '{LABEL_COLUMN}' is 0), "
            "so detection cannot be measured on it",
            hint="mark the fault readings with anomaly=1, or use sim:SEED",
        )
    return GoldenSet(str(path), parts)


def _read_labelled(path: Path) -> GoldenPart:
    with path.open(newline="") as fh:
        header = fh.readline()
    sep = ";" if ";" in header and "," not in header else ","
    readings = read_csv(path, sep=sep, label_column=LABEL_COLUMN, default_asset=path.stem)
    if readings.labels is None:
        raise DataError(
            f"golden set file {path} has no '{LABEL_COLUMN}' label column, so its faults "
            "are unknown",
            hint=_HINT,
        )
    return GoldenPart(path.name, readings)


def _simulated(text: str, period_ms: int) -> GoldenSet:
    from stream_ae.simulate import parse_duration_s

    seed_text, *opts = [s.strip() for s in text[len("sim:") :].split(",")]
    where = f"golden set {text!r}"
    hint = "expected sim:SEED[,assets=N][,duration=DUR], e.g. sim:7,assets=10,duration=2h"
    if not seed_text.lstrip("-").isdigit():
        raise ConfigError(f"{where}: the seed {seed_text!r} is not an integer", hint=hint)
    values = dict(SIM_DEFAULTS)
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq or key.strip() not in SIM_DEFAULTS:
            raise ConfigError(f"{where}: bad option {opt!r}", hint=hint)
        values[key.strip()] = value.strip()
    try:
        assets = int(values["assets"])
        seconds = parse_duration_s(str(values["duration"]))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}", hint=hint) from None
    if assets < 1 or seconds * 1000 < period_ms:
        raise ConfigError(f"{where}: needs assets >= 1 and a duration of at least one period")
    steps = math.ceil(seconds * 1000 / period_ms)
    return golden_from_simulator(
        int(seed_text),
        assets=assets,
        steps=steps,
        sample_period_ms=period_ms,
        name=text,
    )


def golden_from_simulator(
    seed: int,
    *,
    assets: int,
    steps: int,
    sample_period_ms: int,
    name: str,
    faults: Sequence[Any] | None = None,
    start_ts_ms: int = SIM_START_MS,
) -> GoldenSet:
    """Simulated readings labelled from each fault's onset on.

    ``faults`` (:class:`~stream_ae.simulate.FaultSpec`) default: one per fault kind
    in turn on assets 1, 3, 5, … (the others stay healthy, for false alarms),
    onsets spread over 30–80 % of the run, the kind's default ramp.
    """
    from stream_ae.simulate import DEFAULT_RAMP_S, FAULT_KINDS, FaultSpec, Simulator

    kw: dict[str, Any] = {"seed": seed, "sample_period_ms": sample_period_ms}
    if faults is None:
        names = Simulator(assets, start_ts_ms=start_ts_ms, **kw).asset_ids
        faulty = list(range(1, assets, 2)) or [0]
        faults = []
        for j, a in enumerate(faulty):
            kind = FAULT_KINDS[j % len(FAULT_KINDS)]
            step = int(steps * (0.3 + 0.5 * j / max(1, len(faulty) - 1)))
            onset = start_ts_ms + step * sample_period_ms
            faults.append(FaultSpec(names[a], kind, onset, DEFAULT_RAMP_S[kind]))
    sim = Simulator(assets, start_ts_ms=start_ts_ms, faults=faults, **kw)
    block = sim.step_block(steps)
    readings = readings_from_arrays(
        block.asset_ids,
        block.reading_ts_ms,
        block.values,
        block.present,
        list(block.channels),
        block.labels,
    )
    return GoldenSet(name, (GoldenPart(name, readings),))


# ----------------------------------------------------------------------------- scoring


def score_golden(golden: GoldenSet, model: LoadedModel, settings: Settings) -> dict[str, Any]:
    """``model``'s detection on ``golden`` with its own windowing and decision rule.

    Every file starts with fresh decision state (persistence), as a new scorer
    would; the golden set must hold the model's channels (:meth:`GoldenSet.missing`).
    """
    from stream_ae.service import bind_model

    md = model.metadata
    total = Evaluation()
    n_windows = n_alarms = 0
    for part in golden.parts:
        binding = bind_model(model, settings)  # fresh persistence state per file
        readings = part.readings.project(md.channels)
        assert readings.labels is not None
        windows = to_windows(readings, binding.spec)
        anomalous = np.zeros(len(windows), bool)
        if len(windows):
            scores = np.asarray(binding.scorer.score(windows.values).scores)
            anomalous = np.asarray(binding.decider.anomalous(scores, windows), bool)
        n_windows += len(windows)
        n_alarms += int(anomalous.sum())
        period, w_assets = binding.spec.period_ms, np.asarray(windows.asset_ids, dtype=object)
        for rows in _per_asset(readings):
            ts = readings.ts_ms[rows]
            own = w_assets == readings.asset_ids[int(rows[0])]
            pred = causal_rule(
                ts // period,
                windows.start_ms[own] // period,
                anomalous[own],
                binding.spec.size,
            )
            total = total + evaluate_file(readings.labels[rows], pred, ts)
    return _summary(md, total, n_windows, n_alarms)


def _summary(md: Any, ev: Evaluation, n_windows: int, n_alarms: int) -> dict[str, Any]:
    c = ev.counts
    delays = [e.delay_ms / 1000 for e in ev.events if e.delay_ms is not None]
    detected = sum(e.detected for e in ev.events)
    return {
        "version": md.version,
        "channels": list(md.channels),
        "window": md.window,
        "hop": md.hop,
        "sample_period_ms": md.sample_period_ms,
        "windows": n_windows,
        "alarm_windows": n_alarms,
        "readings": c.n,
        "events": len(ev.events),
        "events_detected": detected,
        "event_recall": detected / len(ev.events) if ev.events else None,
        "f1": round(c.f1, 4),
        "precision": round(c.precision, 4),
        "recall": round(c.recall, 4),
        "far_pct": round(c.far, 4),
        "mean_delay_s": round(float(np.mean(delays)), 1) if delays else None,
        "median_delay_s": round(float(np.median(delays)), 1) if delays else None,
    }


# ----------------------------------------------------------------------------- the gate


def golden_check(
    golden: GoldenSet,
    candidate: LoadedModel,
    champion: LoadedModel | None,
    settings: Settings,
    *,
    tolerance: float,
    champion_version: str | None = None,
    champion_error: str | None = None,
) -> dict[str, Any]:
    """The ``golden`` section of the gate: both models' numbers, the rule, the verdict.

    ``champion_error`` says why a registered champion could not be loaded."""
    far_tol = settings.trainer.golden_far_tolerance
    rule = (
        f"{METRIC} on the golden set >= the champion's - {tolerance:g}, and its false-alarm "
        f"rate there <= the champion's + {far_tol:g} points (no champion, or one the golden "
        "set cannot score: recorded, cannot fail)"
    )
    missing = golden.missing(candidate.metadata.channels)
    if missing:
        raise DataError(
            f"golden set {golden.source} lacks the candidate's channels {missing}",
            hint="use a golden set with the channels the model is trained on, "
            "or clear trainer.golden_set",
        )
    cand = score_golden(golden, candidate, settings)
    champ: dict[str, Any] | None = None
    skipped = champion_error or "no champion to compare with"
    if champion is not None:
        champion_version = champion.metadata.version
        lacks = golden.missing(champion.metadata.channels)
        if lacks:
            skipped = f"the golden set lacks the champion's channels {lacks}"
        else:
            champ = score_golden(golden, champion, settings)
    c_val = cand[METRIC] or 0.0
    if champ is None:
        passed, verdict = True, f"not compared ({skipped}); recorded only"
    else:
        bar = (champ[METRIC] or 0.0) - tolerance
        recall_ok = c_val >= bar - 1e-9
        # an always-alarming candidate "detects" every fault: its false alarms on the
        # golden set's normal readings must not grow either
        far_ok = cand["far_pct"] <= champ["far_pct"] + far_tol + 1e-9
        passed = recall_ok and far_ok
        verdict = (
            f"candidate {METRIC} {c_val:.3f} {'>=' if recall_ok else '<'} champion "
            f"{champ[METRIC] or 0.0:.3f} - {tolerance:g}, FAR {cand['far_pct']:.2f} % "
            f"{'<=' if far_ok else '>'} champion {champ['far_pct']:.2f} % + {far_tol:g}: "
            f"{'passed' if passed else 'failed'}"
        )
    warnings = []
    if cand["far_pct"] > SUSPECT_FAR_PCT:
        warnings.append(
            f"the candidate alarms on {cand['far_pct']:.1f} % of the golden set's normal "
            "readings: they do not look like the data it was trained on. Is it the same "
            "plant? For sim:SEED use the seed and asset count of the simulated plant"
        )
        log.warning("golden set %s: %s", golden.source, warnings[-1])
    return {
        "set": golden.describe(),
        "warnings": warnings,
        "metric": METRIC,
        "tolerance": tolerance,
        "candidate": cand,
        "champion_version": champion_version,
        "champion": champ,
        "champion_skipped": skipped if champ is None else None,
        "passed": passed,
        "verdict": verdict,
        "rule": rule,
    }


def resolve_golden(
    golden: GoldenSet | str | Path | None, settings: Settings, channels: Sequence[str]
) -> GoldenSet | None:
    """Load the golden set named by ``golden`` (``None``/empty = none) and check that it
    holds the candidate's ``channels`` — before anything is trained."""
    if golden is None or (isinstance(golden, str | Path) and not str(golden).strip()):
        return None
    gs = (
        golden
        if isinstance(golden, GoldenSet)
        else load_golden(golden, sample_period_ms=settings.window.sample_period_ms)
    )
    missing = gs.missing(channels)
    if missing:
        raise DataError(
            f"golden set {gs.source} lacks the channels {missing} the candidate is trained on",
            hint="use a golden set with those channels, or clear trainer.golden_set",
        )
    return gs


def apply_golden_gate(
    candidate: TrainedModel,
    gate: dict[str, Any],
    golden: GoldenSet | None,
    *,
    registry: Registry,
    settings: Settings,
    tolerance: float,
    champion: LoadedModel | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
    """``gate`` with its ``golden`` section and ``passed`` = FAR gate AND golden check,
    and ``candidate`` with that gate in its metadata metrics. Unchanged without a set.
    ``champion``: the registry's champion when the caller has loaded it already."""
    if golden is None:
        return candidate, gate
    from stream_ae.model.artifact import LoadedModel, load_artifact

    version = error = None
    if champion is not None:
        version = champion.metadata.version
    elif registry.root.is_dir() and (version := registry.champion()) is not None:
        try:
            champion = load_artifact(registry.path_of(version), device="cpu")
        except ArtifactError as exc:
            error = f"the champion {version} cannot be loaded: {exc}"
    as_loaded = LoadedModel(
        candidate.metadata, candidate.model, candidate.scorer("cpu"), Path("<candidate>")
    )
    section = golden_check(
        golden,
        as_loaded,
        champion,
        settings,
        tolerance=tolerance,
        champion_version=version,
        champion_error=error,
    )
    gate = {
        **gate,
        "far_passed": gate["passed"],
        "golden": section,
        "passed": bool(gate["passed"] and section["passed"]),
        "rule": f"{gate['rule']}; and {section['rule']}",
    }
    metrics = {**candidate.metadata.metrics, "gate": gate}
    metadata = candidate.metadata.model_copy(update={"metrics": metrics})
    return dataclasses.replace(candidate, metadata=metadata), gate
