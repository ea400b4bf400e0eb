"""Registry care: retention (``prune``), stale candidate folders, a promotion that
expects a champion, and announcements made under the writer lock."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from test_registry import _report, make_artifact
from typer.testing import CliRunner

from stream_ae.cli import models_cmd
from stream_ae.errors import ArtifactError, ConfigError
from stream_ae.registry import (
    DECISIONS_FILE,
    STALE_CANDIDATE_S,
    ChampionChanged,
    Registry,
)

runner = CliRunner()


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def six(reg: Registry, tmp_path: Path) -> list[str]:
    return [reg.register(make_artifact(tmp_path / "art", s), report=_report(s)) for s in range(6)]


def _decisions(reg: Registry) -> list[dict[str, Any]]:
    lines = (reg.root / DECISIONS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


# -- prune ---------------------------------------------------------------------------------


def test_prune_keeps_the_newest_the_champion_and_every_rollback_target(
    reg: Registry, six: list[str]
) -> None:
    v = six
    reg.promote(v[0], decision={"reason": "first"})
    reg.promote(v[1], decision={"reason": "second"})  # rollback returns to v0
    reg.reject(v[2], decision={"reason": "gate failed"})
    res = reg.prune(2)
    assert [name for name, _ in res.removed] == [v[2], v[3]]
    assert all(size > 0 for _, size in res.removed) and res.freed > 0
    assert res.kept == v[4:] and res.protected == v[:2]
    assert sorted(i.version for i in reg.versions()) == [v[0], v[1], v[4], v[5]]
    assert reg.champion() == v[1]
    assert reg.rollback() == v[0]  # the rollback target survived
    pruned = [d for d in _decisions(reg) if d["action"] == "prune"]
    assert [d["version"] for d in pruned] == [v[2], v[3]]
    assert pruned[0]["champion"] == v[1]
    assert pruned[0]["decision"]["status"] == "rejected"
    assert pruned[0]["decision"]["bytes"] == res.removed[0][1]
    with pytest.raises(ArtifactError, match=f"{v[2]} was pruned .* retention"):
        reg.show(v[2])
    # rolled back from v1: no rollback returns to it any more, so it may go now
    assert [name for name, _ in reg.prune(2).removed] == [v[1]]
    assert reg.prune(2).removed == []


def test_prune_dry_run_changes_nothing(reg: Registry, six: list[str]) -> None:
    reg.promote(six[5], decision={})
    before = (reg.root / DECISIONS_FILE).read_bytes()
    res = reg.prune(1, dry_run=True)
    assert res.dry_run and [n for n, _ in res.removed] == six[:5]
    assert len(reg.versions()) == 6
    assert (reg.root / DECISIONS_FILE).read_bytes() == before


def test_prune_needs_keep_of_at_least_one(reg: Registry, six: list[str]) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        reg.prune(0)


def _candidate(reg: Registry, name: str, age_s: float) -> Path:
    folder = reg.root / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 1000)
    then = time.time() - age_s
    for p in (folder / "model.safetensors", folder):
        os.utime(p, (then, then))
    return folder


def test_stale_candidate_folders_are_swept_but_a_live_rounds_is_not(
    reg: Registry, six: list[str]
) -> None:
    stale = _candidate(reg, ".candidate-killed", STALE_CANDIDATE_S + 60)
    live = _candidate(reg, ".candidate-live", 5)
    res = reg.prune(10, dry_run=True)
    assert [n for n, _ in res.stale_candidates] == [stale.name] and stale.exists()
    res = reg.prune(10)
    assert res.stale_candidates == [(stale.name, 1000)] and res.freed == 1000
    assert not stale.exists() and live.exists()
    stale2 = _candidate(reg, ".candidate-killed2", STALE_CANDIDATE_S + 60)
    reg.hold(six[0], decision={})  # any writer sweeps
    assert not stale2.exists() and live.exists()


def test_prune_from_the_cli(reg: Registry, six: list[str]) -> None:
    app = typer.Typer()
    models_cmd.register(app)
    reg.promote(six[0], decision={})
    opts = ["--registry", str(reg.root)]
    res = runner.invoke(app, ["models", "prune", "--keep", "2", "--dry-run", *opts])
    assert res.exit_code == 0, res.output
    assert f"would remove {six[1]}" in res.output and len(reg.versions()) == 6
    res = runner.invoke(app, ["models", "prune", "--keep", "2", *opts])
    assert res.exit_code == 0, res.output
    assert f"removed {six[3]}" in res.output and "removed 3 version(s)" in res.output
    assert "freed" in res.output and six[0] in res.output  # the champion, kept
    assert sorted(i.version for i in reg.versions()) == [six[0], six[4], six[5]]
    res = runner.invoke(app, ["models", "show", six[1], *opts])
    assert isinstance(res.exception, ArtifactError) and "pruned" in str(res.exception)
    res = runner.invoke(app, ["models", "prune", "--keep", "0", *opts])
    assert res.exit_code != 0


# -- promote with an expected champion -----------------------------------------------------


def test_promote_refuses_when_the_champion_is_not_the_expected_one(
    reg: Registry, six: list[str]
) -> None:
    reg.promote(six[0], decision={})
    reg.promote(six[1], decision={})  # an engineer, meanwhile
    before = (reg.root / DECISIONS_FILE).read_bytes()
    with pytest.raises(ChampionChanged) as err:
        reg.promote(six[2], decision={}, expected_champion=six[0])
    assert (err.value.expected, err.value.actual) == (six[0], six[1])
    assert reg.champion() == six[1] and (reg.root / DECISIONS_FILE).read_bytes() == before
    with pytest.raises(ChampionChanged):
        reg.promote(six[2], decision={}, expected_champion=None)
    reg.promote(six[2], decision={}, expected_champion=six[1])
    assert reg.champion() == six[2]


# -- announcements under the lock ----------------------------------------------------------


def test_announce_sends_the_current_champion_while_holding_the_writer_lock(
    reg: Registry, six: list[str]
) -> None:
    reg.promote(six[0], decision={})
    other = Registry(reg.root, lock_timeout=0.05)

    def send(version: str) -> str:
        with pytest.raises(ArtifactError, match="locked by another writer"):
            other.promote(six[1], decision={})
        return version

    assert reg.announce(send) == six[0]
    other.promote(six[1], decision={})  # released afterwards
    assert reg.announce(lambda v: v) == six[1]


def test_cli_promote_announces_what_champion_says_at_announce_time(
    reg: Registry, six: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another promoter slips in between this promotion and its announcement: the
    announcement must carry the champion, not the version this command promoted."""
    import logging

    import stream_ae.service

    for name in ("", "stream_ae"):  # get_settings sets up logging: leave it as it was
        lg = logging.getLogger(name)
        monkeypatch.setattr(lg, "level", lg.level)
    sent: list[str] = []

    def announce_champion(_settings: Any, path: Path) -> Any:
        sent.append(Path(path).name)
        return SimpleNamespace(version=Path(path).name)

    monkeypatch.setattr(stream_ae.service, "announce_champion", announce_champion)
    real = Registry.promote

    def promote_then_someone_else(self: Registry, version: str, **kw: Any) -> None:
        real(self, version, **kw)
        real(Registry(self.root), six[3], decision={"reason": "someone else"})

    monkeypatch.setattr(Registry, "promote", promote_then_someone_else)
    app = typer.Typer()
    models_cmd.register(app)
    res = runner.invoke(app, ["models", "promote", six[2], "--registry", str(reg.root)])
    assert res.exit_code == 0, res.output
    assert sent == [six[3]] and reg.champion() == six[3]


# -- the trainer service applies trainer.keep_versions -------------------------------------


@pytest.mark.parametrize(("keep", "left"), [(2, 3), (0, 6)])
def test_the_trainer_service_prunes_to_keep_versions(
    reg: Registry, six: list[str], keep: int, left: int
) -> None:
    from stream_ae.settings import load_settings
    from trainers.service import TrainerService

    reg.promote(six[0], decision={})
    settings = load_settings(flags={"trainer": {"registry": str(reg.root), "keep_versions": keep}})
    TrainerService(settings).prune()
    assert len(reg.versions()) == left and reg.champion() == six[0]
