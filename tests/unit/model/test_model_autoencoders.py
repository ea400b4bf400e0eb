"""Architectures: shapes, determinism, build_model validation."""

from __future__ import annotations

import pytest
import torch

from stream_ae.errors import ConfigError
from stream_ae.model.autoencoders import (
    ARCHITECTURES,
    ConvAutoencoder,
    LSTMAutoencoder,
    build_model,
    resolve_hparams,
)

SMALL = {"conv": {"hidden": 8, "latent": 4}, "lstm": {"hidden": 8, "latent": 4}}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("window", [8, 16, 50, 63, 64])
@pytest.mark.parametrize("channels", [1, 3, 8])
def test_shapes(arch: str, window: int, channels: int) -> None:
    model = build_model(arch, channels, window, SMALL[arch])
    x = torch.randn(5, channels, window)
    assert model(x).shape == (5, channels, window)
    assert model.encode(x).shape == (5, 4)  # type: ignore[operator]


def test_default_hparams() -> None:
    conv = build_model("conv", 2, 16, {})
    assert isinstance(conv, ConvAutoencoder)
    assert (conv.hidden, conv.latent) == (32, 16)
    lstm = build_model("lstm", 2, 16, {"num_layers": 2})
    assert isinstance(lstm, LSTMAutoencoder)
    assert (lstm.hidden, lstm.latent, lstm.num_layers) == (64, 16, 2)
    assert lstm(torch.randn(3, 2, 16)).shape == (3, 2, 16)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_eval_mode_is_deterministic(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 4, 32, SMALL[arch]).eval()
    x = torch.randn(7, 4, 32)
    with torch.inference_mode():
        a, b = model(x), model(x)
        # a window's reconstruction does not depend on the rest of the batch
        c = model(x[2:3])
    assert torch.equal(a, b)
    torch.testing.assert_close(a[2:3], c)


def test_conv_window_too_short() -> None:
    with pytest.raises(ConfigError, match="window=7"):
        ConvAutoencoder(2, 7)


def test_unknown_architecture() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'gru'"):
        build_model("gru", 2, 16, {})


def test_unknown_hparam() -> None:
    with pytest.raises(ConfigError, match="num_layers"):
        build_model("conv", 2, 16, {"num_layers": 2})


def test_non_integral_hparam() -> None:
    with pytest.raises(ConfigError, match=r"hidden=8\.5"):
        build_model("conv", 2, 16, {"hidden": 8.5})


def test_resolve_hparams_merges_defaults_and_coerces() -> None:
    assert resolve_hparams("lstm", {"hidden": 32.0}) == {
        "hidden": 32,
        "latent": 16,
        "num_layers": 1,
    }


def test_non_positive_sizes() -> None:
    with pytest.raises(ConfigError, match="latent=0"):
        build_model("lstm", 2, 16, {"latent": 0})
