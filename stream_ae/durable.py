"""Durable file writes shared by artifacts, exports and the registry: write a new
file and fsync it, fsync a directory after a rename, so a crash never leaves a
half-written file under its final name; and the matching read, checked against
the sha256 recorded when the file was written."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from stream_ae.errors import ArtifactError


def write_synced(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist), write ``data``, fsync."""
    with path.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def replace_synced(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically: a temporary file beside it, written and
    fsynced (``mode`` applied), renamed over ``path``, the directory fsynced. Readers
    see the old or the new content, never part of it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_verified(
    path: Path,
    sha256: str,
    *,
    missing: str,
    what: str,
    recorded_in: str,
    hint: str,
    missing_hint: str | None = None,
) -> bytes:
    """The bytes of ``path``, checked against the ``sha256`` recorded (in
    ``recorded_in``) when it was written. :class:`ArtifactError` with message
    ``missing`` when it is absent, naming ``what`` when its hash differs."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(missing, hint=missing_hint or hint) from exc
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from exc
    sha = hashlib.sha256(data).hexdigest()
    if sha != sha256:
        raise ArtifactError(
            f"sha256 mismatch for {path}: {what} was modified or corrupted "
            f"({recorded_in} says {sha256}, file hashes to {sha})",
            hint=hint,
        )
    return data
