"""``stream-ae export``: write a TorchScript or ONNX export beside a model artifact.

The work is :func:`stream_ae.model.export.export_model`; this module only parses
and prints. torch is imported inside the command, so ``--help`` stays fast.
Errors are :class:`~stream_ae.errors.StreamAEError` subclasses and propagate to
the main CLI, which prints them as one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console

from stream_ae.errors import DataError

__all__ = ["register"]

console = Console(highlight=False, soft_wrap=True)

_RUNTIME_OF = {"torchscript": "torchscript", "onnx": "onnxruntime"}


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""

    @app.command("export")
    def export(
        fmt: Annotated[
            str,
            typer.Option("--format", "-f", help="torchscript or onnx.", show_default=False),
        ],
        model_dir: Annotated[
            Path | None,
            typer.Argument(
                metavar="MODEL_DIR",
                help="Artifact version folder or a folder of versions (default: model.path).",
                show_default=False,
            ),
        ] = None,
        half: Annotated[
            bool, typer.Option("--half", help="float16 (CUDA only; looser tolerance).")
        ] = False,
        device: Annotated[
            str | None,
            typer.Option(
                "--device", help="Trace and check on this device (default cpu; cuda with --half)."
            ),
        ] = None,
        exporter: Annotated[
            str,
            typer.Option(
                "--exporter", help="ONNX exporter: auto (dynamo, else legacy), dynamo or legacy."
            ),
        ] = "auto",
        opset: Annotated[int, typer.Option("--opset", help="ONNX opset.")] = 18,
        rtol: Annotated[
            float | None,
            typer.Option("--rtol", help="Relative tolerance (default 1e-4; 1e-2 with --half)."),
        ] = None,
        atol: Annotated[
            float | None,
            typer.Option("--atol", help="Absolute tolerance (default 1e-6; 1e-4 with --half)."),
        ] = None,
        check_windows: Annotated[
            Path | None,
            typer.Option(
                "--check-windows",
                help="Raw windows (N, C, W) in a .npy file to check on too, e.g. held-out data.",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Export the model to TorchScript or ONNX beside the artifact, checked against torch.

        The export maps scaled windows to per-channel errors with a dynamic batch
        axis. It is checked on generated windows (and --check-windows) in several
        batch sizes against eager torch and written only within the tolerance;
        exports.json records its sha256, which loading verifies. Score with it via
        model.runtime = torchscript | onnxruntime.
        """
        from stream_ae.model.export import export_model

        if model_dir is None:
            from stream_ae.cli import get_settings

            model_dir = get_settings().model.path
        held_out = _load_windows(check_windows) if check_windows is not None else None
        result = export_model(
            model_dir,
            fmt,
            half=half,
            device=device,
            exporter=exporter,
            opset=opset,
            rtol=rtol,
            atol=atol,
            held_out=held_out,
        )
        if as_json:
            print(
                json.dumps(
                    {
                        "path": str(result.path),
                        "manifest": str(result.manifest_path),
                        "key": result.key,
                        "record": result.record.model_dump(mode="json"),
                    },
                    indent=2,
                )
            )
            return
        console.print(result.summary())
        precision = ", precision float16" if half else ""
        console.print(f"score with it: model.runtime = {_RUNTIME_OF[fmt]}{precision}")


def _load_windows(path: Path) -> npt.NDArray[np.float32]:
    try:
        arr = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"cannot read windows from {path}: {exc}",
            hint="save a float array (N, C, W) with numpy.save",
        ) from exc
    return arr
