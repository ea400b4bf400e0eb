"""Training variants of the autoencoders: one small strategy object per variant.

A variant changes *how* a backbone (:class:`~stream_ae.model.autoencoders.ConvAutoencoder`
or :class:`~stream_ae.model.autoencoders.LSTMAutoencoder`) is trained, and for
``variational`` also the model itself; it never changes what a score means: the
score is always the mean squared reconstruction error of the *clean* window in
scaled space (see :mod:`stream_ae.model.scorer`).

=============== ===============================================================
``plain``       reconstruction MSE only (the original model).
``denoising``   the encoder sees a corrupted copy, the loss compares with the
                clean window. Corruption, in scaled space: additive Gaussian
                noise (``noise_std``), then each sample zeroed with probability
                ``sample_mask_prob``, then each whole channel zeroed with
                probability ``channel_mask_prob`` (zero = the channel's training
                mean). Masked values are exactly zero (masks apply after the
                noise). Scoring uses clean input.
``sparse``      + ``sparsity_weight`` × a penalty on the latent codes ``z``:
                ``l1``: ``mean |z|``; ``kl``: ``Σ_j KL(rho ‖ rho_hat_j)`` with
                ``rho_hat_j`` the batch mean of ``sigmoid(z_j)``.
``contractive`` + ``contractive_weight`` × ``‖∂z/∂x‖²_F`` (per window, batch
                mean), estimated with Hutchinson projections, see
                :func:`hutchinson_frobenius_sq`.
``variational`` the encoder outputs a Gaussian posterior (a
                :class:`~stream_ae.model.autoencoders.VariationalHead` on the
                backbone's latent); training decodes a reparameterised sample,
                loss = MSE + ``beta_t`` × KL(q ‖ N(0, I)) / (C·W), with
                ``beta_t = beta · min(1, epoch / beta_warmup_epochs)`` (epochs
                count from 1). Inference decodes the mean, or averages the
                error over ``mc_samples`` seeded samples (``mc_seed``).
=============== ===============================================================

Parameters and their defaults are in :data:`VARIANT_DEFAULTS`; artifacts record
the resolved parameters (defaults filled in), so a later change of a default
never changes how an existing artifact is rebuilt.

Notes on the losses:

* The KL term is divided by the number of input values ``C·W`` because the
  reconstruction term is a *mean* over them. For a Gaussian decoder with
  variance ``σ²`` (scaled space) the negative ELBO times ``2σ² / (C·W)`` is
  ``MSE + 2σ² · KL / (C·W)`` (+ const), so ``beta = 2σ²``: ``beta = 1`` assumes
  the reconstruction is only good to ``σ² = 1/2`` of the channel variance, which
  drowns the signal on smooth sensor data (posterior collapse); the default
  ``0.1`` means ``σ² = 0.05``. The variational head's mean is the backbone's own
  ``to_latent``, so with ``beta = 0`` and a vanishing variance the model is the
  plain backbone.
* ``sparse``/``l1`` acts on the latent, which the decoder's first ``Linear`` can
  rescale; the penalty then mostly bounds the code's scale. ``kl`` on
  ``sigmoid(z)`` is the classic formulation.
* Early stopping and the choice of the best epoch use the held-out
  reconstruction error (what the score measures). For ``variational`` only
  epochs from the end of the β warm-up on are candidates, so a nearly
  unregularised warm-up epoch is never chosen.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from stream_ae.errors import ConfigError
from stream_ae.model.autoencoders import Autoencoder, VariationalAutoencoder, build_model

__all__ = [
    "VARIANTS",
    "VARIANT_DEFAULTS",
    "ContractiveStrategy",
    "DenoisingStrategy",
    "Latent",
    "PlainStrategy",
    "SparseStrategy",
    "VariantParams",
    "VariantStrategy",
    "VariationalStrategy",
    "build_variant_model",
    "hutchinson_frobenius_sq",
    "make_strategy",
    "resolve_variant_params",
]

#: Names of the training variants; what artifacts record in ``variant``.
VARIANTS = ("plain", "denoising", "sparse", "contractive", "variational")

#: Resolved variant parameters, as stored in artifact metadata (``variant_params``).
VariantParams = dict[str, int | float | str]


@dataclass(frozen=True, slots=True)
class _Param:
    default: int | float | str
    kind: type
    ok: Callable[[int | float | str], bool]
    rule: str


def _number(
    lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = True
) -> Callable[[int | float | str], bool]:
    def ok(v: int | float | str) -> bool:
        if isinstance(v, str) or not math.isfinite(v):
            return False
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    return ok


_PARAMS: dict[str, dict[str, _Param]] = {
    "plain": {},
    "denoising": {
        "noise_std": _Param(0.1, float, _number(0.0), "a number >= 0 (scaled units)"),
        "sample_mask_prob": _Param(0.1, float, _number(0.0, 1.0), "a probability in [0, 1)"),
        "channel_mask_prob": _Param(0.1, float, _number(0.0, 1.0), "a probability in [0, 1)"),
    },
    "sparse": {
        "sparsity": _Param("l1", str, lambda v: v in ("l1", "kl"), "'l1' or 'kl'"),
        "sparsity_weight": _Param(1e-3, float, _number(0.0), "a number >= 0"),
        "rho": _Param(0.05, float, _number(0.0, 1.0, lo_open=True), "a number in (0, 1)"),
    },
    "contractive": {
        "contractive_weight": _Param(1e-3, float, _number(0.0), "a number >= 0"),
        "n_projections": _Param(1, int, _number(1.0), "an integer >= 1"),
    },
    "variational": {
        "beta": _Param(0.1, float, _number(0.0), "a number >= 0"),
        "beta_warmup_epochs": _Param(5, int, _number(0.0), "an integer >= 0"),
        "mc_samples": _Param(0, int, _number(0.0), "an integer >= 0 (0: decode the mean)"),
        "mc_seed": _Param(0, int, _number(0.0, 2.0**63), "an integer >= 0"),
    },
}

#: Accepted parameters per variant and their defaults.
VARIANT_DEFAULTS: dict[str, VariantParams] = {
    variant: {name: p.default for name, p in params.items()} for variant, params in _PARAMS.items()
}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ConfigError(
            f"unknown variant {variant!r}",
            hint=f"choose one of {list(VARIANTS)}",
        )


def resolve_variant_params(
    variant: str, params: Mapping[str, int | float | str] | None = None
) -> VariantParams:
    """Validate ``params`` for ``variant`` and merge them over the defaults.

    Unknown variants or parameter names, wrong types and out-of-range values
    raise :class:`ConfigError`. Integers are accepted for float parameters and
    integral floats for integer ones; the result holds the declared types.
    """
    _check_variant(variant)
    spec = _PARAMS[variant]
    given = dict(params or {})
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown} for variant {variant!r}",
            hint=f"accepted: {sorted(spec)}" if spec else f"variant {variant!r} takes none",
        )
    resolved: VariantParams = {}
    for name, p in spec.items():
        value = given.get(name, p.default)
        coerced: int | float | str | None = None
        if p.kind is str:
            coerced = value if isinstance(value, str) else None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if p.kind is float:
                coerced = float(value)
            elif math.isfinite(value) and float(value).is_integer():
                coerced = int(value)
        if coerced is None or not p.ok(coerced):
            raise ConfigError(f"variant {variant!r}: {name}={value!r} must be {p.rule}")
        resolved[name] = coerced
    return resolved


@dataclass(frozen=True, slots=True)
class Latent:
    """What an encoder produced for a batch during training.

    ``z`` ``(B, latent)`` is the code fed to the decoder; ``mean`` and ``logvar``
    ``(B, latent)`` are set by the variational strategy only.
    """

    z: torch.Tensor
    mean: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


class VariantStrategy:
    """How one variant builds its model and computes its training loss.

    The training loss of a batch of clean scaled windows ``x`` ``(B, C, W)`` is
    (:meth:`training_loss`)::

        x_in   = corrupt(x)                   # identity unless denoising
        latent = encode(model, x_in)          # Latent(z, ...)
        loss   = mse(model.decode(latent.z), x) + extra_loss(model, x_in, latent, epoch)

    Subclasses override the steps they change. ``params`` are resolved (see
    :func:`resolve_variant_params`).
    """

    name: ClassVar[str] = "plain"
    #: ``x_in`` gets ``requires_grad`` before encoding (penalties on ``∂z/∂x``).
    needs_input_grad: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, int | float | str] | None = None) -> None:
        self.params: VariantParams = resolve_variant_params(self.name, params)

    def build_model(self, backbone: Autoencoder) -> Autoencoder:
        """The model to train and save, built around ``backbone``."""
        return backbone

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training-time input corruption ``(B, C, W) -> (B, C, W)`` (identity here)."""
        return x

    def encode(self, model: Autoencoder, x: torch.Tensor) -> Latent:
        """Encode a training batch ``(B, C, W)``; ``Latent.z`` is ``(B, latent)``."""
        return Latent(model.encode(x))

    def extra_loss(
        self, model: Autoencoder, x: torch.Tensor, latent: Latent, epoch: int
    ) -> torch.Tensor | None:
        """Scalar penalty added to the reconstruction loss, or ``None`` for none.

        ``x`` is the encoder's input (corrupted, with ``requires_grad`` when
        :attr:`needs_input_grad`); ``epoch`` counts from 1.
        """
        return None

    def selection_start_epoch(self, epochs: int) -> int:
        """First epoch (from 1) that early stopping and best-epoch selection consider."""
        return 1

    def training_loss(self, model: Autoencoder, x: torch.Tensor, epoch: int) -> torch.Tensor:
        """Scalar training loss of a batch of clean scaled windows ``(B, C, W)``."""
        x_in = self.corrupt(x)
        if self.needs_input_grad:
            x_in = x_in.detach().requires_grad_(True)
        latent = self.encode(model, x_in)
        loss = F.mse_loss(model.decode(latent.z), x)
        extra = self.extra_loss(model, x_in, latent, epoch)
        return loss if extra is None else loss + extra

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


class PlainStrategy(VariantStrategy):
    """Reconstruction MSE only."""

    name = "plain"


class DenoisingStrategy(VariantStrategy):
    """Rebuild the clean window from a corrupted copy (noise, sample and channel masks)."""

    name = "denoising"

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise then masks, in scaled space: ``(B, C, W) -> (B, C, W)`` (a new tensor).

        Each value gets ``N(0, noise_std²)`` noise; then each value is zeroed with
        probability ``sample_mask_prob`` and each ``(window, channel)`` row with
        probability ``channel_mask_prob``. Zero is the channel's training mean.
        """
        noise_std = float(self.params["noise_std"])
        p_sample = float(self.params["sample_mask_prob"])
        p_channel = float(self.params["channel_mask_prob"])
        dev, dt = x.device, x.dtype
        out = x
        if noise_std > 0:
            noise = torch.randn(x.shape, generator=generator, device=dev, dtype=dt)
            out = out + noise_std * noise
        if p_sample > 0:
            u = torch.rand(x.shape, generator=generator, device=dev, dtype=dt)
            out = out * (u >= p_sample)
        if p_channel > 0:
            u = torch.rand((x.shape[0], x.shape[1], 1), generator=generator, device=dev, dtype=dt)
            out = out * (u >= p_channel)
        return out


class SparseStrategy(VariantStrategy):
    """Penalty on the latent activations: L1, or KL to a target rate ``rho``."""

    name = "sparse"

    def extra_loss(
        self, model: Autoencoder, x: torch.Tensor, latent: Latent, epoch: int
    ) -> torch.Tensor:
        """``sparsity_weight`` × (``mean |z|`` or ``Σ_j KL(rho ‖ mean_b sigmoid(z_bj))``)."""
        weight = float(self.params["sparsity_weight"])
        z = latent.z
        if self.params["sparsity"] == "l1":
            return weight * z.abs().mean()
        rho = float(self.params["rho"])
        rho_hat = torch.sigmoid(z).mean(dim=0).clamp(1e-6, 1.0 - 1e-6)  # (latent,)
        kl = rho * torch.log(rho / rho_hat) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))
        return weight * kl.sum()


def hutchinson_frobenius_sq(
    z: torch.Tensor,
    x: torch.Tensor,
    n_projections: int = 1,
    *,
    create_graph: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unbiased estimate of ``mean_b ‖∂z_b/∂x_b‖²_F`` without building the Jacobian.

    ``z`` ``(B, latent)`` must have been computed from ``x`` (``requires_grad``),
    window by window (no mixing across the batch, true of every model here).

    For ``J`` the ``latent × (C·W)`` Jacobian of one window and ``v ~ N(0, I)``
    in latent space, ``E_v ‖Jᵀv‖² = E_v vᵀ J Jᵀ v = tr(J Jᵀ) = ‖J‖²_F``
    (Hutchinson). ``Jᵀv`` for every window at once is one vector-Jacobian product,
    ``torch.autograd.grad(z, x, v)``, i.e. one extra backward pass per projection
    (``create_graph=True`` so the penalty itself can be differentiated). The exact
    norm would need ``latent`` such passes and a ``B × latent × C·W`` tensor, which
    is the point of not doing it; the estimate's variance falls as
    ``1 / n_projections`` and averages out further over the batch and the steps.
    """
    total = z.new_zeros(())
    for _ in range(n_projections):
        v = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        (jtv,) = torch.autograd.grad(
            z, x, grad_outputs=v, create_graph=create_graph, retain_graph=True
        )
        total = total + jtv.square().sum() / z.shape[0]
    return total / n_projections


class ContractiveStrategy(VariantStrategy):
    """Penalty ``contractive_weight`` × ``‖∂z/∂x‖²_F`` (Hutchinson estimate)."""

    name = "contractive"
    needs_input_grad = True

    def encode(self, model: Autoencoder, x: torch.Tensor) -> Latent:
        """As the base, but without cuDNN on CUDA: its RNN has no double backward."""
        ctx = torch.backends.cudnn.flags(enabled=False) if x.is_cuda else contextlib.nullcontext()
        with ctx:
            return Latent(model.encode(x))

    def extra_loss(
        self, model: Autoencoder, x: torch.Tensor, latent: Latent, epoch: int
    ) -> torch.Tensor:
        """``contractive_weight`` × :func:`hutchinson_frobenius_sq` with ``n_projections``."""
        weight = float(self.params["contractive_weight"])
        n = int(self.params["n_projections"])
        return weight * hutchinson_frobenius_sq(latent.z, x, n)


class VariationalStrategy(VariantStrategy):
    """Gaussian latent, reparameterised sampling, β-weighted KL with linear warm-up."""

    name = "variational"

    def build_model(self, backbone: Autoencoder) -> Autoencoder:
        """``backbone`` wrapped in a :class:`VariationalAutoencoder`."""
        return VariationalAutoencoder(
            backbone,
            mc_samples=int(self.params["mc_samples"]),
            mc_seed=int(self.params["mc_seed"]),
        )

    def encode(self, model: Autoencoder, x: torch.Tensor) -> Latent:
        """``z = mean + exp(logvar / 2) · eps``, ``eps ~ N(0, I)``."""
        if not isinstance(model, VariationalAutoencoder):
            raise TypeError(
                f"the variational strategy needs a VariationalAutoencoder, not {model!r}"
            )
        mean, logvar = model.encode_dist(x)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        return Latent(z, mean, logvar)

    def beta_at(self, epoch: int) -> float:
        """β in ``epoch`` (from 1): linear from ``beta / warmup`` up to ``beta`` at ``warmup``."""
        beta = float(self.params["beta"])
        warmup = int(self.params["beta_warmup_epochs"])
        if warmup <= 0:
            return beta
        return beta * min(1.0, max(epoch, 0) / warmup)

    def extra_loss(
        self, model: Autoencoder, x: torch.Tensor, latent: Latent, epoch: int
    ) -> torch.Tensor:
        """``beta_at(epoch)`` × batch mean of ``KL(q(z|x) ‖ N(0, I))`` / ``(C·W)``."""
        if latent.mean is None or latent.logvar is None:
            raise ValueError("the variational loss needs the posterior mean and logvar")
        mean, logvar = latent.mean, latent.logvar
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        return self.beta_at(epoch) * kl / (x.shape[1] * x.shape[2])

    def selection_start_epoch(self, epochs: int) -> int:
        """The end of the warm-up (or the last epoch, if training is shorter)."""
        return max(1, min(int(self.params["beta_warmup_epochs"]), epochs))


_STRATEGIES: dict[str, type[VariantStrategy]] = {
    cls.name: cls
    for cls in (
        PlainStrategy,
        DenoisingStrategy,
        SparseStrategy,
        ContractiveStrategy,
        VariationalStrategy,
    )
}


def make_strategy(
    variant: str = "plain", params: Mapping[str, int | float | str] | None = None
) -> VariantStrategy:
    """The strategy for ``variant`` with validated ``params`` (:class:`ConfigError` if bad)."""
    _check_variant(variant)
    return _STRATEGIES[variant](params)


def build_variant_model(
    architecture: str,
    n_channels: int,
    window: int,
    hparams: Mapping[str, int | float],
    variant: str = "plain",
    variant_params: Mapping[str, int | float | str] | None = None,
) -> Autoencoder:
    """The model a ``variant`` trains and saves for ``architecture`` (see :func:`build_model`).

    Only ``variational`` changes the module (and its state dict); the others
    return the plain backbone.
    """
    strategy = make_strategy(variant, variant_params)
    return strategy.build_model(build_model(architecture, n_channels, window, hparams))
