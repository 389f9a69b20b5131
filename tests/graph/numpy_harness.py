"""Checks for NumPy functions on knetflow values: the traced result is NumPy's own.

A case is an ops-harness `Case` whose function calls NumPy and whose reference
is the *same* function: on plain arrays NumPy computes it, on symbols knetflow
builds it. `check(case)` then asserts, for each case:

1. values: the compiled graph agrees with NumPy (float64 and float32 inputs),
   with NumPy's result shape and dtype;
2. gradient: the derived backward graph agrees with central differences
   (float64), through the ops harness;
3. tracing: the same function applied to `kf.Param`s inside `kf.diff` gives
   NumPy's value, and `kf.gradcheck` passes.

Case names start with the NumPy name (`np.linalg.norm[ord=1]`), which the
coverage test in test_numpy_api.py reads.
"""

from __future__ import annotations

import warnings

import numpy as np

import knetflow as kf
from tests.ops import harness
from tests.ops.harness import Arg, Case

F = Arg


def case(name, fn, *args, **options) -> Case:
    """A Case whose reference is `fn` itself, run by NumPy on arrays."""
    return Case(name, fn, fn, list(args), **options)


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def check_like_numpy(c: Case, dtype: str) -> None:
    """Shape and dtype of each traced output are NumPy's on the same inputs."""
    arrays, _, outs = harness.build(c, dtype)
    want = _tuple(c.ref(*arrays))
    assert len(want) == len(outs), f"{c}: {len(outs)} outputs, NumPy gives {len(want)}"
    for w, o in zip(want, outs):
        w = np.asarray(w)
        assert o.shape == w.shape, f"{c} ({dtype}): shape {o.shape}, NumPy's {w.shape}"
        assert o.dtype == w.dtype, f"{c} ({dtype}): dtype {o.dtype}, NumPy's {w.dtype}"


def check_traced(c: Case) -> None:
    """The function on Params inside kf.diff: NumPy's value, and gradcheck passes."""
    arrays = c.inputs("float64")
    params = [kf.Param(a.copy()) if a.dtype.kind == "f" and arg.differentiable else a
              for a, arg in zip(arrays, c.args)]
    rs = np.random.RandomState(5)
    outs = _tuple(c.ref(*arrays))
    weights = [rs.uniform(0.5, 1.5, np.shape(o)) for o in outs]
    floats = [k for k, o in enumerate(outs) if np.asarray(o).dtype.kind == "f"]
    if not floats or not any(isinstance(p, kf.Param) for p in params):
        return

    def loss():
        got = _tuple(c.fn(*params))
        total = 0.0
        for k in floats:
            total = total + kf.sum(got[k] * weights[k])
        return total

    want = sum(float(np.sum(np.asarray(outs[k]) * weights[k])) for k in floats)
    with warnings.catch_warnings():  # every case's `loss` is a new function of one name
        warnings.filterwarnings("ignore", message="kf.diff/kf.grad traced")
        result = kf.diff(loss)
        np.testing.assert_allclose(result.value, want, rtol=1e-9, atol=1e-9, err_msg=str(c))
        if c.grad and any(isinstance(p, kf.Param) for p in params):
            assert kf.gradcheck(loss, rtol=1e-4, atol=1e-6, eps=1e-6, verbose=True), str(c)


def check(c: Case) -> None:
    """Every check above on one case."""
    for dtype in c.dtypes:
        harness.check_values(c, dtype)
        check_like_numpy(c, dtype)
    if c.grad:
        harness.check_gradient(c)
    check_traced(c)
