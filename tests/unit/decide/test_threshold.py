"""Quantile threshold calibration and ThresholdSpec serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_ae.decide.threshold import ThresholdSpec, calibrate_quantile
from stream_ae.errors import ArtifactError, ConfigError, DataError


def test_quantile_value_and_params() -> None:
    scores = np.arange(1001, dtype=np.float32)  # 0..1000
    spec = calibrate_quantile(scores, 0.99)
    assert spec.method == "quantile"
    assert spec.value == pytest.approx(990.0)
    assert spec.params == {"q": 0.99, "n_scores": 1001}


def test_about_one_minus_q_of_normal_scores_exceed() -> None:
    scores = np.random.default_rng(0).exponential(size=20_000)
    spec = calibrate_quantile(scores, 0.995)
    assert spec.exceeded(scores).mean() == pytest.approx(0.005, abs=1e-3)


def test_exceeded_is_strict_and_nan_never_exceeds() -> None:
    spec = ThresholdSpec(method="quantile", params={"q": 0.5}, value=1.0)
    assert spec.exceeded(np.array([0.5, 1.0, 1.5, np.nan])).tolist() == [
        False,
        False,
        True,
        False,
    ]


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_q_out_of_range(q: float) -> None:
    with pytest.raises(ConfigError, match="quantile"):
        calibrate_quantile(np.ones(10), q)


def test_empty_scores() -> None:
    with pytest.raises(DataError, match="0 scores"):
        calibrate_quantile(np.array([]), 0.9)


def test_non_finite_scores() -> None:
    with pytest.raises(DataError, match="2 of 4 scores"):
        calibrate_quantile(np.array([1.0, np.nan, np.inf, 2.0]), 0.9)


def test_dict_round_trip_through_json() -> None:
    spec = calibrate_quantile(np.linspace(0, 1, 50), 0.9)
    again = ThresholdSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"params": {}, "value": 1.0}, "threshold.method"),
        ({"method": "quantile", "params": {"q": "x"}, "value": 1.0}, "threshold.params"),
        ({"method": "quantile", "params": {}, "value": None}, "threshold.value"),
        ({"method": "quantile", "params": {}, "value": float("inf")}, "threshold.value"),
    ],
)
def test_from_dict_names_bad_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ArtifactError, match=field):
        ThresholdSpec.from_dict(data)
