"""The trainer against the real broker: clean data, gate, registry, announcement."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest
from harness import (
    PERIOD_MS,
    STREAM_START,
    Env,
    ScorerThread,
    read_all,
    simulator,
    stream_messages,
    wait_until,
)

from stream_ae import schemas
from stream_ae.model.artifact import load_artifact
from stream_ae.readings_io import to_windows
from stream_ae.registry import Registry
from stream_ae.simulate import CHANNELS, FaultSpec
from stream_ae.training import grid_for_training
from trainers.service import TrainerService, request_retrain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONSET = STREAM_START + 300 * PERIOD_MS
FAULT = FaultSpec("pump-001", "bearing_wear", ONSET, ramp_s=60, severity=2.0)


def _trainer_settings(env: Env, registry: Path):  # type: ignore[no-untyped-def]
    return env.settings(
        window={"size": 32, "hop": 8},
        train={"epochs": 6},
        trainer={
            "registry": registry,
            "lookback_s": 8 * 3600,
            "channels": CHANNELS,
            "far_factor": 1e6,  # the gate has its own tests; here the promotion path runs
        },
    )


def test_contaminated_data_is_excluded_and_the_new_model_still_detects_the_fault(
    env: Env, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    champion = registry.register(env.model_path, report={"source": "session model"})
    registry.promote(champion, decision={"reason": "test set-up"})
    settings = _trainer_settings(env, registry.root)
    env.create_topics(settings)
    msgs = stream_messages(simulator([FAULT]), 1200)
    env.produce(settings, msgs)
    scorer = ScorerThread(settings).start()  # the champion emits events for the fault
    scorer.wait_for(len(msgs))
    scorer.stop()
    assert scorer.service.pipeline.metrics.events > 0

    result = TrainerService(settings).run_once()

    assert result.report["trigger"] == "manual"
    excl = result.report["data"]["exclusions"]
    assert excl["by_reason"]["anomaly_event"] > 0, excl
    assert result.promoted and registry.champion() == result.version
    # the announcement reached the control topic
    anns = [
        msgspec.json.decode(m.value(), type=schemas.ModelAnnouncement)
        for m in read_all(settings, settings.topics.models)
        if m.key() == schemas.CHAMPION_KEY
    ]
    assert anns[-1].version == result.version
    # the new model never trained on the faulty stretch, so it still flags it
    new = load_artifact(registry.path_of(result.version), device="cpu")
    sim = simulator([FAULT])
    block = sim.step_block(1200)
    from stream_ae.readings_io import readings_from_arrays

    readings = readings_from_arrays(
        block.asset_ids, block.reading_ts_ms, block.values, block.present, list(block.channels)
    )
    windows = to_windows(readings, grid_for_training(settings, len(CHANNELS)))
    faulty = (np.array(windows.asset_ids) == "pump-001") & (
        windows.start_ms >= ONSET + 120 * PERIOD_MS
    )
    scores = new.scorer.score(windows.values[faulty]).scores
    assert np.mean(scores > new.metadata.threshold_spec.value) > 0.9


def test_a_trigger_makes_the_running_trainer_retrain(env: Env, tmp_path: Path) -> None:
    settings = _trainer_settings(env, tmp_path / "registry")
    settings.trainer.interval_s = 3600.0  # after the round at start-up, only triggers
    env.create_topics(settings)
    env.produce(settings, stream_messages(simulator(), 900))
    service = TrainerService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()

    def versions() -> int:
        root = settings.trainer.registry
        return len(Registry(root).versions()) if (root / "versions").is_dir() else 0

    try:
        wait_until(lambda: versions() >= 1, 180, "the round at start-up")
        request_retrain(settings, by="test", reason="integration test")
        wait_until(lambda: versions() >= 2, 180, "the triggered round")
    finally:
        service.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    reg = Registry(settings.trainer.registry)
    reports = [reg.show(v.version)["report"] for v in reg.versions()]
    assert sorted(r["trigger"] for r in reports) == ["request", "schedule"]
    (asked,) = [r["trigger_detail"] for r in reports if r["trigger"] == "request"]
    assert (asked["by"], asked["reason"]) == ("test", "integration test")


def test_per_asset_thresholds_and_the_golden_gate_reach_the_running_scorer(
    env: Env, tmp_path: Path
) -> None:
    """A round with per-asset thresholds and a simulated golden set of the same fleet
    (seed and asset count) against the champion: the gate's verdict follows its numbers
    and is recorded; a scorer on the candidate, on the real broker, judges each asset's
    windows by that asset's own threshold."""
    from harness import N_ASSETS, SEED, events_of

    registry = Registry(tmp_path / "registry")
    champion = registry.register(env.model_path, report={"source": "session model"})
    registry.promote(champion, decision={"reason": "test set-up"})
    settings = env.settings(
        window={"size": 32, "hop": 8},
        train={"epochs": 6, "holdout_fraction": 0.5},
        trainer={
            "registry": registry.root,
            "lookback_s": 8 * 3600,
            "channels": CHANNELS,
            "far_factor": 1e6,  # only the golden check decides here
            "per_asset_thresholds": True,
            "per_asset_min_windows": 20,
            "golden_set": f"sim:{SEED},assets={N_ASSETS},duration=1h",
        },
    )
    env.create_topics(settings)
    msgs = stream_messages(simulator([FAULT]), 1200)
    env.produce(settings, msgs)

    result = TrainerService(settings).run_once()

    gate = result.report["gate"]
    golden = gate["golden"]
    cand, champ = golden["candidate"], golden["champion"]
    assert golden["champion_version"] == champion and champ is not None
    assert cand["events"] == champ["events"] > 0
    tol, far_tol = settings.trainer.golden_tolerance, settings.trainer.golden_far_tolerance
    expected = (
        cand["event_recall"] >= champ["event_recall"] - tol
        and cand["far_pct"] <= champ["far_pct"] + far_tol
    )
    assert golden["passed"] is expected and result.promoted is expected, golden["verdict"]
    last = registry.decisions()[-1]
    assert (last["action"], last["version"]) == (
        ("promote" if expected else "reject"),
        result.version,
    )
    assert last["decision"]["gate"]["golden"]["candidate"] == cand

    assert gate["per_asset"]["assets_own"] >= 2, gate["per_asset"]
    md = load_artifact(registry.path_of(result.version), device="cpu").metadata
    own = dict(md.asset_thresholds.lookup)
    fleet = md.threshold_spec.value
    assert len(own) >= 2 and any(v != fleet for v in own.values())

    scoring = env.settings(
        window={"size": 32, "hop": 8},
        model={"path": registry.path_of(result.version)},
        scorer={"group_id": f"{env.run}-candidate"},
    )
    scorer = ScorerThread(scoring).start()
    scorer.wait_for(len(msgs))
    scorer.stop()
    events = [e for e in events_of(scoring) if e.model_version == result.version]
    assert events, "the candidate raised no event on the injected bearing wear"
    assert {e.threshold for e in events} - {fleet} <= set(own.values())
    for e in events:
        assert e.threshold == own.get(e.asset_id, fleet), e
        assert e.score > e.threshold
