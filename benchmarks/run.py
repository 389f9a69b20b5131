"""knetflow benchmarks: per-op plan overhead, and the seed table's LinReg, Softmax
and MLP trained against PyTorch (CPU, eager) and JAX (jit, CPU) in the same run.

knetflow runs each model three ways: Knet-style (`kf.diff`, then each Param
updated in place: `p.value -= lr * kf.grad(r, p)` in the "kf.diff" column, Knet's
`kf.update(p, kf.grad(r, p), lr=lr)` in the "update" column) and fully compiled
(`kf.optim.step_graph`: forward, backward and the SGD update in one plan, one plan
run per step). PyTorch runs
eagerly with `loss.backward()`; JAX runs one `jax.jit`-compiled step function
(value_and_grad and the SGD update, parameters donated).

    python benchmarks/run.py [--repeat 3] [--threads 1,2] [--quick] [--models linreg,mlp]

Every peer starts from the same weights on the same synthetic data (the loss of
each peer's first step is printed: they agree); each figure is the median of
`--repeat` timed epochs after a warm-up epoch, the peers' epochs alternating.
Each peer's thread count is set explicitly (see benchmarks/peers.py); with
several counts, each runs in a fresh process, since XLA sizes its thread pools
once. Ratios are knetflow time / peer time (below 1.0: knetflow is faster), the
median over rounds of the ratio of the two epochs timed back to back in a round
(on a shared machine, load changes between rounds; many short rounds, e.g.
`--quick --repeat 9`, pair the peers more closely than a few long ones).
PyTorch or JAX missing: a skip line, and knetflow's times alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import knetflow as kf  # noqa: E402
import peers as P  # noqa: E402  (benchmarks/peers.py)

MODELS = {"linreg": "LinReg 506x13 full batch", "softmax": "Softmax 784->10 batch 100",
          "mlp": "MLP 784-64-10 batch 100"}


def median_time(fn, repeat):
    fn()  # warm-up: traces and compiles
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return P.median(times)


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


def models(quick, which=tuple(MODELS)):
    """name -> spec: initial weights, the epoch's batches, lr and kind."""
    scale = 10 if quick else 1
    xh, yh = kf.datasets.housing_like()
    xm, ym = kf.datasets.mnist_like(60000 // scale)
    rs = np.random.RandomState(0)
    specs = {
        "linreg": dict(
            weights=[rs.randn(13, 1).astype("float32") * 0.1, np.zeros(1, "float32")],
            batches=[(xh, yh)] * (10000 // scale), lr=0.01, kind="linreg"),
        "softmax": dict(
            weights=[rs.randn(784, 10).astype("float32") * 0.01, np.zeros(10, "float32")],
            batches=[(xm[i:i + 100], ym[i:i + 100]) for i in range(0, len(xm), 100)],
            lr=0.1, kind="softmax"),
        "mlp": dict(
            weights=[kf.init.xavier_uniform(784, 64), np.zeros(64, "float32"),
                     kf.init.xavier_uniform(64, 10), np.zeros(10, "float32")],
            batches=[(xm[i:i + 100], ym[i:i + 100]) for i in range(0, len(xm), 100)],
            lr=0.1, kind="mlp"),
    }
    return {MODELS[k]: specs[k] for k in which}


# ---- knetflow, Knet-style: Params, kf.diff, in-place SGD ----


def knetflow_loss(spec):
    """(loss(x, y) over fresh Params holding copies of the weights, the Params)."""
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
    return loss, model


def knetflow_model(spec, first, with_update=False):
    """The seed's loop: kf.diff, then each Param updated in place from kf.grad, by
    `p.value -= lr * g` or (with_update) by Knet's `kf.update(p, g, lr=lr)`."""
    loss, model = knetflow_loss(spec)
    batches, lr = spec["batches"], spec["lr"]

    def epoch():
        for args in batches:
            r = kf.diff(loss, *args)
            for p in model:
                if with_update:
                    kf.update(p, kf.grad(r, p), lr=lr)
                else:
                    p.value -= lr * kf.grad(r, p)
            if not first:
                first.append(r.value)
    return epoch


def compiled_model(spec, first):
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
            out = plan.run(feed)
            if not first:
                first.append(float(out[0]))
    return epoch


# ---- PyTorch, eager ----


def torch_model(torch, spec, first):
    F = torch.nn.functional
    model = [torch.tensor(w, requires_grad=True) for w in spec["weights"]]
    batches = [tuple(torch.from_numpy(a) for a in args) for args in spec["batches"]]
    lr, kind = spec["lr"], spec["kind"]
    if kind == "linreg":
        w, b = model
        def loss(x, y): return ((x @ w + b - y) ** 2).mean()
    elif kind == "softmax":
        w, b = model
        def loss(x, y): return F.cross_entropy(x @ w + b, y)
    else:
        w1, b1, w2, b2 = model
        def loss(x, y): return F.cross_entropy(F.relu(x @ w1 + b1) @ w2 + b2, y)

    def epoch():
        for args in batches:
            for p in model:
                p.grad = None
            out = loss(*args)
            out.backward()
            with torch.no_grad():
                for p in model:
                    p -= lr * p.grad
            if not first:
                first.append(float(out.detach()))
    return epoch


# ---- JAX, one jitted step ----


def jax_model(jax, spec, first):
    jnp = jax.numpy
    lr, kind = spec["lr"], spec["kind"]

    def xent(scores, y):
        logp = jax.nn.log_softmax(scores)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    if kind == "linreg":
        def loss(p, x, y): return jnp.mean((x @ p[0] + p[1] - y) ** 2)
    elif kind == "softmax":
        def loss(p, x, y): return xent(x @ p[0] + p[1], y)
    else:
        def loss(p, x, y): return xent(jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3], y)

    def step(params, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        return [w - lr * g for w, g in zip(params, grads)], value

    step = jax.jit(step, donate_argnums=0)
    converted = {}  # LinReg's epoch repeats one batch: convert it once

    def put(a):
        if id(a) not in converted:
            converted[id(a)] = jnp.asarray(a.astype(np.int32) if a.dtype.kind == "i" else a)
        return converted[id(a)]

    batches = [(put(x), put(y)) for x, y in spec["batches"]]
    params = [jnp.asarray(w) for w in spec["weights"]]

    def epoch():
        nonlocal params
        for x, y in batches:
            params, value = step(params, x, y)
            if not first:
                first.append(float(value))
        jax.block_until_ready(params)
    return epoch


def run_one(args):
    """All peers with args.threads threads each, in this process."""
    n = int(args.threads)
    blas = P.set_blas_threads(n)
    jax = None if args.no_jax else P.import_jax(n)
    torch = None if args.no_torch else P.import_torch(n)
    print(f"threads {n}: {blas}, PyTorch {'-' if torch is None else torch.get_num_threads()}, "
          f"JAX PJRT_NPROC={os.environ.get('PJRT_NPROC')}; {P.load()}", flush=True)
    per_op, ufunc = op_overhead()
    print(f"plan overhead: {per_op:.2f} us/op on a 1000-op elementwise chain "
          f"(a bare NumPy ufunc call with out=: {ufunc:.2f} us)")
    print(f"{'model':<26}{'kf.diff s':>10}{'update s':>9}{'compiled s':>11}{'PyTorch s':>10}"
          f"{'JAX s':>9}{'diff/PT':>8}{'diff/JAX':>9}{'upd/JAX':>8}{'comp/PT':>8}"
          f"{'comp/JAX':>9}", flush=True)
    for name, spec in models(args.quick, args.models.split(",")).items():
        firsts = {k: [] for k in ("kf.diff", "kf.update", "compiled", "PyTorch", "JAX")}
        fns = {"kf.diff": knetflow_model(spec, firsts["kf.diff"]),
               "kf.update": knetflow_model(spec, firsts["kf.update"], with_update=True),
               "compiled": compiled_model(spec, firsts["compiled"])}
        if torch is not None:
            fns["PyTorch"] = torch_model(torch, spec, firsts["PyTorch"])
        if jax is not None:
            fns["JAX"] = jax_model(jax, spec, firsts["JAX"])
        times = P.interleaved(fns, args.repeat)
        t = {k: P.median(times.get(k, ())) for k in firsts}
        cells = "".join(f"{t[k]:>{w}.3f}" if t[k] == t[k] else f"{'-':>{w}}"
                        for k, w in zip(firsts, (10, 9, 11, 10, 9)))
        ratios = "".join(P.fmt_ratio(P.paired_ratio(times.get(a, []), times.get(b, [])), w)
                         for a, b, w in (
            ("kf.diff", "PyTorch", 8), ("kf.diff", "JAX", 9), ("kf.update", "JAX", 8),
            ("compiled", "PyTorch", 8), ("compiled", "JAX", 9)))
        print(f"{name:<26}{cells}{ratios}")
        losses = ", ".join(f"{k} {v[0]:.6f}" for k, v in firsts.items() if v)
        spread = [v[0] for v in firsts.values() if v]
        agree = ("one peer" if len(spread) < 2 else "agree to 4 decimals"
                 if max(spread) - min(spread) < 5e-5 else "DISAGREE")
        threads = ""
        if args.check_threads:
            threads = "; threads busy per peer: " + ", ".join(
                f"{k} {P.threads_used(fn)}" for k, fn in fns.items())
        print(f"  first-step loss: {losses} ({agree}){threads}; {P.load()}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="1,2",
                    help="thread count(s) of every peer, e.g. 2 or 1,2 (one process each)")
    ap.add_argument("--quick", action="store_true", help="a tenth of each epoch")
    ap.add_argument("--models", default=",".join(MODELS), help="of " + ",".join(MODELS))
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--check-threads", action="store_true",
                    help="also count the threads and cores each peer keeps busy in an epoch")
    args = ap.parse_args(argv)
    counts = args.threads.split(",")
    if len(counts) > 1:
        P.per_thread_count(os.path.abspath(__file__), counts, argv)
    else:
        run_one(args)


if __name__ == "__main__":
    main()
