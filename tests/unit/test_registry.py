"""The model registry: register/promote/rollback/show, crash safety, concurrent readers/writers.

Artifacts are tiny untrained conv autoencoders saved with the real
``save_artifact`` (so hashes and shapes are genuine), a few kB each.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_artifact

from stream_ae import registry as registry_mod
from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.errors import ArtifactError, ConfigError
from stream_ae.model.artifact import (
    METADATA_FILE,
    WEIGHTS_FILE,
    ArtifactMetadata,
    sha256_file,
)
from stream_ae.registry import (
    CHAMPION_FILE,
    DECISIONS_FILE,
    LOCK_FILE,
    REPORT_FILE,
    Registry,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HPARAMS = {"hidden": 4, "latent": 2}


def make_artifact(out_dir: Path, seed: int) -> Path:
    """Save a tiny conv model (weights from ``seed``) created ``seed`` minutes after T0."""
    return tiny_artifact(
        out_dir,
        threshold=ThresholdSpec("quantile", {"q": 0.99, "n_scores": 100}, 1.0 + seed),
        seed=seed,
        channels=("a", "b"),
        metrics={"val_loss": 0.5 + seed},
        created_at=T0 + timedelta(minutes=seed),
    )


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def _report(seed: int) -> dict[str, object]:
    return {"metrics": {"f1": 0.5 + seed / 10, "far_per_day": 0.1}, "data": {"source": "test"}}


@pytest.fixture
def three(reg: Registry, staging: Path) -> list[str]:
    return [reg.register(make_artifact(staging, s), report=_report(s)) for s in (1, 2, 3)]


# -- register ------------------------------------------------------------------------------


def test_register_copies_a_verified_version(reg: Registry, staging: Path) -> None:
    src = make_artifact(staging, 1)
    version = reg.register(src, report=_report(1))
    assert version == src.name
    path = reg.path_of(version)
    assert path == reg.root / "versions" / version
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [METADATA_FILE, WEIGHTS_FILE, REPORT_FILE]
    )
    assert sha256_file(path / WEIGHTS_FILE) == sha256_file(src / WEIGHTS_FILE)
    assert json.loads((path / REPORT_FILE).read_text()) == _report(1)
    assert (src / WEIGHTS_FILE).is_file()  # copied, not moved
    [info] = reg.versions()
    assert info.version == version
    assert info.status == "candidate"
    assert info.architecture == "conv"
    assert info.threshold == ThresholdSpec("quantile", {"q": 0.99, "n_scores": 100}, 2.0)
    assert info.metrics == {"f1": 0.6, "far_per_day": 0.1}
    assert info.created_at == T0 + timedelta(minutes=1)
    assert reg.champion() is None
    assert json.loads(json.dumps(info.to_dict()))["status"] == "candidate"


def test_register_move_renames_the_source(reg: Registry, staging: Path) -> None:
    src = make_artifact(staging, 1)
    version = reg.register(src, report={}, move=True)
    assert not src.exists()
    assert (reg.path_of(version) / WEIGHTS_FILE).is_file()
    # no report metrics: the metadata's metrics are listed
    assert reg.versions()[0].metrics == {"val_loss": 1.5}


def test_report_values_are_stored_as_plain_json(reg: Registry, staging: Path) -> None:
    report = {"metrics": {"f1": np.float32(0.5), "auc": float("nan"), "counts": np.arange(3)}}
    version = reg.register(make_artifact(staging, 1), report=report)
    stored = json.loads((reg.path_of(version) / REPORT_FILE).read_text())
    assert stored == {"metrics": {"f1": 0.5, "auc": None, "counts": [0, 1, 2]}}


def test_report_that_is_not_json_is_refused(reg: Registry, staging: Path) -> None:
    with pytest.raises(ConfigError, match=r"report\.model holds a object"):
        reg.register(make_artifact(staging, 1), report={"model": object()})


def test_register_twice_is_refused(reg: Registry, staging: Path) -> None:
    src = make_artifact(staging, 1)
    version = reg.register(src, report={})
    with pytest.raises(ArtifactError, match=f"{version} is already registered"):
        reg.register(src, report={})


def test_corrupted_artifact_is_refused_and_nothing_is_registered(
    reg: Registry, staging: Path
) -> None:
    src = make_artifact(staging, 1)
    data = bytearray((src / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (src / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"refusing to register .*sha256 mismatch"):
        reg.register(src, report={})
    assert not reg.root.exists() or reg.versions() == []


def test_register_needs_a_version_directory(reg: Registry, staging: Path) -> None:
    make_artifact(staging, 1)
    with pytest.raises(ArtifactError, match=r"artifacts is not a model artifact version dir"):
        reg.register(staging, report={})


# -- reading -------------------------------------------------------------------------------


def test_missing_registry_is_a_config_error(reg: Registry) -> None:
    for call in (reg.versions, reg.champion, lambda: reg.path_of("x")):
        with pytest.raises(ConfigError, match=r"registry .* does not exist"):
            call()


def test_registry_root_that_is_a_file(tmp_path: Path, staging: Path) -> None:
    (tmp_path / "file").write_text("x")
    reg = Registry(tmp_path / "file")
    with pytest.raises(ConfigError, match="is not a directory"):
        reg.versions()
    with pytest.raises(ConfigError, match="is not a directory"):
        reg.register(make_artifact(staging, 1), report={})


def test_unknown_and_invalid_version_names(reg: Registry, three: list[str]) -> None:
    with pytest.raises(ArtifactError, match="version 20990101T000000Z-deadbeef is not registered"):
        reg.promote("20990101T000000Z-deadbeef", decision={})
    with pytest.raises(ConfigError, match="not a valid version name"):
        reg.path_of("../registry")


def test_champion_pointer_to_a_missing_version(reg: Registry, three: list[str]) -> None:
    (reg.root / CHAMPION_FILE).write_text("nope\n")
    with pytest.raises(ArtifactError, match=r"CHAMPION names 'nope'") as err:
        reg.champion()
    assert f"`stream-ae models promote VERSION --registry {reg.root}`" in str(err.value)


# -- repairs: a deleted champion folder, unreadable version folders -------------------------


def _damage(reg: Registry, versions: list[str]) -> tuple[str, str]:
    """Promote the first version then delete its folder; corrupt the second's metadata."""
    a, b = versions[0], versions[1]
    reg.promote(a, decision={"reason": "first"})
    shutil.rmtree(reg.versions_dir / a)
    meta = reg.versions_dir / b / METADATA_FILE
    os.chmod(meta, 0o644)
    meta.write_text("{")
    return a, b


def test_listing_skips_unreadable_folders_and_names_them(
    reg: Registry, three: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _damage(reg, three)
    (reg.versions_dir / "20260101T000000Z-0badf01d").mkdir()  # a folder without metadata
    with caplog.at_level("WARNING", logger="stream_ae.registry"):
        assert [i.version for i in reg.versions()] == [three[2]]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert logged[0].startswith(f"skipping {reg.versions_dir / '20260101T000000Z-0badf01d'}: ")
    assert "no metadata.json" in logged[0] and "restore it from a backup" in logged[0]
    assert logged[1].startswith(f"skipping {reg.versions_dir / b}: ")
    assert "not valid JSON" in logged[1]
    with pytest.raises(ArtifactError, match=f"names '{a}', which is not a registered"):
        reg.champion()
    infos, unreadable = reg.scan()
    assert [i.version for i in infos] == [three[2]]
    assert [u.version for u in unreadable] == ["20260101T000000Z-0badf01d", b]
    assert unreadable[1].to_dict()["status"] == "unreadable"
    assert reg.show(three[2])["status"] == "candidate"  # show works too


def test_promoting_repairs_a_deleted_champion_and_rollback_says_so(
    reg: Registry, three: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    a, _b = _damage(reg, three)
    c = three[2]
    with pytest.raises(ArtifactError, match="cannot roll back") as err:
        reg.rollback()
    assert f"`stream-ae models promote VERSION --registry {reg.root}`" in str(err.value)
    reg.reject(c, decision={"reason": "a verdict still records the champion"})
    assert reg.decisions()[-1]["champion"] == a
    with caplog.at_level("WARNING", logger="stream_ae.registry"):
        reg.promote(c, decision={"reason": "repair"})
    assert f"replacing champion {a}, which is not a registered version" in caplog.text
    assert reg.champion() == c
    assert (reg.decisions()[-1]["action"], reg.decisions()[-1]["previous"]) == ("promote", a)
    with pytest.raises(ArtifactError, match=f"version {a} is not registered"):
        reg.rollback()  # back to the deleted one: refused, nothing changes
    assert reg.champion() == c


# -- promote / rollback / show -------------------------------------------------------------


def test_promote_and_rollback_walk_the_champion_history(reg: Registry, three: list[str]) -> None:
    a, b, c = three
    for v in (a, b, c):
        reg.promote(v, decision={"reason": f"promote {v}", "f1": 0.7, "baseline_f1": 0.6})
    assert reg.champion() == c
    assert [i.status for i in reg.versions()] == ["retired", "retired", "champion"]

    assert reg.rollback(decision={"reason": "too many alarms"}) == b
    assert reg.champion() == b
    assert reg.rollback() == a
    assert reg.champion() == a
    with pytest.raises(ArtifactError, match=r"nothing to roll back to .*only one champion"):
        reg.rollback()

    reg.promote(c, decision={"reason": "fixed"})
    assert reg.rollback() == a  # the history is [a, c]: back to a, not b

    log = [json.loads(line) for line in (reg.root / DECISIONS_FILE).read_text().splitlines()]
    assert [(r["seq"], r["action"], r["version"], r["previous"]) for r in log] == [
        (1, "promote", a, None),
        (2, "promote", b, a),
        (3, "promote", c, b),
        (4, "rollback", b, c),
        (5, "rollback", a, b),
        (6, "promote", c, a),
        (7, "rollback", a, c),
    ]
    assert log[0]["decision"] == {"reason": f"promote {a}", "f1": 0.7, "baseline_f1": 0.6}
    assert log[3]["decision"] == {"reason": "too many alarms"}
    assert reg.decisions() == log
    assert (reg.root / CHAMPION_FILE).read_text() == f"{a}\n"


def test_rollback_without_history(reg: Registry, three: list[str]) -> None:
    with pytest.raises(ArtifactError, match="no champion"):
        reg.rollback()


def test_promoting_the_champion_again_is_refused(reg: Registry, three: list[str]) -> None:
    reg.promote(three[0], decision={})
    with pytest.raises(ConfigError, match="already the champion"):
        reg.promote(three[0], decision={})
    assert len(reg.decisions()) == 1


def test_promoting_a_damaged_version_is_refused(reg: Registry, three: list[str]) -> None:
    weights = reg.path_of(three[1]) / WEIGHTS_FILE
    os.chmod(weights, 0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")
    with pytest.raises(ArtifactError, match=r"refusing to make .* champion.*sha256"):
        reg.promote(three[1], decision={})
    assert reg.champion() is None
    assert reg.decisions() == []


def test_show(reg: Registry, three: list[str]) -> None:
    a, b, c = three
    reg.promote(a, decision={"reason": "first"})
    reg.promote(b, decision={"reason": "better"})
    shown = reg.show(a)
    assert shown["version"] == a
    assert shown["status"] == "retired"
    assert shown["path"] == str(reg.path_of(a))
    assert shown["metadata"]["threshold"]["method"] == "quantile"
    assert shown["metadata"]["weights_sha256"] == sha256_file(reg.path_of(a) / WEIGHTS_FILE)
    assert shown["report"] == _report(1)
    assert [d["decision"]["reason"] for d in shown["decisions"]] == ["first", "better"]
    assert reg.show(c)["decisions"] == []
    assert reg.show(c)["status"] == "candidate"
    json.dumps(shown)  # all JSON


# -- reject / hold -------------------------------------------------------------------------

FAILED = {
    "reason": "retrain: gate failed: false alarms 3% > 2 x target 0.5%",
    "gate": {"far": 0.03},
}


def test_reject_and_hold_are_logged_but_leave_the_champion_pointer_alone(
    reg: Registry, three: list[str]
) -> None:
    a, b, c = three
    reg.promote(a, decision={"reason": "first"})
    pointer = reg.root / CHAMPION_FILE
    before = (pointer.read_bytes(), os.stat(pointer).st_ino)
    reg.reject(b, decision=FAILED)
    reg.hold(c, decision={"reason": "retrain: gate passed; promotion is off"})
    assert (pointer.read_bytes(), os.stat(pointer).st_ino) == before  # not even replaced
    assert reg.champion() == a
    assert not list(reg.root.glob(".tmp-*"))

    log = [json.loads(line) for line in (reg.root / DECISIONS_FILE).read_text().splitlines()]
    assert log == reg.decisions()
    assert [(r["seq"], r["action"], r["version"]) for r in log] == [
        (1, "promote", a),
        (2, "reject", b),
        (3, "hold", c),
    ]
    assert log[1]["champion"] == a and "previous" not in log[1]
    assert log[1]["decision"] == FAILED

    infos = {i.version: i for i in reg.versions()}
    assert [infos[v].status for v in three] == ["champion", "rejected", "held"]
    assert infos[a].status_reason is None
    assert infos[b].status_reason == FAILED["reason"]
    assert infos[c].to_dict()["status_reason"] == "retrain: gate passed; promotion is off"

    shown = reg.show(b)
    assert shown["status"] == "rejected" and shown["status_reason"] == FAILED["reason"]
    assert [d["action"] for d in shown["decisions"]] == ["reject"]
    # the champion's decisions are its own, not the verdicts given while it served
    assert [d["action"] for d in reg.show(a)["decisions"]] == ["promote"]


def test_reject_without_a_champion_creates_no_pointer(reg: Registry, three: list[str]) -> None:
    reg.reject(three[0], decision=FAILED)
    assert not (reg.root / CHAMPION_FILE).exists()
    assert reg.champion() is None
    [rec] = reg.decisions()
    assert rec["champion"] is None and rec["action"] == "reject"
    assert [i.status for i in reg.versions()] == ["rejected", "candidate", "candidate"]


def test_rejects_and_holds_do_not_change_the_champion_history(
    reg: Registry, three: list[str]
) -> None:
    a, b, c = three
    reg.promote(a, decision={})
    reg.reject(c, decision=FAILED)
    reg.promote(b, decision={})
    reg.hold(c, decision={"reason": "held"})
    reg.reject(c, decision=FAILED)
    assert reg.champion() == b
    assert registry_mod._champion_stack(reg.decisions()) == [a, b]
    assert reg.rollback() == a  # not c: it was never champion
    with pytest.raises(ArtifactError, match="only one champion"):
        reg.rollback()
    assert [i.status for i in reg.versions()] == ["champion", "retired", "rejected"]
    # the latest verdict counts; a promotion overrides it
    reg.hold(c, decision={"reason": "reviewed"})
    assert reg.versions()[2].status == "held"
    reg.promote(c, decision={"reason": "operator override"})
    assert [i.status for i in reg.versions()] == ["retired", "retired", "champion"]
    assert reg.versions()[2].status_reason is None
    assert reg.rollback() == a


def test_the_champion_cannot_be_rejected(reg: Registry, three: list[str]) -> None:
    reg.promote(three[0], decision={})
    for verdict in (reg.reject, reg.hold):
        with pytest.raises(ConfigError, match="is the champion"):
            verdict(three[0], decision=FAILED)
    with pytest.raises(ArtifactError, match="is not registered"):
        reg.reject("20990101T000000Z-deadbeef", decision=FAILED)
    assert len(reg.decisions()) == 1


def test_a_reject_that_cannot_be_written_changes_nothing(
    reg: Registry, three: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.promote(three[0], decision={})
    log_path = reg.root / DECISIONS_FILE
    before = log_path.read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        with pytest.raises(ArtifactError, match=r"cannot append to .*nothing was changed"):
            reg.reject(three[1], decision=FAILED)
    assert log_path.read_bytes() == before
    assert reg.champion() == three[0]


def test_a_reject_completes_a_promotion_a_crash_interrupted(
    reg: Registry, three: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = three
    reg.promote(a, decision={})
    with monkeypatch.context() as m:
        m.setattr(Registry, "_replace_pointer", lambda self, tmp: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            reg.promote(b, decision={})
    assert reg.champion() == a
    reg.reject(c, decision=FAILED)  # any writer rolls forward first
    assert reg.champion() == b
    assert reg.decisions()[-1]["champion"] == b


def test_torn_reject_line_is_ignored_then_dropped(reg: Registry, three: list[str]) -> None:
    reg.promote(three[0], decision={})
    reg.reject(three[1], decision=FAILED)
    with (reg.root / DECISIONS_FILE).open("ab") as fh:
        fh.write(b'{"seq": 3, "action": "reje')
    assert [d["action"] for d in reg.decisions()] == ["promote", "reject"]
    reg.reject(three[2], decision=FAILED)
    assert [(d["seq"], d["action"]) for d in reg.decisions()] == [
        (1, "promote"),
        (2, "reject"),
        (3, "reject"),
    ]
    assert reg.champion() == three[0]


def test_a_log_written_before_rejects_existed_is_read_as_before(
    reg: Registry, three: list[str]
) -> None:
    a, b, _ = three
    old = [
        {
            "seq": 1,
            "at": "2026-01-01T12:00:00.000+00:00",
            "action": "promote",
            "version": a,
            "previous": None,
            "decision": {"reason": "first"},
        },
        {
            "seq": 2,
            "at": "2026-01-01T12:01:00.000+00:00",
            "action": "promote",
            "version": b,
            "previous": a,
            "decision": {},
        },
    ]
    (reg.root / DECISIONS_FILE).write_text(
        "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in old)
    )
    (reg.root / CHAMPION_FILE).write_text(f"{b}\n")
    assert reg.decisions() == old
    assert [i.status for i in reg.versions()] == ["retired", "champion", "candidate"]
    assert [d["seq"] for d in reg.show(a)["decisions"]] == [1, 2]
    assert reg.rollback() == a


def test_unknown_log_action_is_refused(reg: Registry, three: list[str]) -> None:
    reg.promote(three[0], decision={})
    with (reg.root / DECISIONS_FILE).open("ab") as fh:
        fh.write(json.dumps({"seq": 2, "action": "veto", "version": three[1]}).encode() + b"\n")
    with pytest.raises(ArtifactError, match=r"line 2 is not a decision record .*reject/hold"):
        reg.decisions()


# -- crash safety --------------------------------------------------------------------------


def _visible(reg: Registry) -> list[str]:
    return sorted(p.name for p in (reg.root / "versions").iterdir())


def test_crash_mid_register_leaves_nothing_visible(
    reg: Registry, three: list[str], staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.promote(three[0], decision={})
    before = (_visible(reg), reg.champion(), reg.decisions())
    written: list[Path] = []

    def crash(tmp: Path, final: Path) -> None:
        written.extend(sorted(tmp.iterdir()))  # the temporary copy is complete...
        raise RuntimeError("simulated crash")  # ...but is never published

    monkeypatch.setattr(registry_mod, "_publish", crash)
    src = make_artifact(staging, 4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        reg.register(src, report={})
    assert [p.name for p in written] == sorted([METADATA_FILE, REPORT_FILE, WEIGHTS_FILE])
    assert (_visible(reg), reg.champion(), reg.decisions()) == before
    assert [v.version for v in reg.versions()] == three
    assert (src / WEIGHTS_FILE).is_file()


def test_crash_mid_register_with_move_puts_the_source_back(
    reg: Registry, staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_mod, "_publish", lambda tmp, final: 1 / 0)
    src = make_artifact(staging, 4)
    with pytest.raises(ZeroDivisionError):
        reg.register(src, report={"x": 1}, move=True)
    assert sorted(p.name for p in src.iterdir()) == sorted([METADATA_FILE, WEIGHTS_FILE])
    assert _visible(reg) == []


def test_leftovers_of_a_killed_writer_are_invisible_and_swept(
    reg: Registry, three: list[str], staging: Path
) -> None:
    leftover = reg.root / "versions" / ".tmp-20260101T000000Z-00000000-abc"
    leftover.mkdir()
    (leftover / METADATA_FILE).write_text("{")
    (reg.root / ".tmp-CHAMPION-xyz").write_text(three[2])
    assert [v.version for v in reg.versions()] == three
    assert reg.champion() is None
    reg.register(make_artifact(staging, 4), report={})  # any writer cleans up
    assert not leftover.exists()
    assert not (reg.root / ".tmp-CHAMPION-xyz").exists()


def test_crash_between_log_and_pointer_is_completed_by_the_next_writer(
    reg: Registry, three: list[str], staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = three
    reg.promote(a, decision={})

    def crash(self: Registry, tmp: Path) -> None:
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(Registry, "_replace_pointer", crash)
        with pytest.raises(RuntimeError):
            reg.promote(b, decision={"reason": "committed"})
    assert reg.champion() == a  # readers still see the old, complete pointer
    assert reg.decisions()[-1]["version"] == b  # the decision was committed
    reg.register(make_artifact(staging, 4), report={})  # the next writer rolls forward
    assert reg.champion() == b


def test_failure_before_the_commit_changes_nothing(
    reg: Registry, three: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.promote(three[0], decision={})

    def fail(self: Registry, version: str) -> Path:
        raise ArtifactError("disk full")

    monkeypatch.setattr(Registry, "_prepare_pointer", fail)
    with pytest.raises(ArtifactError, match="disk full"):
        reg.promote(three[1], decision={})
    assert reg.champion() == three[0]
    assert len(reg.decisions()) == 1


def test_torn_last_log_line_is_ignored_then_dropped(reg: Registry, three: list[str]) -> None:
    reg.promote(three[0], decision={})
    with (reg.root / DECISIONS_FILE).open("ab") as fh:
        fh.write(b'{"seq": 2, "action": "prom')
    assert len(reg.decisions()) == 1
    reg.promote(three[1], decision={})
    assert [d["seq"] for d in reg.decisions()] == [1, 2]
    assert reg.champion() == three[1]


def test_corrupted_log_line_names_the_file_and_line(reg: Registry, three: list[str]) -> None:
    reg.promote(three[0], decision={})
    with (reg.root / DECISIONS_FILE).open("ab") as fh:
        fh.write(b"not json\n")
    with pytest.raises(ArtifactError, match=r"decisions\.jsonl line 2 is not valid JSON"):
        reg.decisions()


# -- concurrency ---------------------------------------------------------------------------


def test_reader_never_sees_a_missing_or_half_written_champion(
    reg: Registry, three: list[str]
) -> None:
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def read() -> None:
        reader = Registry(reg.root)
        try:
            while not stop.is_set():
                name = reader.champion()
                if name is None:
                    continue
                path = reader.path_of(name)
                meta = ArtifactMetadata.model_validate_json((path / METADATA_FILE).read_text())
                assert meta.version == name
                assert sha256_file(path / WEIGHTS_FILE) == meta.weights_sha256
                seen.add(name)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(30):
            reg.promote(three[i % 3], decision={"i": i})
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert seen <= set(three)
    assert len(seen) >= 2


def test_concurrent_writers_are_serialised(reg: Registry, three: list[str]) -> None:
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        writer = Registry(reg.root)  # its own lock file descriptor
        for i in range(8):
            try:
                writer.promote(three[(i + offset) % 3], decision={"writer": offset})
            except ConfigError:
                pass  # "already the champion": the other writer got there first
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    log = reg.decisions()
    assert [d["seq"] for d in log] == list(range(1, len(log) + 1))
    # each record's "previous" is the record before's version: no lost update
    assert all(cur["previous"] == prev["version"] for prev, cur in itertools.pairwise(log))
    assert reg.champion() == log[-1]["version"]


def test_writer_gives_up_when_the_lock_is_held(reg: Registry, three: list[str]) -> None:
    with (reg.root / LOCK_FILE).open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ArtifactError, match="locked by another writer"):
            Registry(reg.root, lock_timeout=0.05).promote(three[0], decision={})
    assert reg.champion() is None


def test_register_keeps_the_versions_exports(reg: Registry, staging: Path) -> None:
    from stream_ae.model.export import export_model
    from stream_ae.model.runtimes import load_runtime_scorer

    src = make_artifact(staging, seed=5)
    export_model(src, "torchscript")
    version = reg.register(src, report=_report(5))
    dst = reg.path_of(version)
    assert (dst / "exports.json").is_file() and (dst / "model.torchscript.pt").is_file()
    # the copy still verifies (hash and scores) when a scorer loads it
    scorer = load_runtime_scorer(dst, "torchscript", "cpu")
    assert scorer is not None
