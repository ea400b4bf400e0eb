"""Model artifacts: ``<out_dir>/<version>/{model.safetensors, metadata.json}``.

* Weights are stored with safetensors (never pickle / ``torch.load``) and their
  sha256 is recorded in the metadata; loading refuses a file whose hash differs.
* ``version`` is ``<UTC time %Y%m%dT%H%M%SZ>-<first 8 hex of the weights sha256>``,
  so version names sort by creation time.
* A directory holding several versions may contain a ``current`` file naming the
  version to serve (see :func:`write_current_pointer`); without it the newest
  version (by name) is used.
* Writes are atomic: files go into a temporary sibling directory, are fsynced,
  and the directory is renamed into place.
* ``stream-ae export`` adds exported models (``model.onnx``,
  ``model.torchscript.pt``) and ``exports.json`` to a version directory; see
  :mod:`stream_ae.model.export` and :mod:`stream_ae.model.runtimes`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from stream_ae.decide.threshold import AssetThresholds, ThresholdSpec
from stream_ae.durable import fsync_dir, read_verified, replace_synced, write_synced
from stream_ae.errors import ArtifactError, StreamAEError
from stream_ae.model.autoencoders import ARCHITECTURES
from stream_ae.model.scaler import ChannelScaler
from stream_ae.model.scorer import Scorer
from stream_ae.model.variants import VARIANTS, build_variant_model, resolve_variant_params

__all__ = [
    "CURRENT_FILE",
    "METADATA_FILE",
    "SCHEMA_VERSION",
    "WEIGHTS_FILE",
    "ArtifactMetadata",
    "LoadedModel",
    "TrainedModel",
    "load_artifact",
    "make_version",
    "new_metadata",
    "registry_champion_dir",
    "resolve_artifact_dir",
    "save_artifact",
    "sha256_file",
    "weights_bytes",
    "write_current_pointer",
]

SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "current"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def safe_name(name: str) -> bool:
    """A version or file name with no path separator and no leading dot."""
    return _SAFE_NAME.match(name) is not None


_RETRAIN = "re-train the model or restore the artifact from a backup"


class ArtifactMetadata(BaseModel):
    """Everything needed to rebuild, verify and interpret a trained model.

    Free-form sections: ``scaler`` (:meth:`ChannelScaler.to_dict`), ``threshold``
    (:meth:`ThresholdSpec.to_dict`; with per-asset thresholds
    :meth:`AssetThresholds.to_dict`, which adds ``per_asset``), ``training`` (data
    source, time range, window counts, epochs, losses, wall time) and ``metrics``
    (held-out scores).

    ``variant`` is the training variant (:data:`stream_ae.model.variants.VARIANTS`)
    and ``variant_params`` its resolved parameters; metadata written before
    variants existed has neither and reads as ``"plain"`` with ``{}``.

    ``score_tail`` (``train.score_tail``) is how many of a window's newest time
    steps its score is taken over, 0 = all ``window`` (older metadata has none and
    reads as 0). It is part of what the threshold was calibrated on, so it is the
    model's, not a scorer setting.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    version: str = Field(pattern=_SAFE_NAME.pattern)
    created_at: AwareDatetime
    architecture: str
    hparams: dict[str, int | float]
    variant: str = "plain"
    variant_params: dict[str, int | float | str] = Field(default_factory=dict)
    channels: list[str] = Field(min_length=1)
    sample_period_ms: int = Field(gt=0)
    window: int = Field(gt=0)
    hop: int = Field(gt=0)
    score_tail: int = Field(default=0, ge=0)
    scaler: dict[str, Any]
    threshold: dict[str, Any]
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    torch_version: str

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {v} is not supported (this stream_ae reads {SCHEMA_VERSION}); "
                "use the stream_ae release that wrote it or re-train"
            )
        return v

    @model_validator(mode="after")
    def _tail_within_window(self) -> ArtifactMetadata:
        if self.score_tail > self.window:
            raise ValueError(
                f"score_tail {self.score_tail} is longer than the window ({self.window})"
            )
        return self

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, v: list[str]) -> list[str]:
        if any(not c for c in v):
            raise ValueError("channel names must be non-empty")
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate channel names {dupes}")
        return v

    @property
    def threshold_spec(self) -> ThresholdSpec:
        """The ``threshold`` section as a :class:`ThresholdSpec`."""
        return ThresholdSpec.from_dict(self.threshold)

    @property
    def asset_thresholds(self) -> AssetThresholds:
        """The ``threshold`` section with its per-asset thresholds (none in older artifacts)."""
        return AssetThresholds.from_dict(self.threshold)

    @property
    def n_channels(self) -> int:
        """Number of channels ``C``."""
        return len(self.channels)


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """Result of :func:`stream_ae.model.train.fit_autoencoder`, ready to save.

    ``model`` is on the CPU in eval mode; ``metadata`` is complete (its version
    and ``weights_sha256`` describe the weights as returned).
    """

    model: nn.Module
    scaler: ChannelScaler
    metadata: ArtifactMetadata

    @property
    def threshold(self) -> ThresholdSpec:
        """The calibrated threshold."""
        return self.metadata.threshold_spec

    def scorer(self, device: str = "auto", *, max_batch: int = 1024) -> Scorer:
        """A :class:`Scorer` for this model (moves the model to ``device``)."""
        return Scorer(self.model, self.scaler, device, max_batch=max_batch)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified artifact: metadata, model (eval mode, on the scorer's device), scorer."""

    metadata: ArtifactMetadata
    model: nn.Module
    scorer: Scorer
    path: Path

    @property
    def threshold(self) -> ThresholdSpec:
        """The calibrated threshold."""
        return self.metadata.threshold_spec


def metadata_json(meta: ArtifactMetadata) -> str:
    """``meta`` as written to ``metadata.json``. ``score_tail`` 0 (the whole window)
    is left out, so artifacts that do not use it stay readable by a scorer from
    before the field existed (a rolling upgrade may update the trainer first)."""
    exclude = {"score_tail"} if meta.score_tail == 0 else None
    return meta.model_dump_json(indent=2, exclude=exclude)


def weights_bytes(model: nn.Module) -> bytes:
    """Serialise the model's state dict to safetensors bytes (CPU, contiguous)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data: bytes = safetensors.torch.save(tensors)
    return data


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_version(created_at: datetime, weights_sha256: str) -> str:
    """``"20261125T190500Z-1a2b3c4d"``: UTC creation time + first 8 hex of the hash."""
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{weights_sha256[:8]}"


def new_metadata(
    model: nn.Module,
    *,
    architecture: str,
    hparams: Mapping[str, int | float],
    channels: Sequence[str],
    sample_period_ms: int,
    window: int,
    hop: int,
    scaler: ChannelScaler,
    threshold: ThresholdSpec,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
    variant: str = "plain",
    variant_params: Mapping[str, int | float | str] | None = None,
    score_tail: int = 0,
) -> ArtifactMetadata:
    """Build complete metadata for ``model``, hashing its serialised weights.

    ``variant_params`` are stored resolved (defaults filled in, validated).
    """
    created = (created_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    sha = hashlib.sha256(weights_bytes(model)).hexdigest()
    return ArtifactMetadata(
        version=make_version(created, sha),
        created_at=created,
        architecture=architecture,
        hparams=dict(hparams),
        variant=variant,
        variant_params=resolve_variant_params(variant, variant_params),
        channels=list(channels),
        sample_period_ms=sample_period_ms,
        window=window,
        hop=hop,
        score_tail=score_tail,
        scaler=scaler.to_dict(),
        threshold=threshold.to_dict(),
        training=_jsonable(dict(training or {})),
        metrics=_jsonable(dict(metrics or {})),
        weights_sha256=sha,
        torch_version=torch.__version__,
    )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so the metadata only holds JSON types (NaN -> None)."""
    out: dict[str, Any] = json.loads(json.dumps(_clean(d), default=str, allow_nan=False))
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return _clean(v.item())
        except (TypeError, ValueError):
            return str(v)
    return v


# ----------------------------------------------------------------------------- save


def save_artifact(trained: TrainedModel, out_dir: Path) -> Path:
    """Write ``<out_dir>/<version>/`` atomically and return that directory.

    If the model's weights changed since training (so they no longer match
    ``trained.metadata``), the hash and version are recomputed from the weights
    actually written. Raises :class:`ArtifactError` if the version directory
    already exists or the files cannot be written.
    """
    out_dir = Path(out_dir)
    data = weights_bytes(trained.model)
    sha = hashlib.sha256(data).hexdigest()
    meta = trained.metadata
    if sha != meta.weights_sha256:
        meta = meta.model_copy(
            update={"weights_sha256": sha, "version": make_version(meta.created_at, sha)}
        )
    final = out_dir / meta.version
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(
            f"cannot create artifact directory {out_dir}: {exc.strerror or exc}",
            hint="check the path and its permissions",
        ) from exc
    if final.exists():
        raise ArtifactError(
            f"artifact {final} already exists",
            hint="it holds the same weights saved in the same second; use it or remove it",
        )
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{meta.version}-", dir=out_dir))
        os.chmod(tmp, 0o755)
        write_synced(tmp / WEIGHTS_FILE, data)
        write_synced(tmp / METADATA_FILE, (metadata_json(meta) + "\n").encode())
        fsync_dir(tmp)
        os.rename(tmp, final)
        tmp = None
        fsync_dir(out_dir)
    except OSError as exc:
        raise ArtifactError(
            f"cannot write artifact {final}: {exc.strerror or exc}",
            hint="check free disk space and permissions of the output directory",
        ) from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_current_pointer(out_dir: Path, version: str | Path) -> Path:
    """Atomically make ``<out_dir>/current`` name ``version`` (a name or version dir)."""
    out_dir = Path(out_dir)
    name = version.name if isinstance(version, Path) else version
    target = out_dir / name
    if not safe_name(name) or not (target / METADATA_FILE).is_file():
        raise ArtifactError(
            f"{target} is not an artifact version directory (no {METADATA_FILE})",
            hint=f"pass the name of a version directory inside {out_dir}",
        )
    pointer = out_dir / CURRENT_FILE
    try:
        replace_synced(pointer, f"{name}\n".encode())
    except OSError as exc:
        raise ArtifactError(f"cannot write {pointer}: {exc.strerror or exc}") from exc
    return pointer


# ----------------------------------------------------------------------------- load


#: A model registry's layout (stream_ae/registry.py: ``<root>/versions/<version>/``, a
#: ``CHAMPION`` file naming the version to serve, ``decisions.jsonl``, ``.lock``). The
#: names live here, not in stream_ae.registry, which imports this module: a scorer's
#: ``model.path`` may name a registry, and loading follows its champion.
REGISTRY_VERSIONS_DIR = "versions"
REGISTRY_CHAMPION_FILE = "CHAMPION"
REGISTRY_DECISIONS_FILE = "decisions.jsonl"
REGISTRY_LOCK_FILE = ".lock"
_REGISTRY_MARKERS = (REGISTRY_CHAMPION_FILE, REGISTRY_DECISIONS_FILE, REGISTRY_LOCK_FILE)
_PROMOTE_HINT = "promote one: stream-ae models promote VERSION (see stream-ae models list)"


def _registry_root(path: Path) -> Path | None:
    """The registry ``path`` designates — its root (``CHAMPION``, or ``versions/`` beside
    a decision log or writer lock) or its ``versions`` folder — or None."""
    if (path / REGISTRY_CHAMPION_FILE).is_file():
        return path
    for root in (path, path.parent) if path.name == REGISTRY_VERSIONS_DIR else (path,):
        if (root / REGISTRY_VERSIONS_DIR).is_dir() and any(
            (root / marker).is_file() for marker in _REGISTRY_MARKERS
        ):
            return root
    return None


def registry_champion_dir(root: Path) -> Path:
    """The champion's version directory of the registry at ``root`` (read as
    :meth:`stream_ae.registry.Registry.champion` reads it; readers never lock);
    :class:`ArtifactError` when there is no champion, or ``CHAMPION`` names no
    registered version."""
    pointer = root / REGISTRY_CHAMPION_FILE
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ArtifactError(
            f"model registry {root} has no champion to serve (no {REGISTRY_CHAMPION_FILE} "
            "file: no version has been promoted)",
            hint=_PROMOTE_HINT,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {pointer}: {exc}") from exc
    target = root / REGISTRY_VERSIONS_DIR / name
    if not safe_name(name) or not (target / METADATA_FILE).is_file():
        raise ArtifactError(
            f"{pointer} names {name!r}, which is not a registered version", hint=_PROMOTE_HINT
        )
    return target


def resolve_artifact_dir(path: Path) -> Path:
    """Find the version directory ``path`` designates.

    Accepted: a version directory (holds ``metadata.json``), one of its files, a
    model registry (its root, its ``versions`` folder or its ``CHAMPION`` file: the
    champion, never the newest version, which may be a rejected candidate; an
    error without one), or a parent directory holding a ``current`` pointer file or
    version subdirectories (the newest by name is chosen).
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(
            f"model artifact {path} does not exist",
            hint="check the path or train a model first",
        )
    if path.is_file():
        if path.name in (METADATA_FILE, WEIGHTS_FILE):
            return path.parent
        if path.name == CURRENT_FILE:
            return _follow_pointer(path)
        if path.name == REGISTRY_CHAMPION_FILE:
            return registry_champion_dir(path.parent)
        raise ArtifactError(
            f"{path} is not a model artifact",
            hint=f"pass a version directory (with {METADATA_FILE}) or its parent",
        )
    if (path / METADATA_FILE).is_file():
        return path
    if (path / CURRENT_FILE).is_file():
        return _follow_pointer(path / CURRENT_FILE)
    registry = _registry_root(path)
    if registry is not None:
        return registry_champion_dir(registry)
    versions = sorted(
        d.name
        for d in path.iterdir()
        if not d.name.startswith(".") and d.is_dir() and (d / METADATA_FILE).is_file()
    )
    if not versions:
        raise ArtifactError(
            f"no model artifact found in {path}",
            hint=(
                f"expected {METADATA_FILE}, a '{CURRENT_FILE}' file, version "
                f"subdirectories or a model registry (with {REGISTRY_CHAMPION_FILE}); "
                "train a model first"
            ),
        )
    return path / versions[-1]


def _follow_pointer(pointer: Path) -> Path:
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {pointer}: {exc}") from exc
    target = pointer.parent / name
    if not safe_name(name) or not (target / METADATA_FILE).is_file():
        raise ArtifactError(
            f"{pointer} names {name!r}, which is not a version directory with {METADATA_FILE}",
            hint="point it at an existing version (write_current_pointer) or remove it",
        )
    return target


def read_metadata(
    meta_path: Path, *, hint: str = _RETRAIN, missing_hint: str | None = None
) -> ArtifactMetadata:
    """``metadata.json`` parsed and validated; :class:`ArtifactError` naming the file
    and the bad fields (``missing_hint`` when it is absent, ``hint`` otherwise)."""
    try:
        text = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError(f"{meta_path} is missing", hint=missing_hint or hint) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {meta_path}: {exc}", hint=hint) from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{meta_path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            hint=hint,
        ) from exc
    try:
        return ArtifactMetadata.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ArtifactError(f"{meta_path} has invalid metadata: {problems}", hint=hint) from exc


def _check_channels(path: Path, actual: list[str], expected: Sequence[str]) -> None:
    expected = list(expected)
    if actual == expected:
        return
    if sorted(actual) == sorted(expected):
        detail = "the same channels in a different order"
    else:
        missing = [c for c in expected if c not in actual]
        extra = [c for c in actual if c not in expected]
        detail = f"missing from the model: {missing}; only in the model: {extra}"
    raise ArtifactError(
        f"artifact {path} was trained on channels {actual} but {expected} were expected ({detail})",
        hint="configure the same channels, in the same order, or train a model for these",
    )


def load_artifact(
    path: Path,
    *,
    device: str = "auto",
    expected_channels: Sequence[str] | None = None,
    max_batch: int = 1024,
    runtime: str = "torch",
    precision: str = "float32",
) -> LoadedModel:
    """Load and verify a model artifact; see :func:`resolve_artifact_dir` for ``path``.

    Checks, each failing with an :class:`ArtifactError` naming the path: metadata
    present and valid, known architecture and variant (with valid parameters;
    metadata without a variant is ``plain``), channels equal ``expected_channels``
    (when given), weights sha256 equal to the metadata, tensor names and shapes
    equal to the rebuilt architecture. Weights are read once; the hash is
    computed over exactly the bytes that are deserialised.

    ``runtime`` (``torch``, ``torchscript``, ``onnxruntime``) and ``precision``
    (``float32``, ``float16`` on CUDA) choose what runs the model: anything but
    ``torch``/``float32`` gives a :class:`~stream_ae.model.runtimes.RuntimeScorer`
    (a :class:`Scorer` with the same ``score()``) running the export written by
    ``stream-ae export``, verified as :func:`stream_ae.model.runtimes.attach_runtime`
    says; a missing export is an :class:`ArtifactError` naming that command.
    """
    vdir = resolve_artifact_dir(Path(path))
    meta_path = vdir / METADATA_FILE
    meta = read_metadata(meta_path)

    if meta.architecture not in ARCHITECTURES:
        raise ArtifactError(
            f"{meta_path}: unknown architecture {meta.architecture!r} "
            f"(this stream_ae knows {sorted(ARCHITECTURES)})",
            hint="use the stream_ae release that wrote the artifact or re-train",
        )
    if meta.variant not in VARIANTS:
        raise ArtifactError(
            f"{meta_path}: unknown variant {meta.variant!r} "
            f"(this stream_ae knows {list(VARIANTS)})",
            hint="use the stream_ae release that wrote the artifact or re-train",
        )
    try:
        scaler = ChannelScaler.from_dict(meta.scaler)
        AssetThresholds.from_dict(meta.threshold)  # validate now rather than at first use
    except ArtifactError as exc:
        raise ArtifactError(f"{meta_path}: {exc}") from exc
    if scaler.n_channels != meta.n_channels:
        raise ArtifactError(
            f"{meta_path}: the scaler has {scaler.n_channels} channels but 'channels' "
            f"lists {meta.n_channels}",
            hint=_RETRAIN,
        )
    if expected_channels is not None:
        _check_channels(vdir, meta.channels, expected_channels)

    weights_path = vdir / WEIGHTS_FILE
    data = read_verified(
        weights_path,
        meta.weights_sha256,
        missing=f"weights file {weights_path} is missing",
        what="the weights file",
        recorded_in="metadata",
        hint=_RETRAIN,
    )

    try:
        model = build_variant_model(
            meta.architecture,
            meta.n_channels,
            meta.window,
            meta.hparams,
            meta.variant,
            meta.variant_params,
        )
    except StreamAEError as exc:
        raise ArtifactError(f"{meta_path}: cannot rebuild the model: {exc}", hint=_RETRAIN) from exc
    try:
        tensors: dict[str, torch.Tensor] = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ArtifactError(
            f"{weights_path} is not a readable safetensors file: {exc}", hint=_RETRAIN
        ) from exc

    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ArtifactError(
            f"{weights_path} does not match architecture {meta.architecture!r} "
            f"(variant {meta.variant!r}): "
            f"missing tensors {missing}, unexpected tensors {unexpected}",
            hint=_RETRAIN,
        )
    bad = [
        f"{name}: file {tuple(tensors[name].shape)} {tensors[name].dtype}, "
        f"model {tuple(ref.shape)} {ref.dtype}"
        for name, ref in expected.items()
        if tensors[name].shape != ref.shape or tensors[name].dtype != ref.dtype
    ]
    if bad:
        raise ArtifactError(
            f"{weights_path}: tensor shape mismatch with the metadata "
            f"(channels={meta.n_channels}, window={meta.window}, hparams={meta.hparams}): "
            + "; ".join(bad),
            hint=_RETRAIN,
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{weights_path}: cannot load weights: {exc}", hint=_RETRAIN) from exc
    model.score_tail = meta.score_tail  # what the threshold was calibrated on

    if runtime == "torch" and precision == "float32":
        scorer = Scorer(model, scaler, device, max_batch=max_batch)
    else:
        from stream_ae.model.runtimes import attach_runtime

        scorer = attach_runtime(
            vdir,
            meta,
            model,
            scaler,
            runtime=runtime,
            precision=precision,
            device=device,
            max_batch=max_batch,
        )
    return LoadedModel(metadata=meta, model=scorer.model, scorer=scorer, path=vdir)
