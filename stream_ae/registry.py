"""A model registry folder: registered versions, a champion pointer, a decision log.

Layout::

    <root>/
      versions/<version>/{model.safetensors, metadata.json, report.json}
      CHAMPION            # one line: the version to serve
      decisions.jsonl     # one JSON object per promote/rollback/reject/hold/prune, append-only
      .lock               # fcntl.flock'ed by writers
      .candidate-*/       # a retraining round's model being saved (trainers/retrain.py)

Why it is built this way:

* **Readers never lock and never see partial state.** A version is assembled in
  a hidden temporary directory inside ``versions/`` (same filesystem), every
  file and the directory are fsynced, and only then is it renamed to its final
  name; versions are immutable afterwards and only deleted by :meth:`Registry.prune`.
  ``CHAMPION`` is replaced with ``os.replace`` of a fsynced temporary file. So a
  reader that reads ``CHAMPION`` and then ``versions/<name>/…`` always finds a
  complete version.
* **One writer at a time.** :meth:`Registry.register`, :meth:`Registry.promote`,
  :meth:`Registry.rollback`, :meth:`Registry.reject`, :meth:`Registry.hold`,
  :meth:`Registry.prune` and :meth:`Registry.announce` hold an exclusive
  ``flock`` on ``.lock`` (it works between processes and between threads that
  open the file separately).
* **The decision log is the source of truth; ``CHAMPION`` is its head.** A
  promotion first writes and fsyncs the new pointer under a temporary name
  (anything that can fail for lack of space fails here, changing nothing), then
  appends the decision to the log and fsyncs it (the commit point: on failure
  the log is truncated back), then renames the pointer into place. A crash
  between the last two steps leaves the log one decision ahead of the pointer:
  the next writer notices and completes it ("rolls forward"); it also drops a
  torn last log line and removes temporary files left by a crashed writer.
  ``reject`` and ``hold`` records are appended the same way (fsynced, truncated
  back on failure) but never touch ``CHAMPION``.
* **JSON only.** Reports and decisions are JSON; weights are safetensors
  verified by sha256 (:func:`stream_ae.model.artifact.load_artifact`); nothing is
  ever unpickled.

Decision actions (the ``action`` of a log record):

* ``promote``: the version became champion (``previous``: the one it replaced);
* ``rollback``: the champion before the current one became champion again;
* ``reject``: the version failed the promotion gate; it stays registered (its
  numbers are in the record) but is not served;
* ``hold``: the version passed the gate but was not promoted because promotion
  was turned off, or because the champion changed while it was being trained
  (``promote(..., expected_champion=...)`` refused); an operator may promote it later;
* ``prune``: the version's folder was deleted by :meth:`Registry.prune` (retention);
  the record keeps its status then and the space it took.

``reject``, ``hold`` and ``prune`` record the champion of the moment as
``champion`` (not ``previous``: nothing was replaced).

Retention: :meth:`Registry.prune` keeps the ``keep`` newest versions and deletes
older ones, but never the champion nor any version on the champion stack (every
version repeated rollbacks can return to). A version is renamed to a hidden name
first (readers stop seeing it at once), the ``prune`` record is committed, then
the folder is removed. ``.candidate-*`` folders in the root older than
:data:`STALE_CANDIDATE_S` (left by a killed retraining round; a live round's
folder exists only while it saves and registers, seconds) are removed by every
writer.

Announcements: :meth:`Registry.announce` calls the sender with what ``CHAMPION``
says *while holding the writer lock*, so announcements are serialised with
promotions and rollbacks: the last announcement sent is always the current
champion, whatever order two promoters ran in.

Rollback semantics: the log is replayed as a stack of champions (``promote``
pushes, ``rollback`` pops; ``reject`` and ``hold`` are skipped), so repeated
rollbacks walk back through earlier champions instead of toggling between the
last two.

Repairs: a version folder that cannot be read (deleted files, invalid metadata,
no permission) is skipped by :meth:`Registry.versions` with a warning naming it
and why (``models list`` shows it as ``unreadable``), so one damaged folder does
not hide the others. While ``CHAMPION`` names a version whose folder is gone,
:meth:`Registry.champion` raises (nothing can serve it) and a rollback is refused
(the operator should pick what to serve), but promoting a registered version
works: it is the repair, and every such error names the command to run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.durable import fsync_dir, write_synced
from stream_ae.errors import ArtifactError, ConfigError, StreamAEError
from stream_ae.model.artifact import (
    METADATA_FILE,
    REGISTRY_CHAMPION_FILE,
    REGISTRY_DECISIONS_FILE,
    REGISTRY_LOCK_FILE,
    REGISTRY_VERSIONS_DIR,
    WEIGHTS_FILE,
    ArtifactMetadata,
    load_artifact,
    read_metadata,
    safe_name,
    sha256_file,
)

__all__ = [
    "CANDIDATE_PREFIX",
    "CHAMPION_FILE",
    "DECISIONS_FILE",
    "LOCK_FILE",
    "REPORT_FILE",
    "STALE_CANDIDATE_S",
    "VERSIONS_DIR",
    "ChampionChanged",
    "PruneResult",
    "Registry",
    "Status",
    "Unreadable",
    "VersionInfo",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

VERSIONS_DIR = REGISTRY_VERSIONS_DIR
CHAMPION_FILE = REGISTRY_CHAMPION_FILE
DECISIONS_FILE = REGISTRY_DECISIONS_FILE
LOCK_FILE = REGISTRY_LOCK_FILE
REPORT_FILE = "report.json"

_TMP_PREFIX = ".tmp-"
#: a retraining round saves its candidate in ``<root>/.candidate-*`` (then registers it)
CANDIDATE_PREFIX = ".candidate-"
#: a ``.candidate-*`` folder untouched this long (seconds) was left by a killed round
STALE_CANDIDATE_S = 3600.0

#: actions that move ``CHAMPION``; the others only record a verdict on a candidate
_POINTER_ACTIONS = ("promote", "rollback")
_VERDICT_ACTIONS = ("reject", "hold")
_ACTIONS = _POINTER_ACTIONS + _VERDICT_ACTIONS + ("prune",)

#: ``expected_champion`` not given: promote whatever the champion is
_ANY: Any = object()

Status = Literal["champion", "candidate", "retired", "rejected", "held"]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version as listed by :meth:`Registry.versions`.

    ``status``: ``champion`` (named by ``CHAMPION``), ``retired`` (was champion
    once, per the decision log), else the latest verdict on it: ``rejected``
    (failed the gate) or ``held`` (passed, not promoted), else ``candidate``.
    ``status_reason`` is that verdict's ``reason`` (for a rejection, the failing
    rule), ``None`` for the other statuses. ``metrics`` is the report's
    ``metrics`` object when it has one, else the artifact metadata's ``metrics``
    section.
    """

    version: str
    created_at: datetime
    architecture: str
    threshold: ThresholdSpec
    status: Status
    metrics: dict[str, Any]
    path: Path
    status_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``--json`` output)."""
        return {
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "architecture": self.architecture,
            "threshold": self.threshold.to_dict(),
            "status": self.status,
            "status_reason": self.status_reason,
            "metrics": self.metrics,
            "path": str(self.path),
        }


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A folder in ``versions/`` whose version cannot be read (``why``): listed apart
    (:meth:`Registry.scan`) so that the readable versions can still be listed and
    promoted."""

    version: str
    path: Path
    why: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with :meth:`VersionInfo.to_dict`'s keys (``--json`` output)."""
        return {
            "version": self.version,
            "created_at": None,
            "architecture": None,
            "threshold": None,
            "status": "unreadable",
            "status_reason": self.why,
            "metrics": {},
            "path": str(self.path),
        }


class ChampionChanged(ArtifactError):
    """:meth:`Registry.promote` with ``expected_champion`` found another champion
    (someone promoted or rolled back meanwhile); nothing was changed."""

    def __init__(self, version: str, expected: str | None, actual: str | None, root: Path):
        super().__init__(
            f"not promoting {version}: the champion of {root} changed (expected "
            f"{expected or 'none'}, now {actual or 'none'})",
            hint=f"promote it by hand if wanted: `stream-ae models promote {version} "
            f"--registry {root}`",
        )
        self.version, self.expected, self.actual = version, expected, actual


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :meth:`Registry.prune` removed (or would remove, ``dry_run``)."""

    removed: list[tuple[str, int]]  # version, bytes
    kept: list[str]
    protected: list[str]  # older than the keep window but kept: champion, rollback targets
    stale_candidates: list[tuple[str, int]]  # .candidate-* folder names, bytes
    dry_run: bool = False

    @property
    def freed(self) -> int:
        return sum(n for _, n in self.removed) + sum(n for _, n in self.stale_candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [{"version": v, "bytes": n} for v, n in self.removed],
            "stale_candidates": [{"folder": v, "bytes": n} for v, n in self.stale_candidates],
            "kept": self.kept,
            "protected": self.protected,
            "freed_bytes": self.freed,
        }


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _last_touched(path: Path) -> float:
    """The newest mtime of ``path`` and the entries directly in it (a live round writes there)."""
    newest = path.stat().st_mtime
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


# ----------------------------------------------------------------------------- helpers


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types: NaN/inf -> None, numpy scalars/arrays, paths, dates.

    Anything else raises :class:`ConfigError` naming ``where`` (e.g. ``report.metrics``).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return _jsonable(value.tolist(), where)
    raise ConfigError(
        f"{where} holds a {type(value).__name__}, which cannot be stored as JSON",
        hint="pass numbers, strings, booleans, lists and objects only",
    )


def _export_files(src: Path) -> list[str]:
    """``exports.json`` and the exported models it lists (plain file names only), so
    a registered version keeps its edge runtimes; loading verifies their hashes."""
    manifest = src / "exports.json"
    if not manifest.is_file():
        return []
    try:
        entries = json.loads(manifest.read_text()).get("exports", {})
    except (ValueError, AttributeError):
        return []
    names = [manifest.name]
    for entry in entries.values() if isinstance(entries, dict) else []:
        name = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(name, str) and name == Path(name).name and (src / name).is_file():
            names.append(name)
    return names


def _copy_synced(src: Path, dst: Path) -> None:
    with src.open("rb") as fin, dst.open("xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def _publish(tmp: Path, final: Path) -> None:
    """The one step that makes a fully written version visible (a directory rename)."""
    os.rename(tmp, final)


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            hint="restore the file from a backup; registered files are never rewritten",
        ) from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path} must hold a JSON object, not {type(raw).__name__}")
    return raw


def _read_metadata(path: Path) -> ArtifactMetadata:
    return read_metadata(
        path / METADATA_FILE,
        hint="restore the version from a backup or register a re-trained model",
        missing_hint="the version directory is incomplete or damaged",
    )


# ----------------------------------------------------------------------------- registry


class Registry:
    """A model registry rooted at ``root`` (see the module docstring for the layout).

    Reading methods need an existing registry; writing methods create it.
    ``lock_timeout`` (seconds) bounds how long a writer waits for another one.
    """

    def __init__(self, root: Path, *, lock_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        #: the stale ``.candidate-*`` folders the last writer removed (name, bytes)
        self._swept: list[tuple[str, int]] = []

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def versions_dir(self) -> Path:
        """``<root>/versions``."""
        return self.root / VERSIONS_DIR

    # ------------------------------------------------------------------ reading

    def _require(self) -> None:
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise ConfigError(
                f"model registry {self.root} {what}",
                hint="check the --registry path, or register a model first (stream-ae train)",
            )

    def path_of(self, version: str) -> Path:
        """The directory of registered ``version``; :class:`ArtifactError` if there is none."""
        self._require()
        if not isinstance(version, str) or not safe_name(version):
            raise ConfigError(
                f"{version!r} is not a valid version name",
                hint="versions look like 20260101T120000Z-1a2b3c4d; " + self._list_hint(),
            )
        path = self.versions_dir / version
        if not (path / METADATA_FILE).is_file():
            raise ArtifactError(
                f"version {version} is not registered in {self.root}", hint=self._list_hint()
            )
        return path

    def _list_hint(self) -> str:
        return f"see `stream-ae models list --registry {self.root}` for the registered versions"

    def repair_hint(self) -> str:
        """The commands that make a registered version champion (the repair of a
        champion that is missing or damaged)."""
        return (
            f"make a registered version champion: `stream-ae models list --registry "
            f"{self.root}` lists them, `stream-ae models promote VERSION --registry "
            f"{self.root}` promotes one"
        )

    def champion(self) -> str | None:
        """The version named by ``CHAMPION``, or ``None`` before the first promotion.

        :class:`ArtifactError` (with the command that repairs it) when ``CHAMPION``
        names a version that is not registered: its folder was deleted, say."""
        self._require()
        name = self._pointer()
        if name is not None and not self._registered(name):
            raise ArtifactError(
                f"{self.root / CHAMPION_FILE} names {name!r}, which is not a registered "
                f"version (no {self.versions_dir / name / METADATA_FILE})",
                hint=self.repair_hint(),
            )
        return name

    def champion_pointer(self) -> str | None:
        """The version ``CHAMPION`` names, registered or not (``None`` before the first
        promotion): what a repair replaces and records as ``previous``."""
        self._require()
        return self._pointer()

    def _pointer(self) -> str | None:
        pointer = self.root / CHAMPION_FILE
        try:
            return pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"cannot read {pointer}: {exc}", hint=self.repair_hint()) from exc

    def _registered(self, name: str) -> bool:
        return safe_name(name) and (self.versions_dir / name / METADATA_FILE).is_file()

    def decisions(self) -> list[dict[str, Any]]:
        """Every committed decision, oldest first (a torn last line is ignored)."""
        self._require()
        return self._read_decisions()

    def versions(self) -> list[VersionInfo]:
        """All readable registered versions, oldest first (version names sort by creation
        time). Folders that cannot be read are skipped with a warning naming them and
        why: one damaged folder must not stop the listing, nor the promotion that
        repairs a damaged champion."""
        infos, unreadable = self.scan()
        for bad in unreadable:
            log.warning("skipping %s: %s", bad.path, bad.why)
        return infos

    def scan(self) -> tuple[list[VersionInfo], list[Unreadable]]:
        """The readable versions and the folders of ``versions/`` that cannot be read,
        each oldest first; nothing logged (``models list`` shows both)."""
        self._require()
        if not self.versions_dir.is_dir():
            return [], []
        champion = self._pointer()
        records = self._read_decisions()
        ever, verdicts = _ever_champion(records), _verdicts(records)
        infos: list[VersionInfo] = []
        unreadable: list[Unreadable] = []
        folders = sorted(
            d for d in self.versions_dir.iterdir() if not d.name.startswith(".") and d.is_dir()
        )
        for folder in folders:
            try:
                if not (folder / METADATA_FILE).is_file():
                    raise ArtifactError(
                        f"no {METADATA_FILE}: the folder is incomplete or damaged",
                        hint="restore it from a backup, or move it out of "
                        + str(self.versions_dir),
                    )
                infos.append(self._info(folder.name, champion, ever, verdicts))
            except (StreamAEError, OSError) as exc:
                unreadable.append(Unreadable(folder.name, folder, str(exc)))
        return infos, unreadable

    def show(self, version: str) -> dict[str, Any]:
        """Everything about ``version``: status, path, metadata, report and its decisions.

        The decisions are those that made ``version`` champion or replaced it, and
        the verdicts (reject/hold) on it; not the verdicts on other candidates
        made while it was champion.
        """
        try:
            path = self.path_of(version)
        except ArtifactError:
            pruned = [d for d in self._read_decisions() if d["action"] == "prune"]
            for rec in reversed(pruned):
                if rec["version"] == version:
                    why = rec.get("decision", {}).get("reason", "no reason recorded")
                    raise ArtifactError(
                        f"version {version} was pruned from {self.root} at {rec.get('at')} "
                        f"(decision #{rec.get('seq')}: {why})",
                        hint="its decisions stay in " + str(self.root / DECISIONS_FILE),
                    ) from None
            raise
        records = self._read_decisions()
        info = self._info(version, self._pointer(), _ever_champion(records), _verdicts(records))
        meta = _read_metadata(path)
        return {
            "version": version,
            "status": info.status,
            "status_reason": info.status_reason,
            "path": str(path),
            "metadata": meta.model_dump(mode="json"),
            "report": self._report(path),
            "decisions": [
                d
                for d in records
                if d["version"] == version
                or (d["action"] in _POINTER_ACTIONS and d.get("previous") == version)
            ],
        }

    def _info(
        self,
        name: str,
        champion: str | None,
        ever: set[str],
        verdicts: Mapping[str, dict[str, Any]],
    ) -> VersionInfo:
        path = self.versions_dir / name
        meta = _read_metadata(path)
        try:
            threshold = meta.threshold_spec
        except ArtifactError as exc:
            raise ArtifactError(f"{path / METADATA_FILE}: {exc}") from exc
        report = self._report(path)
        metrics = report.get("metrics")
        status: Status = "candidate"
        reason = None
        if name == champion:
            status = "champion"
        elif name in ever:
            status = "retired"
        elif (verdict := verdicts.get(name)) is not None:
            status = "rejected" if verdict["action"] == "reject" else "held"
            decision = verdict.get("decision")
            why = decision.get("reason") if isinstance(decision, dict) else None
            reason = why if isinstance(why, str) else None
        return VersionInfo(
            version=name,
            created_at=meta.created_at,
            architecture=meta.architecture,
            threshold=threshold,
            status=status,
            metrics=dict(metrics) if isinstance(metrics, dict) else dict(meta.metrics),
            path=path,
            status_reason=reason,
        )

    @staticmethod
    def _report(path: Path) -> dict[str, Any]:
        """``report.json`` of a version; ``{}`` for a directory placed without one."""
        try:
            return _read_json_object(path / REPORT_FILE)
        except FileNotFoundError:
            return {}

    def _read_decisions(self) -> list[dict[str, Any]]:
        log_path = self.root / DECISIONS_FILE
        try:
            data = log_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ArtifactError(f"cannot read {log_path}: {exc.strerror or exc}") from exc
        lines = data.split(b"\n")
        # The last element is b"" after a complete final line; anything else there
        # is a line being appended right now (or torn by a crash): not committed.
        records = []
        for lineno, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ArtifactError(
                    f"{log_path} line {lineno} is not valid JSON: {exc}",
                    hint="repair or remove that line (the file is append-only JSON Lines)",
                ) from exc
            if (
                not isinstance(rec, dict)
                or rec.get("action") not in _ACTIONS
                or not isinstance(rec.get("version"), str)
            ):
                raise ArtifactError(
                    f"{log_path} line {lineno} is not a decision record "
                    f"(needs 'action' one of {'/'.join(_ACTIONS)} and 'version')",
                    hint="repair or remove that line",
                )
            records.append(rec)
        return records

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Create the layout, take the writer lock, repair what a crashed writer left."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(
                f"model registry {self.root} is not a directory",
                hint="point --registry at a directory",
            )
        try:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ArtifactError(
                f"cannot create model registry {self.root}: {exc.strerror or exc}",
                hint="check the path and its permissions",
            ) from exc
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise ArtifactError(
                            f"cannot lock {self.root / LOCK_FILE}: {exc.strerror or exc}"
                        ) from exc
                    if time.monotonic() >= deadline:
                        raise ArtifactError(
                            f"model registry {self.root} is locked by another writer "
                            f"(waited {self.lock_timeout:g} s for {self.root / LOCK_FILE})",
                            hint="wait for the other train/promote to finish and retry",
                        ) from exc
                    time.sleep(0.01)
            self._recover()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _recover(self) -> None:
        """Under the lock: undo/finish what a crashed writer left behind."""
        for leftover in self.versions_dir.glob(_TMP_PREFIX + "*"):
            log.warning("removing %s left by an interrupted registration", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob(_TMP_PREFIX + CHAMPION_FILE + "*"):
            leftover.unlink(missing_ok=True)
        self._swept = self._sweep_candidates()
        log_path = self.root / DECISIONS_FILE
        if log_path.is_file():
            data = log_path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                log.warning("dropping a torn last line of %s", log_path)
                with log_path.open("r+b") as fh:
                    fh.truncate(keep)
                    fh.flush()
                    os.fsync(fh.fileno())
        stack = _champion_stack(self._read_decisions())
        if stack:
            head = stack[-1]
            pointer = self.root / CHAMPION_FILE
            try:
                current = pointer.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                current = None
            if current != head and (self.versions_dir / head / METADATA_FILE).is_file():
                log.warning(
                    "%s names %s but the decision log's last champion is %s: completing it",
                    pointer,
                    current,
                    head,
                )
                self._replace_pointer(self._prepare_pointer(head))

    def _stale_candidates(self) -> list[Path]:
        """``.candidate-*`` folders nothing has written to for :data:`STALE_CANDIDATE_S`.

        A round creates its folder, saves the model into it and registers it (a
        rename) right away, so a live round's folder is seconds old; an old one was
        left by a round that was killed."""
        now = time.time()
        stale = []
        for folder in sorted(self.root.glob(CANDIDATE_PREFIX + "*")):
            try:
                if folder.is_dir() and now - _last_touched(folder) > STALE_CANDIDATE_S:
                    stale.append(folder)
            except OSError:
                continue  # removed meanwhile
        return stale

    def _sweep_candidates(self) -> list[tuple[str, int]]:
        swept = []
        for folder in self._stale_candidates():
            size = _tree_size(folder)
            log.warning("removing %s, left by a killed retraining round", folder)
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                swept.append((folder.name, size))
        return swept

    def prune(self, keep: int, *, dry_run: bool = False, reason: str | None = None) -> PruneResult:
        """Delete the oldest versions beyond the ``keep`` newest; return what went.

        Never deleted: the champion (what ``CHAMPION`` names) and every version on
        the champion stack (what repeated rollbacks return to), whatever their age;
        folders that cannot be read are left for the operator. Each deletion is
        recorded in the decision log (``prune``, with the version's status and
        size). Stale ``.candidate-*`` folders are removed too. ``dry_run``: only
        say what would go (no lock, nothing changed).
        """
        if keep < 1:
            raise ConfigError(
                f"keep must be at least 1, not {keep}", hint="pass --keep N with N >= 1"
            )
        if dry_run:
            self._require()
            stale = [(f.name, _tree_size(f)) for f in self._stale_candidates()]
            removed, kept, protected = self._prune_plan(keep)
            return PruneResult(
                [(v, _tree_size(self.versions_dir / v)) for v in removed],
                kept,
                protected,
                stale,
                dry_run=True,
            )
        done: list[tuple[str, int]] = []
        with self._writing():
            stale = self._swept
            victims, kept, protected = self._prune_plan(keep)
            infos = {i.version: i for i in self.scan()[0]}
            champion = self._pointer() or None
            for version in victims:
                folder = self.versions_dir / version
                size = _tree_size(folder)
                hidden = self.versions_dir / f"{_TMP_PREFIX}pruned-{version}"
                try:
                    os.rename(folder, hidden)  # gone for readers at once
                except OSError as exc:
                    raise ArtifactError(
                        f"cannot prune {folder}: {exc.strerror or exc}",
                        hint="check the permissions of the registry",
                    ) from exc
                decision = {
                    "reason": reason or f"retention: older than the {keep} newest versions",
                    "keep": keep,
                    "status": infos[version].status if version in infos else None,
                    "bytes": size,
                }
                line = self._record("prune", version, {"champion": champion}, decision)
                try:
                    self._append(line)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.rename(hidden, folder)
                    raise
                shutil.rmtree(hidden, ignore_errors=True)
                done.append((version, size))
                log.info("pruned %s (%d bytes) from %s", version, size, self.root)
            if done:
                fsync_dir(self.versions_dir)
        return PruneResult(done, kept, protected, stale)

    def _prune_plan(self, keep: int) -> tuple[list[str], list[str], list[str]]:
        """(to delete, kept as the newest, kept because protected), each oldest first."""
        names = [i.version for i in self.scan()[0]]  # readable versions, oldest first
        champion = self._pointer()
        guarded = set(_champion_stack(self._read_decisions()))
        if champion:
            guarded.add(champion)
        newest = names[-keep:]
        older = names[: max(0, len(names) - keep)]
        return (
            [v for v in older if v not in guarded],
            newest,
            [v for v in older if v in guarded],
        )

    def announce(self, send: Callable[[str], T]) -> T:
        """Call ``send(champion)`` with what ``CHAMPION`` says, holding the writer lock.

        So a promotion and its announcement cannot interleave with another's: two
        promoters announce in the order they hold the lock, each the champion of
        that moment, and the last announcement is the champion. ``send`` must not
        write to this registry (the lock is not re-entrant). :class:`ConfigError`
        when there is no champion; :class:`ArtifactError` when it is not registered.
        """
        with self._writing():
            champion = self.champion()
            if champion is None:
                raise ConfigError(
                    f"no champion in {self.root}",
                    hint=f"promote a version first: `stream-ae models promote VERSION "
                    f"--registry {self.root}`",
                )
            return send(champion)

    def register(self, artifact_dir: Path, *, report: Mapping[str, Any], move: bool = False) -> str:
        """Add a saved artifact version directory as a new version; return its name.

        The artifact is fully verified first (:func:`load_artifact`: metadata,
        sha256, tensor shapes), then copied into a hidden temporary directory in
        ``versions/`` together with ``report`` as ``report.json``, fsynced, checked
        again (sha256 of the copy), and renamed to ``versions/<version>``. With
        ``move=True`` on the same filesystem the source directory is renamed
        instead of copied (it is put back if registration fails); on another
        filesystem it is copied and then removed. The version name is the one in
        the metadata. Registering does not promote.
        """
        src = Path(artifact_dir)
        if not (src / METADATA_FILE).is_file():
            raise ArtifactError(
                f"{src} is not a model artifact version directory (no {METADATA_FILE})",
                hint="pass the directory save_artifact returned, e.g. artifacts/<version>",
            )
        report_data = _jsonable(dict(report), "report")
        report_bytes = (json.dumps(report_data, indent=2, allow_nan=False) + "\n").encode()
        try:
            meta = load_artifact(src, device="cpu").metadata
        except StreamAEError as exc:
            raise ArtifactError(
                f"refusing to register {src}: {exc}", hint="re-train and save the model again"
            ) from exc
        version = meta.version
        with self._writing():
            final = self.versions_dir / version
            if final.exists():
                raise ArtifactError(
                    f"version {version} is already registered in {self.root}",
                    hint=f"registered versions are immutable; inspect it with "
                    f"`stream-ae models show {version}`",
                )
            same_fs = move and os.stat(src).st_dev == os.stat(self.versions_dir).st_dev
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-", dir=self.versions_dir))
            moved = False
            try:
                if same_fs:
                    tmp.rmdir()
                    os.rename(src, tmp)
                    moved = True
                    for name in (METADATA_FILE, WEIGHTS_FILE):
                        with (tmp / name).open("rb") as fh:
                            os.fsync(fh.fileno())
                else:
                    os.chmod(tmp, 0o755)
                    _copy_synced(src / METADATA_FILE, tmp / METADATA_FILE)
                    _copy_synced(src / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
                    for name in _export_files(src):
                        _copy_synced(src / name, tmp / name)
                (tmp / REPORT_FILE).unlink(missing_ok=True)
                write_synced(tmp / REPORT_FILE, report_bytes)
                sha = sha256_file(tmp / WEIGHTS_FILE)
                if sha != meta.weights_sha256 or _read_metadata(tmp) != meta:
                    raise ArtifactError(
                        f"the copy of {src} differs from what was verified (weights hash "
                        f"{sha}, expected {meta.weights_sha256}, or changed metadata)",
                        hint="the source changed while it was being registered; retry",
                    )
                fsync_dir(tmp)
                _publish(tmp, final)
                fsync_dir(self.versions_dir)
            except BaseException as exc:
                if moved:
                    with contextlib.suppress(OSError):
                        (tmp / REPORT_FILE).unlink(missing_ok=True)
                        os.rename(tmp, src)
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(exc, OSError):
                    raise ArtifactError(
                        f"cannot register {src} as {final}: {exc.strerror or exc}",
                        hint="check free disk space and permissions of the registry",
                    ) from exc
                raise
        if move and not same_fs:
            shutil.rmtree(src, ignore_errors=True)
        log.info("registered %s in %s", version, self.root)
        return version

    def promote(
        self,
        version: str,
        *,
        decision: Mapping[str, Any],
        expected_champion: str | None = _ANY,
    ) -> None:
        """Make ``version`` the champion, recording ``decision`` (reason, numbers).

        The version is verified (:func:`load_artifact`) before anything changes.
        The log record is ``{"seq", "at", "action": "promote", "version",
        "previous", "decision"}``. Promoting the current champion is refused. A
        champion whose folder is missing or damaged does not stop it (promoting is
        how that is repaired); it is recorded as ``previous`` all the same.

        ``expected_champion`` (a version, or ``None`` for "no champion yet"): the
        champion the caller decided against; checked under the writer lock, and when
        ``CHAMPION`` names another version :class:`ChampionChanged` is raised and
        nothing changes (a retraining round must not override a promotion or
        rollback made while it trained).
        """
        decision_data = _jsonable(dict(decision), "decision")
        with self._writing():
            path = self.path_of(version)
            self._verify(path)
            previous = self._pointer() or None
            if expected_champion is not _ANY and previous != expected_champion:
                raise ChampionChanged(version, expected_champion, previous, self.root)
            if previous is not None and not self._registered(previous):
                log.warning("replacing champion %s, which is not a registered version", previous)
            if previous == version:
                raise ConfigError(
                    f"version {version} is already the champion of {self.root}",
                    hint="promote a different version, or roll back",
                )
            self._commit("promote", version, previous, decision_data)
        log.info("promoted %s (previous champion %s) in %s", version, previous, self.root)

    def rollback(self, *, decision: Mapping[str, Any] | None = None) -> str:
        """Make the champion before the current one champion again; return its name.

        "Before" follows the decision log as a stack: after promoting A, B, C,
        rollbacks give B, then A, then an error. Refused while ``CHAMPION`` names a
        version that is not registered (its folder deleted, say): the operator
        picks the version to serve with a promotion instead.
        """
        decision_data = _jsonable(dict(decision or {}), "decision")
        with self._writing():
            champion = self._pointer()
            if champion is not None and not self._registered(champion):
                missing = self.versions_dir / champion / METADATA_FILE
                raise ArtifactError(
                    f"cannot roll back in {self.root}: {CHAMPION_FILE} names {champion}, which "
                    f"is not a registered version (no {missing})",
                    hint=self.repair_hint(),
                )
            stack = _champion_stack(self._read_decisions())
            if len(stack) < 2:
                raise ArtifactError(
                    f"nothing to roll back to in {self.root}: the decision log has "
                    + (f"only one champion ({stack[0]})" if stack else "no champion"),
                    hint=f"promote a version explicitly: `stream-ae models promote VERSION "
                    f"--registry {self.root}`",
                )
            current, target = stack[-1], stack[-2]
            self._verify(self.path_of(target))
            self._commit("rollback", target, current, decision_data)
        log.info("rolled back %s from %s to %s", self.root, current, target)
        return target

    def reject(self, version: str, *, decision: Mapping[str, Any]) -> None:
        """Record that ``version`` failed the promotion gate, with ``decision`` (the
        failing rule as ``reason``, the gate's numbers). ``CHAMPION`` is untouched.

        The log record is ``{"seq", "at", "action": "reject", "version",
        "champion", "decision"}``; ``models list`` shows the version as
        ``rejected``. An operator can still promote it explicitly.
        """
        self._verdict("reject", version, decision)

    def hold(self, version: str, *, decision: Mapping[str, Any]) -> None:
        """Record that ``version`` passed the gate but was not promoted (promotion is
        turned off), with ``decision`` (reason, numbers). ``CHAMPION`` is untouched.

        Same record as :meth:`reject` with ``"action": "hold"``; the version is
        listed as ``held`` until it is promoted.
        """
        self._verdict("hold", version, decision)

    def _verdict(self, action: str, version: str, decision: Mapping[str, Any]) -> None:
        decision_data = _jsonable(dict(decision), "decision")
        with self._writing():
            self.path_of(version)
            champion = self._pointer() or None
            if champion == version:
                raise ConfigError(
                    f"version {version} is the champion of {self.root}; a {action} "
                    "record would not stop it being served",
                    hint=f"roll back (`stream-ae models rollback --registry {self.root}`) or "
                    f"promote another version (`stream-ae models promote VERSION --registry "
                    f"{self.root}`)",
                )
            self._append(self._record(action, version, {"champion": champion}, decision_data))
        log.info("recorded %s of %s (champion %s) in %s", action, version, champion, self.root)

    def _verify(self, path: Path) -> None:
        try:
            load_artifact(path, device="cpu")
        except StreamAEError as exc:
            raise ArtifactError(
                f"refusing to make {path.name} champion: {exc}",
                hint="this version is damaged; promote another one: " + self._list_hint(),
            ) from exc

    def _commit(
        self, action: str, version: str, previous: str | None, decision: dict[str, Any]
    ) -> None:
        """Prepare the pointer, append the record (commit), then publish the pointer."""
        line = self._record(action, version, {"previous": previous}, decision)
        tmp = self._prepare_pointer(version)
        log_path = self._append(line, pending=tmp)
        try:
            self._replace_pointer(tmp)
        except ArtifactError as exc:
            raise ArtifactError(
                f"{exc}; the decision was recorded in {log_path} and the next registry "
                "write will complete it",
            ) from exc

    def _record(
        self, action: str, version: str, fields: dict[str, Any], decision: dict[str, Any]
    ) -> bytes:
        """The next decision record as one JSON line (``fields``: previous or champion)."""
        record = {
            "seq": len(self._read_decisions()) + 1,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "action": action,
            "version": version,
            **fields,
            "decision": decision,
        }
        return (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()

    def _append(self, line: bytes, *, pending: Path | None = None) -> Path:
        """Append ``line`` to the log and fsync it: the commit point; return the log path.

        On failure the log is truncated back and ``pending`` (a prepared pointer
        that must not be published) is removed, so nothing has changed.
        """
        log_path = self.root / DECISIONS_FILE
        try:
            created = not log_path.exists()
            with log_path.open("ab") as fh:
                size = os.fstat(fh.fileno()).st_size
                try:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                except BaseException:
                    with contextlib.suppress(OSError):
                        fh.truncate(size)
                        fh.flush()
                    raise
            if created:
                fsync_dir(self.root)
        except BaseException as exc:
            if pending is not None:
                pending.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise ArtifactError(
                    f"cannot append to {log_path}: {exc.strerror or exc}; nothing was changed",
                    hint="check free disk space and permissions of the registry",
                ) from exc
            raise
        return log_path

    def _prepare_pointer(self, version: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX + CHAMPION_FILE + "-", dir=self.root)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(f"{version}\n".encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ArtifactError(
                f"cannot write {self.root / CHAMPION_FILE}: {exc.strerror or exc}; "
                "nothing was changed",
                hint="check free disk space and permissions of the registry",
            ) from exc
        return tmp

    def _replace_pointer(self, tmp: Path) -> None:
        pointer = self.root / CHAMPION_FILE
        try:
            os.replace(tmp, pointer)
            fsync_dir(self.root)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ArtifactError(f"cannot update {pointer}: {exc.strerror or exc}") from exc


def _champion_stack(records: list[dict[str, Any]]) -> list[str]:
    """Replay the log: ``promote`` pushes its version, ``rollback`` pops to its version;
    ``reject`` and ``hold`` never made anything champion and are skipped."""
    stack: list[str] = []
    for rec in records:
        if rec["action"] == "promote":
            stack.append(rec["version"])
        elif rec["action"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != rec["version"]:  # a log edited by hand: trust it
                stack.append(rec["version"])
    return stack


def _ever_champion(records: list[dict[str, Any]]) -> set[str]:
    return {rec["version"] for rec in records if rec["action"] in _POINTER_ACTIONS}


def _verdicts(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest ``reject``/``hold`` record of each version."""
    return {rec["version"]: rec for rec in records if rec["action"] in _VERDICT_ACTIONS}
