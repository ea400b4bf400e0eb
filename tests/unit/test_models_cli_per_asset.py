"""`stream-ae models show` with per-asset thresholds: count, the furthest from the fleet, --json."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from tiny_models import tiny_artifact
from typer.testing import CliRunner

from stream_ae.cli import models_cmd
from stream_ae.decide.threshold import AssetThreshold, AssetThresholds, ThresholdSpec
from stream_ae.registry import Registry

runner = CliRunner()
FLEET = ThresholdSpec("quantile", {"q": 0.995, "n_scores": 90_000}, 1.0)


def _register(tmp_path: Path, thresholds: AssetThresholds) -> tuple[Path, str]:
    path = tiny_artifact(tmp_path / "art", threshold=FLEET, threshold_section=thresholds.to_dict())
    root = tmp_path / "reg"
    return root, Registry(root).register(path, report={})


def _app() -> typer.Typer:
    app = typer.Typer()
    models_cmd.register(app)
    return app


def test_show_lists_the_assets_furthest_from_the_fleet_and_json_has_them_all(
    tmp_path: Path,
) -> None:
    own = {
        f"pump-{i:02d}": AssetThreshold(1.0 + 0.01 * i, 1000 + i, {"q": 0.995}) for i in range(23)
    }
    own["pump-90"] = AssetThreshold(0.1, 4000, {"q": 0.995})  # 10x below the fleet
    own["pump-95"] = AssetThreshold(5.0, 3000, {"q": 0.995})  # 5x above
    assert len(own) == models_cmd.SHOW_PER_ASSET + 5
    root, version = _register(tmp_path, AssetThresholds(FLEET, own, 1000))

    res = runner.invoke(_app(), ["models", "show", version, "--registry", str(root)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert (
        "per-asset thresholds: 25 assets have their own (at least 1000 calibration windows)" in out
    )
    assert out.index("pump-90") < out.index("pump-95") < out.index("pump-22")
    assert "pump-00" not in out and "pump-04" not in out  # the 5 closest to the fleet value
    assert "5 more in `stream-ae models show" in out
    row = next(line for line in out.splitlines() if "pump-95" in line).split()
    assert row == ["pump-95", "5", "5", "3000"]

    res = runner.invoke(_app(), ["models", "show", version, "--registry", str(root), "--json"])
    assert res.exit_code == 0, res.output
    thr = json.loads(res.stdout)["metadata"]["threshold"]
    assert thr["value"] == 1.0 and thr["per_asset_min_windows"] == 1000
    assert len(thr["per_asset"]) == 25
    assert thr["per_asset"]["pump-90"] == {"value": 0.1, "n": 4000, "params": {"q": 0.995}}


def test_show_says_when_per_asset_calibration_gave_no_asset_its_own(tmp_path: Path) -> None:
    root, version = _register(tmp_path, AssetThresholds(FLEET, {}, 1000))
    res = runner.invoke(_app(), ["models", "show", version, "--registry", str(root)])
    assert res.exit_code == 0, res.output
    assert "per-asset thresholds: 0 assets have their own" in res.stdout


def test_show_without_per_asset_thresholds_prints_no_such_line(tmp_path: Path) -> None:
    root, version = _register(tmp_path, AssetThresholds(FLEET))
    res = runner.invoke(_app(), ["models", "show", version, "--registry", str(root)])
    assert res.exit_code == 0, res.output
    assert "per-asset" not in res.stdout
