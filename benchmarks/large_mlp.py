"""A matmul-bound training step against the machine's GEMM rate, measured in the same run.

    python benchmarks/large_mlp.py [--threads 2] [--repeat 7]

MLP 784-1024-1024-10, batch 512, one SGD step as one compiled plan
(`kf.optim.step_graph`). The roofline is the step's own matrix products (the
forward's three and the backward's five, the same shapes and dtype) run back to
back with NumPy `out=` buffers: what the step cannot go below on this BLAS. The
figure printed is that GEMM time over the step's time (the issue's target: 90%
or more).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import knetflow as kf

SIZES = (784, 1024, 1024, 10)
BATCH = 512


def _median_seconds(fn, repeat) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _step_plan(rs):
    x = kf.placeholder("x", (BATCH, SIZES[0]))
    y = kf.placeholder("y", (BATCH,), "int64")
    h = x
    for k, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
        w = kf.param(f"w{k}", value=(rs.randn(a, b) / np.sqrt(a)).astype("float32"))
        bias = kf.param(f"b{k}", value=np.zeros(b, "float32"))
        h = h @ w + bias
        if k < len(SIZES) - 2:
            h = kf.relu(h)
    graph = kf.optim.step_graph(kf.Graph([kf.nll(h, y)]), kf.optim.SGD(lr=0.01))
    return kf.compile(graph, training=True)


def _gemms(rs):
    """The step's matrix products as (a, b, out) triples: forward x@W, backward g@W.T and
    h.T@g (the first layer's input gradient is not needed)."""
    f32 = "float32"
    triples, dims = [], list(zip(SIZES, SIZES[1:]))
    for a, b in dims:  # forward
        triples.append((rs.rand(BATCH, a).astype(f32), rs.rand(a, b).astype(f32),
                        np.empty((BATCH, b), f32)))
    for k, (a, b) in enumerate(dims):  # backward: weight gradients, input gradients
        triples.append((rs.rand(a, BATCH).astype(f32), rs.rand(BATCH, b).astype(f32),
                        np.empty((a, b), f32)))
        if k:
            triples.append((rs.rand(BATCH, b).astype(f32), rs.rand(b, a).astype(f32),
                            np.empty((BATCH, a), f32)))
    return triples


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    rs = np.random.RandomState(0)
    plan = _step_plan(rs)
    x, y = kf.datasets.mnist_like(BATCH)
    feed = {"x": x, "y": y}
    triples = _gemms(rs)
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in triples)

    def gemms():
        for a, b, out in triples:
            np.matmul(a, b, out=out)

    with threadpool_limits(args.threads):
        results = {}
        for _ in range(2):  # alternate the two, twice
            results.setdefault("gemm", []).append(_median_seconds(gemms, args.repeat))
            results.setdefault("step", []).append(
                _median_seconds(lambda: plan.run(feed), args.repeat))
    gemm, step = min(results["gemm"]), min(results["step"])
    print(f"threads {args.threads}: the step's GEMMs alone {gemm * 1e3:.2f} ms "
          f"({flops / gemm / 1e9:.0f} GFLOPS), the compiled step {step * 1e3:.2f} ms: "
          f"{gemm / step:.0%} of the GEMM rate")
    return {"gemm": gemm, "step": step, "share": gemm / step}


if __name__ == "__main__":
    main()
