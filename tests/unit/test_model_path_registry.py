"""A scorer's ``model.path`` pointed at a model registry serves the champion, never
the newest version (which may be a rejected candidate)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from tiny_models import T0, tiny_artifact

from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.errors import ArtifactError
from stream_ae.model.artifact import load_artifact, resolve_artifact_dir
from stream_ae.registry import CHAMPION_FILE, Registry
from stream_ae.settings import load_settings


def _artifact(staging: Path, seed: int) -> Path:
    return tiny_artifact(
        staging,
        threshold=ThresholdSpec("quantile", {"q": 0.99, "n_scores": 100}, 1.0 + seed),
        seed=seed,
        created_at=T0 + timedelta(minutes=seed),
    )


@pytest.fixture
def registry(tmp_path: Path) -> tuple[Registry, str, str]:
    """A registry whose champion is the older version; the newer one was rejected."""
    reg = Registry(tmp_path / "registry")
    old, new = (reg.register(_artifact(tmp_path / "staging", s), report={}) for s in (1, 2))
    assert old < new  # the newest by name is the rejected one
    reg.promote(old, decision={"reason": "test"})
    reg.reject(new, decision={"reason": "retrain: gate failed"})
    return reg, old, new


def test_a_registry_its_versions_folder_and_its_champion_file_give_the_champion(
    registry: tuple[Registry, str, str],
) -> None:
    reg, champion, _rejected = registry
    for path in (reg.root, reg.versions_dir, reg.root / CHAMPION_FILE):
        assert resolve_artifact_dir(path) == reg.versions_dir / champion, path
        assert load_artifact(path, device="cpu").metadata.version == champion


def test_the_scorer_loads_the_champion_from_model_path(
    registry: tuple[Registry, str, str],
) -> None:
    from stream_ae.service import load_model

    reg, champion, _ = registry
    for path in (reg.root, reg.versions_dir):
        settings = load_settings(flags={"model": {"path": path, "device": "cpu"}})
        assert load_model(settings).metadata.version == champion


def test_after_a_rollback_the_registry_gives_the_new_champion(
    registry: tuple[Registry, str, str],
) -> None:
    reg, old, new = registry
    reg.promote(new, decision={"reason": "operator"})
    assert resolve_artifact_dir(reg.versions_dir).name == new
    reg.rollback(decision={"reason": "operator"})
    assert resolve_artifact_dir(reg.root).name == old


def test_a_registry_without_a_champion_says_to_promote_one(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    reg.register(_artifact(tmp_path / "staging", 1), report={})
    for path in (reg.root, reg.versions_dir):
        with pytest.raises(ArtifactError, match="has no champion") as err:
            load_artifact(path, device="cpu")
        assert "stream-ae models promote VERSION" in str(err.value.hint)


def test_a_champion_file_naming_no_version_is_refused(
    registry: tuple[Registry, str, str],
) -> None:
    reg = registry[0]
    (reg.root / CHAMPION_FILE).write_text("20990101T000000Z-deadbeef\n")
    with pytest.raises(ArtifactError, match="not a registered version"):
        resolve_artifact_dir(reg.root)


def test_a_plain_folder_of_artifacts_still_gives_the_newest(tmp_path: Path) -> None:
    # a folder of versions, even one named "versions", without a registry around it
    for folder in (tmp_path / "artifacts", tmp_path / "plain" / "versions"):
        older, newer = (_artifact(folder, s) for s in (1, 2))
        assert resolve_artifact_dir(folder) == newer
        assert resolve_artifact_dir(older) == older  # a single artifact folder: itself


def test_a_copied_registry_without_its_champion_file_but_with_its_log_is_a_registry(
    registry: tuple[Registry, str, str], tmp_path: Path
) -> None:
    reg = registry[0]
    copy = tmp_path / "copy"
    shutil.copytree(reg.root, copy)
    (copy / CHAMPION_FILE).unlink()
    with pytest.raises(ArtifactError, match="has no champion"):
        resolve_artifact_dir(copy / "versions")
