"""Cached kf.grad/kf.diff calls through the public API only, so that two commits can
be timed side by side (`PYTHONPATH=<other checkout> python benchmarks/trace_cache_compat.py`).

    python benchmarks/trace_cache_compat.py [--calls 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import knetflow as kf


def predict(w, b, x):
    return w @ x + b


def loss(w, b, x, y):
    return kf.mean((predict(w, b, x) - y) ** 2)


def per_call(fn, calls, repeat) -> float:
    """Median microseconds per call of fn() over `repeat` rounds of `calls` calls."""
    fn()
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(rounds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rs = np.random.RandomState(0)
    x, y = rs.randn(13, 506), rs.randn(1, 506)
    W, b = kf.Param(0.1 * rs.randn(1, 13)), kf.Param(np.zeros((1, 1)))
    w0 = 0.1 * rs.randn(1, 13)
    g = kf.grad(loss)
    forms = [("kf.grad(loss)(W, b, x, y), arrays", lambda: g(w0, b.value, x, y)),
             ("kf.diff(lambda: loss(W, b, x, y))", lambda: kf.diff(lambda: loss(W, b, x, y))),
             ("kf.diff(loss, W, b, x, y), Params", lambda: kf.diff(loss, W, b, x, y))]
    for name, fn in forms:
        print(f"{name:40s} {per_call(fn, args.calls, args.repeat):7.1f} us/call")


if __name__ == "__main__":
    main()
