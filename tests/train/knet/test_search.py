"""goldensection and hyperband (train/knet/search.py) on simple functions."""

import math
import random

import numpy as np
import pytest

import knetflow as kf
from knetflow.train.knet.search import GOLDEN, halving


def test_goldensection_finds_the_minimum_of_a_quadratic_bowl():
    def f(x):
        return (x[0] - 3) ** 2 + 2 * (x[1] + 1.5) ** 2 + 1

    fmin, xmin = kf.goldensection(f, 2)
    assert abs(fmin - 1) < 0.05
    np.testing.assert_allclose(xmin, [3, -1.5], atol=0.2)
    assert fmin == f(xmin)


def test_goldensection_starts_at_zero_and_uses_the_history():
    history = []
    calls = []

    def f(x):
        calls.append(x.copy())
        return float(np.sum((x - 1) ** 2))

    _fmin, _xmin = kf.goldensection(f, 1, history=history)
    np.testing.assert_array_equal(calls[0], [0.0])
    assert len(history) == len(calls)  # no point evaluated twice
    n = len(calls)
    kf.goldensection(f, 1, history=history)  # the same search again: all from the cache
    assert len(calls) == n


def test_goldensection_nan_is_out_of_range_and_dxmin_ends_it():
    def f(x):
        return math.nan if x[0] > 2.5 else (x[0] - 5) ** 2  # best allowed value near 2.5

    _fmin, xmin = kf.goldensection(f, 1, dxmin=0.01)
    assert 2.3 < xmin[0] <= 2.5
    coarse = []
    kf.goldensection(lambda x: coarse.append(1) or (x[0] - 2) ** 2, 1, dxmin=0.5)
    fine = []
    kf.goldensection(lambda x: fine.append(1) or (x[0] - 2) ** 2, 1, dxmin=0.01)
    assert len(coarse) < len(fine)
    assert GOLDEN == pytest.approx(1.618033988749895)


def test_goldensection_verbose(capsys):
    kf.goldensection(lambda x: x[0] ** 2, 1, verbose=True)
    assert "f0=" in capsys.readouterr().out


def test_hyperband_budget_and_best():
    random.seed(1)
    calls = []

    def getconfig():
        return random.uniform(-2, 2)

    def getloss(c, n):
        calls.append(n)
        return (c - 0.5) ** 2 + 1.0 / n

    loss, n, config = kf.hyperband(getconfig, getloss)
    # maxresource 27, reduction 3: smax 3; brackets of 27, 12, 6 and 4 configurations
    assert calls.count(1) == 27 and calls.count(27) == 1 + 1 + 2 + 4
    assert n == 27 and abs(config - 0.5) < 0.3
    assert loss == pytest.approx((config - 0.5) ** 2 + 1 / 27)


def test_halving_keeps_the_best_third():
    configs = iter([5.0, 1.0, 3.0, 0.5, 4.0, 2.0, 6.0, 7.0, 8.0])
    seen = []

    def getloss(c, n):
        seen.append((c, n))
        return c

    loss, n, config = halving(lambda: next(configs), getloss, 9, r=1, reduction=3, s=2)
    assert (loss, n, config) == (0.5, 1, 0.5)
    assert [c for c, n in seen if n == 3] == [0.5, 1.0, 2.0]
    assert [c for c, n in seen if n == 9] == [0.5]


def test_hyperband_bad_reduction():
    with pytest.raises(ValueError, match="reduction must be > 1"):
        kf.hyperband(lambda: 0, lambda c, n: 0, reduction=1)
