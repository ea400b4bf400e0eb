"""Per-channel error normalisation (``train.error_norm = "holdout"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_ae.errors import ArtifactError, ConfigError, DataError
from stream_ae.model.artifact import load_artifact, save_artifact
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.train import fit_autoencoder

CHANNELS = ["smooth", "noisy", "sine"]
W, HOP = 24, 4


def _series(n: int, seed: int) -> np.ndarray:
    """Channel 0 is a clean sine (easy to reconstruct), channel 1 white noise (no
    model reconstructs it: its normal error stays near its variance)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = np.stack(
        [
            np.sin(2 * np.pi * t / 40) + 0.01 * rng.standard_normal(n),
            rng.standard_normal(n),
            np.sin(2 * np.pi * t / 25),
        ]
    )
    return x.astype(np.float32)


def _windows(x: np.ndarray) -> np.ndarray:
    return np.stack([x[:, s : s + W] for s in range(0, x.shape[1] - W + 1, HOP)])


def _fit(error_norm: str) -> object:
    return fit_autoencoder(
        _windows(_series(3000, 0)),
        architecture="conv",
        channels=CHANNELS,
        sample_period_ms=1000,
        hop=HOP,
        hparams={},
        epochs=8,
        lr=3e-3,
        batch_size=32,
        seed=0,
        device="cpu",
        error_norm=error_norm,
    )


@pytest.fixture(scope="module")
def plain() -> object:
    return _fit("none")


@pytest.fixture(scope="module")
def normed() -> object:
    return _fit("holdout")


def test_scale_is_the_mean_held_out_error_and_brings_each_channel_to_about_one(
    plain: object, normed: object
) -> None:
    scaler = normed.scaler  # type: ignore[attr-defined]
    assert plain.scaler.error_scale is None  # type: ignore[attr-defined]
    assert scaler.error_scale is not None and scaler.error_scale.shape == (3,)
    # the noise channel is the hard one in normal operation
    assert scaler.error_scale[1] > 5 * scaler.error_scale[0]
    held = _windows(_series(3000, 0))[-150:]
    errs = normed.scorer("cpu").score(held).channel_errors  # type: ignore[attr-defined]
    means = errs.mean(axis=0)
    assert np.all((means > 0.5) & (means < 2.0)), means
    assert normed.metadata.training["error_norm"] == "holdout"  # type: ignore[attr-defined]


def test_a_fault_on_the_smooth_channel_weighs_more_once_normalised(
    plain: object, normed: object
) -> None:
    windows = _windows(_series(600, 5))[:40].copy()
    windows[:, 0, W // 2 :] += 0.8  # small next to the noise channel's normal error
    detected, share = {}, {}
    for name, model in (("plain", plain), ("normed", normed)):
        res = model.scorer("cpu").score(windows)  # type: ignore[attr-defined]
        np.testing.assert_allclose(res.scores, res.channel_errors.mean(axis=1), rtol=1e-6)
        detected[name] = float(np.mean(res.scores > model.threshold.value))  # type: ignore[attr-defined]
        share[name] = float(res.channel_shares[:, 0].mean())
    # plain: the noise channel's normal error hides the fault and takes the blame
    assert share["normed"] > 0.5 > share["plain"]
    assert detected["normed"] > 0.9 and detected["plain"] < 0.5


def test_scale_survives_save_and_load(normed: object, tmp_path: Path) -> None:
    path = save_artifact(normed, tmp_path)  # type: ignore[arg-type]
    loaded = load_artifact(path, device="cpu")
    np.testing.assert_array_equal(loaded.scorer.scaler.error_scale, normed.scaler.error_scale)  # type: ignore[attr-defined]
    windows = _windows(_series(400, 9))
    np.testing.assert_array_equal(
        loaded.scorer.score(windows).scores,
        normed.scorer("cpu").score(windows).scores,  # type: ignore[attr-defined]
    )


def test_scaler_round_trip_and_validation() -> None:
    s = ChannelScaler([0.0, 1.0], [1.0, 2.0], error_scale=[0.5, 4.0])
    back = ChannelScaler.from_dict(s.to_dict())
    np.testing.assert_array_equal(back.error_scale, [0.5, 4.0])
    assert "error_scale" not in ChannelScaler([0.0], [1.0]).to_dict()
    with pytest.raises(ArtifactError, match="scaler"):
        ChannelScaler.from_dict({"mean": [0.0, 1.0], "std": [1.0, 1.0], "error_scale": [1.0]})
    with pytest.raises(ArtifactError, match="scaler"):
        ChannelScaler.from_dict({"mean": [0.0], "std": [1.0], "error_scale": [0.0]})
    with pytest.raises(DataError):
        ChannelScaler.error_scale_from(np.zeros((0, 2)))
    floored = ChannelScaler.error_scale_from(np.array([[0.0, 2.0], [0.0, 4.0]]))
    assert floored[1] == 3.0 and 0 < floored[0] < 1e-5


def test_unknown_error_norm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="error_norm"):
        _fit("robust")
