"""Latent vectors: shape, determinism, the encoder's own output."""

from __future__ import annotations

import numpy as np
import torch

from stream_ae.model.autoencoders import ConvAutoencoder
from stream_ae.model.latents import latents
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.scorer import Scorer


def test_latents_are_the_encoders_output_for_scaled_windows() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, size=(10, 3, 16)).astype(np.float32)
    scaler = ChannelScaler.fit(x)
    model = ConvAutoencoder(3, 16, hidden=8, latent=4).eval()
    scorer = Scorer(model, scaler, "cpu")
    z = latents(scorer, x, max_batch=3)  # several chunks
    assert z.shape == (10, 4) and z.dtype == np.float32
    with torch.inference_mode():
        expected = model.encode(torch.from_numpy(scaler.transform(x))).numpy()
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, latents(scorer, x), rtol=1e-5, atol=1e-6)
