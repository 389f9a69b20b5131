"""LeNet (seed 001's table: conv 5x5x20, pool, conv 5x5x50, pool, fc 500, fc 10,
relu) trained Knet-style in knetflow against PyTorch (CPU, eager) and JAX (one jitted
step, CPU) in one run.

    python benchmarks/lenet.py [--steps 600] [--repeat 1] [--threads 2] [--profile]

Both peers start from the same weights (the seed's init: uniform(-0.1, 0.1)
filters and weights, zero biases; PyTorch gets the filters flipped, since
conv4's default mode=0 is true convolution and torch's conv2d cross-correlates)
and train on the same MNIST-shaped batches of 100 with SGD, lr=0.1. knetflow
runs the seed's loop: kf.Param, kf.diff, in-place update of each Param.value. JAX
gets the flipped filters too (lax.conv_general_dilated cross-correlates) and runs
value_and_grad and the update as one jax.jit step (parameters donated). Each
peer's thread count is set explicitly (benchmarks/peers.py); a peer that is not
installed is skipped with a line saying so.

Reported: the loss of the first step of each (they agree: the gradients agree
to float32 rounding; over many steps float32 rounding makes the trajectories
drift apart a little), seconds per epoch (600 steps; fewer steps are scaled
up; passes alternate between the peers), the time ratio (the median over
passes of the ratio of two passes timed back to back), and the peak
memory of one training step: for knetflow the peak of traced allocations
(tracemalloc sees every NumPy array) during a warm step plus the plan's
preallocated buffers; for PyTorch the peak of the allocations its profiler
records during a step. Weights and the input batch are left out of both. JAX's
step memory is not measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import knetflow as kf  # noqa: E402
import peers as P  # noqa: E402  (benchmarks/peers.py)

BATCH, LR, EPOCH_STEPS = 100, 0.1, 600


def lenet_weights(seed=0):
    """The seed's initial weights in row-major layout (filters (Cout, Cin, 5, 5))."""
    rs = np.random.RandomState(seed)

    def uniform(*shape):
        return (-0.1 + 0.2 * rs.rand(*shape)).astype("float32")

    return [uniform(20, 1, 5, 5), np.zeros((1, 20, 1, 1), "float32"),
            uniform(50, 20, 5, 5), np.zeros((1, 50, 1, 1), "float32"),
            uniform(800, 500), np.zeros(500, "float32"),
            uniform(500, 10), np.zeros(10, "float32")]


def batches(steps):
    x, y = kf.datasets.mnist_like(steps * BATCH)
    x = x.reshape(-1, 1, 28, 28)
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x), BATCH)]


# ---- knetflow, Knet-style ----


def knetflow_model(weights):
    model = [kf.Param(w.copy()) for w in weights]
    w1, b1, w2, b2, w3, b3, w4, b4 = model

    def predict(x):
        x = kf.pool(kf.relu(kf.conv4(w1, x) + b1))
        x = kf.pool(kf.relu(kf.conv4(w2, x) + b2))
        x = kf.relu(kf.mat(x) @ w3 + b3)
        return x @ w4 + b4

    def loss(x, y):
        return kf.nll(predict(x), y)

    def step(x, y):
        r = kf.diff(loss, x, y)
        for p in model:
            p.value -= LR * kf.grad(r, p)
        return r.value

    step.loss = loss
    return step


# ---- PyTorch, eager ----


def torch_model(torch, weights):
    F = torch.nn.functional
    flipped = [w[:, :, ::-1, ::-1].copy() if w.ndim == 4 and w.shape[2] > 1 else w
               for w in weights]
    model = [torch.tensor(w, requires_grad=True) for w in flipped]
    w1, b1, w2, b2, w3, b3, w4, b4 = model

    def loss(x, y):
        h = F.max_pool2d(F.relu(F.conv2d(x, w1) + b1), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, w2) + b2), 2)
        h = F.relu(h.reshape(h.shape[0], -1) @ w3 + b3)
        return F.cross_entropy(h @ w4 + b4, y)

    def step(x, y):
        for p in model:
            p.grad = None
        out = loss(x, y)
        out.backward()
        with torch.no_grad():
            for p in model:
                p -= LR * p.grad
        return float(out.detach())

    return step


# ---- JAX, one jitted step ----


def jax_model(jax, weights):
    """step(x, y) -> the loss (a JAX array), params updated inside; x, y JAX arrays."""
    jnp, lax = jax.numpy, jax.lax
    flipped = [w[:, :, ::-1, ::-1].copy() if w.ndim == 4 and w.shape[2] > 1 else w
               for w in weights]
    params = [jnp.asarray(w) for w in flipped]
    dims = ("NCHW", "OIHW", "NCHW")

    def pool(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def loss(p, x, y):
        w1, b1, w2, b2, w3, b3, w4, b4 = p
        h = pool(jax.nn.relu(lax.conv_general_dilated(x, w1, (1, 1), "VALID",
                                                       dimension_numbers=dims) + b1))
        h = pool(jax.nn.relu(lax.conv_general_dilated(h, w2, (1, 1), "VALID",
                                                       dimension_numbers=dims) + b2))
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ w3 + b3)
        logp = jax.nn.log_softmax(h @ w4 + b4)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def update(p, x, y):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        return [w - LR * g for w, g in zip(p, grads)], value

    update = jax.jit(update, donate_argnums=0)

    def step(x, y):
        nonlocal params
        params, value = update(params, x, y)
        return value

    return step


# ---- measurements ----


def epoch_seconds(peers, repeat):
    """Per peer: median wall and CPU seconds over `repeat` passes, scaled to a 600-step
    epoch, and the last loss.

    Passes alternate between the peers, so a change of load on the machine hits both
    alike; CPU time (all threads of the process) is less disturbed by other processes.
    A pass ends when its last loss is a Python float (JAX runs asynchronously).
    """
    first = []
    for step, data in peers:
        first.append(float(step(*data[0])))  # warm-up: traces and compiles
        for x, y in data[1:3]:
            step(x, y)
    agree = ("one peer" if len(first) < 2 else "agree to 4 decimals"
             if max(first) - min(first) < 5e-5 else "DISAGREE")
    print("loss of the first step from the same weights: "
          + ", ".join(f"{loss:.6f}" for loss in first) + f" ({agree})")
    wall, cpu, last = [[] for _ in peers], [[] for _ in peers], [None] * len(peers)
    for _ in range(repeat):
        for k, (step, data) in enumerate(peers):
            t, c = time.perf_counter(), time.process_time()
            for x, y in data:
                last[k] = step(x, y)
            last[k] = float(last[k])
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    scale = [EPOCH_STEPS / len(data) for _, data in peers]
    return [(statistics.median(w) * f, statistics.median(c) * f, loss, w)
            for w, c, loss, f in zip(wall, cpu, last, scale)]


def knetflow_step_memory(step, x, y):
    """(peak traced bytes of a warm step above its start, bytes of the plan's buffers and
    of the kernels' workspace).

    Kernels bound in a plan keep their scratch (im2col columns, transposed chunks) in a
    per-thread workspace allocated at the first run, which a warm step's tracing no
    longer sees; it is part of the footprint, so it is counted with the buffers.
    """
    step(x, y)
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    step(x, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the plan's preallocated buffers live as long as the plan: part of a step's footprint
    found = P.knetflow_entry(step.loss, (x, y))
    buffers = 0 if found is None else sum(
        program.memory.buffer_bytes for program in found[0].plan._programs.values())
    return peak - start, buffers + _workspace_bytes()


def _workspace_bytes() -> int:
    """The kernels' workspace of this thread, and of OpenBLAS's threads where split kernel
    calls ran shares there (0 in checkouts without one)."""
    try:
        from knetflow.ops.cpu_threads import workspace_bytes
    except ImportError:
        return 0
    return workspace_bytes()


def torch_step_memory(torch, step, x, y):
    """Peak bytes of the allocations PyTorch's profiler records during a step."""
    from torch.profiler import ProfilerActivity, profile

    step(x, y)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(x, y)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def profile_knetflow(step, x, y, top=12):
    """Per-op time of the cached training plan (knetflow's plan.profile)."""
    step(x, y)
    found = P.knetflow_entry(step.loss, (x, y))
    if found is None:
        return
    entry, feed = found
    prof = entry.plan.profile(feed, runs=10)
    print(f"knetflow plan: {prof.total * 1e3:.1f} ms per step; by op (ms):")
    for name, seconds in list(prof.by_op().items())[:top]:
        print(f"  {name:<16}{seconds * 1e3:8.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=EPOCH_STEPS, help="steps timed per pass")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes (median)")
    ap.add_argument("--threads", type=int, default=2, help="threads of every peer")
    ap.add_argument("--profile", action="store_true", help="print knetflow's per-op times")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    blas = P.set_blas_threads(args.threads)
    jax = None if args.no_jax else P.import_jax(args.threads)
    torch = None if args.no_torch else P.import_torch(args.threads)
    print(f"LeNet, batch {BATCH}, {args.steps} steps per pass, {args.repeat} pass(es); "
          f"{args.threads} thread(s) per peer ({blas}); {P.load()}")
    weights, data = lenet_weights(), batches(args.steps)
    kf_step = knetflow_model(weights)
    peers, names = [(kf_step, data)], ["knetflow"]
    if torch is not None:
        tdata = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data]
        pt_step = torch_model(torch, weights)
        peers.append((pt_step, tdata))
        names.append("PyTorch")
    if jax is not None:
        jdata = [(jax.numpy.asarray(x), jax.numpy.asarray(y.astype(np.int32)))
                 for x, y in data]
        peers.append((jax_model(jax, weights), jdata))
        names.append("JAX jit")
    print("peers: " + ", ".join(names))
    results = dict(zip(names, epoch_seconds(peers, args.repeat)))
    for name, (t, c, loss, _) in results.items():
        print(f"{name + ':':<10}{t:8.3f} s/epoch ({c:.3f} s CPU)   final loss {loss:.4f}")
    if args.profile:
        profile_knetflow(kf_step, *data[0])
    traced, buffers = knetflow_step_memory(kf_step, *data[0])
    mem_kf = traced + buffers
    print(f"knetflow step memory: {mem_kf / 1e6:.1f} MB "
          f"({traced / 1e6:.1f} MB allocated in the step + {buffers / 1e6:.1f} MB plan buffers "
          "and kernel workspace)")
    t_kf, c_kf, _, w_kf = results["knetflow"]
    line = []
    if torch is not None:
        mem_pt = torch_step_memory(torch, pt_step, *tdata[0])
        print(f"PyTorch step memory: {mem_pt / 1e6:.1f} MB")
        _, c_pt, _, w_pt = results["PyTorch"]
        line.append(f"knetflow/PyTorch: time {P.paired_ratio(w_kf, w_pt):.2f} (CPU time "
                    f"{c_kf / c_pt:.2f}), memory {mem_kf / mem_pt:.2f}")
    if jax is not None:
        _, c_jx, _, w_jx = results["JAX jit"]
        line.append(f"knetflow/JAX jit: time {P.paired_ratio(w_kf, w_jx):.2f} (CPU time "
                    f"{c_kf / c_jx:.2f})")
    print("ratio " + "; ".join(line or ["-: no peer installed"]) + f"; {P.load()}")


if __name__ == "__main__":
    main()
