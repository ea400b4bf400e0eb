"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def skab_dir() -> Path:
    """The SKAB data set (read-only, beside the checkout as ../shared/data/skab, or
    STREAM_AE_SKAB_DIR). Missing data is a failure, never a skip."""
    given = os.environ.get("STREAM_AE_SKAB_DIR")
    root = (
        Path(given) if given else Path(__file__).resolve().parents[2] / "shared" / "data" / "skab"
    )
    assert (root / "valve1" / "0.csv").is_file(), (
        f"SKAB data not found at {root}: put the shared folder beside the checkout "
        "or set STREAM_AE_SKAB_DIR"
    )
    return root


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread, as the scorer uses by default: on a busy 2-core machine
    torch's default of 2 made training 10-60x slower (docs/benchmarks.md)."""
    import torch

    torch.set_num_threads(1)
