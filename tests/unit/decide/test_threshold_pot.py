"""Peaks-over-threshold calibration: GPD fit accuracy, exceedance rates, errors, serialisation.

Distributions with a known tail: exponential (excesses over any u are exponential,
xi = 0, sigma unchanged), Lomax / Pareto II (numpy's ``pareto(a)``: GPD with
xi = sigma = 1/a, so excesses over u are GPD(xi, sigma + xi*u)), a bounded GPD
(xi = -0.2) and a gamma (in the xi = 0 domain of attraction but not GPD itself,
like real reconstruction errors). Rates are checked on a FRESH sample drawn
with another seed, so the threshold is not judged on the data it was fitted to.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest

from stream_ae.decide.threshold import (
    ThresholdSpec,
    calibrate_pot,
    calibrate_quantile,
    fit_gpd,
    rate_per_window_from_daily,
)
from stream_ae.errors import ConfigError, DataError

N_FIT = 100_000
N_FRESH = 2_000_000
Sampler = Callable[[np.random.Generator, int], np.ndarray]


def _gpd(rng: np.random.Generator, xi: float, sigma: float, n: int) -> np.ndarray:
    """Inverse-CDF GPD sample."""
    u = 1.0 - rng.random(n)  # (0, 1]
    return sigma / xi * (u ** (-xi) - 1.0)


# name -> (sampler, xi, sigma_of_excess(u)); None: no exact GPD tail (only the rate is checked)
DISTS: dict[str, tuple[Sampler, float | None, Callable[[float], float] | None]] = {
    "exponential": (lambda r, n: r.exponential(2.0, n), 0.0, lambda u: 2.0),
    "lomax_a4": (lambda r, n: r.pareto(4.0, n), 0.25, lambda u: 0.25 + 0.25 * u),
    "gpd_bounded": (lambda r, n: _gpd(r, -0.2, 1.0, n), -0.2, lambda u: 1.0 - 0.2 * u),
    "gamma3": (lambda r, n: r.gamma(3.0, 1.0, n), None, None),
}


@cache
def _sample(name: str, seed: int, n: int) -> np.ndarray:
    sampler = DISTS[name][0]
    out = sampler(np.random.default_rng(seed), n)
    out.setflags(write=False)
    return out


@cache
def _pot(name: str, target_rate: float) -> ThresholdSpec:
    return calibrate_pot(_sample(name, 0, N_FIT), target_rate=target_rate)


@pytest.mark.parametrize("name", ["exponential", "lomax_a4", "gpd_bounded"])
def test_fitted_shape_and_scale_match_the_truth(name: str) -> None:
    _, xi, sigma_at = DISTS[name]
    assert xi is not None and sigma_at is not None
    spec = _pot(name, 1e-3)
    # ~10,000 excesses: the standard error of xi is ~(1 + xi)/100 ~ 0.0125
    assert spec.params["xi"] == pytest.approx(xi, abs=0.05)
    assert spec.params["sigma"] == pytest.approx(sigma_at(spec.params["u"]), rel=0.06)


@pytest.mark.parametrize("target_rate", [1e-3, 1e-4])
@pytest.mark.parametrize("name", sorted(DISTS))
def test_fresh_sample_exceedance_rate_is_within_2x_of_target(name: str, target_rate: float) -> None:
    spec = _pot(name, target_rate)
    fresh = _sample(name, 12345, N_FRESH)  # expected 2,000 resp. 200 exceedances
    rate = float(spec.exceeded(fresh).mean())
    assert 0.5 * target_rate <= rate <= 2.0 * target_rate, (spec, rate)


@pytest.mark.parametrize("name", sorted(DISTS))
def test_agrees_with_the_quantile_method_where_both_apply(name: str) -> None:
    """At 1e-3 of 100,000 scores (100 beyond), both methods are sound and must agree."""
    scores = _sample(name, 0, N_FIT)
    pot = _pot(name, 1e-3)
    quantile = calibrate_quantile(scores, 1.0 - 1e-3)
    # in-sample count beyond the POT threshold: 100 expected, Poisson sd 10
    assert abs(int(pot.exceeded(scores).sum()) - 100) <= 35
    tol = 0.08 if name == "lomax_a4" else 0.04  # heavy tail: the empirical quantile is noisier
    assert pot.value == pytest.approx(quantile.value, rel=tol)


def test_spec_records_method_and_params() -> None:
    scores = _sample("exponential", 0, N_FIT)
    spec = _pot("exponential", 1e-4)
    assert spec.method == "pot"
    assert set(spec.params) == {"target_rate", "tail_fraction", "u", "xi", "sigma", "n_tail", "n"}
    assert spec.params["target_rate"] == 1e-4
    assert spec.params["tail_fraction"] == 0.1
    assert spec.params["n"] == N_FIT
    assert spec.params["n_tail"] == int((scores > spec.params["u"]).sum())
    assert spec.params["n_tail"] == pytest.approx(0.1 * N_FIT, abs=2)
    assert spec.params["u"] == pytest.approx(float(np.quantile(scores, 0.9)))
    assert spec.value > spec.params["u"]
    # the closed form, recomputed here from the recorded numbers
    p = spec.params
    ratio = p["target_rate"] * p["n"] / p["n_tail"]
    expected = p["u"] + p["sigma"] / p["xi"] * (ratio ** (-p["xi"]) - 1.0)
    assert spec.value == pytest.approx(expected, rel=1e-9)


def test_lower_target_rate_gives_higher_threshold() -> None:
    values = [_pot("gamma3", r).value for r in (1e-3, 1e-4)]
    values.append(calibrate_pot(_sample("gamma3", 0, N_FIT), target_rate=1e-6).value)
    assert values == sorted(values)


def test_round_trip_through_json() -> None:
    spec = _pot("lomax_a4", 1e-4)
    again = ThresholdSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_deterministic() -> None:
    scores = _sample("gamma3", 0, N_FIT)
    assert calibrate_pot(scores, target_rate=1e-4) == calibrate_pot(scores, target_rate=1e-4)


# -- the GPD fit itself --------------------------------------------------------------------


def _profile_loglik(theta: float, y: np.ndarray) -> float:
    if theta == 0.0:
        return -y.size * math.log(y.mean()) - y.size
    xi = float(np.mean(np.log1p(theta * y)))
    return -y.size * math.log(xi / theta) - y.size * (1.0 + xi)


@pytest.mark.parametrize("xi", [-0.3, 0.0, 0.5, 1.5])
def test_fit_is_the_global_likelihood_maximum_on_small_samples(xi: float) -> None:
    rng = np.random.default_rng(7)
    y = rng.exponential(1.0, 40) if xi == 0.0 else _gpd(rng, xi, 1.0, 40)
    fit = fit_gpd(y)
    thetas = np.concatenate(
        [-np.logspace(-6, 0, 2000)[:-1] / y.max(), np.logspace(-6, 6, 2000) / y.mean()]
    )
    brute = []
    for t in thetas:
        shape = float(np.mean(np.log1p(t * y)))
        if shape > -1.0:  # the region where a regular MLE exists
            brute.append(_profile_loglik(float(t), y))
    assert fit.loglik >= max(brute) - 1e-6
    assert fit.loglik == pytest.approx(
        -y.size * math.log(fit.sigma)
        - (1 + 1 / fit.xi) * float(np.sum(np.log1p(fit.xi * y / fit.sigma)))
        if fit.xi != 0.0
        else _profile_loglik(0.0, y),
        rel=1e-9,
    )


def test_fit_of_equal_excesses_is_exponential() -> None:
    fit = fit_gpd(np.full(30, 0.5))
    assert fit.xi == 0.0
    assert fit.sigma == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [[1.0, 2.0], [1.0, 0.0, 2.0], [1.0, -1.0, 2.0], [1.0, np.nan, 2.0]])
def test_fit_rejects_bad_excesses(bad: list[float]) -> None:
    with pytest.raises(DataError, match="positive excesses"):
        fit_gpd(np.array(bad))


# -- errors ------------------------------------------------------------------------------


def test_too_few_tail_points_says_found_needed_and_suggests_quantile() -> None:
    scores = np.random.default_rng(0).exponential(size=100)
    with pytest.raises(DataError, match=r"at least 20 .* found 10 of 100") as info:
        calibrate_pot(scores, target_rate=1e-3)
    assert "calibrate_quantile" in str(info.value)


def test_target_rate_not_below_tail_rate() -> None:
    scores = np.random.default_rng(0).exponential(size=1000)
    with pytest.raises(ConfigError, match="not below the tail rate") as info:
        calibrate_pot(scores, target_rate=0.2, tail_fraction=0.1)
    assert "q=0.8" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_rate": 0.0}, "target_rate"),
        ({"target_rate": 1.0}, "target_rate"),
        ({"target_rate": float("nan")}, "target_rate"),
        ({"target_rate": 1e-3, "tail_fraction": 0.0}, "tail_fraction"),
        ({"target_rate": 1e-3, "tail_fraction": True}, "tail_fraction"),
        ({"target_rate": 1e-3, "min_tail": 2}, "min_tail"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        calibrate_pot(np.ones(1000), **kwargs)  # type: ignore[arg-type]


def test_non_finite_scores() -> None:
    scores = np.append(np.random.default_rng(0).exponential(size=1000), [np.inf, np.nan])
    with pytest.raises(DataError, match="2 of 1002 scores"):
        calibrate_pot(scores, target_rate=1e-3)


# -- per-day budgets -----------------------------------------------------------------------


def test_rate_per_window_from_daily() -> None:
    # one window per minute per asset: 1,440 a day
    assert rate_per_window_from_daily(1.0, 60_000) == pytest.approx(1 / 1440)
    assert rate_per_window_from_daily(0.1, 5_000) == pytest.approx(0.1 * 5_000 / 86_400_000)


@pytest.mark.parametrize(
    ("rate", "hop_ms", "match"),
    [
        (0.0, 1000, "rate_per_day"),
        (-1.0, 1000, "rate_per_day"),
        (float("inf"), 1000, "rate_per_day"),
        (1.0, 0, "hop_ms"),
        (2000.0, 60_000, "every window"),
    ],
)
def test_rate_per_window_errors(rate: float, hop_ms: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        rate_per_window_from_daily(rate, hop_ms)
