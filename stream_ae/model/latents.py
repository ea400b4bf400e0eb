"""The encoder's latent vectors: dimensionality reduction for clustering,
similarity search or downstream classifiers.

``latents(scorer, windows)`` maps raw float32 windows ``(B, C, W)`` to ``(B, L)``
float32 (L = the model's latent size; for the variational variant, the mean).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from stream_ae.model.scorer import Scorer


def latents(scorer: Scorer, windows: npt.ArrayLike, *, max_batch: int = 1024) -> np.ndarray:
    x = np.ascontiguousarray(windows, dtype=np.float32)
    model = scorer.model
    encode = getattr(model, "encode", None)
    if encode is None:
        raise TypeError(f"{type(model).__name__} has no encoder")
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), max_batch):
            scaled = torch.from_numpy(scorer.scaler.transform(x[i : i + max_batch]))
            z = encode(scaled.to(scorer.device))
            out.append(z.float().cpu().numpy())
    if not out:
        return np.empty((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)
