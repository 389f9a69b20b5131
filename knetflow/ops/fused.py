"""`fused`: a chain of elementwise ufuncs run as one instruction in one buffer.

Made only by the fusion pass, after differentiation. Its `program` attribute
is a tuple of steps `(ufunc_name, refs)`, each ref an index into the fused
node's inputs or -1 for the running value; every step writes into the same
output buffer, so the chain makes no temporaries and no Python round trips
between its steps.
"""

from __future__ import annotations

from functools import lru_cache

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

    def run(args, out):
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

    return run
