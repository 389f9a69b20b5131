"""NumPy's products and norms on symbols: dot, inner, outer, tensordot, trace, norm.

`np.dot` keeps NumPy's N-D rule (a sum over the last axis of `a` and the
second-to-last of `b`, which is not matmul's batching once b has 3 or more
dimensions); `np.linalg.norm` takes NumPy's `ord` values for vectors and the
matrix ords that need no decomposition. Contractions are built as one matmul
between transposed, reshaped operands.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

import knetflow.ops as ops
from knetflow.graph.numpy_shape import diagonal
from knetflow.graph.numpy_table import (
    accumulate_dtype, axes_tuple, axis_index, cast_to, dtype_of, ndim, numpy_function, refuse,
    shape, static)


def contract(fname, a, b, a_axes, b_axes):
    """Sum of a * b over a's `a_axes` paired with b's `b_axes` (NumPy's tensordot rule).

    The result has a's free axes, then b's. Built as one matmul; the contracted
    and b's free dimensions must be static, a's free ones may hold one dynamic dim.
    """
    a_axes, b_axes = tuple(a_axes), tuple(b_axes)
    free_a = [i for i in range(ndim(a)) if i not in a_axes]
    free_b = [j for j in range(ndim(b)) if j not in b_axes]
    for i, j in zip(a_axes, b_axes):
        if None not in (shape(a)[i], shape(b)[j]) and shape(a)[i] != shape(b)[j]:
            raise ValueError(f"{fname}: shape-mismatch for sum: axis {i} of {shape(a)} and "
                             f"axis {j} of {shape(b)}")
    k = _size(static(fname, [shape(b)[j] for j in b_axes], "contracted axes"))
    dims_b = static(fname, [shape(b)[j] for j in free_b], "free axes of the second operand")
    dims_a = [shape(a)[i] for i in free_a]
    if dims_a.count(None) > 1:
        refuse(fname, f"more than one dynamic dimension among the free axes of {shape(a)}")
    lhs = ops.reshape(_permuted(a, free_a + list(a_axes)), (-1, k))
    rhs = ops.reshape(_permuted(b, list(b_axes) + free_b), (k, _size(dims_b)))
    out = ops.matmul(lhs, rhs)
    return ops.reshape(out, tuple(-1 if d is None else d for d in dims_a) + tuple(dims_b))


def _size(dims) -> int:
    return int(np.prod(dims, dtype=np.int64))


def _permuted(x, order):
    return ops.transpose(x, tuple(order)) if order != list(range(ndim(x))) else x


# ---- products ----


@numpy_function("dot")
def _dot(a, b):
    if ndim(a) == 0 or ndim(b) == 0:
        return ops.mul(a, b)
    if ndim(b) <= 2:  # here NumPy's dot and matmul agree
        return ops.matmul(a, b)
    return contract("np.dot", a, b, (ndim(a) - 1,), (ndim(b) - 2,))


@numpy_function("vdot")
def _vdot(a, b):
    return ops.matmul(ops.reshape(a, (-1,)), ops.reshape(b, (-1,)))


@numpy_function("inner")
def _inner(a, b):
    if ndim(a) == 0 or ndim(b) == 0:
        return ops.mul(a, b)
    return contract("np.inner", a, b, (ndim(a) - 1,), (ndim(b) - 1,))


@numpy_function("outer")
def _outer(a, b):
    return ops.outer(a, b)  # flattens a and b, as NumPy's


@numpy_function("linalg.outer")
def _linalg_outer(x1, x2):
    if ndim(x1) != 1 or ndim(x2) != 1:
        raise ValueError("np.linalg.outer: input arrays must be one-dimensional")
    return ops.outer(x1, x2)


@numpy_function("linalg.matmul")
def _linalg_matmul(x1, x2):
    return ops.matmul(x1, x2)


@numpy_function("linalg.vecdot")
def _linalg_vecdot(x1, x2, axis=-1):
    n = max(ndim(x1), ndim(x2))
    return ops.sum(x1 * x2, axis=axis_index("np.linalg.vecdot", axis, n))


@numpy_function("tensordot")
def _tensordot(a, b, axes=2):
    return ops.tensordot(a, b, axes)


@numpy_function("linalg.tensordot")
def _linalg_tensordot(x1, x2, axes=2):
    return _tensordot(x1, x2, axes)


# ---- traces ----


def trace(fname, a, offset, axis1, axis2, dtype):
    """NumPy's trace: the sum of diagonal `offset` over axes axis1, axis2 (ints widen)."""
    target = np.dtype(dtype) if dtype is not None else accumulate_dtype(dtype_of(a))
    a = cast_to(a, target)
    n = ndim(a)
    if n < 2:
        raise ValueError(f"{fname}: diag requires an array of at least two dimensions")
    axes = (axis_index(fname, axis1, n), axis_index(fname, axis2, n))
    if axes == (0, 1):
        return ops.trace(a, offset=int(offset))
    return ops.sum(diagonal(fname, a, offset, axis1, axis2), axis=-1)


@numpy_function("trace")
def _trace(a, offset=0, axis1=0, axis2=1, dtype=None):
    return trace("np.trace", a, offset, axis1, axis2, dtype)


@numpy_function("linalg.trace")
def _linalg_trace(x, offset=0, dtype=None):
    return trace("np.linalg.trace", x, offset, -2, -1, dtype)


# ---- norms ----


def vector_norm(fname, x, ord, axis, keepdims):  # noqa: A002 - NumPy's name
    """The p-norm of x over `axis` (a tuple, or None for all axes) as one vector."""
    if isinstance(ord, str):
        raise ValueError(f"{fname}: Invalid norm order '{ord}' for vectors")
    if ord is None or ord == 2:
        return ops.sqrt(ops.sum(x * x, axis=axis, keepdims=keepdims))
    mag = ops.abs(x)
    if ord == np.inf:
        return ops.max(mag, axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return ops.min(mag, axis=axis, keepdims=keepdims)
    if ord == 0:  # the count of nonzeros, in x's float dtype (no gradient)
        return ops.sum(cast_to(ops.ne(x, 0), dtype_of(mag)), axis=axis, keepdims=keepdims)
    if ord == 1:
        return ops.sum(mag, axis=axis, keepdims=keepdims)
    p = float(ord)
    return ops.sum(mag ** p, axis=axis, keepdims=keepdims) ** (1.0 / p)


def matrix_norm(fname, x, ord, rows, cols, keepdims):  # noqa: A002 - NumPy's name
    """NumPy's matrix norms over axes (rows, cols) that need no decomposition."""
    if ord in (None, "fro", "f"):
        return ops.sqrt(ops.sum(x * x, axis=(rows, cols), keepdims=keepdims))
    if ord in ("nuc", 2, -2):
        refuse(fname, f"ord={ord!r} (it needs singular values)")
    if ord in (1, -1, np.inf, -np.inf):
        inner, outer = (rows, cols) if ord in (1, -1) else (cols, rows)
        reduce = ops.max if ord in (1, np.inf) else ops.min
        sums = ops.sum(ops.abs(x), axis=inner, keepdims=True)
        out = reduce(sums, axis=outer, keepdims=True)
        return out if keepdims else ops.squeeze(out, (rows, cols))
    raise ValueError(f"{fname}: Invalid norm order {ord!r} for matrices")


def _float(x):
    return x if dtype_of(x).kind == "f" else cast_to(x, "float64")


@numpy_function("linalg.norm")
def _norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 - NumPy's name
    x = _float(x)
    n = ndim(x)
    if axis is None:
        if ord is None:
            return vector_norm("np.linalg.norm", x, None, None, keepdims)
        if n not in (1, 2):
            raise ValueError("np.linalg.norm: Improper number of dimensions to norm.")
        axis = tuple(range(n))
    axes = axes_tuple("np.linalg.norm", axis, n)
    if len(axes) == 1:
        return vector_norm("np.linalg.norm", x, ord, axes, keepdims)
    if len(axes) == 2:
        return matrix_norm("np.linalg.norm", x, ord, axes[0], axes[1], keepdims)
    raise ValueError("np.linalg.norm: Improper number of dimensions to norm.")


@numpy_function("linalg.vector_norm")
def _vector_norm(x, axis=None, keepdims=False, ord=2):  # noqa: A002 - NumPy's name
    x = _float(x)
    return vector_norm("np.linalg.vector_norm", x, ord,
                       axes_tuple("np.linalg.vector_norm", axis, ndim(x)), keepdims)


@numpy_function("linalg.matrix_norm")
def _matrix_norm(x, keepdims=False, ord="fro"):  # noqa: A002 - NumPy's name
    x = _float(x)
    if ndim(x) < 2:
        raise ValueError("np.linalg.matrix_norm: the input must be at least 2-D")
    return matrix_norm("np.linalg.matrix_norm", x, ord, ndim(x) - 2, ndim(x) - 1, keepdims)


# ---- solving and inverting ----

SlogdetResult = namedtuple("SlogdetResult", ["sign", "logabsdet"])


@numpy_function("linalg.solve")
def _solve(a, b):
    return ops.solve(a, b)


@numpy_function("linalg.inv")
def _inv(a):
    return ops.inv(a)


@numpy_function("linalg.det")
def _det(a):
    return ops.det(a)


@numpy_function("linalg.slogdet")
def _slogdet(a):
    sign, logabsdet = ops.slogdet(a)
    return SlogdetResult(sign, logabsdet)
