"""`stream-ae models` list/show/promote/rollback, on a fresh Typer app with the sub-app."""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from tiny_models import T0, tiny_artifact
from typer.testing import CliRunner

from stream_ae.cli import models_cmd
from stream_ae.decide.threshold import ThresholdSpec
from stream_ae.errors import ArtifactError, ConfigError
from stream_ae.registry import Registry

runner = CliRunner()
POT = ThresholdSpec(
    "pot",
    {
        "target_rate": 1e-4,
        "tail_fraction": 0.1,
        "u": 1.0,
        "xi": 0.1,
        "sigma": 0.5,
        "n_tail": 500,
        "n": 5000,
    },
    3.25,
)


def _artifact(out_dir: Path, seed: int) -> Path:
    return tiny_artifact(out_dir, threshold=POT, seed=seed, created_at=T0 + timedelta(minutes=seed))


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    models_cmd.register(app)
    return app


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "reg"
    reg = Registry(root)
    versions = [
        reg.register(_artifact(tmp_path / "art", s), report={"metrics": {"f1": s / 10}})
        for s in (1, 2)
    ]
    return root, versions


def test_list_show_promote_rollback(app: typer.Typer, setup: tuple[Path, list[str]]) -> None:
    root, (a, b) = setup
    reg = ["--registry", str(root)]

    res = runner.invoke(app, ["models", "list", *reg, "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert [(v["version"], v["status"]) for v in listed] == [(a, "candidate"), (b, "candidate")]
    assert listed[0]["threshold"]["method"] == "pot"

    for v in (a, b):
        res = runner.invoke(
            app, ["models", "promote", v, "--reason", "better f1", "--no-announce", *reg]
        )
        assert res.exit_code == 0, res.output
        assert f"promoted {v}" in res.stdout
    assert Registry(root).champion() == b

    res = runner.invoke(app, ["models", "list", *reg])
    assert res.exit_code == 0, res.output
    assert "champion" in res.stdout and "retired" in res.stdout and "pot" in res.stdout

    res = runner.invoke(app, ["models", "show", b, *reg, "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["metadata"]["threshold"] == POT.to_dict()
    assert shown["report"] == {"metrics": {"f1": 0.2}}
    [decision] = shown["decisions"]  # only the promotion of b involves b
    assert decision["decision"] == {
        "reason": "better f1",
        "source": "cli",
        "metrics": {"f1": 0.2},
        "previous_metrics": {"f1": 0.1},
    }

    res = runner.invoke(app, ["models", "show", b, *reg])
    assert res.exit_code == 0, res.output
    for text in ("pot", "xi=0.1", "target_rate=0.0001", "temp, vibration", "better f1"):
        assert text in res.stdout, text

    res = runner.invoke(app, ["models", "rollback", "--reason", "alarms", "--no-announce", *reg])
    assert res.exit_code == 0, res.output
    assert f"rolled back to {a} (was {b})" in res.stdout
    assert Registry(root).decisions()[-1]["decision"] == {"reason": "alarms", "source": "cli"}


def test_errors_propagate_as_stream_ae_errors(
    app: typer.Typer, setup: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, _ = setup
    res = runner.invoke(
        app, ["models", "promote", "20990101T000000Z-00000000", "--registry", str(root)]
    )
    assert isinstance(res.exception, ArtifactError)
    assert "is not registered" in str(res.exception)

    res = runner.invoke(app, ["models", "rollback", "--registry", str(root)])
    assert isinstance(res.exception, ArtifactError)

    res = runner.invoke(app, ["models", "list", "--registry", str(tmp_path / "missing")])
    assert isinstance(res.exception, ConfigError)
    assert "does not exist" in str(res.exception)


def test_empty_registry_and_help(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["models", "list", "--registry", str(tmp_path / "empty")])
    assert res.exit_code == 0, res.output
    assert "no versions registered" in res.stdout
    res = runner.invoke(app, ["models", "--help"])
    assert res.exit_code == 0
    for command in ("list", "show", "promote", "rollback"):
        assert command in res.stdout


def test_rejected_and_held_versions_show_why(
    app: typer.Typer, setup: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, (a, b) = setup
    reg = Registry(root)
    c = reg.register(_artifact(tmp_path / "art", 3), report={"metrics": {"f1": 0.3}})
    reg.promote(a, decision={"reason": "first"})
    failed = "retrain: gate failed: false alarms 3% > 2 x target 0.5%"
    reg.reject(b, decision={"reason": failed, "gate": {"far_measured": 0.03, "passed": False}})
    reg.hold(c, decision={"reason": "retrain: gate passed; promotion is off"})
    opts = ["--registry", str(root)]

    res = runner.invoke(app, ["models", "list", *opts, "--json"])
    assert res.exit_code == 0, res.output
    listed = {v["version"]: v for v in json.loads(res.stdout)}
    assert [listed[v]["status"] for v in (a, b, c)] == ["champion", "rejected", "held"]
    assert listed[b]["status_reason"] == failed and listed[a]["status_reason"] is None

    res = runner.invoke(app, ["models", "list", *opts])
    assert res.exit_code == 0, res.output
    assert "│ rejected " in res.stdout and "│ held " in res.stdout
    assert f"{b} rejected: {failed}" in res.stdout  # the reasons, below the table
    assert f"{c} held: retrain: gate passed; promotion is off" in res.stdout

    res = runner.invoke(app, ["models", "show", b, *opts])
    assert res.exit_code == 0, res.output
    assert f"{b}  (rejected)" in res.stdout and f"  rejected: {failed}\n" in res.stdout
    assert f"reject {b} (champion {a})" in res.stdout and '"far_measured": 0.03' in res.stdout

    res = runner.invoke(app, ["models", "show", a, *opts, "--json"])
    assert [d["action"] for d in json.loads(res.stdout)["decisions"]] == ["promote"]

    res = runner.invoke(app, ["models", "promote", b, "--no-announce", *opts])
    assert res.exit_code == 0, res.output
    assert f"the gate had rejected {b} ({failed})" in res.stdout
    assert Registry(root).champion() == b


def test_a_deleted_champion_and_an_unreadable_version_are_repaired_from_the_cli(
    app: typer.Typer, setup: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Every command an operator needs still works: list shows what is wrong, promote
    repairs it, rollback says to promote."""
    root, (a, b) = setup
    reg = Registry(root)
    c = reg.register(_artifact(tmp_path / "art", 3), report={"metrics": {"f1": 0.3}})
    reg.promote(a, decision={"reason": "first"})
    shutil.rmtree(root / "versions" / a)  # the champion's folder, deleted
    meta = root / "versions" / b / "metadata.json"
    os.chmod(meta, 0o644)
    meta.write_text("{")
    opts = ["--registry", str(root)]

    res = runner.invoke(app, ["models", "list", *opts])
    assert res.exit_code == 0, res.output
    assert "│ unreadable " in res.stdout and "│ candidate " in res.stdout
    assert f"{b} unreadable: " in res.stdout and "not valid JSON" in res.stdout
    assert f"the champion {a} is not a readable version" in res.stdout
    assert f"stream-ae models promote VERSION --registry {root}" in res.stdout
    res = runner.invoke(app, ["models", "list", *opts, "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert [(v["version"], v["status"]) for v in listed] == [(b, "unreadable"), (c, "candidate")]

    res = runner.invoke(app, ["models", "rollback", "--no-announce", *opts])
    assert isinstance(res.exception, ArtifactError)
    assert "cannot roll back" in str(res.exception)
    assert f"`stream-ae models promote VERSION --registry {root}`" in str(res.exception)

    res = runner.invoke(app, ["models", "promote", c, "--no-announce", *opts])
    assert res.exit_code == 0, res.output
    assert f"promoted {c} (previous champion: {a} (missing or unreadable))" in res.stdout
    assert Registry(root).champion() == c
