"""Targeted tests of the training variants: estimators, schedules, corruption, metadata."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stream_ae.errors import ArtifactError, ConfigError
from stream_ae.model.artifact import METADATA_FILE, TrainedModel, load_artifact, save_artifact
from stream_ae.model.autoencoders import Autoencoder, VariationalAutoencoder, build_model
from stream_ae.model.train import fit_autoencoder
from stream_ae.model.variants import (
    VARIANT_DEFAULTS,
    VARIANTS,
    ContractiveStrategy,
    DenoisingStrategy,
    Latent,
    SparseStrategy,
    VariationalStrategy,
    build_variant_model,
    hutchinson_frobenius_sq,
    make_strategy,
    resolve_variant_params,
)

C, W, HOP = 4, 32, 4
CHANNELS = ["a", "b", "c", "d"]
TINY = {"hidden": 4, "latent": 3}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _windows(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = np.stack([(1 + i) * np.sin(2 * np.pi * t / (20 + 13 * i) + i) for i in range(C)])
    x = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
    return np.stack([x[:, s : s + W] for s in range(0, n - W + 1, HOP)])


def _fit(variant: str = "plain", epochs: int = 2, **kw: object) -> TrainedModel:
    args: dict[str, object] = {
        "architecture": "conv",
        "channels": CHANNELS,
        "sample_period_ms": 100,
        "hop": HOP,
        "hparams": {"hidden": 8, "latent": 4},
        "epochs": epochs,
        "lr": 1e-2,
        "batch_size": 32,
        "device": "cpu",
        "patience": None,
        "variant": variant,
    }
    args.update(kw)
    return fit_autoencoder(_windows(), **args)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- contractive


def _exact_frobenius_sq(model: Autoencoder, x: torch.Tensor) -> float:
    """Batch mean of ‖∂z_b/∂x_b‖²_F from the full Jacobian of each window."""
    total = 0.0
    for xb in x:
        jac = torch.autograd.functional.jacobian(  # type: ignore[no-untyped-call]
            lambda v: model.encode(v[None])[0], xb
        )
        assert jac.shape == (model.latent, *xb.shape)
        total += float(jac.square().sum())
    return total / x.shape[0]


@pytest.mark.parametrize("arch", ["conv", "lstm"])
def test_hutchinson_estimate_matches_exact_frobenius_norm(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 2, 8, TINY)
    x = torch.randn(3, 2, 8, requires_grad=True)
    exact = _exact_frobenius_sq(model, x.detach())
    gen = torch.Generator().manual_seed(1)
    z = model.encode(x)
    estimate = hutchinson_frobenius_sq(z, x, 1500, create_graph=False, generator=gen)
    # relative std <= sqrt(2 / 1500) ≈ 3.7% per window (less over 3): 12% is > 3 sigma
    assert float(estimate) == pytest.approx(exact, rel=0.12)
    one = [
        float(hutchinson_frobenius_sq(z, x, 1, create_graph=False, generator=gen))
        for _ in range(200)
    ]
    assert np.mean(one) == pytest.approx(exact, rel=0.25)  # unbiased with one projection too


def test_contractive_penalty_is_differentiable_and_weighted() -> None:
    torch.manual_seed(0)
    model = build_model("conv", 2, 8, TINY)
    strategy = ContractiveStrategy({"contractive_weight": 0.5, "n_projections": 3})
    x_in = torch.randn(4, 2, 8).requires_grad_(True)
    torch.manual_seed(5)
    penalty = strategy.extra_loss(model, x_in, strategy.encode(model, x_in), 1)
    torch.manual_seed(5)
    raw = hutchinson_frobenius_sq(model.encode(x_in), x_in, 3)
    torch.testing.assert_close(penalty, 0.5 * raw)
    penalty.backward()  # type: ignore[no-untyped-call]
    grad = model.to_latent.weight.grad  # the penalty alone trains the encoder
    assert grad is not None and float(grad.abs().sum()) > 0
    assert model.from_latent.weight.grad is None  # ... and not the decoder
    loss = strategy.training_loss(model, torch.randn(4, 2, 8), epoch=1)
    assert loss.requires_grad and loss.ndim == 0


# ----------------------------------------------------------------------------- variational


def test_beta_warmup_is_linear_then_constant() -> None:
    s = VariationalStrategy({"beta": 2.0, "beta_warmup_epochs": 4})
    assert [s.beta_at(e) for e in range(1, 8)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0]
    assert s.selection_start_epoch(10) == 4
    assert s.selection_start_epoch(3) == 3  # shorter training: its last epoch
    flat = VariationalStrategy({"beta": 0.3, "beta_warmup_epochs": 0})
    assert [flat.beta_at(e) for e in (1, 2, 50)] == [0.3, 0.3, 0.3]
    assert flat.selection_start_epoch(10) == 1


def test_kl_term_uses_the_scheduled_beta() -> None:
    torch.manual_seed(0)
    s = VariationalStrategy({"beta": 1.0, "beta_warmup_epochs": 4})
    model = s.build_model(build_model("conv", C, W, TINY))
    x = torch.randn(5, C, W)
    latent = s.encode(model, x)
    assert latent.mean is not None and latent.logvar is not None
    kl = 0.5 * (latent.mean**2 + latent.logvar.exp() - 1 - latent.logvar).sum(1).mean()
    for epoch in (1, 2, 4, 9):
        expected = s.beta_at(epoch) * kl / (C * W)
        torch.testing.assert_close(s.extra_loss(model, x, latent, epoch), expected)


def test_best_epoch_is_chosen_after_the_warmup() -> None:
    trained = _fit("variational", epochs=4, variant_params={"beta_warmup_epochs": 3})
    assert trained.metadata.training["best_epoch"] >= 3
    assert trained.metadata.training["selection_start_epoch"] == 3


def test_variational_inference_is_the_mean_or_a_seeded_expectation() -> None:
    torch.manual_seed(0)
    backbone = build_model("conv", C, W, TINY)
    vae = VariationalAutoencoder(backbone).eval()
    x = torch.randn(6, C, W)
    with torch.inference_mode():
        mean, _ = vae.encode_dist(x)
        torch.testing.assert_close(vae.encode(x), mean)
        torch.testing.assert_close(vae(x), vae.decode(mean))
        torch.testing.assert_close(vae.channel_errors(x), (vae(x) - x).square().mean(2))
    mc_a = VariationalAutoencoder(backbone, mc_samples=5, mc_seed=3)
    mc_b = VariationalAutoencoder(backbone, mc_samples=5, mc_seed=3)
    mc_c = VariationalAutoencoder(backbone, mc_samples=5, mc_seed=4)
    mc_b.head.load_state_dict(mc_a.head.state_dict())
    mc_c.head.load_state_dict(mc_a.head.state_dict())
    with torch.inference_mode():
        a, b, c = mc_a.channel_errors(x), mc_b.channel_errors(x), mc_c.channel_errors(x)
    assert torch.equal(a, b)  # same seed: same samples
    assert not torch.equal(a, c)
    # the samples are not part of the weights
    assert set(mc_a.state_dict()) == {f"backbone.{k}" for k in backbone.state_dict()} | {
        "head.logvar.weight",
        "head.logvar.bias",
    }


def test_training_samples_the_latent_but_forward_does_not() -> None:
    torch.manual_seed(0)
    s = VariationalStrategy()
    model = s.build_model(build_model("lstm", C, W, TINY)).train()
    x = torch.randn(3, C, W)
    z1, z2 = s.encode(model, x).z, s.encode(model, x).z
    assert not torch.equal(z1, z2)
    assert torch.equal(model(x), model(x))


# ----------------------------------------------------------------------------- denoising


def test_denoising_masks_the_requested_fractions() -> None:
    x = torch.ones(400, C, W)
    gen = torch.Generator().manual_seed(0)
    samples = DenoisingStrategy(
        {"noise_std": 0.0, "sample_mask_prob": 0.3, "channel_mask_prob": 0.0}
    ).corrupt(x, gen)
    assert float((samples == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    channels = DenoisingStrategy(
        {"noise_std": 0.0, "sample_mask_prob": 0.0, "channel_mask_prob": 0.25}
    ).corrupt(x, gen)
    rows = (channels == 0).all(dim=2)
    assert torch.equal((channels == 0).any(dim=2), rows)  # whole channels only
    assert float(rows.float().mean()) == pytest.approx(0.25, abs=0.04)
    both = DenoisingStrategy(
        {"noise_std": 0.5, "sample_mask_prob": 0.2, "channel_mask_prob": 0.1}
    ).corrupt(x, gen)
    masked = both == 0  # masks apply after the noise: masked values are exactly the mean
    assert float(masked.float().mean()) == pytest.approx(1 - 0.8 * 0.9, abs=0.01)
    assert float((both[~masked] - 1).std()) == pytest.approx(0.5, rel=0.05)
    assert torch.equal(x, torch.ones(400, C, W))  # input untouched


def test_denoising_trains_on_corrupted_input_against_the_clean_target() -> None:
    torch.manual_seed(0)
    model = build_model("conv", C, W, TINY)
    s = DenoisingStrategy({"noise_std": 0.0, "sample_mask_prob": 0.0, "channel_mask_prob": 0.5})
    x = torch.randn(8, C, W)
    torch.manual_seed(1)
    loss = s.training_loss(model, x, 1)
    torch.manual_seed(1)
    expected = F.mse_loss(model(s.corrupt(x)), x)
    torch.testing.assert_close(loss, expected)
    assert not torch.equal(loss, F.mse_loss(model(x), x))


# ----------------------------------------------------------------------------- sparse / plain


def test_sparse_penalties() -> None:
    z = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    x = torch.zeros(2, C, W)
    model = build_model("conv", C, W, TINY)
    l1 = SparseStrategy({"sparsity": "l1", "sparsity_weight": 0.5})
    lat = Latent(z)
    torch.testing.assert_close(l1.extra_loss(model, x, lat, 1), torch.tensor(0.5 * 0.75))
    kl = SparseStrategy({"sparsity": "kl", "sparsity_weight": 2.0, "rho": 0.1})
    rho_hat = torch.sigmoid(z).mean(0)
    expected = (0.1 * torch.log(0.1 / rho_hat) + 0.9 * torch.log(0.9 / (1 - rho_hat))).sum()
    torch.testing.assert_close(kl.extra_loss(model, x, lat, 1), 2.0 * expected)
    at_target = Latent(torch.full((4, 2), float(np.log(0.1 / 0.9))))  # sigmoid = 0.1
    assert float(kl.extra_loss(model, x, at_target, 1)) == pytest.approx(0.0, abs=1e-6)


def test_plain_loss_is_the_original_mse() -> None:
    torch.manual_seed(0)
    model = build_model("lstm", C, W, TINY)
    x = torch.randn(4, C, W)
    assert torch.equal(make_strategy("plain").training_loss(model, x, 1), F.mse_loss(model(x), x))


@pytest.mark.parametrize("variant", ["plain", "denoising", "sparse", "contractive"])
def test_only_variational_changes_the_module(variant: str) -> None:
    model = build_variant_model("conv", C, W, TINY, variant)
    assert type(model) is type(build_model("conv", C, W, TINY))


# ----------------------------------------------------------------------------- params


def test_params_resolve_over_defaults_and_are_validated() -> None:
    assert set(VARIANT_DEFAULTS) == set(VARIANTS)
    assert resolve_variant_params("plain") == {}
    assert resolve_variant_params("variational", {"beta": 1, "mc_samples": 4.0}) == {
        **VARIANT_DEFAULTS["variational"],
        "beta": 1.0,
        "mc_samples": 4,
    }
    bad: list[tuple[str, dict[str, int | float | str], str]] = [
        ("denoising", {"noise": 0.1}, r"unknown parameter\(s\) \['noise'\]"),
        ("denoising", {"sample_mask_prob": 1.0}, "sample_mask_prob=1.0 must be a probability"),
        ("sparse", {"sparsity": "l2"}, "sparsity='l2' must be 'l1' or 'kl'"),
        ("sparse", {"rho": 0}, "rho=0"),
        ("contractive", {"n_projections": 0}, "n_projections=0"),
        ("contractive", {"n_projections": 1.5}, "n_projections=1.5"),
        ("variational", {"beta": float("nan")}, "beta=nan"),
        ("variational", {"mc_samples": -1}, "mc_samples=-1"),
        ("plain", {"beta": 1.0}, "takes none"),
    ]
    for variant, params, match in bad:
        with pytest.raises(ConfigError, match=match):
            resolve_variant_params(variant, params)
    with pytest.raises(ConfigError, match="unknown variant 'robust'"):
        make_strategy("robust")


@pytest.mark.parametrize("variant", ["denoising", "sparse", "contractive", "variational"])
def test_training_is_deterministic_for_a_seed(variant: str) -> None:
    a, b = (_fit(variant, epochs=1, seed=3) for _ in range(2))
    assert a.metadata.weights_sha256 == b.metadata.weights_sha256
    assert a.metadata.threshold == b.metadata.threshold
    assert _fit(variant, epochs=1, seed=4).metadata.weights_sha256 != a.metadata.weights_sha256


def test_fit_rejects_bad_variant_before_training() -> None:
    with pytest.raises(ConfigError, match="unknown variant"):
        _fit("vae")
    with pytest.raises(ConfigError, match="noise_std"):
        _fit("denoising", variant_params={"noise_std": -1.0})


# ----------------------------------------------------------------------------- artifacts


@pytest.fixture(scope="module")
def plain_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedModel, Path]:
    trained = _fit("plain")
    return trained, save_artifact(trained, tmp_path_factory.mktemp("models"))


def test_old_metadata_without_variant_loads_as_plain(
    plain_artifact: tuple[TrainedModel, Path], tmp_path: Path
) -> None:
    trained, vdir = plain_artifact
    path = vdir / METADATA_FILE
    meta = json.loads(path.read_text())
    assert (meta["variant"], meta["variant_params"]) == ("plain", {})
    del meta["variant"], meta["variant_params"]
    old = tmp_path / vdir.name
    old.mkdir()
    (old / METADATA_FILE).write_text(json.dumps(meta))
    (old / "model.safetensors").write_bytes((vdir / "model.safetensors").read_bytes())
    loaded = load_artifact(old, device="cpu")
    assert (loaded.metadata.variant, loaded.metadata.variant_params) == ("plain", {})
    assert loaded.metadata == trained.metadata
    windows = _windows(200, seed=9)
    np.testing.assert_array_equal(
        loaded.scorer.score(windows).scores, trained.scorer("cpu").score(windows).scores
    )


def test_unknown_or_invalid_variant_in_metadata(
    plain_artifact: tuple[TrainedModel, Path], tmp_path: Path
) -> None:
    _, vdir = plain_artifact
    for changes, match in (
        ({"variant": "robust"}, "unknown variant 'robust'"),
        ({"variant": "denoising", "variant_params": {"noise_std": -1}}, "noise_std=-1"),
        ({"variant": "variational"}, "does not match architecture 'conv' \\(variant"),
    ):
        copy = tmp_path / f"{vdir.name}-{len(list(tmp_path.iterdir()))}"
        copy.mkdir()
        meta = json.loads((vdir / METADATA_FILE).read_text())
        meta.update(changes)
        (copy / METADATA_FILE).write_text(json.dumps(meta))
        (copy / "model.safetensors").write_bytes((vdir / "model.safetensors").read_bytes())
        with pytest.raises(ArtifactError, match=match):
            load_artifact(copy, device="cpu")
