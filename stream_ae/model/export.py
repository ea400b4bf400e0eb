"""Export a model artifact to TorchScript or ONNX, verified against eager torch.

:func:`export_model` (``stream-ae export``) writes, beside the artifact's
weights in its version directory::

    <version>/model.torchscript.pt      --format torchscript
    <version>/model.onnx                --format onnx
    <version>/model.fp16.*              --half (CUDA only)
    <version>/exports.json              what was exported, its sha256 and the check

What is exported is :class:`~stream_ae.model.runtimes.ChannelErrorsModule`:
*scaled* windows ``x`` float32 ``(batch, C, W)`` -> per-channel mean squared
reconstruction errors ``channel_errors`` float32 ``(batch, C)``, with a dynamic
batch axis. Scaling (the artifact's :class:`~stream_ae.model.scaler.ChannelScaler`)
stays in numpy before the runtime, and the scores and shares are derived from
the errors after it, exactly as for eager torch.

* **TorchScript**: ``torch.jit.trace`` (the models have no data-dependent
  control flow; the trace is checked, below), saved with ``torch.jit.save``.
* **ONNX** (opset :data:`DEFAULT_OPSET`): the ``torch.export``-based exporter
  (``dynamo=True``) by default, falling back to the TorchScript-based one
  (``dynamo=False``) if it fails; ``exporter`` picks one. Both were checked on
  the conv and LSTM models of every variant.
* **Variational models**: the score is deterministic (the posterior mean, or a
  Monte-Carlo average over ``mc_samples`` latent samples drawn once from
  ``mc_seed``), so ``mc_samples > 0`` is exported too: the fixed samples
  become constants of the graph (``L`` decoder passes).

**Verification.** Before anything is written, the export is loaded back the way
the scorer loads it and run on :func:`~stream_ae.model.runtimes.check_windows`
(white noise, held-out-like smooth signals, the same with steps and spikes,
scaled-up and flat windows; 160 in all, plus ``held_out`` windows when given)
in batches of 1, 7, 64 and the rest, through the same export; its per-channel
errors and the scores derived from them are compared with eager float32 torch
on the same device. An export outside the tolerance
(:data:`~stream_ae.model.runtimes.DEFAULT_TOLERANCES`: float32 ``rtol 1e-4,
atol 1e-6``; float16 ``rtol 1e-2, atol 1e-4``) raises
:class:`~stream_ae.errors.ArtifactError` and writes nothing. The measured
differences go into ``exports.json`` with the file's sha256, which loading
verifies (see :mod:`stream_ae.model.runtimes` for the trust boundary).

Writes are atomic (a temporary file in the version directory, fsynced, then
renamed), and concurrent exports of one artifact are serialised with a lock
file (``.exports.lock``). Exporting again replaces that format's export.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from pydantic import ValidationError
from torch import nn

from stream_ae.durable import replace_synced
from stream_ae.errors import ArtifactError, ConfigError, DataError, StreamAEError
from stream_ae.model import runtimes
from stream_ae.model.artifact import load_artifact
from stream_ae.model.runtimes import (
    DEFAULT_TOLERANCES,
    EXPORTS_FILE,
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
    ChannelErrorsModule,
    ExportCheck,
    ExportRecord,
    ExportsManifest,
    Tolerance,
    check_windows,
    compare_errors,
    eager_errors,
    export_file_name,
    export_key,
    make_backend,
    read_manifest,
    run_in_batches,
    strict_float32,
)
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.scorer import resolve_device

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "FORMATS",
    "ExportResult",
    "export_model",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
#: ONNX exporters: ``auto`` = ``dynamo``, falling back to ``legacy`` if it fails
EXPORTERS = ("auto", "dynamo", "legacy")
LOCK_FILE = ".exports.lock"

#: example batch for tracing: neither 0 nor 1, which tracers may specialise on
_EXAMPLE_BATCH = 3


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What :func:`export_model` wrote: the export file, ``exports.json`` and its entry."""

    path: Path
    manifest_path: Path
    key: str
    record: ExportRecord

    def summary(self) -> str:
        """A few lines for people: file, format, the check and the tolerance."""
        r = self.record
        opset = f", opset {r.opset}" if r.opset is not None else ""
        return "\n".join(
            [
                f"wrote {self.path} ({r.size_bytes / 1024:.1f} KiB; {r.format} {r.precision}"
                f"{opset}; {r.exporter})",
                f"sha256 {r.sha256}, recorded in {self.manifest_path}",
                f"check vs eager torch on {r.check.device}: {r.check.n_windows} windows in "
                f"batches of {', '.join(map(str, r.check.batch_sizes))}: {r.check.summary()}; "
                f"tolerance rtol {r.tolerance.rtol:g}, atol {r.tolerance.atol:g}",
            ]
        )


def export_model(
    path: Path,
    fmt: str,
    *,
    half: bool = False,
    device: str | None = None,
    exporter: str = "auto",
    opset: int = DEFAULT_OPSET,
    rtol: float | None = None,
    atol: float | None = None,
    held_out: npt.ArrayLike | None = None,
    seed: int = 0,
) -> ExportResult:
    """Export the artifact at ``path`` (see ``load_artifact``) to ``fmt`` and verify it.

    ``fmt``: ``torchscript`` or ``onnx``. ``half``: float16 (CUDA only, see
    :mod:`stream_ae.model.runtimes`). ``device``: where to trace and check
    (default ``cpu``, ``cuda`` with ``half``); a TorchScript export is checked
    again on the scoring device when loaded. ``rtol``/``atol`` override the
    precision's default tolerance. ``held_out``: raw windows ``(N, C, W)`` to
    check on as well (e.g. held-out normal data). ``seed`` picks the generated
    check windows.

    Raises :class:`ConfigError` for bad options, :class:`DataError` for bad
    ``held_out`` windows and :class:`ArtifactError` when the artifact is invalid,
    the export fails, or it differs from eager torch beyond the tolerance
    (nothing is written then).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", hint=f"choose one of {list(FORMATS)}")
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}", hint=f"choose one of {EXPORTERS}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 1:
        raise ConfigError(f"opset={opset!r} must be a positive integer")
    precision = "float16" if half else "float32"
    if half and device is None and not torch.cuda.is_available():
        raise ConfigError(
            "half precision runs on CUDA only, and CUDA is not available on this machine",
            hint="export in float32 (no --half)",
        )
    dev = resolve_device(device if device is not None else ("cuda" if half else "cpu"))
    if half:
        runtimes.check_half_supported(dev, fmt)
    default = DEFAULT_TOLERANCES[precision]
    try:
        tol = Tolerance(
            rtol=default.rtol if rtol is None else rtol,
            atol=default.atol if atol is None else atol,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid tolerance rtol={rtol!r}, atol={atol!r}: {exc}") from exc

    loaded = load_artifact(Path(path), device="cpu")
    vdir, meta = loaded.path, loaded.metadata
    scaled = check_windows(meta.n_channels, meta.window, seed=seed)
    if held_out is not None:
        scaled = np.concatenate([scaled, _scaled_held_out(held_out, loaded.scorer.scaler)])
    reference = copy.deepcopy(loaded.model).to(dev).eval()
    target: nn.Module = copy.deepcopy(loaded.model)
    if half:
        target = target.half()
    module = ChannelErrorsModule(target, half=half).to(dev).eval()
    example = torch.from_numpy(scaled[:_EXAMPLE_BATCH].copy()).to(dev)

    name = export_file_name(fmt, precision)
    final = vdir / name
    with _locked(vdir):
        tmp: Path | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{name}-", dir=vdir)
            os.close(fd)
            tmp = Path(tmp_name)
            if fmt == "torchscript":
                used = _write_torchscript(module, example, tmp)
            else:
                used = _write_onnx(module, example, tmp, exporter, opset)
            data = tmp.read_bytes()
            backend = make_backend(fmt, data, dev, precision)
            with strict_float32():
                got, sizes = run_in_batches(backend, scaled)
                ref = eager_errors(reference, scaled)
            check = compare_errors(got, ref, tol, batch_sizes=sizes, device=str(dev))
            if not check.passed:
                raise ArtifactError(
                    f"the {fmt} export of {vdir} ({precision}) differs from eager torch: "
                    f"{check.summary()}, beyond rtol {tol.rtol:g} / atol {tol.atol:g}; "
                    "nothing was written",
                    hint="report it with the model; --exporter legacy may help for ONNX",
                )
            record = _record(
                name,
                fmt,
                precision,
                data,
                used,
                dev,
                (meta.n_channels, meta.window),
                module.mc_samples,
                module.tail,
                tol,
                check,
            )
            replace_synced(final, data, mode=0o644)  # the checked bytes; tmp goes below
            manifest = _updated_manifest(vdir, meta.version, meta.weights_sha256, fmt, record)
            manifest_path = _write_manifest(vdir, manifest)
        except StreamAEError:
            raise
        except OSError as exc:
            raise ArtifactError(
                f"cannot write the {fmt} export of {vdir}: {exc.strerror or exc}",
                hint="check free disk space and permissions of the artifact directory",
            ) from exc
        except Exception as exc:  # exporters and runtimes raise their own types
            raise ArtifactError(
                f"exporting {vdir} to {fmt} ({precision}) failed: {type(exc).__name__}: {exc}",
                hint="--exporter legacy may help for ONNX; otherwise use runtime torch",
            ) from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return ExportResult(
        path=final,
        manifest_path=manifest_path,
        key=export_key(fmt, precision),
        record=record,
    )


def _scaled_held_out(windows: npt.ArrayLike, scaler: ChannelScaler) -> npt.NDArray[np.float32]:
    arr = np.asarray(windows, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1] != scaler.n_channels:
        raise DataError(
            f"held-out windows of shape {arr.shape} do not fit the model",
            hint=f"expected raw windows (N, {scaler.n_channels}, W)",
        )
    if not np.all(np.isfinite(arr)):
        raise DataError("the held-out windows contain NaN or infinite values")
    return scaler.transform(arr)


def _record(
    name: str,
    fmt: str,
    precision: str,
    data: bytes,
    exporter: str,
    device: torch.device,
    shape: tuple[int, int],
    mc_samples: int,
    score_tail: int,
    tol: Tolerance,
    check: ExportCheck,
) -> ExportRecord:
    opset: int | None = None
    onnx_version: str | None = None
    ort_version: str | None = None
    if fmt == "onnx":
        import onnx

        proto = onnx.load_model_from_string(data)
        opset = next(
            (int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None
        )
        onnx_version = str(onnx.__version__)
        ort_version = str(runtimes._ort().__version__)
    n_channels, window = shape
    return ExportRecord(
        file=name,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        format=fmt,
        precision=precision,
        exporter=exporter,
        opset=opset,
        device=str(device),
        created_at=datetime.now(UTC).replace(microsecond=0),
        torch_version=torch.__version__,
        onnx_version=onnx_version,
        onnxruntime_version=ort_version,
        input_shape=["batch", n_channels, window],
        output_shape=["batch", n_channels],
        mc_samples=mc_samples,
        score_tail=score_tail,
        tolerance=tol,
        check=check,
    )


# ----------------------------------------------------------------------------- exporters


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation/tracer warnings and log chatter (the check decides)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> str:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, (example,), check_trace=False)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path))
    return "torch.jit.trace"


def _write_onnx(
    module: nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int
) -> str:
    if exporter in ("auto", "dynamo"):
        try:
            with _quiet(), torch.no_grad():
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
            return "torch.onnx.export(dynamo=True)"
        except Exception as exc:  # the exporter raises many types
            if exporter == "dynamo":
                raise ArtifactError(
                    f"the dynamo ONNX exporter failed: {type(exc).__name__}: {exc}",
                    hint="try --exporter legacy",
                ) from exc
            log.warning("the dynamo ONNX exporter failed (%s); using the legacy exporter", exc)
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return "torch.onnx.export(dynamo=False)"


# ----------------------------------------------------------------------------- files


@contextlib.contextmanager
def _locked(vdir: Path) -> Iterator[None]:
    try:
        fh = (vdir / LOCK_FILE).open("a")
    except OSError as exc:
        raise ArtifactError(
            f"cannot write in {vdir}: {exc.strerror or exc}",
            hint="exports are written beside the weights; check the directory's permissions",
        ) from exc
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _updated_manifest(
    vdir: Path, version: str, weights_sha256: str, fmt: str, record: ExportRecord
) -> ExportsManifest:
    old = read_manifest(vdir)
    exports = dict(old.exports) if old is not None and old.weights_sha256 == weights_sha256 else {}
    exports[export_key(fmt, record.precision)] = record
    return ExportsManifest(
        artifact_version=version,
        weights_sha256=weights_sha256,
        exports=dict(sorted(exports.items())),
    )


def _write_manifest(vdir: Path, manifest: ExportsManifest) -> Path:
    path = vdir / EXPORTS_FILE
    replace_synced(path, (manifest.model_dump_json(indent=2) + "\n").encode(), mode=0o644)
    return path
