"""Multi-device scheduler benchmarks on CPU devices.

    python benchmarks/scheduler.py [--repeat 5]

(a) two independent elementwise-heavy branches on cpu:0 + cpu:1 vs one device;
(b) data-parallel MLP 784-1024-1024-10, global batch 512, 2 CPU devices vs 1
    (cores split between the devices);
(c) the cost of one cross-device transfer and of an executor hand-off.
Medians of `--repeat` timings after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import knetflow as kf  # noqa: E402
from knetflow.scheduler.data_parallel import DataParallelPlan  # noqa: E402


def median(fn, repeat, inner=1):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return statistics.median(times)


def branches(repeat):
    x = kf.placeholder("x", (2000, 2000))
    a, b = x, x
    for _ in range(6):
        a = kf.tanh(a * 1.01)
        b = kf.sin(b * 0.99)
    out = [kf.sum(a), kf.sum(b)]
    feed = {"x": np.random.RandomState(0).rand(2000, 2000).astype("float32")}
    one = kf.compile(out)
    two = kf.compile(out, devices=["cpu:0", "cpu:1"])
    t1 = median(lambda: one.run(feed), repeat)
    t2 = median(lambda: two.run(feed), repeat)
    print(two.explain())
    return t1, t2


def mlp_data_parallel(repeat):
    x = kf.placeholder("x", (None, 784))
    y = kf.placeholder("y", (None,), "int64")
    h = x
    for k, (i, o) in enumerate([(784, 1024), (1024, 1024), (1024, 10)]):
        w = kf.param(f"w{k}", (i, o), init=kf.init.xavier_uniform)
        b = kf.param(f"b{k}", value=np.zeros(o, "float32"))
        h = h @ w + b
        if o != 10:
            h = kf.relu(h)
    graph = kf.Graph([kf.nll(h, y)])
    xs, ys = kf.datasets.mnist_like(512)
    feed = {"x": xs, "y": ys}
    kf.set_cpu_devices(1)  # one device with every core (BLAS threads) ...
    one = DataParallelPlan(graph, ["cpu:0"])
    t1 = median(lambda: one.run(feed), repeat)
    kf.set_cpu_devices(2)  # ... against two with half each
    two = DataParallelPlan(graph, ["cpu:0", "cpu:1"])
    return t1, median(lambda: two.run(feed), repeat)


def transfer_cost(repeat):
    x = kf.placeholder("x", (1,))
    with kf.device("cpu:0"):
        a = x * 2.0
    with kf.device("cpu:1"):
        b = a * 3.0
    same = kf.compile([(x * 2.0) * 3.0])
    split = kf.compile([b], devices=["cpu:0", "cpu:1"])
    feed = {"x": np.ones(1, "float32")}
    t_same = median(lambda: same.run(feed), repeat, inner=200)
    t_split = median(lambda: split.run(feed), repeat, inner=200)
    return t_same, t_split


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    kf.set_cpu_devices(2)
    t1, t2 = branches(args.repeat)
    print(f"(a) two branches: 1 device {t1 * 1e3:.1f} ms, 2 devices {t2 * 1e3:.1f} ms, "
          f"speedup {t1 / t2:.2f}x")
    d1, d2 = mlp_data_parallel(args.repeat)
    print(f"(b) data-parallel MLP step, batch 512: 1 device {d1 * 1e3:.1f} ms, "
          f"2 devices {d2 * 1e3:.1f} ms, speedup {d1 / d2:.2f}x")
    s, m = transfer_cost(args.repeat)
    print(f"(c) tiny plan on 1 device {s * 1e6:.1f} us/run; split over 2 devices with one "
          f"transfer {m * 1e6:.1f} us/run: transfer + hand-off ~{(m - s) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
