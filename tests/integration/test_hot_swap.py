"""Hot swap: a promoted model reaches a running scorer at a batch boundary."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from conftest import train_fleet_model
from harness import (
    PERIOD_MS,
    Env,
    H,
    ScorerThread,
    W,
    scores_of,
    simulator,
    stream_messages,
    wait_until,
)

from stream_ae import schemas
from stream_ae.io.kafka import publish_control
from stream_ae.model.artifact import load_artifact
from stream_ae.pipeline import StepOutput
from stream_ae.service import announce_champion, ensure_control_topic
from stream_ae.settings import Settings

pytestmark = pytest.mark.integration

W_C, H_C = 16, 4


@pytest.fixture(scope="module")
def model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same grid as the session model, other weights."""
    return train_fleet_model(tmp_path_factory.mktemp("b"), seed=1, window=W, hop=H, epochs=3)


@pytest.fixture(scope="module")
def model_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another window size and hop: the scorer must rebuild its windows."""
    return train_fleet_model(tmp_path_factory.mktemp("c"), seed=2, window=W_C, hop=H_C, epochs=3)


class _Clock:
    """Wall time of the first scored window of a given model version."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    def __call__(self, out: StepOutput) -> None:
        for r in out.scores:
            self.first.setdefault(r.model_version, time.monotonic())


def _run_with_swap(
    env: Env, announce: object
) -> tuple[list[schemas.ScoreRecord], ScorerThread, float, _Clock]:
    settings = env.settings(topics={"publish_scores": True})
    env.create_topics(settings)
    ensure_control_topic(settings)
    first = stream_messages(sim := simulator(), 600)
    second = stream_messages(sim, 600)
    env.produce(settings, first)
    clock = _Clock()
    scorer = ScorerThread(settings, on_output=clock).start()
    scorer.wait_for(len(first))
    announced = time.monotonic()
    announce(settings)
    env.produce(settings, second)
    scorer.wait_for(len(first) + len(second))
    scorer.stop()
    return scores_of(settings), scorer, announced, clock


def _by_asset(scores: list[schemas.ScoreRecord]) -> dict[str, list[schemas.ScoreRecord]]:
    out: dict[str, list[schemas.ScoreRecord]] = {}
    for r in sorted(scores, key=lambda r: r.window_start_ms):
        out.setdefault(r.asset_id, []).append(r)
    return out


def test_promoted_model_takes_over_without_losing_or_rescoring_a_window(
    env: Env, model_b: Path
) -> None:
    old = load_artifact(env.model_path, device="cpu").metadata.version
    new = load_artifact(model_b, device="cpu").metadata.version
    scores, scorer, announced, clock = _run_with_swap(env, lambda s: announce_champion(s, model_b))
    keys = [(r.asset_id, r.window_start_ms) for r in scores]
    assert len(keys) == len(set(keys)), "a window was scored twice"
    for asset, rows in _by_asset(scores).items():
        starts = [r.window_start_ms for r in rows]
        assert starts == list(range(starts[0], starts[-1] + 1, H * PERIOD_MS)), (
            f"{asset}: a window is missing"
        )
        versions = [r.model_version for r in rows]
        switch = versions.index(new)
        assert set(versions[:switch]) == {old} and set(versions[switch:]) == {new}
    assert scorer.service.pipeline.metrics.model_swaps == 1
    print(
        f"swap latency (announce → first score by the new model): "
        f"{(clock.first[new] - announced) * 1000:.0f} ms"
    )


def test_a_corrupted_artifact_is_refused_and_the_old_model_serves_on(
    env: Env, model_b: Path, tmp_path: Path
) -> None:
    broken = tmp_path / model_b.name
    shutil.copytree(model_b, broken)
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    good = load_artifact(model_b, device="cpu").metadata

    def announce(settings: Settings) -> None:
        ann = schemas.ModelAnnouncement(
            version=good.version,
            path=str(broken),
            weights_sha256=good.weights_sha256,
            announced_at=schemas.iso_ms(int(time.time() * 1000)),
        )
        publish_control(
            settings.kafka,
            settings.topics.models,
            schemas.CHAMPION_KEY,
            schemas.encode(ann),
        )

    old = load_artifact(env.model_path, device="cpu").metadata.version
    scores, scorer, _announced, _clock = _run_with_swap(env, announce)
    assert {r.model_version for r in scores} == {old}
    assert scorer.service.pipeline.metrics.model_swap_failures == 1
    assert scorer.service.pipeline.metrics.model_swaps == 0


def test_a_new_window_size_rebuilds_the_windows(env: Env, model_c: Path) -> None:
    old = load_artifact(env.model_path, device="cpu").metadata.version
    new = load_artifact(model_c, device="cpu").metadata.version
    scores, scorer, _announced, _clock = _run_with_swap(
        env, lambda s: announce_champion(s, model_c)
    )
    keys = [(r.asset_id, r.window_start_ms, r.model_version) for r in scores]
    assert len(keys) == len(set(keys))
    for asset, rows in _by_asset(scores).items():
        a = [r for r in rows if r.model_version == old]
        c = [r for r in rows if r.model_version == new]
        assert a and c, asset
        assert all(r.window_end_ms - r.window_start_ms == W * PERIOD_MS for r in a)
        assert all(r.window_end_ms - r.window_start_ms == W_C * PERIOD_MS for r in c)
        # the new grid starts exactly where the old one would have gone on: no gap
        assert c[0].window_start_ms == a[-1].window_start_ms + H * PERIOD_MS, asset
        starts = [r.window_start_ms for r in c]
        assert starts == list(range(starts[0], starts[-1] + 1, H_C * PERIOD_MS))
    assert scorer.service.pipeline.metrics.model_swaps == 1


def test_every_scorer_of_a_group_switches(env: Env, model_b: Path) -> None:
    old = load_artifact(env.model_path, device="cpu").metadata.version
    new = load_artifact(model_b, device="cpu").metadata.version
    settings = env.settings(topics={"publish_scores": True})
    env.create_topics(settings, partitions=4)
    ensure_control_topic(settings)
    sim = simulator()
    first, second = stream_messages(sim, 600), stream_messages(sim, 600)
    env.produce(settings, first)
    a, b = ScorerThread(settings).start(), ScorerThread(settings).start()

    def consumed() -> int:
        return a.service.pipeline.metrics.messages + b.service.pipeline.metrics.messages

    try:
        wait_until(lambda: bool(a.assignment()) and bool(b.assignment()), 60, "both assigned")
        wait_until(lambda: consumed() >= len(first), 60, "the first half")
        announce_champion(settings, model_b)
        env.produce(settings, second)
        wait_until(lambda: consumed() >= len(first) + len(second), 60, "the second half")
        wait_until(
            lambda: (
                a.service.pipeline.metrics.model_swaps == 1
                and b.service.pipeline.metrics.model_swaps == 1
            ),
            30,
            "both scorers to switch",
        )
    finally:
        a.stop()
        b.stop()
    scores = scores_of(settings)
    keys = [(r.asset_id, r.window_start_ms) for r in scores]
    assert len(keys) == len(set(keys))
    for rows in _by_asset(scores).values():
        versions = [r.model_version for r in rows]
        switch = versions.index(new)
        assert set(versions[:switch]) <= {old} and set(versions[switch:]) == {new}
