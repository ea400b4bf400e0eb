"""``stream-ae evaluate --via-kafka``: SKAB files through real topics and a running
``stream-ae score`` give the in-process backtest's windows, scores and decisions.

The command compares the two paths itself; this test also checks on its own: it
scores the files in-process here and reads the scores and anomalies topics the
run kept (``--keep-topics``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from stream_ae.evaluate.backtest import artifact_spec, score_readings_with_artifact
from stream_ae.io.kafka import Admin, read_range
from stream_ae.model.artifact import load_artifact
from stream_ae.readings_io import read_csv
from stream_ae.schemas import AnomalyEvent, ScoreRecord
from stream_ae.settings import KafkaSettings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXE = Path(sys.executable).with_name("stream-ae")
#: other/1.csv: the model (fitted on its first 400 rows) flags part of it, so decisions
#: and persistence matter; valve1/0.csv: scores around 1e4, where float tolerance does
FILES = ("other/1.csv", "valve1/0.csv")


def _evaluate(bootstrap: str, cwd: Path, *args: str) -> dict[str, Any]:
    """`stream-ae evaluate ARGS --via-kafka --flush-idle-s 3 --json` as a subprocess (the
    real command, the session broker); its exit status must be 0 (paths equal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_AE_")}
    out = subprocess.run(
        [
            *(str(EXE), "--set", f"kafka.bootstrap_servers={bootstrap}", "evaluate", *args),
            *("--via-kafka", "--flush-idle-s", "3", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def skab_model(skab_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small conv autoencoder (W=32, H=2, 4 epochs) on other/1.csv's first 400 rows,
    with persistence 2 of 3 recorded as its decision rule."""
    from stream_ae.training import train

    settings = load_settings(
        flags={
            "window": {"size": 32, "hop": 2, "sample_period_ms": 1000},
            "train": {"epochs": 4, "seed": 0},
            "model": {"device": "cpu"},
            "decide": {"persistence_k": 2, "persistence_n": 3},
        }
    )
    r = read_csv(skab_dir / "other" / "1.csv", sep=";")
    r = r.select(np.arange(len(r)) < 400)
    path, _info = train(r, settings, source="skab", out_dir=tmp_path_factory.mktemp("skab-art"))
    return path


def test_via_kafka_gives_the_in_process_windows_scores_and_decisions(
    kafka_bootstrap: str, skab_dir: Path, skab_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for f in FILES:
        shutil.copy(skab_dir / f, data / f.replace("/", "_"))
    result = _evaluate(
        kafka_bootstrap,
        tmp_path,
        *("--csv", str(data), "--model", str(skab_model), "--sep", ";", "--keep-topics"),
    )
    via = result["via_kafka"]
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    try:
        assert via["equal"] and via["metrics_equal"], json.dumps(via["files"], indent=1)
        assert via["metrics"] == {k: result[k] for k in via["metrics"]}
        assert via["dead_letters"] == 0

        loaded = load_artifact(skab_model, device="cpu")
        md = loaded.metadata
        spec = artifact_spec(md)
        assert (spec.persistence_k, spec.persistence_n) == (2, 3)
        paths = sorted(data.glob("*.csv"))
        assert [f["name"] for f in via["files"]] == [p.name for p in paths]
        for f, path in zip(via["files"], paths, strict=True):
            readings = read_csv(path, sep=";", channels=md.channels, default_asset=path.stem)
            ref = score_readings_with_artifact(path.name, readings, loaded)
            n_windows = len(ref.window_scores)
            assert n_windows > 300  # (rows - W) / H + 1
            assert f["windows_in_process"] == f["windows_via_kafka"] == n_windows
            assert f["missing"] == f["extra"] == f["decisions_differ"] == 0
            assert f["scorer_exit"] == 0 and not f["early_closes"] and not f["unclosed"]

            names = ("readings", "dlq", "anomalies", "scores", "quality")
            topics = dict(zip(names, f["topics"], strict=True))
            records = [
                msgspec.json.decode(m.value(), type=ScoreRecord)
                for batch in read_range(kafka, topics["scores"])
                for m in batch
            ]
            got = {(r.asset_id, r.window_end_ms): r.score for r in records}
            want = {
                (a, int(e)): float(s)
                for a, e, s in zip(
                    ref.window_assets, ref.window_end_ms, ref.window_scores, strict=True
                )
            }
            assert len(records) == n_windows and got.keys() == want.keys()
            keys = sorted(want)
            np.testing.assert_allclose(
                [got[k] for k in keys], [want[k] for k in keys], rtol=1e-5, atol=1e-7
            )
            assert all(r.threshold == md.threshold_spec.value for r in records)

            events = [
                msgspec.json.decode(m.value(), type=AnomalyEvent)
                for batch in read_range(kafka, topics["anomalies"])
                for m in batch
            ]
            assert len(events) == f["events"] == f["events_expected"]
            if path.name == "other_1.csv":  # some windows alarm, some do not
                assert 0 < len(events) < n_windows
                assert 0 < ref.pred.sum() < len(ref.pred)
    finally:
        Admin(kafka).delete_topics([t for f in via["files"] for t in f["topics"]])


def test_streaming_with_rebaselining_over_a_gap_is_the_same_through_the_broker(
    kafka_bootstrap: str, skab_dir: Path, tmp_path: Path
) -> None:
    """skab-streaming's first two files (other/1, and other/2 with its 247 s gap),
    plain and with warm-up re-baselining: the scorer's windows, scores and decisions
    equal the in-process ones. A gap restarts the warm-up at the first window after
    it, wherever the scorer's batches split the stream (they used to differ)."""
    result = _evaluate(
        kafka_bootstrap,
        tmp_path,
        *("--protocol", "skab-streaming", "--data", str(skab_dir), "--files", "2"),
        *("--epochs", "2"),
    )
    for variant in ("plain", "rebaseline_300s"):
        via = result[variant]["via_kafka"]
        assert via["equal"], json.dumps(via, indent=1)[:4000]
        files = [f for seed in via["seeds"] for f in seed["files"]]
        assert [f["name"] for f in files] == ["other/1.csv", "other/2.csv"]
        for f in files:
            assert f["windows_in_process"] == f["windows_via_kafka"] > 300
            assert f["missing"] == f["extra"] == f["decisions_differ"] == 0
