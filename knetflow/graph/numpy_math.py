"""NumPy reductions and elementwise functions on symbols, with NumPy's meaning.

Reductions take NumPy's `axis` (None, an int, a tuple), `keepdims` and, where
NumPy has them, `dtype` (the input is cast to it first) and `ddof`/`correction`;
the result dtype is NumPy's (sums of small integers widen to int64, means of
integers are float64). See numpy_table.py for how calls are bound and refused.
"""

from __future__ import annotations

import numpy as np

import knetflow.ops as ops
from knetflow.graph.numpy_table import (
    _NO_VALUE, accumulate_dtype, as_symbol, axes_tuple, axis_index, cast_to, dtype_of,
    is_arraylike, ndim, numpy_function, pin_scalars, refuse, shape, stand_in, static)


def _float_result(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype("float64")


def _prepare(fname, a, axis, dtype, rule):
    """(a cast to the dtype NumPy computes in, canonical axes)."""
    target = np.dtype(dtype) if dtype is not None else rule(dtype_of(a))
    return cast_to(a, target), axes_tuple(fname, axis, ndim(a))


# ---- reductions ----


@numpy_function("sum")
def _sum(a, axis=None, dtype=None, keepdims=False):
    a, axis = _prepare("np.sum", a, axis, dtype, accumulate_dtype)
    return ops.sum(a, axis=axis, keepdims=keepdims)


@numpy_function("prod")
def _prod(a, axis=None, dtype=None, keepdims=False):
    a, axis = _prepare("np.prod", a, axis, dtype, accumulate_dtype)
    return ops.prod(a, axis=axis, keepdims=keepdims)


@numpy_function("mean")
def _mean(a, axis=None, dtype=None, keepdims=False):
    a, axis = _prepare("np.mean", a, axis, dtype, _float_result)
    return ops.mean(a, axis=axis, keepdims=keepdims)


@numpy_function("max", "amax")
def _max(a, axis=None, keepdims=False):
    return ops.max(a, axis=axes_tuple("np.max", axis, ndim(a)), keepdims=keepdims)


@numpy_function("min", "amin")
def _min(a, axis=None, keepdims=False):
    return ops.min(a, axis=axes_tuple("np.min", axis, ndim(a)), keepdims=keepdims)


@numpy_function("ptp")
def _ptp(a, axis=None, keepdims=False):
    return _max(a, axis, keepdims) - _min(a, axis, keepdims)


def _ddof(fname, ddof, correction):
    if correction is _NO_VALUE:
        return ddof
    if ddof != 0:
        raise ValueError(f"{fname}: ddof and correction can't be provided simultaneously.")
    return correction


@numpy_function("var")
def _var(a, axis=None, dtype=None, ddof=0, keepdims=False, correction=_NO_VALUE):
    a, axis = _prepare("np.var", a, axis, dtype, _float_result)
    return ops.var(a, axis=axis, keepdims=keepdims, ddof=_ddof("np.var", ddof, correction))


@numpy_function("std")
def _std(a, axis=None, dtype=None, ddof=0, keepdims=False, correction=_NO_VALUE):
    a, axis = _prepare("np.std", a, axis, dtype, _float_result)
    return ops.std(a, axis=axis, keepdims=keepdims, ddof=_ddof("np.std", ddof, correction))


@numpy_function("average")
def _average(a, axis=None, weights=None, returned=False, keepdims=False):
    axes = axes_tuple("np.average", axis, ndim(a))
    if weights is None:
        avg = ops.mean(a, axis=axes, keepdims=keepdims)
        total = ops.zeros_like(avg) + ops.count(a, axis=axes)
    else:
        w = _average_weights(a, axes, weights)
        total = ops.sum(w + ops.zeros_like(a), axis=axes, keepdims=keepdims)
        avg = ops.sum(a * w, axis=axes, keepdims=keepdims) / total
    if not returned:
        return avg
    return avg, cast_to(total, dtype_of(avg))


def _average_weights(a, axes, weights):
    if not is_arraylike(weights):
        weights = np.asarray(weights)
    if shape(weights) == shape(a):
        return weights
    if axes is None:
        raise TypeError("np.average: axis must be specified when shapes of a and weights differ.")
    dims = tuple(shape(a)[i] for i in axes)
    if shape(weights) != dims:
        raise ValueError("np.average: shape of weights must be consistent with shape of a "
                         "along specified axis.")
    order = sorted(range(len(axes)), key=lambda i: axes[i])   # weights' axes in a's order
    w = ops.transpose(weights, tuple(order)) if order != list(range(len(axes))) else weights
    full = tuple(shape(a)[i] if i in axes else 1 for i in range(ndim(a)))
    return ops.reshape(w, static("np.average", full, "weights along an axis"))


# ---- logical reductions and counts (no gradient) ----


@numpy_function("any")
def _any(a, axis=None, keepdims=False):
    return ops.max(ops.ne(a, 0), axis=axes_tuple("np.any", axis, ndim(a)), keepdims=keepdims)


@numpy_function("all")
def _all(a, axis=None, keepdims=False):
    return ops.min(ops.ne(a, 0), axis=axes_tuple("np.all", axis, ndim(a)), keepdims=keepdims)


@numpy_function("count_nonzero")
def _count_nonzero(a, axis=None, keepdims=False):
    hits = cast_to(ops.ne(a, 0), "int64")
    return ops.sum(hits, axis=axes_tuple("np.count_nonzero", axis, ndim(a)), keepdims=keepdims)


def _arg_extremum(fname, reduce, a, axis, keepdims):
    """The first index of the extremum along `axis` (of the flattened a when None).

    NaN counts as the extremum, as in NumPy: max/min propagate it, and the first
    NaN is then the first position equal to the result or unequal to itself.
    """
    x = a if axis is None else a
    if axis is None:
        x = ops.reshape(a, (-1,))
        ax = 0
    else:
        ax = axis_index(fname, axis, ndim(a))
    (n,) = static(fname, (shape(x)[ax],), "an arg-extremum along a dynamic axis")
    best = reduce(x, axis=ax, keepdims=True)
    hit = ops.maximum(ops.eq(x, best), ops.ne(x, x))
    index = np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (ndim(x) - ax - 1))
    out = ops.min(ops.where(hit, index, np.int64(n)), axis=ax, keepdims=True)
    if not keepdims:
        return ops.reshape(out, ()) if axis is None else ops.squeeze(out, ax)
    return ops.reshape(out, (1,) * ndim(a)) if axis is None else out


@numpy_function("argmax")
def _argmax(a, axis=None, keepdims=False):
    return _arg_extremum("np.argmax", ops.max, a, axis, keepdims)


@numpy_function("argmin")
def _argmin(a, axis=None, keepdims=False):
    return _arg_extremum("np.argmin", ops.min, a, axis, keepdims)


# ---- elementwise functions that are not ufuncs ----


@numpy_function("round", "around")
def _round(a, decimals=0):
    if dtype_of(a).kind != "f":
        if decimals < 0:
            refuse("np.round", "decimals < 0 on integers")
        return as_symbol(a)
    if decimals == 0:
        return ops.round(a)
    # NumPy's own recipe: scale, round half to even, scale back
    if decimals > 0:
        scale = float(10 ** decimals)
        return ops.round(a * scale) / scale
    scale = float(10 ** -decimals)
    return ops.round(a / scale) * scale


@numpy_function("fix")
def _fix(x):
    return ops.trunc(x)


@numpy_function("real")
def _real(val):
    return as_symbol(val)  # knetflow's dtypes are all real


@numpy_function("imag")
def _imag(val):
    return ops.zeros_like(val)


@numpy_function("clip")
def _clip(a, a_min=_NO_VALUE, a_max=_NO_VALUE, min=_NO_VALUE, max=_NO_VALUE):  # noqa: A002
    lo = _bound("a_min", a_min, "min", min)
    hi = _bound("a_max", a_max, "max", max)
    expected = np.clip(stand_in(a), stand_in(lo), stand_in(hi)).dtype
    a, lo, hi = pin_scalars([cast_to(a, expected), lo, hi])
    out = a
    if lo is not None:
        out = ops.maximum(out, lo)
    if hi is not None:
        out = ops.minimum(out, hi)
    return cast_to(as_symbol(out), expected)


def _bound(name, value, alias, alias_value):
    if value is not _NO_VALUE and alias_value is not _NO_VALUE:
        raise TypeError(f"np.clip: passed more than one argument for {name} ({name}, {alias})")
    value = alias_value if value is _NO_VALUE else value
    return None if value is _NO_VALUE else value


@numpy_function("where")
def _where(condition, x=None, y=None):
    if x is None and y is None:
        refuse("np.where", "np.where(condition) with one argument (its shape depends on the "
                           "values); use np.where(condition, x, y) or a mask index")
    if x is None or y is None:
        raise ValueError("np.where: either both or neither of x and y should be given")
    expected = np.where(stand_in(condition), stand_in(x), stand_in(y)).dtype
    if dtype_of(condition) != np.dtype(bool):
        condition = ops.ne(condition, 0)
    x, y = pin_scalars([x, y])
    return cast_to(ops.where(condition, x, y), expected)


# ---- array creation from a symbol, and static facts about it ----


@numpy_function("zeros_like")
def _zeros_like(a, dtype=None):
    return ops.zeros_like(a, dtype=dtype)


@numpy_function("empty_like")
def _empty_like(prototype, dtype=None):
    return ops.zeros_like(prototype, dtype=dtype)  # any values will do: zeros


@numpy_function("ones_like")
def _ones_like(a, dtype=None):
    return _full_like(a, 1, dtype)


@numpy_function("full_like")
def _full_like(a, fill_value, dtype=None):
    dtype = dtype_of(a) if dtype is None else np.dtype(dtype)
    if is_arraylike(fill_value):
        if ndim(fill_value) > ndim(a):
            raise ValueError("np.full_like: fill_value does not broadcast to the shape of a")
        fill = cast_to(fill_value, dtype)
    else:
        fill = np.asarray(fill_value).astype(dtype)  # NumPy casts the fill value unsafely
    return ops.zeros_like(a, dtype=dtype) + fill


@numpy_function("copy")
def _copy(a):
    return as_symbol(a)  # a symbol's value never changes under it


@numpy_function("astype")
def _astype(x, dtype):
    return as_symbol(cast_to(x, dtype))


@numpy_function("shape")
def _shape(a):
    return shape(a)


@numpy_function("ndim")
def _ndim(a):
    return ndim(a)


@numpy_function("size")
def _size(a, axis=None):
    if axis is not None:
        return static("np.size", (shape(a)[axis_index("np.size", axis, ndim(a))],))[0]
    return int(np.prod(static("np.size", shape(a), "np.size"), dtype=np.int64))
