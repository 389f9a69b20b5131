"""Hyperparameter search: Knet's `goldensection` and `hyperband`."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["GOLDEN", "goldensection", "halving", "hyperband"]

GOLDEN = (1 + math.sqrt(5)) / 2


def goldensection(f, n, dxmin=0.1, accel=GOLDEN, history=None, verbose=False) -> tuple:
    """Minimize f over n dimensions by concurrent golden-section search; returns
    (fmin, xmin) (Knet `goldensection(f, n; dxmin=0.1, accel=φ, history, verbose)`).

    f takes a float64 vector of length n and may return NaN for inputs out of
    range. The search starts at zeros(n) with step 1 in every dimension, so f
    should map that range onto meaningful values (e.g. `lr = 0.01 * exp(x[0])`).
    Each round it tries the step with the largest expected gain: a success
    accelerates that step by `accel`, a failure reverses and shrinks it; it
    stops when every step is at most `dxmin`. `history` (a list) caches
    evaluations as (x, f(x)) pairs and may be passed in to reuse them.

    Example:
        >>> import knetflow as kf
        >>> fmin, xmin = kf.goldensection(lambda x: (x[0] - 2) ** 2, 1)
        >>> bool(abs(xmin[0] - 2) < 0.2)
        True
    """
    history = [] if history is None else history

    def evaluate(x):
        for seen, fx in history:
            if np.allclose(seen, x):
                return fx
        fx = float(f(x.copy()))
        history.append((x.copy(), fx))
        return fx

    x0 = np.zeros(n)
    f0 = evaluate(x0)
    dx = np.ones(n)
    gain = np.full(n, np.inf)  # expected improvement of a step in each dimension
    while np.max(np.abs(dx)) > dxmin:
        i = int(np.argmax(gain))
        x1 = x0.copy()
        x1[i] += dx[i]
        f1 = evaluate(x1)
        if verbose:
            print(f"f0={f0} x0={x0} f1={f1} x1={x1} dx={dx} gain={gain}")
        if math.isnan(f1):
            f1 = f0 + gain[i]  # out of range: as bad as the gain was good
        if f1 < f0:
            dx[i] *= accel
            gain[i] = accel * (f0 - f1)
            x0, f0 = x1, f1
            small = np.abs(dx) < dxmin * accel
            dx[small] = np.sign(dx[small]) * dxmin * accel
            gain[small] = np.maximum(gain[small], 0)
        else:
            dx[i] = -dx[i] / accel
            gain[i] = (f1 - f0) / accel
            if abs(dx[i]) < dxmin:
                gain[i] = -1
    return f0, x0


def hyperband(getconfig, getloss, maxresource=27, reduction=3) -> tuple:
    """Hyperparameter search by Hyperband (Li et al. 2016), returning the best
    (loss, resource, config) (Knet `hyperband(getconfig, getloss, maxresource=27,
    reduction=3)`).

    `getconfig()` draws a random configuration; `getloss(config, n)` trains it with
    n resources (e.g. epochs) and returns its loss. Brackets s = smax..0 each run
    successive halving from ceil(B/R * eta^s/(s+1)) configurations at R/eta^s
    resources, keeping the best 1/eta each round.

    Example:
        >>> import knetflow as kf, random
        >>> random.seed(0)
        >>> loss, n, c = kf.hyperband(lambda: random.uniform(-1, 1), lambda c, n: c * c + 1 / n)
        >>> n == 27 and abs(c) < 0.5
        True
    """
    if reduction <= 1:
        raise ValueError(f"hyperband: reduction must be > 1, got {reduction}")
    smax = math.floor(math.log(maxresource) / math.log(reduction) + 1e-9)
    budget = (smax + 1) * maxresource
    best = (math.inf, None, None)
    for s in range(smax, -1, -1):
        n = math.ceil(budget / maxresource * reduction ** s / (s + 1))
        r = maxresource / reduction ** s
        result = halving(getconfig, getloss, n, r, reduction, s)
        if result[0] < best[0]:
            best = result
    return best


def halving(getconfig, getloss, n, r=1, reduction=3, s=None) -> tuple:
    """Successive halving: n configurations at r resources, keeping the best
    1/reduction and multiplying resources by reduction for s rounds; returns the
    best (loss, resource, config) seen."""
    if s is None:
        s = round(math.log(n) / math.log(reduction))
    best = (math.inf, None, None)
    configs = [getconfig() for _ in range(n)]
    for i in range(s + 1):
        keep = int(n // reduction ** i // reduction)
        resource = r * reduction ** i
        losses = [float(getloss(c, resource)) for c in configs]
        order = sorted(range(len(configs)), key=lambda k: (math.isnan(losses[k]), losses[k]))
        if order and losses[order[0]] < best[0]:
            best = (losses[order[0]], resource, configs[order[0]])
        configs = [configs[k] for k in order[:keep]]
    return best
