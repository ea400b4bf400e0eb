"""ChannelScaler fitting, transform and serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_ae.errors import ArtifactError, DataError
from stream_ae.model.scaler import ChannelScaler


def _windows() -> np.ndarray:
    rng = np.random.default_rng(1)
    loc = np.array([0.0, 100.0, -5.0])[None, :, None]
    scale = np.array([1.0, 20.0, 0.01])[None, :, None]
    return (loc + scale * rng.standard_normal((200, 3, 16))).astype(np.float32)


def test_fit_transform_standardises_each_channel() -> None:
    w = _windows()
    scaler = ChannelScaler.fit(w)
    out = scaler.transform(w)
    assert out.dtype == np.float32
    assert out.shape == w.shape
    np.testing.assert_allclose(out.mean(axis=(0, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2)), 1.0, atol=1e-4)
    np.testing.assert_allclose(scaler.inverse_transform(out), w, rtol=1e-5, atol=1e-4)


def test_constant_channel_does_not_blow_up() -> None:
    w = _windows()
    w[:, 1, :] = 42.0
    scaler = ChannelScaler.fit(w)
    out = scaler.transform(w)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 1, :], 0.0, atol=1e-3)
    assert scaler.std[1] > 0


def test_round_trip_through_json() -> None:
    scaler = ChannelScaler.fit(_windows())
    again = ChannelScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    w = _windows()[:10]
    np.testing.assert_array_equal(again.transform(w), scaler.transform(w))
    assert again.n_channels == 3


def test_wrong_shape() -> None:
    scaler = ChannelScaler.fit(_windows())
    with pytest.raises(DataError, match=r"expected \(N, 3, W\)"):
        scaler.transform(np.zeros((2, 4, 16), dtype=np.float32))


def test_fit_rejects_nan_and_empty() -> None:
    w = _windows()
    w[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ChannelScaler.fit(w)
    with pytest.raises(DataError, match="shape"):
        ChannelScaler.fit(np.zeros((0, 3, 16), dtype=np.float32))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"std": [1.0]}, "scaler.mean"),
        ({"mean": [0.0, 1.0], "std": [1.0]}, "scaler"),
        ({"mean": ["a"], "std": [1.0]}, "scaler"),
    ],
)
def test_from_dict_errors(data: dict[str, object], match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        ChannelScaler.from_dict(data)
