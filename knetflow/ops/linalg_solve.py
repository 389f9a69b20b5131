"""Linear algebra on square matrices, NumPy's `numpy.linalg` functions `solve`, `inv`,
`det` and `slogdet`, batched over leading axes as NumPy batches them.

Gradients are written with these ops and matrix products, so they differentiate
again:

    inv:      d a = -inv(a)^T g inv(a)^T
    det:      d a = g det(a) inv(a)^T
    slogdet:  d a = g_logabsdet inv(a)^T      (the sign has no gradient)
    solve:    d b = solve(a^T, g),  d a = -(d b) x^T   where x = solve(a, b)

They exist where a is invertible; at a singular matrix the forward already
fails (NumPy's LinAlgError), except det, whose gradient then fails computing
inv. Integer inputs compute in float64; float16 is refused, as NumPy's linalg
refuses it.
"""

from __future__ import annotations

import numpy as np

from knetflow.errors import ShapeError
from knetflow.ops.array import expand_dims, squeeze
from knetflow.ops.base import (
    Op,
    Spec,
    TupleSpec,
    apply,
    apply_multi,
    broadcast_shapes,
    fail,
    fmt,
    register,
    result_dtype,
)
from knetflow.ops.binary import neg
from knetflow.ops.linalg import _swap_last, matmul

__all__ = ["det", "inv", "slogdet", "solve"]


def _same(d1, d2) -> bool:
    return d1 is None or d2 is None or d1 == d2


def _dtype(opname, *specs: Spec) -> str:
    """The float dtype of the result: NumPy's promotion, integers and bools as float64."""
    dtype = result_dtype(*specs)
    if dtype == "float16":
        fail(opname, "float16 is not supported by linear algebra (as in NumPy); "
                     "cast to float32 first")
    return dtype if dtype in ("float32", "float64") else "float64"


def _square(opname, a: Spec) -> str:
    """Fail unless a is a stack of square matrices; return the result dtype."""
    if a.ndim < 2:
        fail(opname, f"needs a matrix or a stack of matrices, got {fmt(a)}")
    if not _same(a.shape[-1], a.shape[-2]):
        fail(opname, f"the last two axes must be square, got {fmt(a)}")
    return _dtype(opname, a)


def _floats(*arrays) -> tuple:
    """The arrays in the dtype `_dtype` gives them (integers and bools as float64)."""
    dtype = np.result_type(*[x.dtype for x in arrays])
    if dtype.kind != "f":
        dtype = np.dtype("float64")
    return tuple(x.astype(dtype, copy=False) for x in arrays)


def _inv_t(a):
    """inv(a) with its last two axes exchanged (inv(a)^T, batched)."""
    return _swap_last(inv(a))


def _as_matrix_grad(g):
    """A gradient of shape batch broadcast against the (..., M, M) matrices."""
    return expand_dims(g, (-2, -1))


@register
class Inv(Op):
    """The inverse of each square matrix in the last two axes (NumPy `linalg.inv`)."""
    name = "inv"
    saves = ("out",)

    def infer(a: Spec) -> Spec:
        return a.with_dtype(_square("inv", a))

    def forward(xp, a):
        return xp.linalg.inv(*_floats(a))

    def grad(g, out, a):
        t = _swap_last(out)
        return (neg(matmul(matmul(t, g), t)),)


@register
class Det(Op):
    """The determinant of each square matrix in the last two axes (NumPy `linalg.det`)."""
    name = "det"
    saves = ("out", 0)

    def infer(a: Spec) -> Spec:
        return Spec(a.shape[:-2], _square("det", a))

    def forward(xp, a):
        return xp.asarray(xp.linalg.det(*_floats(a)))

    def grad(g, out, a):
        return (_as_matrix_grad(g * out) * _inv_t(a),)


@register
class Slogdet(Op):
    """(sign, log|det|) of each square matrix (NumPy `linalg.slogdet`); only log|det| has
    a gradient, as the sign is piecewise constant."""
    name = "slogdet"
    saves = (0,)

    def infer(a: Spec) -> TupleSpec:
        out = Spec(a.shape[:-2], _square("slogdet", a))
        return TupleSpec((out, out))

    def forward(xp, a):
        sign, logabsdet = xp.linalg.slogdet(*_floats(a))
        return xp.asarray(sign), xp.asarray(logabsdet)

    def grad(gs, outs, a):
        g_log = gs[1]
        if g_log is None:
            return (None,)
        return (_as_matrix_grad(g_log) * _inv_t(a),)


def _solve_shape(a: Spec, b: Spec) -> tuple:
    """x's shape for solve(a, b) with NumPy 2's rule: b is a vector only when 1-D."""
    m = a.shape[-1] if a.shape[-1] is not None else a.shape[-2]
    if b.ndim == 0:
        fail("solve", f"b must be a vector or a stack of matrices, got {fmt(b)}")
    if b.ndim == 1:
        if not _same(b.shape[0], m):
            fail("solve", f"{fmt(a)} and {fmt(b)} do not match: b needs {m} rows")
        return a.shape[:-1]
    if not _same(b.shape[-2], m):
        fail("solve", f"{fmt(a)} and {fmt(b)} do not match: b needs {m} rows")
    try:
        batch = broadcast_shapes("solve", Spec(a.shape[:-2], a.dtype), Spec(b.shape[:-2], b.dtype))
    except ShapeError:
        fail("solve", f"batch dimensions of {fmt(a)} and {fmt(b)} do not broadcast")
    return batch + (m, b.shape[-1])


@register
class Solve(Op):
    """x with a @ x = b for each square matrix a (NumPy `linalg.solve`, NumPy 2's rule:
    a 1-D b is one right-hand side; otherwise b is (..., M, K), batch axes broadcast)."""
    name = "solve"
    saves = ("out", 0)

    def infer(a: Spec, b: Spec) -> Spec:
        _square("solve", a)
        return Spec(_solve_shape(a, b), _dtype("solve", a, b))

    def forward(xp, a, b):
        a, b = _floats(a, b)
        vector = b.ndim == 1
        if vector:
            b = b[:, None]
        # both operands at the broadcast batch shape: CuPy's solve does not broadcast
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = xp.broadcast_to(a, batch + a.shape[-2:])
        b = xp.broadcast_to(b, batch + b.shape[-2:])
        x = xp.linalg.solve(a, b)
        return xp.ascontiguousarray(x[..., 0]) if vector else x

    def grad(g, out, a, b):
        a_t = _swap_last(a)
        if b.ndim == 1:
            # g and x are (..., M): one right-hand side per batch element
            gb = squeeze(solve(a_t, expand_dims(g, -1)), -1)
            return neg(expand_dims(gb, -1) * expand_dims(out, -2)), gb
        gb = solve(a_t, g)
        return neg(matmul(gb, _swap_last(out))), gb


def solve(a, b):
    """The solution x of a @ x = b (NumPy `linalg.solve`), batched over leading axes.

    a is (..., M, M); b is a vector (M,) or a stack (..., M, K) whose batch axes
    broadcast against a's (NumPy 2's rule).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.solve(np.array([[2.0, 0.0], [0.0, 4.0]]), np.array([2.0, 2.0]))
        array([1. , 0.5])
    """
    return apply(Solve, a, b)


def inv(a):
    """The inverse of each square matrix in the last two axes (NumPy `linalg.inv`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.inv(np.array([[2.0, 0.0], [0.0, 4.0]]))
        array([[0.5 , 0.  ],
               [0.  , 0.25]])
    """
    return apply(Inv, a)


def det(a):
    """The determinant of each square matrix in the last two axes (NumPy `linalg.det`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> round(float(kf.det(np.array([[1.0, 2.0], [3.0, 4.0]]))), 6)
        -2.0
    """
    return apply(Det, a)


def slogdet(a):
    """(sign, log|det|) of each square matrix (NumPy `linalg.slogdet`); log|det| does not
    overflow where det would. Only log|det| has a gradient.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> sign, logabsdet = kf.slogdet(np.array([[0.0, 2.0], [3.0, 0.0]]))
        >>> float(sign), round(float(logabsdet), 6)
        (-1.0, 1.791759)
    """
    return apply_multi(Slogdet, a)
