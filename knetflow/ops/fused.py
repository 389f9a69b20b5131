"""`fused`: a chain of elementwise ufuncs run as one instruction in one buffer.

Made only by the fusion pass, after differentiation. Its `program` attribute
is a tuple of steps `(ufunc_name, refs)`, each ref an index into the fused
node's inputs or -1 for the running value; every step writes into the same
output buffer, so the chain makes no temporaries and no Python round trips
between its steps.

On NumPy, a big output is computed in blocks of rows that fit the core's L2
cache, each block going through the whole chain before the next: a chain of
k steps then streams its arrays through memory once instead of k times, which
is what makes elementwise-heavy graphs compute-bound (and lets two CPU
devices run them side by side without starving each other of memory
bandwidth). CuPy runs the chain whole (one launch per step is cheaper there).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from knetflow.ops.base import REGISTRY, Op, Spec, broadcast_shapes, register


@register
class Fused(Op):
    """A fused chain of elementwise ops (see module docstring)."""
    name, elementwise, out_arg = "fused", True, True

    def infer(*specs: Spec, program=(), dtype="float32", wheres=()) -> Spec:
        return Spec(broadcast_shapes("fused", *specs), dtype)

    def forward(xp, *args, program=(), dtype="float32", wheres=(), out=None):
        return _kernel(xp, program)(args, out)

    def grad(g, out, *inputs, program=(), dtype="float32", wheres=()):
        raise NotImplementedError("fused nodes are made after differentiation; "
                                  "differentiate the graph before fusing it")

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan: an output too small to block runs the chain as straight-line code
        (no per-call lookups: a few microseconds less per instruction on small arrays)."""
        if xp is np and out_spec.nbytes is not None and out_spec.nbytes >= 2 * BLOCK_BYTES:
            return None  # blocked: forward
        return _straight(xp, attrs["program"], len(in_specs))


class StepError(Exception):
    """Step `step` of a fused chain failed; the cause is the original error."""

    def __init__(self, step: int):
        super().__init__(f"step {step} of a fused chain failed")
        self.step = step


@lru_cache(maxsize=4096)
def _kernel(xp, program):
    """A function (args, out) running `program` with prebound ufuncs."""
    steps = []
    for ufunc_name, refs in program:
        steps.append((getattr(xp, REGISTRY[ufunc_name].ufunc), refs))
    first_fn, first_refs = steps[0]
    rest = steps[1:]

    def chain(args, out):
        step = 0
        try:
            acc = first_fn(*[args[r] for r in first_refs], out=out)
            if out is None:
                acc = xp.asarray(acc)  # 0-d results come back as scalars, which take no out=
            for step, (fn, refs) in enumerate(rest, 1):
                acc = fn(*[acc if r < 0 else args[r] for r in refs], out=acc)
        except Exception as e:
            raise StepError(step) from e
        return acc

    if xp is not np or not rest:
        return chain

    def blocked(args, out):
        rows = _block_rows(args, out)
        if rows is None:
            return chain(args, out)
        n, ndim = out.shape[0], out.ndim
        for start in range(0, n, rows):
            stop = start + rows
            chain([_rows(a, n, ndim, start, stop) for a in args], out[start:stop])
        return out

    return blocked


@lru_cache(maxsize=4096)
def _straight(xp, program, n_inputs):
    """`program` as one generated function chain(a0, a1, ..., out=None), ufuncs prebound."""
    env = {"xp": xp, "StepError": StepError}
    lines = []
    for step, (ufunc_name, refs) in enumerate(program):
        env[f"f{step}"] = getattr(xp, REGISTRY[ufunc_name].ufunc)
        args = ", ".join("acc" if r < 0 else f"a{r}" for r in refs)
        if step == 0:
            lines += [f"acc = f0({args}, out=out)",
                      "if out is None:",
                      "    acc = xp.asarray(acc)  # 0-d results come back as scalars"]
        else:
            lines += [f"step = {step}", f"acc = f{step}({args}, out=acc)"]
    params = "".join(f"a{i}, " for i in range(n_inputs))
    src = (f"def chain({params}out=None):\n    step = 0\n    try:\n"
           + "".join(f"        {line}\n" for line in lines)
           + "    except Exception as e:\n        raise StepError(step) from e\n"
           + "    return acc\n")
    exec(compile(src, "<knetflow fused chain>", "exec"), env)  # noqa: S102 - generated names
    return env["chain"]


#: bytes of output per block: what a core's L2 holds alongside the block's inputs
BLOCK_BYTES = 256 * 1024


def _block_rows(args, out):
    """Rows per block, or None when the chain should run whole."""
    if out is None or out.ndim == 0 or out.nbytes < 2 * BLOCK_BYTES:
        return None
    rows = max(1, BLOCK_BYTES // (out.nbytes // out.shape[0]))
    if rows >= out.shape[0]:
        return None
    for a in args:  # an input overlapping the output other than exactly: a block would
        if isinstance(a, np.ndarray) and np.may_share_memory(a, out) and not (  # read what
                a.shape == out.shape and a.strides == out.strides  # an earlier one wrote
                and a.ctypes.data == out.ctypes.data):
            return None
    return rows


def _rows(a, n, ndim, start, stop):
    """Rows start:stop of input `a` as broadcast against an output of n rows, ndim axes."""
    shape = getattr(a, "shape", ())
    return a[start:stop] if len(shape) == ndim and shape[0] == n else a
