"""NumPy functions that map onto knetflow ops of the same meaning: cumsum, repeat,
roll, split (and array_split, hsplit, vsplit, dsplit), tril, triu, diag.
"""

from __future__ import annotations

import numpy as np

import knetflow.ops as ops
from knetflow.graph.numpy_table import (
    accumulate_dtype, axis_index, cast_to, dtype_of, ndim, numpy_function, shape, static)


@numpy_function("cumsum")
def _cumsum(a, axis=None, dtype=None):
    target = np.dtype(dtype) if dtype is not None else accumulate_dtype(dtype_of(a))
    return ops.cumsum(cast_to(a, target), axis=axis)


@numpy_function("repeat")
def _repeat(a, repeats, axis=None):
    return ops.repeat(a, repeats, axis=axis)


@numpy_function("roll")
def _roll(a, shift, axis=None):
    return ops.roll(a, shift, axis=axis)


@numpy_function("tril")
def _tril(m, k=0):
    return ops.tril(m, k)


@numpy_function("triu")
def _triu(m, k=0):
    return ops.triu(m, k)


@numpy_function("diag")
def _diag(v, k=0):
    if ndim(v) not in (1, 2):
        raise ValueError("np.diag: Input must be 1- or 2-d.")
    return ops.diag(v, k)


@numpy_function("split")
def _split(ary, indices_or_sections, axis=0):
    return ops.split(ary, indices_or_sections, axis=axis)


@numpy_function("array_split")
def _array_split(ary, indices_or_sections, axis=0):
    if not isinstance(indices_or_sections, (int, np.integer)):
        return ops.split(ary, indices_or_sections, axis=axis)
    n = int(indices_or_sections)
    if n <= 0:
        raise ValueError("np.array_split: number sections must be larger than 0.")
    axis = axis_index("np.array_split", axis, ndim(ary))
    (length,) = static("np.array_split", (shape(ary)[axis],), "equal sections")
    # NumPy's rule: the first length % n pieces are one longer
    size, extra = divmod(length, n)
    bounds = np.cumsum([size + 1] * extra + [size] * (n - extra))[:-1]
    return ops.split(ary, [int(b) for b in bounds], axis=axis)


@numpy_function("hsplit")
def _hsplit(ary, indices_or_sections):
    if ndim(ary) == 0:
        raise ValueError("np.hsplit only works on arrays of 1 or more dimensions")
    return ops.split(ary, indices_or_sections, axis=1 if ndim(ary) > 1 else 0)


@numpy_function("vsplit")
def _vsplit(ary, indices_or_sections):
    if ndim(ary) < 2:
        raise ValueError("np.vsplit only works on arrays of 2 or more dimensions")
    return ops.split(ary, indices_or_sections, axis=0)


@numpy_function("dsplit")
def _dsplit(ary, indices_or_sections):
    if ndim(ary) < 3:
        raise ValueError("np.dsplit only works on arrays of 3 or more dimensions")
    return ops.split(ary, indices_or_sections, axis=2)
