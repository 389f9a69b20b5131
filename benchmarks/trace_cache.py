"""What a cached `kf.grad`/`kf.diff` call costs beyond running its plan.

    python benchmarks/trace_cache.py [--calls 5000] [--repeat 5]

For the seed's LinReg step written four ways (weights as a list of arrays with
`kf.grad`; Params passed to `kf.diff`; a closure over Params re-created at every
call; a model object), prints the median microseconds per cached call, the
part spent walking what the function reads (`capture`: the cache key and the
values to feed), and the plan's own run: the rest is the front end's overhead.
"""

from __future__ import annotations

import argparse

import numpy as np
from trace_cache_compat import per_call as _per_call  # the script's folder is on sys.path

import knetflow as kf
from knetflow.graph.capture import capture
from knetflow.train.knet import trace_cache


def predict(w, x):
    return w[0] @ x + w[1]


def loss(w, x, y):
    return kf.mean((predict(w, x) - y) ** 2)


class Model:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def __call__(self, x, y):
        return kf.mean((self.W @ x + self.b - y) ** 2)


def cases():
    """(name, one cached call, (f, args) of the kf.diff it makes, or None)."""
    rs = np.random.RandomState(0)
    x, y = rs.randn(13, 506), rs.randn(1, 506)
    arrays = [0.1 * rs.randn(1, 13), 0.0]
    W, b = kf.Param(0.1 * rs.randn(1, 13)), kf.Param(np.zeros((1, 1)))
    model = Model(W, b)
    lossgradient = kf.grad(loss)
    return [
        ("kf.grad(loss)([W, b], x, y), plain arrays", lambda: lossgradient(arrays, x, y), None),
        ("kf.diff(loss, [W, b], x, y), Params", lambda: kf.diff(loss, [W, b], x, y),
         (loss, ([W, b], x, y))),
        ("kf.diff(lambda: loss([W, b], x, y)), a new closure per call",
         lambda: kf.diff(lambda: loss([W, b], x, y)), None),
        ("kf.diff(model, x, y), a model object", lambda: kf.diff(model, x, y), (model, (x, y))),
    ]


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'cached call':62s} {'us/call':>8s} {'find':>8s} {'walk':>8s} {'plan.run':>8s} "
          f"{'rest':>6s}")
    for name, call, traced in cases():
        total = _per_call(call, args.calls, args.repeat)
        found = walk = run = float("nan")
        if traced is not None:
            f, fargs = traced
            cap = capture(f, fargs, {})
            entry, _ = trace_cache.lookup(f, fargs, {}, cap)
            inputs = entry.inputs(cap.leaves, cap)
            found = _per_call(lambda: trace_cache.find(f, fargs, {}), args.calls, args.repeat)
            walk = _per_call(lambda: capture(f, fargs, {}), args.calls, args.repeat)
            run = _per_call(lambda: entry.plan.run_inputs(inputs), args.calls, args.repeat)
        rows.append((name, total, found, run))
        print(f"{name:62s} {total:8.1f} {found:8.1f} {walk:8.1f} {run:8.1f} "
              f"{total - found - run:6.1f}")
    return rows


if __name__ == "__main__":
    main()
