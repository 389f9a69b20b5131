"""knetflow benchmarks: per-op plan overhead, and the seed table's LinReg, Softmax
and MLP trained against PyTorch (CPU, eager) in the same run.

knetflow runs each model two ways: Knet-style (`kf.diff` and an in-place SGD
update of each Param) and fully compiled (`kf.optim.step_graph`: forward,
backward and the SGD update in one plan, one plan run per step).

    python benchmarks/run.py [--repeat 3] [--threads 2] [--quick]

Every peer starts from the same weights on the same synthetic data; each figure
is the median of `--repeat` timed epochs after a warm-up. Ratios are
knetflow time / PyTorch time (below 1.0: knetflow is faster).
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


def median_time(fn, repeat):
    fn()  # warm-up: traces and compiles
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def op_overhead(n=1000, repeat=5):
    """Microseconds per op of a compiled chain of n small elementwise ops."""
    x = kf.placeholder("x", (4,))
    y = x
    for k in range(n):
        y = kf.tanh(y) if k % 2 else y * 0.5
    plan = kf.compile([y], optimize_graph=False)  # keep n instructions: no fusion
    feed = {"x": np.ones(4, "float32")}

    def run():
        for _ in range(20):
            plan.run(feed)

    baseline = kf.compile([x * 1.0])

    def run_base():
        for _ in range(20):
            baseline.run(feed)

    t = median_time(run, repeat) - median_time(run_base, repeat)
    out = feed["x"].copy()
    ufunc = median_time(lambda: [np.tanh(feed["x"], out=out) for _ in range(20 * n)],
                        repeat) / (20 * n)
    return t / (20 * n) * 1e6, ufunc * 1e6


# ---- models, Knet-style: Params, kf.diff, in-place SGD ----


def sgd_epoch(loss, model, batches, lr):
    def epoch():
        for args in batches:
            r = kf.diff(loss, *args)
            for p in model:
                p.value -= lr * kf.grad(r, p)
    return epoch


def torch_epoch(torch, loss, model, batches, lr):
    def epoch():
        for args in batches:
            for p in model:
                p.grad = None
            out = loss(*args)
            out.backward()
            with torch.no_grad():
                for p in model:
                    p -= lr * p.grad
    return epoch


def models(quick):
    scale = 10 if quick else 1
    xh, yh = kf.datasets.housing_like()
    xm, ym = kf.datasets.mnist_like(60000 // scale)
    rs = np.random.RandomState(0)
    return {
        "LinReg 506x13 full batch": dict(
            weights=[rs.randn(13, 1).astype("float32") * 0.1, np.zeros(1, "float32")],
            batches=[(xh, yh)] * (10000 // scale), lr=0.01, kind="linreg"),
        "Softmax 784->10 batch 100": dict(
            weights=[rs.randn(784, 10).astype("float32") * 0.01, np.zeros(10, "float32")],
            batches=[(xm[i:i + 100], ym[i:i + 100]) for i in range(0, len(xm), 100)],
            lr=0.1, kind="softmax"),
        "MLP 784-64-10 batch 100": dict(
            weights=[kf.init.xavier_uniform(784, 64), np.zeros(64, "float32"),
                     kf.init.xavier_uniform(64, 10), np.zeros(10, "float32")],
            batches=[(xm[i:i + 100], ym[i:i + 100]) for i in range(0, len(xm), 100)],
            lr=0.1, kind="mlp"),
    }


def knetflow_model(spec):
    model = [kf.Param(w.copy()) for w in spec["weights"]]
    kind = spec["kind"]
    if kind == "linreg":
        w, b = model
        def loss(x, y): return kf.mean((x @ w + b - y) ** 2)
    elif kind == "softmax":
        w, b = model
        def loss(x, y): return kf.nll(x @ w + b, y)
    else:
        w1, b1, w2, b2 = model
        def loss(x, y): return kf.nll(kf.relu(x @ w1 + b1) @ w2 + b2, y)
    return sgd_epoch(loss, model, spec["batches"], spec["lr"])


def compiled_model(spec):
    """The model as one step plan: loss, gradients and the SGD update fused."""
    xs, ys = spec["batches"][0]
    x = kf.placeholder("x", (None,) + xs.shape[1:], xs.dtype)
    y = kf.placeholder("y", (None,) + ys.shape[1:], ys.dtype)
    names = ["w", "b"] if len(spec["weights"]) == 2 else ["w1", "b1", "w2", "b2"]
    model = [kf.param(n, value=w.copy()) for n, w in zip(names, spec["weights"])]
    kind = spec["kind"]
    if kind == "linreg":
        w, b = model
        loss = kf.mean((x @ w + b - y) ** 2)
    elif kind == "softmax":
        w, b = model
        loss = kf.nll(x @ w + b, y)
    else:
        w1, b1, w2, b2 = model
        loss = kf.nll(kf.relu(x @ w1 + b1) @ w2 + b2, y)
    step = kf.optim.step_graph(kf.Graph([loss]), kf.optim.SGD(lr=spec["lr"]))
    plan = kf.compile(step)
    feeds = [{"x": a, "y": b} for a, b in spec["batches"]]

    def epoch():
        for feed in feeds:
            plan.run(feed)
    return epoch


def torch_model(torch, spec):
    F = torch.nn.functional
    model = [torch.tensor(w, requires_grad=True) for w in spec["weights"]]
    batches = [tuple(torch.from_numpy(a) for a in args) for args in spec["batches"]]
    kind = spec["kind"]
    if kind == "linreg":
        w, b = model
        def loss(x, y): return ((x @ w + b - y) ** 2).mean()
    elif kind == "softmax":
        w, b = model
        def loss(x, y): return F.cross_entropy(x @ w + b, y)
    else:
        w1, b1, w2, b2 = model
        def loss(x, y): return F.cross_entropy(F.relu(x @ w1 + b1) @ w2 + b2, y)
    return torch_epoch(torch, loss, model, batches, spec["lr"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a tenth of each epoch")
    args = ap.parse_args(argv)
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(args.threads)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("PyTorch not installed (pip install torch==2.13.0): knetflow times only")
    per_op, ufunc = op_overhead()
    print(f"plan overhead: {per_op:.2f} us/op on a 1000-op elementwise chain "
          f"(a bare NumPy ufunc call with out=: {ufunc:.2f} us)")
    print(f"{'model':<28}{'kf.diff s':>11}{'compiled s':>12}{'PyTorch s':>11}"
          f"{'diff/PT':>9}{'comp/PT':>9}")
    for name, spec in models(args.quick).items():
        t_kf = median_time(knetflow_model(spec), args.repeat)
        t_step = median_time(compiled_model(spec), args.repeat)
        t_pt = median_time(torch_model(torch, spec), args.repeat) if torch else float("nan")
        print(f"{name:<28}{t_kf:>11.3f}{t_step:>12.3f}{t_pt:>11.3f}"
              f"{t_kf / t_pt:>9.2f}{t_step / t_pt:>9.2f}")


if __name__ == "__main__":
    main()
