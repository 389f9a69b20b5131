"""Data-parallel training on Dask: scaling, synchronization overhead, and a cost model.

    python benchmarks/distributed.py [--rounds 3] [--steps 30] [--epochs 4]
                                     [--bandwidth 1.25 --latency 50]

(a) Scaling: an MLP 784-1024-1024-10 (float32, SGD), 512 rows per worker per
    step, trained by `kf.distributed.DaskTrainer` on a LocalCluster of 1 and of
    2 worker processes (1 thread each, 127.0.0.1). Efficiency = step time on 1
    worker / step time on 2 (each worker does the same work per step, so this
    is throughput per worker, 2 workers against 1). Both transports of the
    sum: shared memory (the default on one host) and the TCP ring (Dask comms,
    what several machines use). The three runs of a round go back to back and
    the efficiency is the median over rounds: on a shared machine, load that
    comes and goes then hits a round's runs alike.
(b) Synchronization overhead per step: step time on 2 workers minus on 1, and
    the replicas' own time in the reduction and update.
(c) All-reduce alone between the 2 worker processes (ring over Dask comms),
    for small and gradient-sized buffers: the latency alpha and bandwidth beta
    of the cost model

        ring: T(p) = 2 (p-1) alpha + 2 (p-1)/p * S / beta
        tree: T(p) = 2 ceil(log2 p) (alpha + S / beta)
        efficiency(p) = t1 / (t1 + T(p))     (t1: step time on one worker)

    checked against the measured 2-worker TCP figure, then predicting p = 8,
    64 and 512 workers on this loopback and on a given network.
Medians over the timed epochs (the first epoch is a warm-up).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time

import numpy as np

# this file's name would hide the `distributed` package: the repository instead of its folder
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
import knetflow as kf
from knetflow.distributed.reduce import ALGORITHMS, Mailbox
from knetflow.distributed.worker import ActorTransport

ROWS = 512  # per worker per step


def mlp():
    x = kf.placeholder("x", (None, 784))
    y = kf.placeholder("y", (None,), "int64")
    rng = np.random.default_rng(0)
    h = x
    for k, (i, o) in enumerate([(784, 1024), (1024, 1024), (1024, 10)]):
        w = kf.param(f"w{k}", value=(rng.standard_normal((i, o)) * np.sqrt(2 / i)).astype("f4"))
        b = kf.param(f"b{k}", value=np.zeros(o, "float32"))
        h = h @ w + b
        if k < 2:
            h = kf.relu(h)
    return kf.Graph([kf.nll(h, y)])


def step_time(n_workers, transport, steps, epochs, steps_per_call=1):
    """Median seconds per step, and the replicas' mean (compute, sync) ms per step."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((steps * ROWS * n_workers, 784)).astype("float32")
    y = rng.integers(0, 10, len(x))
    with kf.distributed.connect(n_workers=n_workers) as conn:
        trainer = kf.distributed.DaskTrainer(mlp(), kf.optim.SGD(lr=0.01), conn.client,
                                             transport=transport, steps_per_call=steps_per_call,
                                             timeout=60)
        trainer.fit(x, y, batch_size=ROWS * n_workers, epochs=epochs)
        per_step = [r["time"] / steps for r in trainer.history[1:]]
        shared = trainer.stats
    return statistics.median(per_step), shared


class ReduceBench:
    """An actor running all-reduces alone (no training), as replicas run them."""

    def __init__(self):
        self.mailbox = Mailbox()

    def configure(self, peers, rank):
        self.transport = ActorTransport(peers, rank, self.mailbox, 60)
        return True

    async def receive(self, tag, array):
        self.mailbox.put(tag, array)

    def run(self, n, repeat, algorithm):
        buf = np.random.default_rng(0).random(n, dtype="float32")
        reduce = ALGORITHMS[algorithm]
        for k in range(3):
            reduce(buf, self.transport, ("warm", n, k))
        times = []
        for k in range(repeat):
            tic = time.perf_counter()
            reduce(buf, self.transport, (algorithm, n, k))
            times.append(time.perf_counter() - tic)
        return statistics.median(times)


def allreduce_times(sizes, repeat=15):
    """Median seconds of a ring all-reduce of each size (elements), 2 worker processes."""
    with kf.distributed.connect(n_workers=2) as conn:
        client = conn.client
        actors = [client.submit(ReduceBench, workers=[w], actor=True).result()
                  for w in conn.workers()]
        for rank, a in enumerate(actors):
            a.configure(actors, rank).result()
        out = {}
        for n in sizes:
            calls = [a.run(n, repeat, "ring") for a in actors]
            out[n] = max(c.result() for c in calls)
    return out


def ring(p, alpha, beta, nbytes):
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / beta


def tree(p, alpha, beta, nbytes):
    return 2 * math.ceil(math.log2(p)) * (alpha + nbytes / beta)


def scaling(rounds, steps, epochs) -> tuple:
    """Rounds of (1 worker, 2 on shared memory, 2 over TCP), run back to back so the load of
    a shared machine hits each round's three alike; median step times and stats."""
    runs = {"one": [], "auto": [], "tcp": []}
    for k in range(rounds):
        for name, n, transport in (("one", 1, "auto"), ("auto", 2, "auto"), ("tcp", 2, "tcp")):
            runs[name].append(step_time(n, transport, steps, epochs))
        t1, t2, t3 = (runs[name][-1][0] for name in ("one", "auto", "tcp"))
        print(f"round {k + 1}: 1 worker {t1 * 1e3:.1f} ms/step; 2 workers {t2 * 1e3:.1f} ms "
              f"(shared memory, efficiency {t1 / t2:.1%}), {t3 * 1e3:.1f} ms (TCP ring, "
              f"{t1 / t3:.1%})")
    effs = {name: statistics.median(runs["one"][k][0] / runs[name][k][0] for k in range(rounds))
            for name in ("auto", "tcp")}
    medians = {name: statistics.median(t for t, _ in got) for name, got in runs.items()}
    stats = {name: {key: statistics.median(st[key] for _, st in got) for key in got[0][1]}
             for name, got in runs.items()}
    return effs, medians, stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs (the first is a warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the scaling runs")
    parser.add_argument("--bandwidth", type=float, default=1.25,
                        help="GB/s of the network to plan for (default 10 Gb/s Ethernet)")
    parser.add_argument("--latency", type=float, default=50.0,
                        help="microseconds per message on that network")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    grad_bytes = sum(int(np.prod(p.spec.shape)) * 4 for p in mlp().params) + 4

    effs, steps, stats = scaling(args.rounds, args.steps, args.epochs)
    t1, one = steps["one"], stats["one"]
    print(f"medians of {args.rounds} rounds: 1 worker {t1 * 1e3:.1f} ms/step (gradients "
          f"{one['compute_ms']:.1f} ms, update {one['sync_ms']:.1f} ms)")
    for transport, name in (("auto", "shared memory"), ("tcp", "TCP ring")):
        t2, two = steps[transport], stats[transport]
        print(f"  2 workers, {name}: {t2 * 1e3:.1f} ms/step, efficiency {effs[transport]:.1%}, "
              f"overhead {1e3 * (t2 - t1):.1f} ms/step; replicas: gradients "
              f"{two['compute_ms']:.1f} ms, sync {two['sync_ms']:.1f} ms (waiting for the "
              f"other {two['wait_ms']:.1f} ms, update {one['sync_ms']:.1f} ms)")

    n = grad_bytes // 4
    times = allreduce_times([1, n // 4, n, 2 * n])
    # on 2 workers a ring all-reduce is 2 messages in a row moving the buffer once:
    # T = 2 alpha + bytes / beta; alpha from the 4-byte sum, beta from the slope between
    # a quarter and twice the gradient's size; the gradient's own size checks the fit
    alpha = times[1] / 2
    beta = (2 * n - n // 4) * 4 / (times[2 * n] - times[n // 4])
    listed = ", ".join(f"{times[k] * 1e3:.2f} ms ({4 * k / 1e6:.3g} MB)" for k in times)
    print(f"ring all-reduce alone, 2 workers: {listed}: alpha {alpha * 1e6:.0f} us, "
          f"beta {beta / 1e9:.2f} GB/s")
    model = ring(2, alpha, beta, grad_bytes)
    print(f"model check: ring of {grad_bytes / 1e6:.2f} MB on 2 workers, predicted "
          f"{model * 1e3:.1f} ms, measured alone {times[n] * 1e3:.1f} ms; in training, TCP "
          f"step - shared-memory step = {1e3 * (steps['tcp'] - steps['auto']):.1f} ms "
          f"(predicted {1e3 * model:.1f} ms minus the shared-memory sum)")
    print(f"predicted 2-worker TCP efficiency, t1 / (t1 + ring): {t1 / (t1 + model):.1%} "
          f"(measured {effs['tcp']:.1%}: two workers also share 2 cores)")
    nets = {"this loopback": (alpha, beta),
            f"{args.bandwidth:g} GB/s, {args.latency:g} us": (args.latency * 1e-6,
                                                              args.bandwidth * 1e9)}
    print(f"predicted efficiency, t1 / (t1 + T(p)), t1 = {t1 * 1e3:.1f} ms, S = "
          f"{grad_bytes / 1e6:.2f} MB:")
    for label, (a, b) in nets.items():
        for name, cost in (("ring", ring), ("tree", tree)):
            row = ", ".join(f"p={p}: {t1 / (t1 + cost(p, a, b, grad_bytes)):.1%}"
                            for p in (2, 8, 64, 512))
            print(f"  {label} {name}: {row}")


if __name__ == "__main__":
    main()
