"""Multi-device scheduler benchmarks on CPU devices.

    python benchmarks/scheduler.py [--repeat 5]

(a) two independent elementwise-heavy branches on cpu:0 + cpu:1 vs one device;
(b) data-parallel MLP 784-1024-1024-10, global batch 512, 2 CPU devices vs 1
    (cores split between the devices);
(c) the cost of one cross-device transfer and of an executor hand-off.
Each comparison alternates its two contenders run by run (this VM's speed drifts by
tens of percent over seconds) and reports medians of `--repeat` timings after a warm-up,
and the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import knetflow as kf  # noqa: E402
from knetflow.scheduler.data_parallel import DataParallelPlan  # noqa: E402


def paired(first, second, repeat, inner=1, switch=None):
    """(median time of first, of second, median of first/second ratios), alternated.

    `switch(k)`, when given, prepares contender k before its turn, which then starts
    after a pause and an untimed run (OpenBLAS's idle threads spin for up to ~0.1 s
    after a call, which would tax the other contender's run).
    """
    first(), second()
    times = ([], [])
    for _ in range(repeat):
        for k, (fn, out) in enumerate(zip((first, second), times)):
            if switch is not None:
                switch(k)
                time.sleep(0.25)
                fn()
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - t) / inner)
    ratios = [a / b for a, b in zip(*times)]
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios)


def branches(repeat, n=2000):
    x = kf.placeholder("x", (n, n))
    a, b = x, x
    for k in range(6):  # the same work in both branches, so 2x is the ideal
        f = kf.tanh if k % 2 else kf.sin
        a = f(a * 1.01)
        b = f(b * 0.99)
    out = [kf.sum(a), kf.sum(b)]
    feed = {"x": np.random.RandomState(0).rand(n, n).astype("float32")}
    one = kf.compile(out)
    two = kf.compile(out, devices=["cpu:0", "cpu:1"])
    print(two.explain())
    return paired(lambda: one.run(feed), lambda: two.run(feed), repeat)


def branches_numpy(repeat, n=2000):
    """The machine's own ceiling for (a): the same work hand-written, one thread vs two."""
    x = np.random.RandomState(0).rand(n, n).astype("float32")
    bufs = [np.empty_like(x), np.empty_like(x)]

    def branch(k, c):
        out = bufs[k]
        np.multiply(x, c, out=out)
        for j in range(6):
            if j:
                np.multiply(out, c, out=out)
            (np.tanh if j % 2 else np.sin)(out, out=out)
        return out.sum()

    def threads():
        t = threading.Thread(target=branch, args=(1, 0.99))
        t.start()
        branch(0, 1.01)
        t.join()

    return paired(lambda: (branch(0, 1.01), branch(1, 0.99)), threads, repeat)


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
    kf.set_cpu_devices(1)
    one = DataParallelPlan(graph, ["cpu:0"])
    kf.set_cpu_devices(2)
    two = DataParallelPlan(graph, ["cpu:0", "cpu:1"])

    def switch(k):  # one device with every core (BLAS threads), two with half each
        kf.set_cpu_devices(k + 1)

    return paired(lambda: one.run(feed), lambda: two.run(feed), repeat, switch=switch)


def transfer_cost(repeat):
    x = kf.placeholder("x", (1,))
    with kf.device("cpu:0"):
        a = x * 2.0
    with kf.device("cpu:1"):
        b = a * 3.0
    same = kf.compile([(x * 2.0) * 3.0])
    split = kf.compile([b], devices=["cpu:0", "cpu:1"])
    feed = {"x": np.ones(1, "float32")}
    t_same, t_split, _ = paired(lambda: same.run(feed), lambda: split.run(feed), repeat,
                                inner=200)
    return t_same, t_split


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=2000,
                    help="(a)'s arrays are size x size float32 (2000: 16 MB each)")
    args = ap.parse_args(argv)
    kf.set_cpu_devices(2)
    t1, t2, r = branches(args.repeat, args.size)
    print(f"(a) two branches of {args.size}x{args.size}: 1 device {t1 * 1e3:.1f} ms, "
          f"2 devices {t2 * 1e3:.1f} ms, speedup {r:.2f}x (median of paired runs)")
    t1, t2, r = branches_numpy(args.repeat, args.size)
    print(f"    the same in NumPy by hand: 1 thread {t1 * 1e3:.1f} ms, 2 threads "
          f"{t2 * 1e3:.1f} ms, speedup {r:.2f}x (the machine's ceiling for (a))")
    d1, d2, r = mlp_data_parallel(args.repeat)
    print(f"(b) data-parallel MLP step, batch 512: 1 device {d1 * 1e3:.1f} ms, "
          f"2 devices {d2 * 1e3:.1f} ms, speedup {r:.2f}x (median of paired runs)")
    s, m = transfer_cost(args.repeat)
    print(f"(c) tiny plan on 1 device {s * 1e6:.1f} us/run; split over 2 devices with one "
          f"transfer {m * 1e6:.1f} us/run: transfer + hand-off ~{(m - s) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
