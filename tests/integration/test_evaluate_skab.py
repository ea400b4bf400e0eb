"""`stream-ae evaluate` end to end on a few real SKAB files (no broker needed, but slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXE = Path(sys.executable).with_name("stream-ae")


@pytest.mark.parametrize("protocol", ["skab-published", "skab-causal", "skab-streaming"])
def test_evaluate_protocol_on_two_files(protocol: str, skab_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    out = subprocess.run(
        [
            str(EXE),
            "evaluate",
            "--protocol",
            protocol,
            "--data",
            str(skab_dir),
            "--files",
            "2",
            "--epochs",
            "3",
            "--json",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if protocol == "skab-streaming":
        # whole files (745 + 780 rows), without and with warm-up re-baselining
        assert "one model fitted on anomaly-free.csv" in result["rule"]
        for variant in ("plain", "rebaseline_300s"):
            check_counts(result[variant], 745 + 780, report / variant)
        return
    # the first two files in order, other/1.csv and other/2.csv: 745 + 780 rows, the first
    # 400 of each for training
    check_counts(result, (745 - 400) + (780 - 400), report)
    expected_note = "NOT causal" if protocol == "skab-published" else "live scorer"
    assert expected_note in result["rule"]


def check_counts(result: dict, rows: int, report: Path) -> None:
    for key in ("f1", "far", "mar", "nab_standard", "nab_low_fp", "nab_low_fn"):
        assert key in result
    assert 0.0 <= result["f1"] <= 1.0
    assert 0.0 <= result["far"] <= 100.0 and 0.0 <= result["mar"] <= 100.0
    assert result["seeds"][0]["counts"]["n"] == rows
    summary = json.loads((report / "summary.json").read_text())
    assert len(summary["files"]) == 2
    assert all((report / f["plot"]).is_file() for f in summary["files"])
