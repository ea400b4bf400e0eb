"""Output paths given on the command line (``--csv``, ``--out``, ``--report``): a path
that cannot be written becomes a :class:`ConfigError` naming the flag, and is found
before the command's work, not after it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from stream_ae.errors import ConfigError

T = TypeVar("T")


def output_error(flag: str, path: Path, exc: OSError) -> ConfigError:
    """``exc`` (from creating ``path``) as a one-line error naming ``flag``."""
    if isinstance(exc, IsADirectoryError):
        hint = "it is a folder: give a file name"
    elif not path.parent.exists():
        hint = f"the folder {path.parent} does not exist: create it, or give another path"
    else:
        hint = "give a path in a folder you can write to"
    return ConfigError(f"{flag} {path}: cannot write there ({exc.strerror or exc})", hint=hint)


def open_output(flag: str, path: Path, open_: Callable[[Path], T]) -> T:
    """``open_(path)``, an output file the command writes, or the error naming ``flag``."""
    try:
        return open_(path)
    except OSError as exc:
        raise output_error(flag, path, exc) from None


def check_output_dir(flag: str, path: Path) -> None:
    """Create the folder ``path`` and check a file can be written in it, so that a
    long run (``evaluate --report``) does not fail only when it writes its results."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".stream-ae-write-check-"):
            pass
    except FileExistsError:
        raise ConfigError(
            f"{flag} {path} is a file, not a folder", hint="give a folder for the report"
        ) from None
    except OSError as exc:
        raise output_error(flag, path, exc) from None
