"""Autoencoder architectures for multichannel windows shaped ``(B, C, W)``.

Both models reconstruct their (already scaled) input; the reconstruction error is
the anomaly score (see :mod:`stream_ae.model.scorer`). Architectures are looked
up by name in :data:`ARCHITECTURES` so an artifact can rebuild its model from
metadata alone (:func:`build_model`). Both expose ``encode`` / ``decode`` around
a ``(B, latent)`` code (:class:`Autoencoder`), which the training variants of
:mod:`stream_ae.model.variants` build on; :class:`VariationalAutoencoder` wraps
either backbone with a Gaussian latent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from stream_ae.errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "HPARAM_DEFAULTS",
    "LOGVAR_RANGE",
    "Autoencoder",
    "ConvAutoencoder",
    "LSTMAutoencoder",
    "VariationalAutoencoder",
    "VariationalHead",
    "build_model",
    "resolve_hparams",
    "tail_errors",
]

#: Minimum window length the conv model supports (two stride-2 stages need >= 4;
#: 8 keeps at least two latent time steps).
MIN_WINDOW = 8

#: Clamp of the variational head's log-variance (keeps ``exp`` finite early in training).
LOGVAR_RANGE = (-10.0, 10.0)


class Autoencoder(nn.Module):
    """Base of every autoencoder here: ``features`` -> ``to_latent`` -> ``decode``.

    Input ``x``: float32 ``(B, C, W)`` with ``C == n_channels`` and ``W == window``.

    * :meth:`features`: ``(B, C, W) -> (B, feature_dim)``, the encoder's output
      before the latent projection;
    * :meth:`encode`: ``(B, C, W) -> (B, latent)``, ``to_latent(features(x))``;
    * :meth:`decode`: ``(B, latent) -> (B, C, W)``;
    * :meth:`forward`: ``(B, C, W) -> (B, C, W)``, the deterministic
      reconstruction that :class:`~stream_ae.model.scorer.Scorer` scores.

    Backbones set ``n_channels``, ``window``, ``latent``, ``feature_dim`` and the
    ``to_latent`` layer ``Linear(feature_dim, latent)``.

    ``score_tail`` (not a weight: set from the artifact's metadata when a model is
    trained or loaded) is how many of a window's newest time steps its error is
    taken over; 0 = all ``W`` (:func:`tail_errors`).
    """

    n_channels: int
    window: int
    latent: int
    feature_dim: int
    to_latent: nn.Linear
    score_tail: int = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> encoder features ``(B, feature_dim)``."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> latent codes ``(B, latent)``."""
        z: torch.Tensor = self.to_latent(self.features(x))
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, latent)`` -> reconstruction ``(B, C, W)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x``: ``(B, C, W)`` -> ``(B, C, W)``."""
        return self.decode(self.encode(x))


def tail_errors(recon: torch.Tensor, x: torch.Tensor, tail: int = 0) -> torch.Tensor:
    """Mean squared error per channel over the newest ``tail`` time steps (0 = all):
    ``(B, C, W)`` twice -> ``(B, C)``.

    Why a tail: the live rule gives each reading the verdict of the window that
    ends at it. Over the whole window that verdict mostly describes the W − 1
    readings before it, so an anomaly is flagged late and stays flagged for up to
    W − 1 normal readings after it ends. Over the newest readings (the model still
    sees the whole window as context) it describes the readings it is given to.
    """
    if tail:
        recon, x = recon[..., -tail:], x[..., -tail:]
    d = recon - x
    return (d.square() if d.requires_grad else d.square_()).mean(dim=2)


class ConvAutoencoder(Autoencoder):
    """Small 1-D convolutional autoencoder with a dense bottleneck.

    Input ``x``: float32 ``(B, C, W)`` with ``C == n_channels`` and ``W == window``.
    Output of :meth:`forward`: ``(B, C, W)``; output of :meth:`encode`: ``(B, latent)``.

    Encoder: two stride-2 ``Conv1d`` (``C -> hidden -> hidden``, kernel 5) shrink
    time by 4, then a ``Linear`` to ``latent``. The decoder mirrors it with
    ``ConvTranspose1d``. When ``W`` is not a multiple of 4 the input is padded on
    the right (replicating the last sample) and the output cropped back to ``W``,
    so any ``W >= 8`` works. Sized for CPU throughput rather than the last few
    percent of accuracy.
    """

    def __init__(self, n_channels: int, window: int, hidden: int = 32, latent: int = 16) -> None:
        super().__init__()
        _check_positive(n_channels=n_channels, hidden=hidden, latent=latent)
        if window < MIN_WINDOW:
            raise ConfigError(
                f"window={window} is too short for the conv autoencoder",
                hint=f"use a window of at least {MIN_WINDOW} samples",
            )
        self.n_channels = n_channels
        self.window = window
        self.hidden = hidden
        self.latent = latent
        self._padded = -(-window // 4) * 4
        self._steps = self._padded // 4
        self.encoder_conv = nn.Sequential(
            nn.Conv1d(n_channels, hidden, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
        )
        self.feature_dim = hidden * self._steps
        self.to_latent = nn.Linear(self.feature_dim, latent)
        self.from_latent = nn.Linear(latent, hidden * self._steps)
        self.decoder_conv = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose1d(hidden, hidden, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose1d(hidden, n_channels, kernel_size=4, stride=2, padding=1),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> flattened conv features ``(B, hidden * ceil(W / 4))``."""
        if self._padded != self.window:
            x = F.pad(x, (0, self._padded - self.window), mode="replicate")
        h: torch.Tensor = self.encoder_conv(x)
        return h.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, latent)`` -> reconstruction ``(B, C, W)``."""
        h: torch.Tensor = self.from_latent(z)
        out: torch.Tensor = self.decoder_conv(h.view(-1, self.hidden, self._steps))
        return out[..., : self.window]


class LSTMAutoencoder(Autoencoder):
    """Sequence-to-sequence LSTM autoencoder.

    Input ``x``: float32 ``(B, C, W)``. Output of :meth:`forward`: ``(B, C, W)``;
    output of :meth:`encode`: ``(B, latent)``.

    The encoder LSTM reads the ``W`` steps (``C`` features each); its last hidden
    state is projected to the latent vector, which is repeated ``W`` times as the
    input of the decoder LSTM, whose outputs are mapped back to ``C`` by a linear
    layer. Works for any ``W >= 1`` but is far slower than the conv model on CPU.
    """

    def __init__(
        self,
        n_channels: int,
        window: int,
        hidden: int = 64,
        latent: int = 16,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        _check_positive(
            n_channels=n_channels,
            window=window,
            hidden=hidden,
            latent=latent,
            num_layers=num_layers,
        )
        self.n_channels = n_channels
        self.window = window
        self.hidden = hidden
        self.latent = latent
        self.num_layers = num_layers
        self.encoder = nn.LSTM(n_channels, hidden, num_layers=num_layers, batch_first=True)
        self.feature_dim = hidden
        self.to_latent = nn.Linear(hidden, latent)
        self.decoder = nn.LSTM(latent, hidden, num_layers=num_layers, batch_first=True)
        self.output = nn.Linear(hidden, n_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> the encoder's last hidden state ``(B, hidden)``."""
        _, (h_n, _) = self.encoder(x.transpose(1, 2))  # h_n: (num_layers, B, hidden)
        h: torch.Tensor = h_n[-1]
        return h

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, latent)`` -> reconstruction ``(B, C, W)``."""
        seq = z.unsqueeze(1).expand(-1, self.window, -1)  # (B, W, latent)
        h, _ = self.decoder(seq)  # (B, W, hidden)
        out: torch.Tensor = self.output(h)  # (B, W, C)
        return out.transpose(1, 2)


class VariationalHead(nn.Module):
    """The log-variance half of a diagonal Gaussian posterior.

    Input: encoder features ``(B, feature_dim)`` (:meth:`Autoencoder.features`).
    Output of :meth:`forward`: ``logvar`` ``(B, latent)``, clamped to
    :data:`LOGVAR_RANGE`. The mean is the backbone's own ``to_latent`` of the same
    features, so with the variance at zero the model is exactly its backbone.
    """

    def __init__(self, feature_dim: int, latent: int) -> None:
        super().__init__()
        _check_positive(feature_dim=feature_dim, latent=latent)
        self.logvar = nn.Linear(feature_dim, latent)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` -> ``logvar`` ``(B, latent)``."""
        logvar: torch.Tensor = self.logvar(h)
        return logvar.clamp(*LOGVAR_RANGE)


class VariationalAutoencoder(Autoencoder):
    """A backbone whose latent is a Gaussian ``q(z | x) = N(mean, diag(exp(logvar)))``.

    Input ``x``: float32 ``(B, C, W)``. :meth:`encode_dist`: ``(B, C, W) ->
    (mean, logvar)``, each ``(B, latent)``, with ``mean = backbone.to_latent(h)``
    and ``logvar = head(h)`` for the backbone's features ``h``; :meth:`encode`:
    ``(B, C, W) -> (B, latent)``, the posterior mean; :meth:`decode`: the
    backbone's, ``(B, latent) -> (B, C, W)``; :meth:`forward`: ``(B, C, W) -> (B,
    C, W)``, the reconstruction of the posterior mean, deterministic in train and
    eval mode alike (training samples ``z`` itself, see
    :mod:`stream_ae.model.variants`).

    :meth:`channel_errors` ``(B, C, W) -> (B, C)`` is what the scorer uses: with
    ``mc_samples == 0`` the per-channel squared error of :meth:`forward`; with
    ``L = mc_samples > 0`` the Monte-Carlo estimate of the *expected* error
    ``E_q[mean_t (decode(z) - x)^2]`` over ``L`` samples ``z_l = mean + std *
    eps_l``. The ``eps_l`` ``(L, latent)`` are drawn once from ``mc_seed`` (on the
    CPU, so on every device alike) and shared by all windows: a window's score is
    a function of the window alone, whatever batch it is scored in. They live in
    a non-persistent buffer, so they are not part of the saved weights.
    """

    _mc_eps: torch.Tensor

    def __init__(self, backbone: Autoencoder, *, mc_samples: int = 0, mc_seed: int = 0) -> None:
        super().__init__()
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 0:
            raise ConfigError(f"mc_samples={mc_samples!r} must be a non-negative integer")
        self.backbone = backbone
        self.head = VariationalHead(backbone.feature_dim, backbone.latent)
        self.n_channels = backbone.n_channels
        self.window = backbone.window
        self.latent = backbone.latent
        self.feature_dim = backbone.feature_dim
        self.mc_samples = mc_samples
        self.mc_seed = int(mc_seed)
        gen = torch.Generator().manual_seed(self.mc_seed)
        eps = torch.randn(mc_samples, self.latent, generator=gen)
        self.register_buffer("_mc_eps", eps, persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> the backbone's features ``(B, feature_dim)``."""
        return self.backbone.features(x)

    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, W)`` -> ``(mean (B, latent), logvar (B, latent))``."""
        h = self.backbone.features(x)
        mean: torch.Tensor = self.backbone.to_latent(h)
        return mean, self.head(h)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> posterior means ``(B, latent)``."""
        return self.backbone.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, latent)`` -> reconstruction ``(B, C, W)``."""
        return self.backbone.decode(z)

    def channel_errors(self, x: torch.Tensor) -> torch.Tensor:
        """Expected squared reconstruction error per channel: ``(B, C, W) -> (B, C)``."""
        if self.mc_samples == 0:
            return tail_errors(self.decode(self.encode(x)), x, self.score_tail)
        mean, logvar = self.encode_dist(x)
        std = (0.5 * logvar).exp()
        total = torch.zeros(x.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
        for eps in self._mc_eps:  # (latent,) each; L decoder passes over the batch
            total += tail_errors(self.decode(mean + std * eps), x, self.score_tail)
        return total / self.mc_samples


ModelFactory = Callable[..., Autoencoder]

#: Architecture name -> model class; the name is what artifacts store.
ARCHITECTURES: dict[str, ModelFactory] = {
    "conv": ConvAutoencoder,
    "lstm": LSTMAutoencoder,
}

#: Accepted hyperparameters per architecture and their defaults (all integers).
HPARAM_DEFAULTS: dict[str, dict[str, int]] = {
    "conv": {"hidden": 32, "latent": 16},
    "lstm": {"hidden": 64, "latent": 16, "num_layers": 1},
}


def resolve_hparams(architecture: str, hparams: Mapping[str, int | float]) -> dict[str, int]:
    """Validate ``hparams`` for ``architecture`` and merge them over the defaults.

    ``hparams`` may hold any subset of :data:`HPARAM_DEFAULTS[architecture]`;
    unknown architectures, unknown names or non-integral values raise
    :class:`ConfigError`. The result is what artifacts record.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {architecture!r}",
            hint=f"choose one of {sorted(ARCHITECTURES)}",
        )
    allowed = HPARAM_DEFAULTS[architecture]
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter(s) {unknown} for architecture {architecture!r}",
            hint=f"accepted: {sorted(allowed)}",
        )
    resolved: dict[str, int] = dict(allowed)
    for name, value in hparams.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not float(value).is_integer()
        ):
            raise ConfigError(
                f"hyperparameter {name}={value!r} for {architecture!r} must be a whole number"
            )
        resolved[name] = int(value)
    return resolved


def build_model(
    architecture: str,
    n_channels: int,
    window: int,
    hparams: Mapping[str, int | float],
) -> Autoencoder:
    """Instantiate ``architecture`` for ``(C, W) = (n_channels, window)`` windows.

    Missing hyperparameters take their defaults (see :func:`resolve_hparams`);
    invalid input raises :class:`ConfigError`. This is the *backbone* (the plain
    model); :func:`stream_ae.model.variants.build_variant_model` wraps it for a
    training variant.
    """
    kwargs = resolve_hparams(architecture, hparams)
    return ARCHITECTURES[architecture](n_channels, window, **kwargs)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer")
