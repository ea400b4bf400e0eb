"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
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


@pytest.fixture
def cli_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For tests that run the CLI in-process: no STREAM_AE_* from the caller, the
    CLI's global options (--config/--set/--log-level) and logging restored after, and
    its rich consoles 250 columns wide.

    Most consoles are module globals (``stream_ae.cli`` imports every command
    module), and rich fixes a console's width from COLUMNS when it is made: a
    caller with COLUMNS=80 in its environment (a CI shell, an xdist worker) would
    otherwise wrap the tables the tests read, whatever ``env`` a ``CliRunner``
    passes later. Consoles made inside a command read COLUMNS, set here.
    """
    from rich.console import Console

    from stream_ae import cli

    for name in list(os.environ):
        if name.startswith("STREAM_AE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "250")
    consoles = [
        obj
        for name, module in list(sys.modules.items())
        if name.startswith("stream_ae.cli")
        for obj in vars(module).values()
        if isinstance(obj, Console)
    ]
    widths = [c._width for c in consoles]
    for c in consoles:
        c.width = 250
    root, ours = logging.getLogger(), logging.getLogger("stream_ae")
    saved = (list(root.handlers), root.level, ours.level)
    state = (cli._State.config, cli._State.overrides, cli._State.log_level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    ours.setLevel(saved[2])
    cli._State.config, cli._State.overrides, cli._State.log_level = state
    for c, width in zip(consoles, widths, strict=True):
        c._width = width
