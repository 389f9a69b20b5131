"""Code generation: a specialized graph becomes one straight-line Python function.

Each instruction is one line calling a kernel bound at compile time (a NumPy
ufunc, or the op's forward with its attributes prebound), writing into a
planned buffer where the op allows `out=` (a tuple of them, one per output, for
a multi-output op marked `outs_arg`), and `del`-ing values after their last
use. The hot loop is thus the Python interpreter running a function body: no
dict lookups, attribute chains, shape checks or allocations of our
own per op. Generated code holds only generated identifiers (never names or
strings taken from a graph, which may come from a file); everything else is
bound as a global of the function.

Line numbers map back to nodes, so an error in line k names node k's op,
shapes and the user's line at no cost on the hot path.
"""

from __future__ import annotations

import functools
import itertools
import time

import numpy as np

from knetflow.errors import NumericsError
from knetflow.ops.base import REGISTRY, kernel
from knetflow.scheduler.memory import plan_memory, storage_roots

_counter = itertools.count()


class Program:
    """A compiled straight-line function with the tables to explain it."""

    def __init__(self, fn, lines, memory, filename, graph):
        self.fn = fn              # fn(feeds: list, params: list) -> tuple of outputs
        self.lines = lines        # source line number -> node
        self.memory = memory
        self.filename = filename
        self.graph = graph


def generate(graph, xp, rng=None, check_numerics=False, profile=None, sync=None) -> Program:
    """Compile a specialized graph to a Program (see module docstring).

    `profile`, a list of one float per node, makes an instrumented program that adds
    each op's seconds to its node's entry; `sync()` (a device's `synchronize`) is then
    called around each op, so that an asynchronous device's op is timed to its end.
    """
    memory = plan_memory(graph)
    root = storage_roots(graph)
    env = {"xp": xp, "_check": _check_numerics, "_clock": time.perf_counter, "_T": profile,
           "_sync": sync}
    wait = "_sync(); " if profile is not None and sync is not None else ""
    names, body, lines = {}, [], {}
    feeds = {n.id: k for k, n in enumerate(graph.inputs)}
    params = {n.id: k for k, n in enumerate(graph.params)}
    dies = _last_reads(graph)
    buffers = [xp.empty(shape, dtype=dtype) for shape, dtype in memory.buffers]
    for k, b in enumerate(buffers):
        env[f"b{k}"] = b
    for pos, node in enumerate(graph.nodes):
        v = names[node.id] = f"v{node.id}"
        if node.op == "input":
            body.append(f"{v} = feeds[{feeds[node.id]}]")
        elif node.op == "param":
            body.append(f"{v} = params[{params[node.id]}]")
        elif node.op == "const":
            env[f"c{node.id}"] = xp.asarray(node.attrs["value"])
            body.append(f"{v} = c{node.id}")
        else:
            call = _call(node, names, env, xp, rng, memory)
            if profile is not None:
                body.append(f"{wait}_t = _clock()")
            lines[len(body) + 2] = node
            body.append(f"{v} = {call}")
            if profile is not None:
                body.append(f"{wait}_T[{pos}] += _clock() - _t")
            if check_numerics and node.spec.is_float:
                env[f"n{node.id}"] = node
                body.append(f"_check({v}, n{node.id})")
        dead = sorted({names[i.id] for i in dies.get(pos, ())})
        if dead:
            body.append("del " + ", ".join(dead))
    outs = []
    for o in graph.results:
        copy = o.is_leaf or root[o.id] != o.id or REGISTRY[o.op].view
        if copy:
            outs.append(f"xp.array({names[o.id]})")
        elif o.spec.shape == ():  # NumPy reductions give scalars; the contract says arrays
            outs.append(f"xp.asarray({names[o.id]})")
        else:
            outs.append(names[o.id])
    body.append("return (" + "".join(f"{o}, " for o in outs) + ")")
    filename = f"<knetflow plan {next(_counter)}>"
    src = "def run(feeds, params):\n" + "\n".join("    " + line for line in body) + "\n"
    exec(compile(src, filename, "exec"), env)  # noqa: S102 - generated identifiers only
    return Program(env["run"], lines, memory, filename, graph)


def _call(node, names, env, xp, rng, memory) -> str:
    inline = _inline_view(node, names)
    if inline is not None:
        return inline
    op = REGISTRY[node.op]
    attrs = dict(node.attrs)
    if op.random:
        attrs["rng"] = rng
    exact = all(i.spec.dtype == node.spec.dtype for i in node.inputs)
    fn, takes_xp = kernel(op, xp, attrs, exact=exact)
    bound = None
    if takes_xp and fn is op.forward and op.bind is not None:  # no device kernel chosen
        bound = op.bind(xp, attrs, [i.spec for i in node.inputs], node.spec)
    if bound is not None:
        fn = bound
    elif takes_xp:
        fn = functools.partial(fn, xp, **attrs)
    env[f"k{node.id}"] = fn
    args = [names[i.id] for i in node.inputs]
    if xp is np and (isinstance(fn, np.ufunc) or node.op == "fused"):
        args = _one_element_as_0d(node, args)
    if node.id in memory.buffer_of:
        args.append(f"out=b{memory.buffer_of[node.id]}")
    elif any(b is not None for b in memory.outs_of.get(node.id, ())):
        outs = ["None" if b is None else f"b{b}" for b in memory.outs_of[node.id]]
        args.append("out=(" + "".join(f"{o}, " for o in outs) + ")")
    return f"k{node.id}(" + ", ".join(args) + ")"


def _inline_view(node, names):
    """The expression for a view that needs no kernel call: output k of a multi-output
    op (`v[k]`) and a matrix's transpose (`v.T`, on NumPy and CuPy arrays alike); else
    None. A call costs 0.2-0.3 us; these cost an index or an attribute read (0.03-0.05),
    and a step's backward holds several (the weights' transposes, the loss's outputs)."""
    if node.op == "get":
        return f"{names[node.inputs[0].id]}[{int(node.attrs.get('index', 0))}]"
    if (node.op == "transpose" and node.inputs[0].spec.ndim == 2
            and tuple(node.attrs.get("axes", ())) == (1, 0)):
        return f"{names[node.inputs[0].id]}.T"
    return None


def _one_element_as_0d(node, args) -> list:
    """The arguments of an elementwise NumPy instruction, each input of one element that
    broadcasts against a bigger output read as a 0-d view (`b.reshape(())`).

    Why: a ufunc given a (1,) operand beside a (506, 1) one sets up a broadcasting
    iterator (about 0.8 us an add); with a 0-d operand it takes its scalar fast path
    (about 0.35 us, the reshape 0.08). The values and the result's dtype are the same:
    both are arrays to NumPy's type promotion. An input of the output's own shape is
    required (in a fused chain, among its first step's operands), so that the result
    keeps its shape where no `out=` gives it.
    """
    spec = node.spec
    # a fused chain's first step makes the running value: an input of the result's shape
    # must be among that step's operands (a one-element operand there may give the
    # result its leading axes: (a(4,) - s(1, 1)) * b(1, 4))
    first = ([node.inputs[r] for r in node.attrs["program"][0][1] if r >= 0]
             if node.op == "fused" else node.inputs)
    if not spec.is_static or spec.size < 2 or not any(
            i.spec.shape == spec.shape for i in first):
        return args
    return [f"{a}.reshape(())" if i.spec.is_static and i.spec.ndim and i.spec.size == 1
            else a for i, a in zip(node.inputs, args)]


def _last_reads(graph) -> dict:
    """position -> nodes last read by the instruction there (their names can go)."""
    last = {}
    for pos, n in enumerate(graph.nodes):
        for i in n.inputs:
            last[i.id] = (pos, i)
    outputs = {o.id for o in graph.results}
    dies: dict = {}
    for pos, node in last.values():
        if node.id not in outputs:
            dies.setdefault(pos, []).append(node)
    return dies


def _check_numerics(value, node):
    if not bool(np.isfinite(value).all()):
        raise NumericsError(
            f"{node.op} produced NaN or Inf: output {node.spec!r} "
            f"(node {node.label()} built at {node.where})")
