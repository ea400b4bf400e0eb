"""The golden-set check of the promotion gate (trainers/golden.py), no broker.

Models are tiny (W=16, 2 epochs) and trained a few times per module: a champion
(module fixture, itself the no-champion case), a candidate with another window
and fewer channels, and one candidate per retrain test.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from stream_ae import cli
from stream_ae.errors import ConfigError, DataError
from stream_ae.model.artifact import LoadedModel, load_artifact
from stream_ae.readings_io import Readings, readings_from_arrays
from stream_ae.registry import Registry
from stream_ae.settings import Settings, load_settings
from stream_ae.simulate import FaultSpec, Simulator, write_csv
from trainers.golden import (
    SUSPECT_FAR_PCT,
    GoldenPart,
    GoldenSet,
    golden_check,
    golden_from_simulator,
    load_golden,
    score_golden,
)
from trainers.retrain import RetrainResult, retrain

T0 = 1_764_000_000_000
TRAIN_STEPS = 2400
#: the golden run continues where the training data ends
G0 = T0 + TRAIN_STEPS * 1000
FOUR = ["vibration_rms", "pressure", "bearing_temp", "flow"]
#: a never-alarming decision rule: 10 000 of the last 10 000 windows above the threshold
CRIPPLED = {"decide": {"persistence_k": 10_000, "persistence_n": 10_000}}


def _faults() -> list[FaultSpec]:
    """Two obvious faults (the models are tiny), one per asset."""
    return [
        FaultSpec("pump-000", "sensor_drift", G0 + 600_000, 30.0, severity=4.0),
        FaultSpec("pump-001", "cavitation", G0 + 700_000, 30.0, severity=3.0),
    ]


def _settings(seed: int = 0, **extra: Any) -> Settings:
    flags: dict[str, Any] = {
        "window": {"size": 16, "hop": 8},
        "train": {"epochs": 2, "seed": seed},
        "model": {"device": "cpu"},
    }
    return load_settings(flags={**flags, **extra})


@pytest.fixture(scope="module")
def readings() -> Readings:
    block = Simulator(2, seed=3, start_ts_ms=T0).step_block(TRAIN_STEPS)
    return readings_from_arrays(
        block.asset_ids, block.reading_ts_ms, block.values, block.present, list(block.channels)
    )


@pytest.fixture(scope="module")
def golden() -> GoldenSet:
    return golden_from_simulator(
        3,
        assets=2,
        steps=1200,
        sample_period_ms=1000,
        name="sim-test",
        faults=_faults(),
        start_ts_ms=G0,
    )


@pytest.fixture(scope="module")
def first(
    readings: Readings, golden: GoldenSet, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RetrainResult]:
    """The first round into an empty registry: its candidate becomes the champion."""
    root = tmp_path_factory.mktemp("champion") / "reg"
    result = retrain(
        readings, _settings(), source="sim", registry=Registry(root), far_factor=1e9, golden=golden
    )
    return root, result


@pytest.fixture
def reg(first: tuple[Path, RetrainResult], tmp_path: Path) -> Registry:
    """A copy of the registry holding the champion, for one test to change."""
    shutil.copytree(first[0], tmp_path / "reg")
    return Registry(tmp_path / "reg")


@pytest.fixture(scope="module")
def champion(first: tuple[Path, RetrainResult]) -> LoadedModel:
    root, result = first
    return load_artifact(Registry(root).path_of(result.version), device="cpu")


def _crippled(model: LoadedModel) -> LoadedModel:
    threshold = dict(model.metadata.threshold)
    threshold["params"] = {**threshold["params"], "persistence_k": 10_000, "persistence_n": 10_000}
    md = model.metadata.model_copy(update={"threshold": threshold})
    return dataclasses.replace(model, metadata=md)


# ----------------------------------------------------------------------------- loading


def test_a_simulated_golden_set_labels_every_other_asset_from_its_fault_onset() -> None:
    g = load_golden("sim:3,assets=4,duration=10m", sample_period_ms=1000)
    (part,) = g.parts
    r = part.readings
    assert len(r) == 4 * 600 and r.labels is not None
    ids = np.array(r.asset_ids)
    assert not r.labels[(ids == "pump-000") | (ids == "pump-002")].any()
    for asset in ("pump-001", "pump-003"):
        lab = r.labels[ids == asset]
        onset = int(np.argmax(lab))
        assert onset > 0 and lab[onset:].all()  # normal first, faulty from onset on
    assert g.describe()["labelled_events"] == 2


@pytest.mark.parametrize("spec", ["sim:x", "sim:3,assets", "sim:3,speed=2", "sim:3,duration=soon"])
def test_a_bad_simulator_spec_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="expected sim:SEED"):
        load_golden(spec, sample_period_ms=1000)


def test_a_golden_csv_without_a_label_column_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "plain.csv"
    f.write_text("timestamp,a\n0,1\n1000,2\n")
    with pytest.raises(DataError, match="no 'anomaly' label column") as info:
        load_golden(f, sample_period_ms=1000)
    assert str(f) in str(info.value) and "anomaly" in info.value.hint


def test_a_golden_csv_without_any_labelled_fault_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "normal.csv"
    f.write_text("timestamp,a,anomaly\n0,1,0\n1000,2,0\n")
    with pytest.raises(DataError, match="no labelled fault") as info:
        load_golden(f, sample_period_ms=1000)
    assert str(f) in str(info.value) and "anomaly=1" in info.value.hint


def test_a_golden_folder_needs_csv_files_and_a_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no"):
        load_golden(tmp_path, sample_period_ms=1000)
    with pytest.raises(DataError, match="does not exist"):
        load_golden(tmp_path / "nope.csv", sample_period_ms=1000)


def test_a_semicolon_csv_folder_loads_one_part_per_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("datetime;x;anomaly\n0;1;0\n1000;2;1\n")
    (tmp_path / "b.csv").write_text("datetime;x;anomaly\n0;1;0\n1000;2;0\n")
    g = load_golden(tmp_path, sample_period_ms=1000)
    assert [p.name for p in g.parts] == ["a.csv", "b.csv"]
    assert g.channels == ["x"] and g.describe()["labelled_events"] == 1


def test_a_bad_golden_file_stops_retrain_before_training(
    readings: Readings, tmp_path: Path
) -> None:
    f = tmp_path / "plain.csv"
    f.write_text("timestamp,a\n0,1\n")
    with pytest.raises(DataError, match=r"plain\.csv"):
        retrain(readings, _settings(), source="sim", registry=Registry(tmp_path / "r"), golden=f)
    assert not (tmp_path / "r").exists()  # nothing was trained or registered


# ----------------------------------------------------------------------------- scoring


def test_a_simulator_csv_scores_like_the_simulated_set(
    golden: GoldenSet, champion: LoadedModel, tmp_path: Path
) -> None:
    sim = Simulator(2, seed=3, start_ts_ms=G0, faults=_faults())
    write_csv(tmp_path / "golden.csv", [sim.step_block(1200)])
    from_csv = load_golden(tmp_path / "golden.csv", sample_period_ms=1000)
    settings = _settings()
    a, b = score_golden(from_csv, champion, settings), score_golden(golden, champion, settings)
    assert a["events"] == b["events"] == 2
    for key in ("event_recall", "f1", "far_pct", "windows", "alarm_windows"):
        assert a[key] == b[key], key


def test_each_model_windows_the_golden_set_with_its_own_grid_and_channels(
    readings: Readings, golden: GoldenSet, champion: LoadedModel, tmp_path: Path
) -> None:
    from stream_ae.training import train

    settings = _settings(window={"size": 24, "hop": 8})
    path, _ = train(readings.project(FOUR), settings, source="sim", out_dir=tmp_path)
    other = load_artifact(path, device="cpu")
    out = golden_check(golden, other, champion, _settings(), tolerance=0.05)
    cand, champ = out["candidate"], out["champion"]
    assert (cand["window"], cand["channels"]) == (24, FOUR)
    assert (champ["window"], len(champ["channels"])) == (16, 8)
    assert cand["windows"] < champ["windows"]  # fewer, longer windows over the same data
    # a golden set without the champion's channels: the champion is skipped, with the reason
    four = GoldenSet("four", (GoldenPart("four", golden.parts[0].readings.project(FOUR)),))
    out = golden_check(four, other, champion, _settings(), tolerance=0.05)
    assert out["champion"] is None and out["passed"] is True
    assert "lacks the champion's channels" in out["champion_skipped"]
    assert "motor_current" in out["champion_skipped"]
    assert out["candidate"]["events"] == 2
    # ... and one without the candidate's is an error, not a pass
    with pytest.raises(DataError, match="lacks the candidate's channels"):
        golden_check(four, champion, None, _settings(), tolerance=0.05)


def test_the_tolerance_decides_how_much_worse_a_candidate_may_be(
    golden: GoldenSet, champion: LoadedModel
) -> None:
    crippled = _crippled(champion)
    good = score_golden(golden, champion, _settings())
    assert good["event_recall"] == 1.0
    assert score_golden(golden, crippled, _settings())["events_detected"] == 0
    strict = golden_check(golden, crippled, champion, _settings(), tolerance=0.05)
    assert strict["passed"] is False and "failed" in strict["verdict"]
    lenient = golden_check(golden, crippled, champion, _settings(), tolerance=1.0)
    assert lenient["passed"] is True
    # recall alone (the false-alarm guard has its own test below)
    recall_only = _settings(trainer={"golden_far_tolerance": 100.0})
    better = golden_check(golden, champion, crippled, recall_only, tolerance=0.0)
    assert better["passed"] is True


def _always_alarming(model: LoadedModel) -> LoadedModel:
    threshold = {**model.metadata.threshold, "value": 0.0}
    md = model.metadata.model_copy(update={"threshold": threshold})
    return dataclasses.replace(model, metadata=md)


def test_a_candidate_cannot_pass_by_alarming_on_everything(
    golden: GoldenSet, champion: LoadedModel
) -> None:
    flood = _always_alarming(champion)
    got = golden_check(golden, flood, champion, _settings(), tolerance=0.05)
    cand, champ = got["candidate"], got["champion"]
    assert cand["event_recall"] >= champ["event_recall"]  # recall alone would pass it
    assert cand["far_pct"] > champ["far_pct"] + 5.0
    assert got["passed"] is False and "FAR" in got["verdict"] and "failed" in got["verdict"]
    lenient = _settings(trainer={"golden_far_tolerance": 100.0})
    assert golden_check(golden, flood, champion, lenient, tolerance=0.05)["passed"] is True


# ----------------------------------------------------------------------------- retrain


def test_without_a_champion_golden_numbers_are_recorded_but_cannot_fail(
    first: tuple[Path, RetrainResult],
) -> None:
    root, result = first
    g = result.report["gate"]["golden"]
    assert result.passed and result.promoted
    assert g["champion"] is None and g["champion_version"] is None
    assert g["champion_skipped"] == "no champion to compare with"
    assert g["candidate"]["events"] == 2 and g["candidate"]["event_recall"] is not None
    (decision,) = Registry(root).decisions()
    assert decision["decision"]["gate"]["golden"]["candidate"]["events"] == 2


def test_a_candidate_that_detects_as_well_passes_and_is_promoted(
    readings: Readings, golden: GoldenSet, reg: Registry, first: tuple[Path, RetrainResult]
) -> None:
    old = first[1].version
    result = retrain(
        readings, _settings(seed=1), source="sim", registry=reg, far_factor=1e9, golden=golden
    )
    gate = result.report["gate"]
    g = gate["golden"]
    assert result.passed and result.promoted and reg.champion() == result.version
    assert g["champion_version"] == old and g["champion"]["version"] == old
    assert g["candidate"]["event_recall"] >= g["champion"]["event_recall"] - 0.05
    assert gate["far_passed"] is True and "event_recall" in gate["rule"]
    last = reg.decisions()[-1]
    assert last["version"] == result.version and last["previous"] == old
    assert last["decision"]["gate"]["golden"]["champion"]["event_recall"] == 1.0


def test_a_crippled_candidate_is_registered_but_not_promoted(
    readings: Readings, golden: GoldenSet, reg: Registry, first: tuple[Path, RetrainResult]
) -> None:
    told: list[str] = []
    result = retrain(
        readings,
        _settings(seed=2, **CRIPPLED),
        source="sim",
        registry=reg,
        far_factor=1e9,
        golden=golden,
        announce=told.append,
    )
    assert not result.passed and not result.promoted and told == []
    assert reg.champion() == first[1].version
    assert result.version in [v.version for v in reg.versions()]
    shown = reg.show(result.version)
    for gate in (shown["report"]["gate"], shown["metadata"]["metrics"]["gate"]):
        g = gate["golden"]
        assert gate["far_passed"] is True and gate["passed"] is False and g["passed"] is False
        assert g["candidate"]["events_detected"] == 0
        assert g["champion"]["event_recall"] == 1.0
        assert "failed" in g["verdict"]
    promotion, rejection = reg.decisions()
    assert (promotion["action"], promotion["version"]) == ("promote", first[1].version)
    assert (rejection["action"], rejection["version"]) == ("reject", result.version)
    assert rejection["champion"] == first[1].version
    assert rejection["decision"]["gate"]["golden"]["passed"] is False
    assert "golden set: candidate event_recall" in rejection["decision"]["reason"]


# ----------------------------------------------------------------------------- CLI


def test_retrain_command_prints_the_golden_lines(
    first: tuple[Path, RetrainResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli_state: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(first[0], tmp_path / "reg")
    normal = Simulator(2, seed=3, start_ts_ms=T0)
    write_csv(tmp_path / "normal.csv", [normal.step_block(TRAIN_STEPS)])
    sim = Simulator(2, seed=3, start_ts_ms=G0, faults=_faults())
    write_csv(tmp_path / "golden.csv", [sim.step_block(1200)])
    result = CliRunner().invoke(
        cli.app,
        [
            *("--set", "window.size=16", "--set", "window.hop=8", "--set", "train.seed=4"),
            *("retrain", "--csv", "normal.csv", "--registry", "reg", "--epochs", "2"),
            *("--far-factor", "1e9", "--no-announce", "--golden", "golden.csv"),
            *("--golden-tolerance", "0.1"),
        ],
        env={"COLUMNS": "250"},
    )
    out = result.output
    assert "golden set" in out and "2 labelled faults" in out, out
    assert "golden: candidate" in out and f"golden: champion {first[1].version}" in out
    assert result.exit_code == 0, out
    assert "event recall" in out and "- 0.1" in out


def test_a_golden_set_from_another_plant_is_flagged_in_the_report(
    champion: LoadedModel,
) -> None:
    """Same simulator, other seed: other pumps, whose normal readings the model never
    saw — the report warns instead of quietly comparing on meaningless data."""

    def check(seed: int) -> dict[str, Any]:
        sim = golden_from_simulator(
            seed,
            assets=2,
            steps=1200,
            sample_period_ms=1000,
            name=f"seed {seed}",
            start_ts_ms=G0,
            faults=_faults(),
        )
        return golden_check(sim, champion, None, _settings(), tolerance=0.05)

    own, other = check(3), check(11)  # the champion's plant is seed 3
    assert own["candidate"]["far_pct"] <= SUSPECT_FAR_PCT and own["warnings"] == []
    assert other["candidate"]["far_pct"] > SUSPECT_FAR_PCT
    assert "same plant" in other["warnings"][0]
