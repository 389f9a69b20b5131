"""NumPy's shape functions on symbols: reshaping, axes, joining, flipping, taking.

Joins follow NumPy's rules, not Knet's: `np.vstack` makes 1-D inputs rows
(1, n), `np.hstack` joins 1-D inputs on axis 0, `np.concatenate(..., axis=None)`
flattens first, and a single array where NumPy takes a sequence is the
sequence of its rows (`np.vstack(v)` of a 1-D v is a column (n, 1), as in
NumPy), built without splitting it into rows.
"""

from __future__ import annotations

import numpy as np

import knetflow.ops as ops
from knetflow.graph.numpy_table import (
    as_symbol, axes_tuple, axis_index, cast_to, is_arraylike, moveaxis, ndim, numpy_function,
    refuse, shape, static)

# ---- reshaping and axes ----


def _check_order(fname, order):
    if order != "C":
        refuse(fname, f"order={order!r} (knetflow arrays are C-ordered)")


@numpy_function("reshape")
def _reshape(a, shape, order="C", copy=None):  # noqa: A002 - copy: values cannot alias
    """NumPy's reshape; as with kf.reshape, None at position i keeps a's dim i, so that
    `x.reshape(x.shape[0], -1)` works when x.shape[0] is dynamic (None)."""
    _check_order("np.reshape", order)
    dims = (shape,) if shape is None or isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(isinstance(d, bool) for d in dims):
        raise TypeError(f"np.reshape: the new shape {shape!r} must hold integers")
    return ops.reshape(a, dims)


@numpy_function("ravel")
def _ravel(a, order="C"):
    _check_order("np.ravel", order)
    return ops.reshape(a, (-1,))


@numpy_function("transpose", "permute_dims")
def _transpose(a, axes=None):
    n = ndim(a)
    if axes is None:
        return ops.transpose(a)
    axes = tuple(axis_index("np.transpose", i, n) for i in axes)
    if sorted(axes) != list(range(n)):
        raise ValueError(f"np.transpose: axes {axes} don't match array of {n} dimensions")
    return ops.transpose(a, axes)


@numpy_function("matrix_transpose", "linalg.matrix_transpose")
def _matrix_transpose(x):
    if ndim(x) < 2:
        raise ValueError(f"matrix_transpose: input must have at least 2 dimensions, got {ndim(x)}")
    return _swapaxes(x, -1, -2)


@numpy_function("swapaxes")
def _swapaxes(a, axis1, axis2):
    n = ndim(a)
    i, j = axis_index("np.swapaxes", axis1, n), axis_index("np.swapaxes", axis2, n)
    order = list(range(n))
    order[i], order[j] = j, i
    return ops.transpose(a, tuple(order)) if i != j else as_symbol(a)


@numpy_function("moveaxis")
def _moveaxis(a, source, destination):
    n = ndim(a)
    source = axes_tuple("np.moveaxis", source, n)
    destination = axes_tuple("np.moveaxis", destination, n)
    if len(source) != len(destination):
        raise ValueError("np.moveaxis: `source` and `destination` arguments must have the same "
                         "number of elements")
    order = [i for i in range(n) if i not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return ops.transpose(a, tuple(order)) if order != list(range(n)) else as_symbol(a)


@numpy_function("squeeze")
def _squeeze(a, axis=None):
    return ops.squeeze(a, axes_tuple("np.squeeze", axis, ndim(a)))


@numpy_function("expand_dims")
def _expand_dims(a, axis):
    return ops.expand_dims(a, axis)


def _atleast(positions, arys):
    out = tuple(_expand(a, positions(ndim(a))) for a in arys)
    return out[0] if len(out) == 1 else out


def _expand(a, positions):
    return ops.expand_dims(a, positions) if positions else as_symbol(a)


def _at1(r):
    return (0,) if r == 0 else ()


def _at2(r):
    return {0: (0, 1), 1: (0,)}.get(r, ())


def _at3(r):
    return {0: (0, 1, 2), 1: (0, 2), 2: (2,)}.get(r, ())


def _column(r):
    return {0: (0, 1), 1: (1,)}.get(r, ())


@numpy_function("atleast_1d")
def _atleast_1d(*arys):
    return _atleast(_at1, arys)


@numpy_function("atleast_2d")
def _atleast_2d(*arys):
    return _atleast(_at2, arys)


@numpy_function("atleast_3d")
def _atleast_3d(*arys):
    return _atleast(_at3, arys)


@numpy_function("broadcast_to")
def _broadcast_to(array, shape):  # noqa: A002 - NumPy's name
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    have = tuple(_shape_of(array))
    lead = len(dims) - len(have)
    if lead < 0 or any(d not in (1, want) for d, want in zip(have, dims[lead:])):
        raise ValueError(f"np.broadcast_to: cannot broadcast a {have} array to shape {dims}")
    dtype = np.asarray(0, dtype=_dtype(array)).dtype
    zeros = np.broadcast_to(np.zeros((), dtype), dims)  # a view: no memory per element
    return ops.add(array, zeros)


def _shape_of(x):
    return shape(x) if is_arraylike(x) else np.shape(x)


def _dtype(x):
    return x.dtype if is_arraylike(x) else np.asarray(x).dtype


# ---- joining ----


def _cast_all(xs, dtype):
    return [x if dtype is None else cast_to(x, dtype) for x in xs]


def _rows_joined(fname, a, axis):
    """The rows of the single array `a` concatenated along `axis` (of a row)."""
    if ndim(a) < 2:
        raise ValueError(f"{fname}: zero-dimensional arrays cannot be concatenated")
    if axis is None:
        return ops.reshape(a, (-1,))
    k = axis_index(fname, axis, ndim(a) - 1)
    moved = moveaxis(a, 0, k)  # (r0..r(k-1), n, rk, ...): merge the n and rk axes
    dims = shape(moved)
    merged = static(fname, dims[k:], "joining the rows of one array")
    new = tuple(dims[:k]) + (merged[0] * merged[1],) + merged[2:]
    return ops.reshape(moved, new)


@numpy_function("concatenate")
def _concatenate(arrays, axis=0, dtype=None):
    if is_arraylike(arrays):
        return _rows_joined("np.concatenate", cast_to(arrays, dtype or arrays.dtype), axis)
    xs = _cast_all(list(arrays), dtype)
    if axis is None:
        xs, axis = [ops.reshape(x, (-1,)) for x in xs], 0
    if not xs or ndim(xs[0]) == 0:
        raise ValueError("np.concatenate: zero-dimensional arrays cannot be concatenated")
    return ops.concat(xs, axis=axis_index("np.concatenate", axis, ndim(xs[0])))


@numpy_function("stack")
def _stack(arrays, axis=0, dtype=None):
    if is_arraylike(arrays):
        a = cast_to(arrays, dtype or arrays.dtype)
        return moveaxis(a, 0, axis_index("np.stack", axis, ndim(a)))
    xs = _cast_all(list(arrays), dtype)
    if not xs:
        raise ValueError("np.stack: need at least one array to stack")
    return ops.stack(xs, axis=axis_index("np.stack", axis, ndim(xs[0]) + 1))


def _join(fname, tup, positions, axis, dtype):
    """Each row made at least N-D (`positions` of new axes by rank), joined on `axis(rank)`."""
    if is_arraylike(tup):
        a = cast_to(tup, dtype or tup.dtype)
        if ndim(a) == 0:
            raise TypeError(f"{fname}: arrays to stack must be passed as a sequence")
        row_ndim = ndim(a) - 1
        new = tuple(p + 1 for p in positions(row_ndim))
        a = _expand(a, new)
        return _rows_joined(fname, a, axis(row_ndim + len(new)))
    xs = [_expand(x, positions(ndim(x))) for x in _cast_all(list(tup), dtype)]
    if not xs:
        raise ValueError(f"{fname}: need at least one array to concatenate")
    return ops.concat(xs, axis=axis(ndim(xs[0])))


@numpy_function("vstack")
def _vstack(tup, dtype=None):
    return _join("np.vstack", tup, _at2, lambda r: 0, dtype)


@numpy_function("hstack")
def _hstack(tup, dtype=None):
    return _join("np.hstack", tup, _at1, lambda r: 0 if r == 1 else 1, dtype)


@numpy_function("dstack")
def _dstack(tup):
    return _join("np.dstack", tup, _at3, lambda r: 2, None)


@numpy_function("column_stack")
def _column_stack(tup):
    return _join("np.column_stack", tup, _column, lambda r: 1, None)


# ---- flipping, differences, taking ----


def _along(axis: int, n: int, item) -> tuple:
    return (slice(None),) * axis + (item,) + (slice(None),) * (n - axis - 1)


@numpy_function("flip")
def _flip(m, axis=None):
    n = ndim(m)
    axes = range(n) if axis is None else axes_tuple("np.flip", axis, n)
    index = tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(n))
    return ops.getitem(m, index)


@numpy_function("fliplr")
def _fliplr(m):
    if ndim(m) < 2:
        raise ValueError("np.fliplr: Input must be >= 2-d.")
    return ops.getitem(m, (slice(None), slice(None, None, -1)))


@numpy_function("flipud")
def _flipud(m):
    if ndim(m) < 1:
        raise ValueError("np.flipud: Input must be >= 1-d.")
    return ops.getitem(m, slice(None, None, -1))


@numpy_function("diff")
def _diff(a, n=1, axis=-1):
    if n < 0:
        raise ValueError(f"np.diff: order must be non-negative but got {n}")
    nd = ndim(a)
    if nd == 0:
        raise ValueError("np.diff requires input that is at least one dimensional")
    axis = axis_index("np.diff", axis, nd)
    out = as_symbol(a)
    for _ in range(n):
        hi = ops.getitem(out, _along(axis, nd, slice(1, None)))
        lo = ops.getitem(out, _along(axis, nd, slice(None, -1)))
        out = ops.ne(hi, lo) if out.dtype == np.dtype(bool) else hi - lo
    return out


@numpy_function("take")
def _take(a, indices, axis=None):
    if not is_arraylike(indices):
        indices = np.asarray(indices)
    if axis is None:
        return ops.getitem(ops.reshape(a, (-1,)), indices)
    return ops.getitem(a, (slice(None),) * axis_index("np.take", axis, ndim(a)) + (indices,))


def diagonal(fname, a, offset, axis1, axis2):
    """NumPy's diagonal: axes axis1 and axis2 removed, their diagonal appended last."""
    n = ndim(a)
    i, j = axis_index(fname, axis1, n), axis_index(fname, axis2, n)
    if i == j:
        raise ValueError(f"{fname}: axis1 and axis2 cannot be the same")
    rest = tuple(k for k in range(n) if k not in (i, j))
    moved = ops.transpose(a, rest + (i, j))
    rows, cols = static(fname, (shape(a)[i], shape(a)[j]), "a diagonal")
    offset = int(offset)
    length = max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))
    r = np.arange(length, dtype=np.int64) + max(0, -offset)
    c = np.arange(length, dtype=np.int64) + max(0, offset)
    return ops.getitem(moved, (Ellipsis, r, c))


@numpy_function("diagonal")
def _diagonal(a, offset=0, axis1=0, axis2=1):
    return diagonal("np.diagonal", a, offset, axis1, axis2)


@numpy_function("linalg.diagonal")
def _linalg_diagonal(x, offset=0):
    return diagonal("np.linalg.diagonal", x, offset, -2, -1)


@numpy_function("tile")
def _tile(A, reps):  # noqa: N803 - NumPy's name
    reps = (int(reps),) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    a = as_symbol(A)
    d = max(len(reps), ndim(a))
    reps = (1,) * (d - len(reps)) + reps
    if d > ndim(a):
        a = ops.expand_dims(a, tuple(range(d - ndim(a))))
    dims = static("np.tile", shape(a), "np.tile")
    spread = ops.expand_dims(a, tuple(range(0, 2 * d, 2)))  # (1, d0, 1, d1, ...)
    target = tuple(x for pair in zip(reps, dims) for x in pair)
    zeros = np.broadcast_to(np.zeros((), a.dtype), target)
    return ops.reshape(ops.add(spread, zeros), tuple(r * n for r, n in zip(reps, dims)))
