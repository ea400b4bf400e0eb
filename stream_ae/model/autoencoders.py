"""Autoencoder architectures for multichannel windows shaped ``(B, C, W)``.

Both models reconstruct their (already scaled) input; the reconstruction error is
the anomaly score (see :mod:`stream_ae.model.scorer`). Architectures are looked
up by name in :data:`ARCHITECTURES` so an artifact can rebuild its model from
metadata alone (:func:`build_model`).
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
    "ConvAutoencoder",
    "LSTMAutoencoder",
    "build_model",
    "resolve_hparams",
]

#: Minimum window length the conv model supports (two stride-2 stages need >= 4;
#: 8 keeps at least two latent time steps).
MIN_WINDOW = 8


class ConvAutoencoder(nn.Module):
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
        self.to_latent = nn.Linear(hidden * self._steps, latent)
        self.from_latent = nn.Linear(latent, hidden * self._steps)
        self.decoder_conv = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose1d(hidden, hidden, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose1d(hidden, n_channels, kernel_size=4, stride=2, padding=1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> latent codes ``(B, latent)``."""
        if self._padded != self.window:
            x = F.pad(x, (0, self._padded - self.window), mode="replicate")
        h: torch.Tensor = self.encoder_conv(x)
        z: torch.Tensor = self.to_latent(h.flatten(1))
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, latent)`` -> reconstruction ``(B, C, W)``."""
        h: torch.Tensor = self.from_latent(z)
        out: torch.Tensor = self.decoder_conv(h.view(-1, self.hidden, self._steps))
        return out[..., : self.window]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x``: ``(B, C, W)`` -> ``(B, C, W)``."""
        return self.decode(self.encode(x))


class LSTMAutoencoder(nn.Module):
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
        self.to_latent = nn.Linear(hidden, latent)
        self.decoder = nn.LSTM(latent, hidden, num_layers=num_layers, batch_first=True)
        self.output = nn.Linear(hidden, n_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> latent codes ``(B, latent)``."""
        _, (h_n, _) = self.encoder(x.transpose(1, 2))  # h_n: (num_layers, B, hidden)
        z: torch.Tensor = self.to_latent(h_n[-1])
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, latent)`` -> reconstruction ``(B, C, W)``."""
        seq = z.unsqueeze(1).expand(-1, self.window, -1)  # (B, W, latent)
        h, _ = self.decoder(seq)  # (B, W, hidden)
        out: torch.Tensor = self.output(h)  # (B, W, C)
        return out.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x``: ``(B, C, W)`` -> ``(B, C, W)``."""
        return self.decode(self.encode(x))


ModelFactory = Callable[..., nn.Module]

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
) -> nn.Module:
    """Instantiate ``architecture`` for ``(C, W) = (n_channels, window)`` windows.

    Missing hyperparameters take their defaults (see :func:`resolve_hparams`);
    invalid input raises :class:`ConfigError`.
    """
    kwargs = resolve_hparams(architecture, hparams)
    return ARCHITECTURES[architecture](n_channels, window, **kwargs)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer")
