"""Training on a synthetic normal signal, anomaly detection, artifact round trips."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from stream_ae.errors import ArtifactError, DataError
from stream_ae.model.artifact import (
    METADATA_FILE,
    WEIGHTS_FILE,
    TrainedModel,
    load_artifact,
    make_version,
    save_artifact,
    sha256_file,
    write_current_pointer,
)
from stream_ae.model.train import fit_autoencoder

CHANNELS = ["temp", "vib_x", "vib_y", "pressure"]
W, HOP = 32, 4


def _series(n: int, seed: int) -> np.ndarray:
    """(C, n) sines with different periods, offsets and scales, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    periods = [20.0, 33.0, 47.0, 71.0]
    x = np.stack([(1 + i) * np.sin(2 * np.pi * t / p + i) + 10 * i for i, p in enumerate(periods)])
    return (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)


def _windows(x: np.ndarray) -> np.ndarray:
    starts = range(0, x.shape[1] - W + 1, HOP)
    return np.stack([x[:, s : s + W] for s in starts])


def _fit(windows: np.ndarray, **kw: object) -> TrainedModel:
    args: dict[str, object] = {
        "architecture": "conv",
        "channels": CHANNELS,
        "sample_period_ms": 100,
        "hop": HOP,
        "hparams": {},
        "epochs": 20,
        "lr": 3e-3,
        "batch_size": 32,
        "device": "cpu",
        "training_info": {"source": "synthetic", "start": "2026-01-01T00:00:00Z"},
    }
    args.update(kw)
    return fit_autoencoder(windows, **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return _fit(_windows(_series(2400, seed=0)))


@pytest.fixture
def artifact_dir(trained: TrainedModel, tmp_path: Path) -> Path:
    return save_artifact(trained, tmp_path / "models")


def _test_windows() -> np.ndarray:
    return _windows(_series(400, seed=7))[:16].copy()


def test_step_on_one_channel_is_detected_and_attributed(trained: TrainedModel) -> None:
    windows = _test_windows()
    windows[5, 2, W // 2 :] += 3.0  # step on vib_y halfway through the window
    res = trained.scorer("cpu").score(windows)
    threshold = trained.threshold.value
    assert res.scores[5] > threshold
    assert int(np.argmax(res.channel_shares[5])) == 2
    normal = np.delete(res.scores, 5)
    assert np.mean(normal > threshold) <= 0.25  # normal data mostly below threshold


def test_metadata_contents(trained: TrainedModel) -> None:
    meta = trained.metadata
    assert meta.channels == CHANNELS
    assert (meta.window, meta.hop, meta.sample_period_ms) == (W, HOP, 100)
    assert meta.hparams == {"hidden": 32, "latent": 16}  # defaults recorded
    assert meta.threshold["method"] == "quantile"
    assert meta.version == make_version(meta.created_at, meta.weights_sha256)
    assert meta.created_at.utcoffset() == timedelta(0)
    tr = meta.training
    assert tr["source"] == "synthetic"
    assert tr["n_windows"] == tr["n_train"] + tr["n_purged"] + tr["n_holdout"]
    assert tr["n_purged"] == W // HOP - 1
    assert tr["best_val_loss"] < 0.05
    assert meta.metrics["threshold"] == meta.threshold["value"]


def test_progress_called_each_epoch() -> None:
    calls: list[tuple[int, float, float]] = []
    _fit(
        _windows(_series(600, seed=1)),
        epochs=3,
        patience=None,
        progress=lambda e, t, v: calls.append((e, t, v)),
    )
    assert [c[0] for c in calls] == [1, 2, 3]
    assert all(t > 0 and v > 0 for _, t, v in calls)


def test_training_is_deterministic() -> None:
    windows = _windows(_series(600, seed=2))
    a = _fit(windows, epochs=2, seed=5)
    b = _fit(windows, epochs=2, seed=5)
    c = _fit(windows, epochs=2, seed=6)
    assert a.metadata.weights_sha256 == b.metadata.weights_sha256
    assert a.metadata.threshold == b.metadata.threshold
    assert a.metadata.weights_sha256 != c.metadata.weights_sha256


def test_too_few_windows() -> None:
    windows = _windows(_series(600, seed=3))[:12]
    with pytest.raises(DataError, match=r"found 12 training windows.*need at least 21"):
        _fit(windows)


def test_channel_count_mismatch() -> None:
    with pytest.raises(DataError, match="3 channel names"):
        _fit(_windows(_series(600, seed=3)), channels=CHANNELS[:3])


def test_lstm_trains_and_round_trips(tmp_path: Path) -> None:
    windows = _windows(_series(400, seed=4))[:, :, :16]
    trained = _fit(windows, architecture="lstm", hparams={"hidden": 8, "latent": 4}, epochs=1)
    loaded = load_artifact(save_artifact(trained, tmp_path), device="cpu")
    test = windows[:5]
    np.testing.assert_array_equal(
        loaded.scorer.score(test).scores, trained.scorer("cpu").score(test).scores
    )


# ----------------------------------------------------------------------------- artifacts


def test_round_trip_gives_identical_scores(trained: TrainedModel, artifact_dir: Path) -> None:
    assert artifact_dir.name == trained.metadata.version
    assert sorted(p.name for p in artifact_dir.iterdir()) == [METADATA_FILE, WEIGHTS_FILE]
    assert sha256_file(artifact_dir / WEIGHTS_FILE) == trained.metadata.weights_sha256
    loaded = load_artifact(artifact_dir, device="cpu", expected_channels=CHANNELS)
    assert loaded.metadata == trained.metadata
    assert loaded.path == artifact_dir
    assert loaded.threshold == trained.threshold
    windows = _test_windows()
    windows[2, 0] += 5.0
    a = trained.scorer("cpu").score(windows)
    b = loaded.scorer.score(windows)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.channel_shares, b.channel_shares)


def test_no_temp_dirs_left(artifact_dir: Path) -> None:
    assert [p.name for p in artifact_dir.parent.iterdir()] == [artifact_dir.name]


def test_saving_twice_refuses_to_overwrite(trained: TrainedModel, artifact_dir: Path) -> None:
    with pytest.raises(ArtifactError, match="already exists"):
        save_artifact(trained, artifact_dir.parent)


def test_parent_dir_picks_newest_then_current_pointer(
    trained: TrainedModel, artifact_dir: Path
) -> None:
    later = trained.metadata.created_at + timedelta(hours=1)
    newer_meta = trained.metadata.model_copy(
        update={
            "created_at": later,
            "version": make_version(later, trained.metadata.weights_sha256),
        }
    )
    newer = save_artifact(
        TrainedModel(trained.model, trained.scaler, newer_meta), artifact_dir.parent
    )
    assert load_artifact(artifact_dir.parent, device="cpu").path == newer
    write_current_pointer(artifact_dir.parent, artifact_dir.name)
    assert load_artifact(artifact_dir.parent, device="cpu").path == artifact_dir
    (artifact_dir.parent / "current").write_text("nope\n")
    with pytest.raises(ArtifactError, match="'nope'"):
        load_artifact(artifact_dir.parent, device="cpu")


def test_tampered_weights(artifact_dir: Path) -> None:
    path = artifact_dir / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"sha256 mismatch.*modified or corrupted"):
        load_artifact(artifact_dir, device="cpu")


@pytest.mark.parametrize(
    ("expected", "match"),
    [
        (["temp", "vib_x", "vib_y"], r"only in the model: \['pressure'\]"),
        (["vib_x", "temp", "vib_y", "pressure"], "different order"),
    ],
)
def test_wrong_channels(artifact_dir: Path, expected: list[str], match: str) -> None:
    with pytest.raises(ArtifactError, match=match) as info:
        load_artifact(artifact_dir, device="cpu", expected_channels=expected)
    assert str(CHANNELS) in str(info.value)
    assert str(expected) in str(info.value)


def _edit_metadata(artifact_dir: Path, **changes: object) -> None:
    path = artifact_dir / METADATA_FILE
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_shape_mismatch(artifact_dir: Path) -> None:
    _edit_metadata(artifact_dir, hparams={"hidden": 12, "latent": 16})
    with pytest.raises(ArtifactError, match="shape mismatch"):
        load_artifact(artifact_dir, device="cpu")


def test_unknown_architecture(artifact_dir: Path) -> None:
    _edit_metadata(artifact_dir, architecture="transformer")
    with pytest.raises(ArtifactError, match="unknown architecture 'transformer'"):
        load_artifact(artifact_dir, device="cpu")


def test_invalid_metadata_field(artifact_dir: Path) -> None:
    _edit_metadata(artifact_dir, window=-1)
    with pytest.raises(ArtifactError, match="invalid metadata: window"):
        load_artifact(artifact_dir, device="cpu")


def test_newer_schema_version(artifact_dir: Path) -> None:
    _edit_metadata(artifact_dir, schema_version=2)
    with pytest.raises(ArtifactError, match="schema_version 2"):
        load_artifact(artifact_dir, device="cpu")


def test_bad_json(artifact_dir: Path) -> None:
    (artifact_dir / METADATA_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(artifact_dir, device="cpu")


def test_missing_weights(artifact_dir: Path) -> None:
    (artifact_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"model\.safetensors is missing"):
        load_artifact(artifact_dir, device="cpu")


def test_missing_or_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "absent")
    with pytest.raises(ArtifactError, match="no model artifact found"):
        load_artifact(tmp_path)


def test_not_safetensors_with_matching_hash(artifact_dir: Path, tmp_path: Path) -> None:
    """A garbage weights file whose hash was also rewritten still fails cleanly."""
    copy = tmp_path / "copy"
    shutil.copytree(artifact_dir, copy)
    (copy / WEIGHTS_FILE).write_bytes(b"garbage")
    _edit_metadata(copy, weights_sha256=sha256_file(copy / WEIGHTS_FILE))
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_artifact(copy, device="cpu")
