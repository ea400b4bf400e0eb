"""Conformance: every backbone × training variant honours the same contract.

Shapes of ``forward``/``encode``, deterministic eval-mode output, an artifact
round trip with identical scores and surviving variant metadata, and
better-than-chance detection of a step on one channel after a short training
on sines + noise (C=4, W=32). Each pair is trained once (small model, few
epochs) and shared by its tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_ae.model.artifact import METADATA_FILE, TrainedModel, load_artifact, save_artifact
from stream_ae.model.autoencoders import ARCHITECTURES, VariationalAutoencoder
from stream_ae.model.train import VARIANTS, fit_autoencoder
from stream_ae.model.variants import VARIANT_DEFAULTS, build_variant_model

C, W, HOP = 4, 32, 4
CHANNELS = ["temp", "vib_x", "vib_y", "pressure"]
HPARAMS = {"hidden": 16, "latent": 8}
EPOCHS = {"conv": 25, "lstm": 15}
#: Non-default parameters, so the round trip proves they are recorded and honoured.
PARAMS: dict[str, dict[str, int | float | str]] = {
    "plain": {},
    "denoising": {"noise_std": 0.2, "sample_mask_prob": 0.1, "channel_mask_prob": 0.1},
    "sparse": {"sparsity": "kl", "sparsity_weight": 1e-3, "rho": 0.1},
    "contractive": {"contractive_weight": 1e-3, "n_projections": 2},
    "variational": {"beta": 0.2, "beta_warmup_epochs": 3, "mc_samples": 3, "mc_seed": 11},
}
PAIRS = [(arch, variant) for arch in sorted(ARCHITECTURES) for variant in VARIANTS]
IDS = [f"{a}-{v}" for a, v in PAIRS]


def _series(n: int, seed: int) -> np.ndarray:
    """(C, n) sines with different periods, offsets and scales, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    periods = [20.0, 33.0, 47.0, 71.0]
    x = np.stack([(1 + i) * np.sin(2 * np.pi * t / p + i) + 10 * i for i, p in enumerate(periods)])
    return (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)


def _windows(x: np.ndarray) -> np.ndarray:
    return np.stack([x[:, s : s + W] for s in range(0, x.shape[1] - W + 1, HOP)])


_TRAINED: dict[tuple[str, str], TrainedModel] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models: one thread is fastest, and far faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained(arch: str, variant: str) -> TrainedModel:
    key = (arch, variant)
    if key not in _TRAINED:
        _TRAINED[key] = fit_autoencoder(
            _windows(_series(1200, seed=0)),
            architecture=arch,
            channels=CHANNELS,
            sample_period_ms=100,
            hop=HOP,
            hparams=HPARAMS,
            epochs=EPOCHS[arch],
            lr=1e-2,
            batch_size=32,
            device="cpu",
            patience=None,
            variant=variant,
            variant_params=PARAMS[variant],
        )
    return _TRAINED[key]


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    """Normal windows from a later stretch of the signal, with other noise."""
    return _windows(_series(1800, seed=7)[:, 1200:])[:32].copy()


@pytest.mark.parametrize(("arch", "variant"), PAIRS, ids=IDS)
def test_documented_shapes(arch: str, variant: str) -> None:
    torch.manual_seed(0)
    model = build_variant_model(arch, C, W, HPARAMS, variant, PARAMS[variant])
    x = torch.randn(5, C, W)
    assert model(x).shape == (5, C, W)
    assert model.encode(x).shape == (5, HPARAMS["latent"])
    assert model.decode(torch.randn(5, HPARAMS["latent"])).shape == (5, C, W)
    assert (model.n_channels, model.window, model.latent) == (C, W, HPARAMS["latent"])
    if variant == "variational":
        assert isinstance(model, VariationalAutoencoder)
        mean, logvar = model.encode_dist(x)
        assert mean.shape == logvar.shape == (5, HPARAMS["latent"])
        assert model.channel_errors(x).shape == (5, C)


@pytest.mark.parametrize(("arch", "variant"), PAIRS, ids=IDS)
def test_eval_mode_is_deterministic_under_a_seed(
    arch: str, variant: str, held_out: np.ndarray
) -> None:
    x = torch.randn(6, C, W, generator=torch.Generator().manual_seed(1))
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_variant_model(arch, C, W, HPARAMS, variant, PARAMS[variant]).eval()
        with torch.inference_mode():
            outs += [model(x), model(x)]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    # scores (Monte-Carlo ones included) repeat exactly and ignore the rest of the batch
    scorer = _trained(arch, variant).scorer("cpu", max_batch=4)
    windows = held_out[:6]
    first = scorer.score(windows).scores
    np.testing.assert_array_equal(scorer.score(windows).scores, first)
    np.testing.assert_allclose(scorer.score(windows[2:3]).scores, first[2:3], rtol=1e-5)


@pytest.mark.parametrize(("arch", "variant"), PAIRS, ids=IDS)
def test_round_trip_gives_identical_scores(
    arch: str, variant: str, held_out: np.ndarray, tmp_path: Path
) -> None:
    trained = _trained(arch, variant)
    meta = trained.metadata
    assert meta.variant == variant
    assert meta.variant_params == {**VARIANT_DEFAULTS[variant], **PARAMS[variant]}
    saved = json.loads((save_artifact(trained, tmp_path) / METADATA_FILE).read_text())
    assert (saved["variant"], saved["variant_params"]) == (variant, meta.variant_params)
    loaded = load_artifact(tmp_path, device="cpu", expected_channels=CHANNELS)
    assert loaded.metadata == meta
    assert type(loaded.model) is type(trained.model)
    windows = held_out.copy()
    windows[3, 1, W // 2 :] += 2.0
    a = trained.scorer("cpu").score(windows)
    b = loaded.scorer.score(windows)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.channel_shares, b.channel_shares)


@pytest.mark.parametrize(("arch", "variant"), PAIRS, ids=IDS)
def test_step_on_one_channel_beats_chance(arch: str, variant: str, held_out: np.ndarray) -> None:
    trained = _trained(arch, variant)
    scorer = trained.scorer("cpu")
    normal = scorer.score(held_out).scores
    std = trained.scaler.std.astype(np.float32)
    ch = 1
    moderate = held_out.copy()
    moderate[:, ch, W // 2 :] += 3.0 * std[ch]  # a 3σ step halfway through
    large = held_out.copy()
    large[:, ch, W // 2 :] += 6.0 * std[ch]
    res_moderate = scorer.score(moderate)
    res_large = scorer.score(large)
    assert np.mean(res_moderate.scores > np.median(normal)) >= 0.9  # chance: 0.5
    assert np.all(res_large.scores > trained.threshold.value)
    assert np.all(np.argmax(res_large.channel_shares, axis=1) == ch)
    assert np.all(res_large.scores > normal)  # the step always raises that window's score
