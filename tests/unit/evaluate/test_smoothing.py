import numpy as np
import pytest

from stream_ae.errors import ConfigError
from stream_ae.evaluate.decisions import causal_rule
from stream_ae.evaluate.smoothing import k_of_n


def test_identity_when_k_equals_n_equals_one() -> None:
    a = np.array([0, 1, 0, 1, 1], bool)
    assert k_of_n(a, 1, 1).tolist() == a.tolist()


def test_k_of_n_counts_only_past_windows() -> None:
    a = np.array([1, 0, 1, 1, 0, 0, 1, 0], bool)
    # 2 of the last 3
    assert k_of_n(a, 2, 3).astype(int).tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    # all of the last 2 (a run of 2)
    assert k_of_n(a, 2, 2).astype(int).tolist() == [0, 0, 0, 1, 0, 0, 0, 0]


def test_removes_isolated_spikes_and_is_causal() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.3
    out = k_of_n(a, 3, 5)
    for j in range(len(a)):
        # changing the future never changes window j's smoothed verdict
        b = a.copy()
        b[j + 1 :] = ~b[j + 1 :]
        assert k_of_n(b, 3, 5)[j] == out[j]
    assert out.sum() < a.sum()


def test_starts_order_is_respected_and_restored() -> None:
    starts = np.array([3, 0, 2, 1])
    a = np.array([1, 1, 1, 0], bool)  # in start order: 1, 0, 1, 1
    out = k_of_n(a, 2, 2, starts=starts)
    # start order verdicts -> [0, 0, 0, 1]; back in input order
    assert out.astype(int).tolist() == [1, 0, 0, 0]


def test_composes_with_causal_rule() -> None:
    starts = np.arange(10)
    a = np.array([0, 0, 1, 0, 1, 1, 1, 0, 0, 0], bool)
    rows = np.arange(15)
    pred = causal_rule(rows, starts, k_of_n(a, 2, 2), 3)
    # windows 5 and 6 (ending at rows 7, 8) are the only ones with 2 of 2
    assert np.flatnonzero(pred).tolist() == [7, 8]


@pytest.mark.parametrize(("k", "n"), [(0, 1), (3, 2), (True, 2)])
def test_bad_parameters(k: int, n: int) -> None:
    with pytest.raises(ConfigError):
        k_of_n(np.zeros(3, bool), k, n)
