"""Scoring with an exported model: TorchScript or ONNX Runtime, float32 or float16.

A runtime replaces one step of :class:`~stream_ae.model.scorer.Scorer`: the model
pass from *scaled* windows ``(B, C, W)`` float32 to per-channel errors ``(B, C)``
float32 (:meth:`Scorer.chunk_errors`). Validation, scaling, chunking and the
:class:`~stream_ae.model.scorer.ScoreResult` are the scorer's own, so a
:class:`RuntimeScorer` has the same ``score()`` contract (and ``scaler``) as the
eager one. What an export computes is :class:`ChannelErrorsModule`, the same
function the eager scorer computes (:func:`~stream_ae.model.scorer.reconstruction_errors`).

=============== =================================================================
runtime         runs
=============== =================================================================
``torch``       the eager model (the reference); ``precision="float16"``: a
                half-precision copy of it (CUDA only), no export needed
``torchscript`` ``model.torchscript.pt`` (``model.fp16.torchscript.pt``) with
                ``torch.jit.load``
``onnxruntime`` ``model.onnx`` (``model.fp16.onnx``) in an ONNX Runtime session
=============== =================================================================

Exports are written by :func:`stream_ae.model.export.export_model` (``stream-ae
export``) beside the artifact's weights, and described in ``exports.json`` (the
:class:`ExportsManifest`: per export its file, sha256, format, precision, opset,
exporter, the tolerance and the differences measured against eager torch).

**Loading** (:func:`attach_runtime`, reached through ``load_artifact(...,
runtime=...)``): the artifact itself is verified first (metadata, weights
sha256, shapes); then ``exports.json`` must describe an export made from *these*
weights (``weights_sha256``), the export file's sha256 must equal the recorded
one (it is hashed over exactly the bytes then deserialised), and a self-check
scores a few fixed windows with the export and with the eager model on the
scoring device and compares them with the recorded tolerance. Any failure is an
:class:`~stream_ae.errors.ArtifactError`; a missing export names the ``stream-ae
export`` command that writes it.

**Trust boundary.** ``torch.jit.load`` deserialises TorchScript code and
constants (not arbitrary pickle), and ONNX Runtime interprets an operator graph
(no custom operators are registered), but neither file is meant to come from
anyone but this artifact's exporter. The recorded sha256 detects a corrupted,
truncated, replaced or stale export; it is *not* a signature: whoever can
write the artifact directory can rewrite ``exports.json`` too. Keep artifact
directories writable only by the trainer/operator, as for the weights.

**CUDA and TF32.** torch runs float32 convolutions and LSTMs on Ampere and
newer GPUs in TF32 by default, for eager and TorchScript alike (~1e-3
relative; :func:`strict_float32`). The checks at export and load turn TF32 off
on both sides, so they measure the export against float32 math; ONNX Runtime's
CUDA provider is opened with ``use_tf32=0`` for float32 exports. Scoring with
eager torch or TorchScript on CUDA follows torch's TF32 setting.

**Half precision** (``precision="float16"``) is for CUDA only: the model runs
in float16 on input clamped to ``±60000`` (float16's range) and its output is
compared with the float32 input in float32, so the errors are float32; its
tolerance is looser (:data:`DEFAULT_TOLERANCES`). ONNX in float16 needs ONNX
Runtime's ``CUDAExecutionProvider`` (``onnxruntime-gpu``): its CPU provider
crashed on a float16 LSTM here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from stream_ae.durable import read_verified
from stream_ae.errors import ArtifactError, ConfigError
from stream_ae.model.autoencoders import VariationalAutoencoder, tail_errors
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.scorer import (
    DEFAULT_MAX_BATCH,
    Scorer,
    reconstruction_errors,
    resolve_device,
    score_tail_of,
)

if TYPE_CHECKING:
    from stream_ae.model.artifact import ArtifactMetadata

__all__ = [
    "DEFAULT_TOLERANCES",
    "EXPORTS_FILE",
    "FORMATS",
    "PRECISIONS",
    "RUNTIMES",
    "RUNTIME_FORMAT",
    "ChannelErrorsModule",
    "ExportCheck",
    "ExportRecord",
    "ExportsManifest",
    "RuntimeScorer",
    "Tolerance",
    "attach_runtime",
    "check_half_supported",
    "check_windows",
    "compare_errors",
    "export_command",
    "export_file_name",
    "export_key",
    "load_runtime_scorer",
    "make_backend",
    "read_manifest",
    "run_in_batches",
    "strict_float32",
]

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "torchscript", "onnxruntime")
FORMATS = ("torchscript", "onnx")
PRECISIONS = ("float32", "float16")
#: runtime -> the export format it runs (``torch`` runs the weights themselves)
RUNTIME_FORMAT: dict[str, str] = {"torchscript": "torchscript", "onnxruntime": "onnx"}

EXPORTS_FILE = "exports.json"
EXPORTS_SCHEMA_VERSION = 1
#: names of the exported graph's input and output
INPUT_NAME = "x"
OUTPUT_NAME = "channel_errors"

#: float16 input is clamped to this (float16's largest finite value is 65504)
HALF_CLAMP = 6.0e4

Format = Literal["torchscript", "onnx"]
Precision = Literal["float32", "float16"]
#: scaled float32 windows ``(b, C, W)`` -> per-channel errors ``(b, C)`` float32
Backend = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Float32 math without TF32 in cuDNN and cuBLAS while inside (restored after).

    On Ampere and newer GPUs torch runs float32 convolutions and LSTMs in TF32
    by default (``torch.backends.cudnn.allow_tf32``), ~1e-3 relative, whatever
    the runtime. Checks compare runtimes inside this, so that they measure the
    export, not the device's math mode. No effect on the CPU.
    """
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


class Tolerance(BaseModel):
    """``|runtime - eager| <= atol + rtol * |eager|`` elementwise (``numpy.allclose``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rtol: float = Field(ge=0)
    atol: float = Field(ge=0)


#: Default tolerance per precision, on scores and on per-channel errors alike.
#: float16: ~3 significant digits in the reconstruction; the error of a window
#: scoring ``s`` moves by about ``2e-3 * sqrt(s)``, i.e. ~1 % near a threshold of 0.05.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(rtol=1e-4, atol=1e-6),
    "float16": Tolerance(rtol=1e-2, atol=1e-4),
}


class ExportCheck(BaseModel):
    """How an export's errors compared with eager float32 torch on the same windows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_windows: int
    batch_sizes: list[int]
    device: str
    max_abs_diff_scores: float
    max_rel_diff_scores: float
    max_abs_diff_channel_errors: float
    max_rel_diff_channel_errors: float
    #: ``max |diff| / (atol + rtol |eager|)`` over scores and channel errors; <= 1 passes
    worst_tolerance_ratio: float

    @property
    def passed(self) -> bool:
        """Within the tolerance everywhere (a NaN never passes)."""
        return bool(self.worst_tolerance_ratio <= 1.0)

    def summary(self) -> str:
        """One line: the differences measured."""
        return (
            f"scores max |diff| {self.max_abs_diff_scores:.3g} "
            f"(rel {self.max_rel_diff_scores:.3g}), channel errors max |diff| "
            f"{self.max_abs_diff_channel_errors:.3g} (rel {self.max_rel_diff_channel_errors:.3g})"
        )


class ExportRecord(BaseModel):
    """One exported model, as recorded in ``exports.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    format: Format
    precision: Precision
    #: what wrote it: ``torch.jit.trace``, ``torch.onnx.export(dynamo=True)`` or
    #: ``torch.onnx.export(dynamo=False)``
    exporter: str
    opset: int | None = None
    #: device it was traced/exported and checked on
    device: str
    created_at: AwareDatetime
    torch_version: str
    onnx_version: str | None = None
    onnxruntime_version: str | None = None
    #: input ``x``: scaled float32 ``(batch, C, W)``; output ``channel_errors``: ``(batch, C)``
    input_shape: list[int | str]
    output_shape: list[int | str]
    #: the variational model's Monte-Carlo samples baked into the export (0: the mean)
    mc_samples: int = 0
    #: the newest time steps each window's errors are taken over, baked in. Written
    #: only when > 0, so scorers from before the field can read the manifest; an
    #: export without it is of the whole window or from before the field.
    score_tail: int = Field(default=0, ge=0, exclude_if=lambda tail: tail == 0)
    tolerance: Tolerance
    check: ExportCheck


class ExportsManifest(BaseModel):
    """``exports.json``: the exports of one artifact version, keyed by :func:`export_key`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = EXPORTS_SCHEMA_VERSION
    artifact_version: str
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    exports: dict[str, ExportRecord] = Field(default_factory=dict)


def export_key(fmt: str, precision: str) -> str:
    """``"onnx"``, ``"onnx-fp16"``, ``"torchscript"``, ``"torchscript-fp16"``."""
    return fmt if precision == "float32" else f"{fmt}-fp16"


def export_file_name(fmt: str, precision: str) -> str:
    """``model.onnx``, ``model.torchscript.pt``; in float16 ``model.fp16.onnx`` etc."""
    stem = "model" if precision == "float32" else "model.fp16"
    return f"{stem}.onnx" if fmt == "onnx" else f"{stem}.torchscript.pt"


def export_command(vdir: Path, fmt: str, precision: str) -> str:
    """The command that writes this export."""
    half = " --half" if precision == "float16" else ""
    return f"stream-ae export {vdir} --format {fmt}{half}"


def read_manifest(vdir: Path) -> ExportsManifest | None:
    """``<vdir>/exports.json``, ``None`` when there is none; invalid: :class:`ArtifactError`."""
    path = Path(vdir) / EXPORTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    try:
        return ExportsManifest.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ArtifactError(
            f"{path} is not a valid exports manifest: {exc}",
            hint=f"delete it and re-run `stream-ae export {vdir} --format ...`",
        ) from exc


# ----------------------------------------------------------------------------- what exports compute


class ChannelErrorsModule(nn.Module):
    """Scaled windows ``(B, C, W)`` float32 -> per-channel errors ``(B, C)`` float32.

    The function every export computes, equal to
    :func:`~stream_ae.model.scorer.reconstruction_errors` of ``model``: the mean
    over time of ``(reconstruction - x)^2`` per channel; for a variational model
    with ``mc_samples = L > 0`` the mean of that over its ``L`` fixed latent
    samples (the ``eps`` are a fixed buffer, so the export is deterministic and
    they are baked into it as constants).

    With ``half=True`` the model (converted by the caller with ``.half()``) sees
    ``x`` clamped to ``±HALF_CLAMP`` in float16, and the reconstruction is
    compared with the float32 ``x`` in float32. The model's ``score_tail`` (the
    newest time steps the error is taken over) is baked into the export.
    """

    def __init__(self, model: nn.Module, *, half: bool = False) -> None:
        super().__init__()
        self.model = model
        self.use_half = half
        self.mc_samples = model.mc_samples if isinstance(model, VariationalAutoencoder) else 0
        self.tail = score_tail_of(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, W)`` -> ``(B, C)``."""
        model = self.model
        xin = x.clamp(-HALF_CLAMP, HALF_CLAMP).half() if self.use_half else x
        if isinstance(model, VariationalAutoencoder) and self.mc_samples > 0:
            # VariationalAutoencoder.channel_errors, summed in the same order, in float32
            mean, logvar = model.encode_dist(xin)
            std = (0.5 * logvar).exp()
            total = self._errors(model.decode(mean + std * model._mc_eps[0]), x)
            for i in range(1, self.mc_samples):
                total = total + self._errors(model.decode(mean + std * model._mc_eps[i]), x)
            return total / self.mc_samples
        if not self.use_half:
            return reconstruction_errors(model, x)
        if isinstance(model, VariationalAutoencoder) or not callable(
            getattr(model, "channel_errors", None)
        ):  # a variational model's forward is the reconstruction of the mean (mc_samples 0)
            recon: torch.Tensor = model(xin)
            return self._errors(recon, x)
        return reconstruction_errors(model, xin).float()

    def _errors(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return tail_errors(recon.to(x.dtype), x, self.tail)


# ----------------------------------------------------------------------------- backends


def _torch_backend(module: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> Backend:
    def run(scaled: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            out = module(torch.from_numpy(scaled).to(device))
        arr: npt.NDArray[np.float32] = out.to("cpu", torch.float32).numpy()
        return arr

    return run


def _ort() -> Any:
    try:
        import onnxruntime  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "onnxruntime is not installed", hint="install it, or use runtime torch/torchscript"
        ) from exc
    return onnxruntime


def _onnx_providers(device: torch.device, precision: str) -> list[Any]:
    ort = _ort()
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            options = {"device_id": str(device.index or 0)}
            if precision == "float32":
                options["use_tf32"] = "0"  # true float32, as checked (see strict_float32)
            return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        if precision == "float16":
            raise ConfigError(
                "float16 ONNX needs ONNX Runtime's CUDAExecutionProvider, which this "
                "onnxruntime lacks",
                hint="install onnxruntime-gpu, or use runtime torchscript for float16",
            )
        log.warning(
            "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu): "
            "the ONNX model runs on the CPU although device %s was asked for",
            device,
        )
    return ["CPUExecutionProvider"]


def _onnx_backend(data: bytes, device: torch.device, precision: str) -> Backend:
    ort = _ort()
    opts = ort.SessionOptions()
    # as many threads as torch uses (the scorer's model.threads setting)
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        data, sess_options=opts, providers=_onnx_providers(device, precision)
    )

    def run(scaled: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = np.ascontiguousarray(scaled, dtype=np.float32)
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        arr: npt.NDArray[np.float32] = np.asarray(out, dtype=np.float32)
        return arr

    return run


def make_backend(fmt: str, data: bytes, device: torch.device, precision: str) -> Backend:
    """A callable running the export ``data`` (the file's bytes) of format ``fmt`` on ``device``."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            module = torch.jit.load(io.BytesIO(data), map_location=device)  # type: ignore[no-untyped-call]
        module.eval()
        return _torch_backend(module, device)
    if fmt == "onnx":
        return _onnx_backend(data, device, precision)
    raise ConfigError(f"unknown export format {fmt!r}", hint=f"choose one of {list(FORMATS)}")


def check_half_supported(device: torch.device, fmt: str | None) -> None:
    """Refuse float16 off CUDA, and float16 ONNX without ONNX Runtime's CUDA provider."""
    if device.type != "cuda":
        raise ConfigError(
            f"half precision runs on CUDA only, not on {device}",
            hint="use a CUDA device, or float32 (no --half)",
        )
    if fmt == "onnx":
        _onnx_providers(device, "float16")


# ----------------------------------------------------------------------------- checking


def check_windows(
    n_channels: int, window: int, *, per_kind: int = 32, seed: int = 0
) -> npt.NDArray[np.float32]:
    """Scaled windows to compare a runtime with eager torch: ``(5 * per_kind, C, W)`` float32.

    Five kinds, ``per_kind`` each, from ``seed``: white noise N(0, 1); smooth
    sensor-like signals (a sine of random period and phase per channel, unit
    variance, plus 5 % noise), i.e. held-out-like normal windows in scaled
    space; the same with an anomaly (a step of ±3..8 std on one channel from a
    random time, and a spike of ±5..15 on another); the same scaled up 5..20x;
    and flat windows (constants in [-3, 3], the first all zeros = the training mean).
    """
    rng = np.random.default_rng(seed)
    c, w, k = n_channels, window, per_kind
    t = np.arange(w, dtype=np.float64)
    noise = rng.standard_normal((k, c, w))
    period = rng.uniform(max(w / 8, 2.0), 2.0 * w, (k, c, 1))
    phase = rng.uniform(0.0, 2 * np.pi, (k, c, 1))
    smooth = np.sqrt(2.0) * np.sin(2 * np.pi * t / period + phase) + 0.05 * rng.standard_normal(
        (k, c, w)
    )
    anomalous = np.sqrt(2.0) * np.sin(2 * np.pi * t / period[::-1] + phase) + 0.05 * (
        rng.standard_normal((k, c, w))
    )
    rows = np.arange(k)
    step_ch = rng.integers(0, c, k)
    step_at = rng.integers(0, w, k)
    step = rng.choice([-1.0, 1.0], k) * rng.uniform(3.0, 8.0, k)
    anomalous[rows, step_ch] += np.where(t[None, :] >= step_at[:, None], step[:, None], 0.0)
    anomalous[rows, rng.integers(0, c, k), rng.integers(0, w, k)] += rng.choice(
        [-1.0, 1.0], k
    ) * rng.uniform(5.0, 15.0, k)
    large = smooth[rng.permutation(k)] * rng.uniform(5.0, 20.0, (k, 1, 1))
    flat = np.broadcast_to(rng.uniform(-3.0, 3.0, (k, 1, 1)), (k, c, w)).copy()
    flat[0] = 0.0
    return np.concatenate([noise, smooth, anomalous, large, flat]).astype(np.float32)


def run_in_batches(
    backend: Backend, scaled: npt.NDArray[np.float32], sizes: Sequence[int] = (1, 7, 64)
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """Errors of ``scaled`` through ``backend`` in batches of ``sizes``, then the rest at once.

    Returns the errors and the batch sizes used (several sizes through one
    export exercise its dynamic batch axis).
    """
    out: list[npt.NDArray[np.float32]] = []
    used: list[int] = []
    start, n = 0, scaled.shape[0]
    for size in [*sizes, n]:
        if start >= n:
            break
        stop = min(start + size, n)
        out.append(backend(np.ascontiguousarray(scaled[start:stop])))
        used.append(stop - start)
        start = stop
    errors = np.concatenate(out) if out else np.empty((0, scaled.shape[1]), np.float32)
    return errors.astype(np.float32, copy=False), used


def eager_errors(model: nn.Module, scaled: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The reference: eager float32 ``reconstruction_errors`` on the model's device."""
    device = next(iter(model.parameters())).device
    with torch.inference_mode():
        err = reconstruction_errors(model, torch.from_numpy(scaled).to(device))
    out: npt.NDArray[np.float32] = err.to("cpu", torch.float32).numpy()
    return out


def _diffs(
    got: npt.NDArray[np.float32], ref: npt.NDArray[np.float32], tol: Tolerance
) -> tuple[float, float, float]:
    """Max absolute and relative difference, and max ``|diff| / (atol + rtol |ref|)``.

    Equal values (NaN = NaN included) differ by 0; any other non-finite
    difference is infinite, so it never passes.
    """
    if got.size == 0:
        return 0.0, 0.0, 0.0
    a = got.astype(np.float64)
    b = ref.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
        diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
        diff[np.isnan(diff)] = np.inf
        rel = diff / np.maximum(np.abs(b), np.finfo(np.float32).tiny)
        ratio = diff / (tol.atol + tol.rtol * np.abs(b))
    for arr in (rel, ratio):
        arr[diff == 0] = 0.0
        arr[np.isnan(arr)] = np.inf
    return float(diff.max()), float(rel.max()), float(ratio.max())


def compare_errors(
    got: npt.NDArray[np.float32],
    ref: npt.NDArray[np.float32],
    tol: Tolerance,
    *,
    batch_sizes: Sequence[int],
    device: str,
) -> ExportCheck:
    """Compare per-channel errors ``(N, C)`` and the scores derived from them (row means).

    A runtime output of another shape than the reference is an :class:`ArtifactError`.
    """
    if got.shape != ref.shape:
        raise ArtifactError(
            f"the runtime returned errors of shape {got.shape}, eager torch {ref.shape}"
        )
    got_scores = got.mean(axis=1, dtype=np.float32)
    ref_scores = ref.mean(axis=1, dtype=np.float32)
    s_abs, s_rel, s_ratio = _diffs(got_scores, ref_scores, tol)
    e_abs, e_rel, e_ratio = _diffs(got, ref, tol)
    return ExportCheck(
        n_windows=int(got.shape[0]),
        batch_sizes=list(batch_sizes),
        device=device,
        max_abs_diff_scores=s_abs,
        max_rel_diff_scores=s_rel,
        max_abs_diff_channel_errors=e_abs,
        max_rel_diff_channel_errors=e_rel,
        worst_tolerance_ratio=max(s_ratio, e_ratio),
    )


# ----------------------------------------------------------------------------- scorer


class RuntimeScorer(Scorer):
    """A :class:`Scorer` whose model pass runs in another runtime (same ``score()`` contract).

    ``model`` is the verified eager model (kept on ``device``: the reference of
    the load-time self-check, and :attr:`LoadedModel.model`); ``backend`` maps
    scaled ``(b, C, W)`` to errors ``(b, C)``; ``export`` is the record of the
    export it runs (``None`` for ``torch`` in float16).
    """

    def __init__(
        self,
        model: nn.Module,
        scaler: ChannelScaler,
        device: str | torch.device,
        *,
        runtime: str,
        precision: str,
        backend: Backend,
        export: ExportRecord | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        super().__init__(model, scaler, device, max_batch=max_batch)
        self.runtime = runtime
        self.precision = precision
        self.backend = backend
        self.export = export

    def chunk_errors(self, scaled: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Per-channel errors ``(b, C)`` of scaled windows, computed by the runtime."""
        return self.backend(scaled)

    def __repr__(self) -> str:
        return (
            f"RuntimeScorer(runtime={self.runtime!r}, precision={self.precision!r}, "
            f"device={str(self.device)!r})"
        )


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}", hint=f"choose one of {list(allowed)}")


def _load_export(vdir: Path, meta: ArtifactMetadata, fmt: str, precision: str) -> ExportRecord:
    command = export_command(vdir, fmt, precision)
    what = f"{fmt} export" + (" in float16" if precision == "float16" else "")
    manifest = read_manifest(vdir)
    if manifest is None or export_key(fmt, precision) not in manifest.exports:
        raise ArtifactError(
            f"artifact {vdir} has no {what} (no entry in {vdir / EXPORTS_FILE})",
            hint=f"run `{command}`, or use runtime torch",
        )
    if manifest.weights_sha256 != meta.weights_sha256:
        raise ArtifactError(
            f"{vdir / EXPORTS_FILE} describes exports of other weights "
            f"({manifest.weights_sha256[:12]}…, the artifact has {meta.weights_sha256[:12]}…)",
            hint=f"re-export: `{command}`",
        )
    record = manifest.exports[export_key(fmt, precision)]
    if record.score_tail and record.score_tail != meta.score_tail:

        def span(tail: int) -> str:
            return f"the newest {tail} time steps" if tail else "the whole window"

        raise ArtifactError(
            f"the {what} of {vdir} scores {span(record.score_tail)} of each window, "
            f"its metadata.json {span(meta.score_tail)} (score_tail)",
            hint=f"re-export: `{command}`",
        )
    return record


def _read_verified(vdir: Path, record: ExportRecord, command: str) -> bytes:
    path = vdir / record.file
    return read_verified(
        path,
        record.sha256,
        missing=f"export {path} named in {EXPORTS_FILE} is missing",
        what="the export",
        recorded_in=EXPORTS_FILE,
        hint=f"re-export: `{command}`",
        missing_hint=f"run `{command}`",
    )


def attach_runtime(
    vdir: Path,
    meta: ArtifactMetadata,
    model: nn.Module,
    scaler: ChannelScaler,
    *,
    runtime: str = "torch",
    precision: str = "float32",
    device: str | torch.device = "auto",
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Scorer:
    """The scorer for a verified artifact's ``model`` in ``runtime`` at ``precision``.

    ``torch``/``float32`` is the plain :class:`Scorer`. Otherwise the export is
    found, verified and self-checked (see the module doc) and a
    :class:`RuntimeScorer` returned. Bad names and float16 off CUDA:
    :class:`ConfigError`; missing, stale, tampered or diverging exports:
    :class:`ArtifactError`.
    """
    _check_choice("runtime", runtime, RUNTIMES)
    _check_choice("precision", precision, PRECISIONS)
    if runtime == "torch" and precision == "float32":
        return Scorer(model, scaler, device, max_batch=max_batch)
    dev = resolve_device(device)
    fmt = RUNTIME_FORMAT.get(runtime)
    if precision == "float16":
        check_half_supported(dev, fmt)
    record: ExportRecord | None = None
    if fmt is None:  # eager torch in float16
        half = ChannelErrorsModule(copy.deepcopy(model).half(), half=True).to(dev).eval()
        backend = _torch_backend(half, dev)
        tol = DEFAULT_TOLERANCES[precision]
    else:
        record = _load_export(vdir, meta, fmt, precision)
        data = _read_verified(vdir, record, export_command(vdir, fmt, precision))
        try:
            backend = make_backend(fmt, data, dev, precision)
        except ConfigError:
            raise
        except Exception as exc:  # the runtimes raise their own types
            raise ArtifactError(
                f"cannot load {vdir / record.file} with {runtime}: {exc}",
                hint=f"re-export: `{export_command(vdir, fmt, precision)}`",
            ) from exc
        tol = record.tolerance
    scorer = RuntimeScorer(
        model,
        scaler,
        dev,
        runtime=runtime,
        precision=precision,
        backend=backend,
        export=record,
        max_batch=max_batch,
    )
    _self_check(scorer, vdir, tol, fmt)
    return scorer


def _self_check(scorer: RuntimeScorer, vdir: Path, tol: Tolerance, fmt: str | None) -> None:
    """Score a few fixed windows with the runtime and eagerly; refuse a mismatch."""
    model = scorer.model
    window = scorer.window if scorer.window is not None else int(getattr(model, "window", 0))
    scaled = check_windows(scorer.n_channels, window, per_kind=2, seed=1)
    with strict_float32():
        try:
            got, sizes = run_in_batches(scorer.backend, scaled, sizes=(1,))
        except Exception as exc:  # the runtimes raise their own types
            raise ArtifactError(
                f"{scorer.runtime} ({scorer.precision}) cannot run the model of {vdir} on "
                f"{scorer.device}: {exc}",
                hint=_reexport_hint(vdir, fmt, scorer),
            ) from exc
        ref = eager_errors(model, scaled)
    check = compare_errors(got, ref, tol, batch_sizes=sizes, device=str(scorer.device))
    if not check.passed:
        raise ArtifactError(
            f"{scorer.runtime} ({scorer.precision}) on {scorer.device} does not reproduce the "
            f"eager model of {vdir}: {check.summary()}, beyond rtol {tol.rtol:g} / "
            f"atol {tol.atol:g}",
            hint=_reexport_hint(vdir, fmt, scorer),
        )


def _reexport_hint(vdir: Path, fmt: str | None, scorer: RuntimeScorer) -> str:
    if fmt is None:
        return "use float32"
    cmd = export_command(vdir, fmt, scorer.precision)
    return f"re-export on this device: `{cmd} --device {scorer.device.type}`, or use runtime torch"


def load_runtime_scorer(
    path: Path,
    runtime: str = "torch",
    device: str = "auto",
    *,
    precision: str = "float32",
    expected_channels: Sequence[str] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Scorer:
    """Shorthand for ``load_artifact(path, runtime=..., ...).scorer``."""
    from stream_ae.model.artifact import load_artifact

    return load_artifact(
        path,
        device=device,
        expected_channels=expected_channels,
        max_batch=max_batch,
        runtime=runtime,
        precision=precision,
    ).scorer
