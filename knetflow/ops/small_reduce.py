"""Kernels for a training step's small reductions: row and column sums through BLAS,
row maxima through argmax.

NumPy's `add.reduce` over a short last axis makes one inner-loop call per row
(about 2 us for a 100x10 float32 array), and over the first axis one call per
row too; `np.dot` with a vector of ones does the same sum in one BLAS call
(about 0.4 us). Plans use this for the small reductions a training step is
full of: a softmax's row sums, a bias gradient's column sums, a mean.

BLAS accumulates a row in a few running partial sums rather than NumPy's
pairwise tree, so its rounding grows faster with the length summed: sums
longer than `DOT_SUM_MAX` stay with `add.reduce`.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow.ops.base import Spec

__all__ = ["DOT_SUM_MAX", "dot_sum", "row_max"]

#: the longest run of elements summed through BLAS (float32 rounding stays near
#: NumPy's at this length: a few ulps per partial sum)
DOT_SUM_MAX = 4096


def _blas_float(x: Spec) -> bool:
    """x's shape is known and its dtype one BLAS computes in (float32 or float64)."""
    return x.is_static and np.dtype(x.dtype) in (np.float32, np.float64)


def dot_sum(x: Spec, axes, out_shape: tuple):
    """A kernel `(a, out=None)` summing a float `x` over `axes` through BLAS, or None.

    `axes` (None: all) must be x's first axes, its last axes, or both (the axes kept
    are one run in the middle: a convolution's bias gradient sums (N, C, H, W) over
    N, H and W), x's shape known and its dtype float32 or float64, each run summed
    at most DOT_SUM_MAX long. Last axes are summed first, as a matrix times ones,
    then first axes, as ones times a matrix. The result has `out_shape` (the sum's
    shape, keepdims or not), or is written into `out`. A whole-array sum is one
    matrix-vector product too: about 0.6 us where `add.reduce` takes 0.8 to 1.3 us
    for 500 to 4096 float32s.

    Example:
        >>> import numpy as np; from knetflow.ops.base import Spec
        >>> k = dot_sum(Spec((2, 3), "float64"), (1,), (2, 1))
        >>> k(np.arange(6.0).reshape(2, 3))
        array([[ 3.],
               [12.]])
    """
    if axes is None:
        axes = range(x.ndim)
    if not _blas_float(x) or x.ndim == 0 or not axes:
        return None
    axes, n = tuple(sorted(axes)), x.ndim
    lead = 0
    while lead < len(axes) and axes[lead] == lead:
        lead += 1
    trail = len(axes) - lead
    if axes[lead:] != tuple(range(n - trail, n)):
        return None
    first, kept, last = (math.prod(x.shape[:lead]), math.prod(x.shape[lead:n - trail]),
                         math.prod(x.shape[n - trail:]))
    if first * last < 2 or max(first, last) > DOT_SUM_MAX:
        return None
    dot = np.dot
    if not out_shape:  # to one number: a dot of two vectors, whose NumPy scalar divides
        size, ones = first * last, _ones(first * last, x.dtype)  # faster than a 0-d array

        def dot_total(a, out=None):
            total = dot(a.reshape(size), ones)
            if out is None:
                return total
            out[...] = total
            return out

        return dot_total
    ones_first, ones_last = (_ones(k, x.dtype) if k > 1 else None for k in (first, last))

    def dot_sum(a, out=None):
        if ones_last is not None:  # (first * kept, last) @ ones
            a = dot(a.reshape(first * kept, last), ones_last,
                    out=out.reshape(kept) if ones_first is None and _direct(out) else None)
        if ones_first is not None:  # ones @ (first, kept)
            a = dot(ones_first, a.reshape(first, kept),
                    out=out.reshape(kept) if _direct(out) else None)
        if out is None:
            return a.reshape(out_shape)
        if not _direct(out):  # its reshape would be a copy: write through
            out[...] = a.reshape(out.shape)
        return out

    return dot_sum


def _ones(n, dtype):
    ones = np.ones(n, dtype)
    ones.flags.writeable = False
    return ones


def _direct(out) -> bool:
    """Whether BLAS can write a sum straight into `out` (given, and C-contiguous)."""
    return out is not None and out.flags.c_contiguous


def row_max(x: Spec):
    """A kernel `(a) -> m` with m the maximum of each row of a C-contiguous float `x`
    along its last axis, kept as a size-1 axis; None unless x's shape is known and
    non-empty.

    One `argmax` and one `take` (about 1 us for 100x10 float32) instead of
    `maximum.reduce`'s inner loop per row (about 5 us). A row holding NaN gives NaN,
    as `max` does (argmax finds the first NaN). A non-contiguous `a` falls back to
    `maximum.reduce`.

    Example:
        >>> import numpy as np; from knetflow.ops.base import Spec
        >>> row_max(Spec((2, 3), "float32"))(np.array([[1, 5, 2], [7, 0, 1]], "float32"))
        array([[5.],
               [7.]], dtype=float32)
    """
    if not (x.is_static and x.is_float) or x.ndim == 0 or not x.size:
        return None
    width = x.shape[-1]
    starts = np.arange(0, x.size, width).reshape(x.shape[:-1] + (1,))
    keep = x.shape[:-1] + (1,)
    top, add = np.maximum.reduce, np.add

    def row_max(a):
        if not a.flags.c_contiguous:
            return top(a, axis=-1, keepdims=True)
        at = a.argmax(axis=-1).reshape(keep)
        return a.take(add(at, starts, out=at))  # the method: np.take's wrapper costs 1 us

    return row_max
