"""Scorer semantics: shapes, chunking, shares, errors; device and thread helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_ae.errors import ConfigError, DataError
from stream_ae.model.autoencoders import build_model
from stream_ae.model.scaler import SCALED_CLAMP, ChannelScaler
from stream_ae.model.scorer import Scorer, resolve_device, set_threads

C, W = 3, 16


def _scorer(max_batch: int = 1024) -> Scorer:
    torch.manual_seed(0)
    model = build_model("conv", C, W, {"hidden": 8, "latent": 4})
    scaler = ChannelScaler(mean=[0.0, 10.0, -1.0], std=[1.0, 2.0, 0.5])
    return Scorer(model, scaler, "cpu", max_batch=max_batch)


def _windows(n: int) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, C, W)).astype(np.float32)


def test_result_shapes_and_invariants() -> None:
    res = _scorer().score(_windows(10))
    assert res.scores.shape == (10,)
    assert res.channel_errors.shape == (10, C)
    assert res.channel_shares.shape == (10, C)
    assert res.scores.dtype == res.channel_shares.dtype == np.float32
    assert len(res) == 10
    np.testing.assert_allclose(res.channel_shares.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(res.scores, res.channel_errors.mean(axis=1), rtol=1e-6)
    assert np.all(res.scores >= 0)


def test_score_matches_manual_computation() -> None:
    scorer = _scorer()
    w = _windows(4)
    x = torch.from_numpy(scorer.scaler.transform(w))
    with torch.inference_mode():
        expected = (scorer.model(x) - x).square().mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(scorer.score(w).scores, expected, rtol=1e-5)


def test_chunking_does_not_change_results() -> None:
    w = _windows(11)
    whole = _scorer().score(w)
    chunked = _scorer(max_batch=3).score(w)
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-5)
    np.testing.assert_allclose(chunked.channel_shares, whole.channel_shares, rtol=1e-5)


def test_empty_batch() -> None:
    res = _scorer().score(np.zeros((0, C, W), dtype=np.float32))
    assert res.scores.shape == (0,)
    assert res.channel_shares.shape == (0, C)
    assert res.channel_errors.shape == (0, C)


@pytest.mark.parametrize("shape", [(2, C + 1, W), (2, C, W + 1), (C, W)])
def test_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(DataError, match=rf"expects \(B, {C}, {W}\)"):
        _scorer().score(np.zeros(shape, dtype=np.float32))


def test_nan_rejected() -> None:
    w = _windows(2)
    w[1, 0, 3] = np.nan
    with pytest.raises(DataError, match="1 NaN"):
        _scorer().score(w)


@pytest.mark.parametrize("arch", ["conv", "lstm"])
@pytest.mark.parametrize("extreme", [3.0e38, -3.4e38, 1.0e20])
def test_a_reading_near_float32s_limit_scores_finite_and_names_its_channel(
    arch: str, extreme: float
) -> None:
    # A broken sensor's 3e38 is finite, but once overflowed inside the model and gave
    # an inf / NaN score: an event with "score": null that its own decoder refused.
    torch.manual_seed(0)
    model = build_model(arch, C, W, {"hidden": 8, "latent": 4})
    scaler = ChannelScaler(mean=[0.0, 10.0, -1.0], std=[1.0, 2.0, 0.5], error_scale=[1.0, 2, 3])
    scorer = Scorer(model, scaler, "cpu")
    windows = _windows(4)
    windows[1, 2, 5] = extreme
    res = scorer.score(windows)
    assert np.isfinite(res.scores).all()
    assert np.isfinite(res.channel_shares).all()
    assert res.scores[1] > 100 * max(res.scores[0], res.scores[2], res.scores[3])
    assert int(np.argmax(res.channel_shares[1])) == 2


def test_scaled_values_are_clamped() -> None:
    scaler = ChannelScaler(mean=[0.0], std=[1e-3])
    out = scaler.transform(np.array([[[3.0e38, -3.0e38, 1.0, np.nan]]], np.float32))
    assert out[0, 0, :3].tolist() == [SCALED_CLAMP, -SCALED_CLAMP, pytest.approx(1000.0)]
    assert np.isnan(out[0, 0, 3])  # missing stays missing: the scorer refuses it


def test_invalid_max_batch() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        _scorer(max_batch=0)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_set_threads() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads=0"):
        set_threads(0)
