"""Where the time of one Knet-style training step goes, in microseconds.

    python benchmarks/breakdown.py [--threads 1] [--calls 2000] [--repeat 5]
                                   [--models linreg,softmax,mlp] [--no-cprofile]

For the seed's LinReg, Softmax and MLP steps of benchmarks/run.py (`r = kf.diff(loss,
x, y)`, then each Param updated from `kf.grad(r, p)`), on one batch:

- "in a step": real steps run with timers around kf.diff's internals (recognizing
  the call: `trace_cache.find`, which runs the function's compiled capture guard of
  graph/capture_guard.py, or the full capture walk and the keyed lookup when no guard
  answers; `Entry.run`, which runs the program the guard's shapes select, or
  `Plan.run_inputs`; `Entry.inputs`, the plan's input list; `Entry.params`)
  and with the plan's program swapped for its profiled copy (the same kernels, a
  timer around each op). Derived parts: `Entry.run`'s own Python = Entry.run -
  program.fn - Entry.inputs; the generated function's own lines = program.fn - the ops - the
  timers' lines; the rest of kf.diff (gradients dict, DiffResult, the loss as a
  float). Each timer's measured cost is taken off the part around it. These rounds
  alternate with rounds of the same step untimed;
- "alone": each part called by itself in a tight loop (warm caches: usually less),
  the full capture walk and keyed lookup that a guard replaces, and the variants:
  the update through `kf.update` per Param or once, and the same step written by
  hand in NumPy (buffers, `out=`): the floor for this design;
- per op: its time in the steps, the kernel it calls, whether it writes into a planned
  buffer or allocates its result; what fused chains decide at run time (the kernel's
  lru_cache lookup, the row-block choice);
- the per-run context: calls per step to device activation and threadpoolctl (BLAS
  thread limits), counted by cProfile, whose top functions per step are listed too
  (cProfile's own cost inflates those times: read them as shares).

Then `Plan.run`'s fixed cost on a tiny plan (one multiply of 4 floats): plan.run,
program.fn, and the bare NumPy call the plan makes. Every figure is the median of
`--repeat` rounds of `--calls` calls, the parts alternating round by round, so a
change of machine load hits them alike. knetflow's internals are reached by name: a
part whose function has moved prints "n/a" instead of failing.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import knetflow as kf  # noqa: E402
import peers as P  # noqa: E402  (benchmarks/peers.py)
from run import MODELS, knetflow_loss, models  # noqa: E402  (benchmarks/run.py)

NA = float("nan")


def per_call(fns: dict, calls: int, repeat: int) -> dict:
    """name -> median microseconds per call; rounds of `calls` calls of each fn alternate
    (peers.interleaved)."""
    def batch(fn):
        def run():
            for _ in range(calls):
                fn()
        return run

    for fn in fns.values():  # one call each first: a round may be the first to compile
        fn()
    rounds = P.interleaved({name: batch(fn) for name, fn in fns.items()}, repeat,
                           warmup=False)
    return {name: P.median(v) / calls * 1e6 for name, v in rounds.items()}


def fmt(us) -> str:
    return "n/a" if us != us else f"{us:.1f}"


def internals(loss, x, y):
    """The pieces of a cached kf.diff call, reached by name; {} when they have moved."""
    try:
        from knetflow.graph.capture import capture

        autograd, trace_cache = P.knet_modules()
        args = (x, y)
        cap = capture(loss, args, {})
        entry, _ = trace_cache.lookup(loss, args, {}, cap)
        plan = entry.plan
        arrays = entry.inputs(cap.leaves, cap)
        plan.run_inputs(arrays)
        program = plan._programs[tuple(a.shape for a in arrays)]
        timed, timers = plan._instrumented(program)
    except (ImportError, AttributeError, KeyError, TypeError) as e:
        print(f"(knetflow's internals have moved: {type(e).__name__}: {e}; parts inside "
              f"kf.diff are n/a)")
        return {}
    return dict(capture=capture, lookup=trace_cache.lookup, autograd=autograd,
                trace_cache=trace_cache, entry=entry, plan=plan, arrays=arrays,
                program=program, timed=timed, timers=timers, cap=cap)


def timer_cost(calls=20000):
    """(us a profile's timer adds inside each op's span, us its two lines cost per op)."""
    src = ("def run(n):\n    for _ in range(n):\n        _t = _clock()\n"
           "        _T[0] += _clock() - _t\n"
           "def empty(n):\n    for _ in range(n):\n        pass\n")
    env = {"_clock": time.perf_counter, "_T": [0.0]}
    exec(compile(src, "<timer>", "exec"), env)  # noqa: S102 - a fixed string
    inside, pair = [], []
    for _ in range(5):
        env["_T"][0] = 0.0
        t = time.perf_counter()
        env["run"](calls)
        total = time.perf_counter() - t
        t = time.perf_counter()
        env["empty"](calls)
        empty = time.perf_counter() - t
        inside.append(env["_T"][0] / calls * 1e6)
        pair.append((total - empty) / calls * 1e6)
    return min(inside), min(pair)


class Meter:
    """Accumulates nanoseconds per name through wrappers put in place of functions."""

    def __init__(self):
        self.ns: dict = {}
        self.undo: list = []

    def wrap(self, name, fn):
        ns = self.ns
        ns.setdefault(name, 0)
        clock = time.perf_counter_ns

        def timed(*args, **kwargs):
            t = clock()
            out = fn(*args, **kwargs)
            ns[name] += clock() - t
            return out
        return timed

    def patch(self, holder, attr, name):
        """Replace holder.attr by a timed wrapper (undone by `restore`)."""
        old = holder.__dict__.get(attr, getattr(holder, attr))
        self.undo.append((holder, attr, attr in holder.__dict__, old))
        setattr(holder, attr, self.wrap(name, getattr(holder, attr)
                                        if not isinstance(holder, type) else old))

    def restore(self):
        for holder, attr, had, old in reversed(self.undo):
            if had:
                setattr(holder, attr, old)
            else:
                delattr(holder, attr)
        self.undo.clear()

    def reset(self):
        for k in self.ns:
            self.ns[k] = 0


def wrapper_cost(calls=20000) -> float:
    """us one Meter wrapper adds to a call."""
    meter = Meter()
    bare = (lambda: None)
    wrapped = meter.wrap("x", bare)
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            bare()
        a = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(calls):
            wrapped()
        best.append((time.perf_counter() - t - a) / calls * 1e6)
    return min(best)


def in_step(loss, model, x, y, lr, inner, calls, repeat, ticks, wrap_us):
    """Median us per step of each part, timed inside real steps (kf.diff's internals
    wrapped in timers, the plan's program swapped for its profiled copy), alternating
    round by round with the same step untimed; and the per-op times (means)."""
    clock = time.perf_counter_ns
    tick, pair = ticks
    meter = Meter()
    ns = meter.ns

    def plain():
        r = kf.diff(loss, x, y)
        for p in model:
            p.value -= lr * kf.grad(r, p)

    def timed():
        t0 = clock()
        r = kf.diff(loss, x, y)
        t1 = clock()
        grads = [kf.grad(r, p) for p in model]
        t2 = clock()
        for p, g in zip(model, grads):
            p.value -= lr * g
        t3 = clock()
        ns["kf.diff"] += t1 - t0
        ns["kf.grad"] += t2 - t1
        ns["update"] += t3 - t2

    for k in ("kf.diff", "kf.grad", "update"):
        ns[k] = 0
    rounds: dict = {}
    op_ns = None
    fn_calls = 0
    for k in range(repeat + 1):  # round 0: warm-up
        t = time.perf_counter()
        for _ in range(calls):
            plain()
        plain_us = (time.perf_counter() - t) / calls * 1e6
        if inner:
            meter.patch(inner["trace_cache"], "find", "find")
            meter.patch(inner["entry"], "inputs", "Entry.inputs")
            meter.patch(type(inner["entry"]), "params", "after the run")
            meter.patch(type(inner["entry"]), "run", "Plan.run")
            program = inner["program"]
            old_fn = program.fn
            program.fn = meter.wrap("program.fn", inner["timed"].fn)
            timers = inner["timers"]
            for _, times, _ in timers:
                times[:] = [0.0] * len(times)
        meter.reset()
        try:
            t = time.perf_counter()
            for _ in range(calls):
                timed()
            timed_us = (time.perf_counter() - t) / calls * 1e6
        finally:
            meter.restore()
            if inner:
                program.fn = old_fn
        if k == 0:
            continue
        row = {name: v / calls / 1e3 for name, v in ns.items()}
        row["step"], row["timed step"] = plain_us, timed_us
        # derived parts per round (medians of differences are steadier than differences
        # of medians); each wrapper's own cost lands in the part around it and is taken
        # off there: kf.diff calls 5 wrapped functions (find, Entry.run, and inside it
        # Entry.inputs and program.fn, Entry.params), Entry.run two
        row["kf.diff net"] = row["kf.diff"]
        if inner:
            fn_calls += calls
            now = [list(times) for _, times, _ in timers]
            op_ns = now if op_ns is None else [[a + b for a, b in zip(x_, y_)]
                                                for x_, y_ in zip(op_ns, now)]
            nodes = [n for ns_, _, _ in timers for n in ns_]
            secs = [t_ for _, times, _ in timers for t_ in times]
            ops_us = sum(max(0.0, t_ / calls * 1e6 - tick) for n, t_ in zip(nodes, secs)
                         if not n.is_leaf)
            n_ops = sum(not n.is_leaf for n in nodes)
            row["ops"] = ops_us
            row["kf.diff net"] = row["kf.diff"] - 5 * wrap_us
            row["Plan.run net"] = row["Plan.run"] - 2 * wrap_us
            row["Plan.run own"] = (row["Plan.run net"] - row["program.fn"]
                                   - row["Entry.inputs"])
            row["generated lines"] = row["program.fn"] - ops_us - n_ops * pair
            row["rest"] = row["kf.diff net"] - row["Plan.run net"] - sum(
                row[k] for k in ("find", "after the run"))
        for name, v in row.items():
            rounds.setdefault(name, []).append(v)
    med = {name: P.median(v) for name, v in rounds.items()}
    ops = []
    if inner:
        for (nodes, _, _), secs in zip(inner["timers"], op_ns):
            for node, s in zip(nodes, secs):
                if not node.is_leaf:
                    ops.append((node, max(0.0, s / fn_calls * 1e6 - tick)))
    return med, ops


def op_rows(program, ops):
    """[(op, shape, us, kernel, result)] slowest first."""
    from knetflow.ops.base import REGISTRY

    memory = program.memory
    rows = []
    for node, us in ops:
        op = REGISTRY.get(node.op)
        if op is not None and op.view:
            mem = "view"
        elif node.id in memory.buffer_of:
            mem = f"out=b{memory.buffer_of[node.id]}"
        else:
            mem = f"allocates {node.spec.nbytes or 0} B"
        kernel = "ufunc" if (op is not None and op.ufunc and not node.attrs) else "forward"
        if node.op == "fused":
            kernel = f"fused x{len(node.attrs['program'])}"
        rows.append((node.op, str(tuple(node.spec.shape)), us, kernel, mem))
    rows.sort(key=lambda r: -r[2])
    return rows


def fused_decisions(program, calls, repeat):
    """us per run spent choosing fused chains' kernels (lru_cache) and row blocks."""
    try:
        from knetflow.ops import fused
    except ImportError:
        return NA, NA, 0
    # chains too small to block run as straight-line code bound at compile time
    # (ops/fused.py's bind): no decision is left for run time
    nodes = [n for n in program.graph.nodes if n.op == "fused"
             and (n.spec.nbytes or 0) >= 2 * getattr(fused, "BLOCK_BYTES", 0)]
    if not nodes:
        return 0.0, 0.0, 0
    progs = [n.attrs["program"] for n in nodes]
    outs = [np.empty(n.spec.shape, n.spec.dtype) for n in nodes]
    args = [[np.empty(i.spec.shape, i.spec.dtype) for i in n.inputs] for n in nodes]
    try:
        times = per_call({
            "kernel": lambda: [fused._kernel(np, p) for p in progs],
            "blocks": lambda: [fused._block_rows(a, o) for a, o in zip(args, outs)],
        }, calls, repeat)
    except AttributeError:
        return NA, NA, len(nodes)
    return times["kernel"], times["blocks"], len(nodes)


def allocation(program):
    """(ops that allocate their result at every run, their bytes)."""
    from knetflow.ops.base import REGISTRY

    memory = program.memory
    count = nbytes = 0
    for n in program.graph.nodes:
        if n.is_leaf or REGISTRY[n.op].view or n.id in memory.buffer_of:
            continue
        count += 1
        nbytes += n.spec.nbytes or 0
    return count, nbytes


def context_calls(step, steps=300):
    """Per step: calls of device activation / threadpoolctl, and cProfile's top functions."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    stats = pstats.Stats(prof)
    ctx = {"activate": 0, "threadpoolctl": 0, "blas.limit": 0}
    top = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(kf.__file__)))
    for (filename, line, name), (cc, nc, tt, ct, _) in stats.stats.items():
        if name == "activate":
            ctx["activate"] += nc
        if "threadpoolctl" in filename:
            ctx["threadpoolctl"] += nc
        if name == "limit" and filename.endswith("cpu.py"):
            ctx["blas.limit"] += nc
        where = os.path.normpath(filename)
        where = where[len(root) + 1:] if where.startswith(root + os.sep) else where
        if "site-packages" in where:
            where = where.split("site-packages" + os.sep, 1)[1]
        top.append((tt, nc, f"{where}:{line}({name})"))
    top.sort(reverse=True)
    return ({k: v / steps for k, v in ctx.items()},
            [(tt / steps * 1e6, nc / steps, what) for tt, nc, what in top[:14]])


def numpy_floor(spec):
    """The same step written by hand in NumPy: preallocated buffers, `out=` arguments, the
    SGD update in place (what an ideal compiled plan would execute). Returns (step, the
    loss of its first call from the initial weights)."""
    w = [a.copy() for a in spec["weights"]]
    x, y = spec["batches"][0]
    lr, kind, n = spec["lr"], spec["kind"], len(x)
    f32 = np.float32

    def sgd(weights, grads):
        """w -= lr * g in place, each gradient's buffer scaled on the way."""
        for a, g in zip(weights, grads):
            np.multiply(g, lr, out=g)
            np.subtract(a, g, out=a)
    if kind == "linreg":
        W, b = w
        r, gw = np.empty((n, 1), f32), np.empty_like(W)
        gb, sq = np.empty_like(b), np.empty((n, 1), f32)

        def step():
            np.matmul(x, W, out=r)
            np.add(r, b, out=r)
            np.subtract(r, y, out=r)
            np.multiply(r, r, out=sq)
            loss = np.add.reduce(sq, axis=None) / n
            np.multiply(r, 2.0 / n, out=r)
            np.matmul(x.T, r, out=gw)
            np.add.reduce(r, axis=0, out=gb)
            sgd((W, b), (gw, gb))
            return loss
        return step, step
    rows = np.arange(n)
    classes = w[-1].shape[0]
    s, e = np.empty((n, classes), f32), np.empty((n, classes), f32)
    m, z = np.empty((n, 1), f32), np.empty((n, 1), f32)

    def softmax_grad(s):
        """s: scores, overwritten by d loss / d scores; returns the loss."""
        np.maximum.reduce(s, axis=1, keepdims=True, out=m)
        np.subtract(s, m, out=s)
        np.exp(s, out=e)
        np.add.reduce(e, axis=1, keepdims=True, out=z)
        np.log(z, out=z)
        np.subtract(s, z, out=s)  # log-probabilities
        loss = -s[rows, y].sum() / n
        np.exp(s, out=s)           # probabilities
        s[rows, y] -= 1.0
        np.multiply(s, 1.0 / n, out=s)
        return loss

    if kind == "softmax":
        W, b = w
        gw, gb = np.empty_like(W), np.empty_like(b)

        def step():
            np.matmul(x, W, out=s)
            np.add(s, b, out=s)
            loss = softmax_grad(s)
            np.matmul(x.T, s, out=gw)
            np.add.reduce(s, axis=0, out=gb)
            sgd((W, b), (gw, gb))
            return loss
        return step, step
    W1, b1, W2, b2 = w
    hidden = W1.shape[1]
    h, dh = np.empty((n, hidden), f32), np.empty((n, hidden), f32)
    grads = [np.empty_like(a) for a in w]

    def step():
        np.matmul(x, W1, out=h)
        np.add(h, b1, out=h)
        np.maximum(h, 0, out=h)
        np.matmul(h, W2, out=s)
        np.add(s, b2, out=s)
        loss = softmax_grad(s)
        np.matmul(h.T, s, out=grads[2])
        np.add.reduce(s, axis=0, out=grads[3])
        np.matmul(s, W2.T, out=dh)
        np.copyto(dh, 0, where=h <= 0)
        np.matmul(x.T, dh, out=grads[0])
        np.add.reduce(dh, axis=0, out=grads[1])
        sgd(w, grads)
        return loss
    return step, step


def breakdown(name, spec, args, ticks, wrap_us):
    loss, model = knetflow_loss(spec)
    x, y = spec["batches"][0]
    lr = spec["lr"]

    def step():
        r = kf.diff(loss, x, y)
        for p in model:
            p.value -= lr * kf.grad(r, p)

    def step_update():
        r = kf.diff(loss, x, y)
        for p in model:
            kf.update(p, kf.grad(r, p), lr=lr)

    def step_update_all():
        r = kf.diff(loss, x, y)
        kf.update(model, [kf.grad(r, p) for p in model], lr=lr)

    floor, _ = numpy_floor(spec)
    first_kf, first_np = float(kf.diff(loss, x, y).value), float(floor())
    step()
    inner = internals(loss, x, y)
    med, ops = in_step(loss, model, x, y, lr, inner, args.calls, args.repeat, ticks, wrap_us)
    r = kf.diff(loss, x, y)
    grads = [kf.grad(r, p) for p in model]
    parts = {"step": step, "step, kf.update per Param": step_update,
             "step, one kf.update": step_update_all,
             "kf.diff": lambda: kf.diff(loss, x, y),
             "kf.grad": lambda: [kf.grad(r, p) for p in model],
             "update": lambda: [p.value.__isub__(lr * g) for p, g in zip(model, grads)],
             "kf.update per Param": lambda: [kf.update(p, g, lr=lr)
                                             for p, g in zip(model, grads)],
             "one kf.update": lambda: kf.update(model, grads, lr=lr),
             "numpy floor": floor}
    if inner:
        c, e, plan, program = inner["cap"], inner["entry"], inner["plan"], inner["program"]
        arrays, values = inner["arrays"], plan._values
        parts.update({
            "find": lambda: inner["trace_cache"].find(loss, (x, y), {}),
            "capture walk": lambda: inner["capture"](loss, (x, y), {}),
            "cache lookup": lambda: inner["lookup"](loss, (x, y), {}, c),
            "Entry.inputs": lambda: e.inputs(c.leaves, c),
            "Plan.run": lambda: e.run(inner["trace_cache"].find(loss, (x, y), {})[1]),
            "program.fn": lambda: program.fn(arrays, values),
        })
    alone = per_call(parts, args.calls, args.repeat)
    tick, pair = ticks
    g = med.get
    rows = [
        ("**step** (kf.diff + kf.grad + `p.value -= lr * g`), untimed", 0, g("step"),
         alone["step"]),
        ("the same step with the timers in (the parts below)", 0, g("timed step"), NA),
        ("kf.diff", 1, g("kf.diff net"), alone["kf.diff"]),
        ("recognize the call (trace_cache.find: the compiled capture guard)", 2,
         g("find", NA), alone.get("find", NA)),
        ("what the guard replaces: the capture walk (graph/capture.py)", 3, NA,
         alone.get("capture walk", NA)),
        ("what the guard replaces: the keyed lookup (key hash, Entry.fits)", 3, NA,
         alone.get("cache lookup", NA)),
        ("Entry.run (the plan's program the guard selected, or Plan.run_inputs)", 2,
         g("Plan.run net", NA), alone.get("Plan.run", NA) - alone.get("find", NA)),
        ("Entry.inputs (the plan's input list)", 3, g("Entry.inputs", NA),
         alone.get("Entry.inputs", NA)),
        ("Entry.run's own Python (Entry.run - program.fn - Entry.inputs)", 3,
         g("Plan.run own", NA), alone.get("Plan.run", NA) - alone.get("find", NA)
         - alone.get("program.fn", NA) - alone.get("Entry.inputs", NA)),
        ("generated function's own lines (program.fn - ops - timers)", 3,
         g("generated lines", NA), NA),
        (f"ops, sum of {len(ops)} (profiled, timer taken off)", 3, g("ops", NA), NA),
        ("after the run (Entry.params)", 2, g("after the run", NA), NA),
        ("rest of kf.diff (grads dict, DiffResult, loss as float, checks)", 2, g("rest", NA),
         NA),
        ("kf.grad(r, p) for each Param", 1, g("kf.grad"), alone["kf.grad"]),
        ("in-place update `p.value -= lr * g`", 1, g("update"), alone["update"]),
        ("step with `kf.update(p, g, lr=lr)` per Param instead", 0, NA,
         alone["step, kf.update per Param"]),
        ("`kf.update(p, g, lr=lr)` for each Param", 1, NA, alone["kf.update per Param"]),
        ("step with one `kf.update(params, grads, lr=lr)`", 0, NA, alone["step, one kf.update"]),
        ("one `kf.update(params, grads, lr=lr)`", 1, NA, alone["one kf.update"]),
        ("the step by hand in NumPy (buffers, `out=`; the floor for this design)", 0, NA,
         alone["numpy floor"]),
    ]
    total = g("step")
    print(f"\n### {name} ({P.load()})\n")
    print("| part of a step | us in a step | share | us alone (tight loop) |")
    print("|---|---|---|---|")
    for label, indent, us, us_alone in rows:
        share = f"{us / total * 100:.0f}%" if us == us and indent else ""
        print(f"| {'&nbsp;' * 4 * indent}{label} | {fmt(us)} | {share} | {fmt(us_alone)} |")
    print(f"\nFirst-step loss from the same weights: kf.diff {first_kf:.6f}, by hand "
          f"{first_np:.6f}.")
    if ops:
        print(f"\nPer op, inside the timed steps (the timer's {tick:.2f} us per op taken "
              f"off; its two lines cost {pair:.2f} us per op, taken off the generated "
              f"function's lines):\n")
        print("| op | shape | us | kernel | result |")
        print("|---|---|---|---|---|")
        for op, shape, us, kernel, mem in op_rows(program, ops):
            print(f"| {op} | {shape} | {us:.2f} | {kernel} | {mem} |")
        count, nbytes = allocation(program)
        print(f"\nAllocation: {count} of {len(ops)} ops allocate their result at every run "
              f"({nbytes} B); the rest write into planned buffers or are views.")
        kern, blocks, nfused = fused_decisions(program, args.calls, args.repeat)
        chains = sum(n.op == "fused" for n in program.graph.nodes)
        if nfused:
            print(f"Run-time fusion decisions: {nfused} of {chains} fused chain(s) block "
                  f"their rows; at each run their kernels are looked up in an lru_cache "
                  f"keyed by the chain ({fmt(kern)} us for all) and their row blocks chosen "
                  f"({fmt(blocks)} us for all).")
        elif chains:
            print(f"Fused chains: {chains}, each straight-line code bound when the plan was "
                  f"compiled (no decision at run time).")
    ctx, top = context_calls(step_update)
    print(f"\nPer-run context, calls per step (with kf.update): device activate "
          f"{ctx['activate']:g}, knetflow's BLAS limit {ctx['blas.limit']:g}, threadpoolctl "
          f"{ctx['threadpoolctl']:g}.")
    if not args.no_cprofile:
        print("\ncProfile, top functions by own time per step (step with kf.update per "
              "Param; cProfile inflates each call):\n")
        print("| own us/step | calls/step | function |")
        print("|---|---|---|")
        for us, nc, what in top:
            print(f"| {us:.1f} | {nc:g} | `{what}` |")


def tiny_plan(args):
    """Plan.run's fixed cost: a one-op plan (x * 2 on 4 floats)."""
    x = kf.placeholder("x", (4,))
    plan = kf.compile([x * 2.0])
    a = np.ones(4, "float32")
    feed = {"x": a}
    plan.run(feed)
    program = next(iter(plan._programs.values()))
    two = np.asarray(2.0, "float32")  # what the plan binds: a 0-d constant, a new result
    t = per_call({"plan.run": lambda: plan.run(feed),
                  "program.fn": lambda: program.fn([a], plan._values),
                  "np.multiply(a, two)": lambda: np.multiply(a, two),
                  "empty call": lambda: None}, args.calls * 5, args.repeat)
    print(f"\n### Plan.run's fixed cost: a one-op plan, x * 2.0 on 4 float32 "
          f"({len(plan.graph.nodes)} nodes; {P.load()})\n")
    print("| call | us |")
    print("|---|---|")
    for k, v in t.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| **Plan.run's own cost** (plan.run - program.fn) | "
          f"**{t['plan.run'] - t['program.fn']:.2f}** |")
    print(f"| generated function around the op (program.fn - the bare call) | "
          f"{t['program.fn'] - t['np.multiply(a, two)']:.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="NumPy BLAS threads")
    ap.add_argument("--calls", type=int, default=2000, help="calls per timing round")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (median)")
    ap.add_argument("--models", default=",".join(MODELS), help="of " + ",".join(MODELS))
    ap.add_argument("--no-cprofile", action="store_true")
    args = ap.parse_args(argv)
    blas = P.set_blas_threads(args.threads)
    ticks, wrap_us = timer_cost(), wrapper_cost()
    print(f"Breakdown of a Knet-style step: {blas}; {args.repeat} rounds of {args.calls} "
          f"calls, medians; {P.load()}; numpy {np.__version__}, python "
          f"{sys.version.split()[0]}; a timing wrapper costs {wrap_us:.2f} us")
    specs = models(True, args.models.split(","))
    for name, spec in specs.items():
        breakdown(name, spec, args, ticks, wrap_us)
    tiny_plan(args)
    print(f"\n({P.load()} at the end)")


if __name__ == "__main__":
    main()
