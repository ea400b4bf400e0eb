"""The trainer's exclusion of windows its champion alarms on (no broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tiny_models import tiny_artifact

from stream_ae.decide.threshold import AssetThreshold, AssetThresholds, ThresholdSpec
from stream_ae.model.artifact import load_artifact
from stream_ae.settings import load_settings
from stream_ae.windowing import WindowBatch
from trainers.service import TrainerService

#: pump-a's own threshold is 0 (every window alarms); the fleet's is out of reach
THRESHOLDS = AssetThresholds(
    ThresholdSpec("quantile", {"q": 0.995, "n_scores": 5000}, 1e9),
    {"pump-a": AssetThreshold(0.0, 2000, {"q": 0.995, "n_scores": 2000})},
    1000,
)


def _windows() -> WindowBatch:
    n = 4
    rng = np.random.default_rng(0)
    return WindowBatch(
        ["pump-a", "pump-b", "pump-a", "pump-b"],
        np.zeros(n, np.int64),
        np.arange(n, dtype=np.int64) * 1600,
        np.arange(n, dtype=np.int64) * 1600 + 1600,
        rng.normal(0, 1, (n, 2, 16)).astype(np.float32),
    )


def _excluded(
    tmp_path: Path, channels: list[str], thresholds: AssetThresholds = THRESHOLDS
) -> tuple[list[bool], int]:
    path = tiny_artifact(
        tmp_path / "art",
        threshold=thresholds.fleet,
        threshold_section=thresholds.to_dict(),
    )
    champion = load_artifact(path, device="cpu")
    service = TrainerService(load_settings(flags={"trainer": {"registry": tmp_path / "reg"}}))
    exclude = service._excluder([], [], 10_000, champion, channels)
    ex = exclude(_windows())
    return ex.mask.tolist(), ex.reasons["champion_alarm"]


def test_the_champion_judges_each_asset_by_its_own_threshold(tmp_path: Path) -> None:
    mask, alarms = _excluded(tmp_path, ["temp", "vibration"])
    assert mask == [True, False, True, False] and alarms == 2


def test_a_champion_of_other_channels_with_the_same_count_is_not_asked(tmp_path: Path) -> None:
    always = AssetThresholds(ThresholdSpec("quantile", {"q": 0.5, "n_scores": 10}, 0.0))
    assert _excluded(tmp_path / "same", ["temp", "vibration"], always)[1] == 4
    mask, alarms = _excluded(tmp_path / "other", ["pressure", "flow"], always)
    assert mask == [False] * 4 and alarms == 0


def test_the_shared_excluder_of_the_retrain_command_is_the_services(tmp_path: Path) -> None:
    """trainers.exclusions.champion_excluder (``stream-ae retrain --from/--to``) leaves
    out what TrainerService._excluder (``trainer run``) leaves out."""
    from trainers.exclusions import champion_excluder

    path = tiny_artifact(
        tmp_path / "art", threshold=THRESHOLDS.fleet, threshold_section=THRESHOLDS.to_dict()
    )
    champion = load_artifact(path, device="cpu")
    ex = champion_excluder(
        [], [], open_end_ms=10_000, champion=champion, channels=["temp", "vibration"]
    )(_windows())
    mask, alarms = _excluded(tmp_path / "svc", ["temp", "vibration"])
    assert ex.mask.tolist() == mask == [True, False, True, False]
    assert ex.reasons["champion_alarm"] == alarms and ex.drift is not None
