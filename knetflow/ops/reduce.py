"""Reductions (sum, mean, max, min, prod, var, std), the running sum `cumsum`, and the
broadcast pair `broadcast_like` / `sum_to` that gradients of broadcasting use.

`axis=None` reduces over every axis; `keepdims` keeps reduced axes as size 1.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow.ops.base import (
    Op,
    Spec,
    accumulate_dtype,
    apply,
    broadcast_shapes,
    fail,
    fmt,
    norm_axis,
    register,
)
from knetflow.ops.elementwise import cast
from knetflow.ops.small_reduce import dot_sum


def _reduced_shape(x: Spec, axis, keepdims) -> tuple:
    axes = range(x.ndim) if axis is None else axis
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _check_axis(opname, x: Spec, axis) -> None:
    """The graph's axis attribute is canonical (None, or a sorted tuple of distinct axes
    of x): the public functions make it so, and a graph read from a file must be, since
    the shape rules and kernels read it as such."""
    if axis is not None and (not isinstance(axis, tuple)
                             or axis != norm_axis(opname, axis, x.ndim)):
        fail(opname, f"axis {axis!r} is not a sorted tuple of distinct axes of {fmt(x)}")


def _reduce_infer(opname, float_out=False):
    def infer(x: Spec, axis=None, keepdims=False) -> Spec:
        _check_axis(opname, x, axis)
        dtype = x.dtype
        if float_out and not x.is_float:
            dtype = "float64"
        elif opname in ("sum", "prod") and np.dtype(x.dtype).kind in "biu":
            # as np.sum and np.prod: bools and integers narrower than 64 bits add up in
            # 64 (int32 sums overflowed in ONNX runtimes, which follow the declared dtype)
            dtype = "uint64" if np.dtype(x.dtype).kind == "u" else "int64"
        return Spec(_reduced_shape(x, axis, keepdims), dtype)

    return staticmethod(infer)


def _reduce_forward(fn_name):
    def forward(xp, x, axis=None, keepdims=False, out=None):
        return getattr(xp, fn_name)(x, axis=axis, keepdims=keepdims, out=out)

    return staticmethod(forward)


@register
class Sum(Op):
    """Sum over `axis` (all axes when None)."""
    name, out_arg = "sum", True
    infer = _reduce_infer("sum")
    forward = _reduce_forward("sum")

    def bind(xp, attrs, in_specs, out_spec):
        """On NumPy, a float sum is the add ufunc's reduce (np.sum without its wrapper), or
        for short rows or columns of a known shape a BLAS product with ones (`dot_sum`)."""
        if xp is not np or not in_specs[0].is_float:
            return None
        axis, keepdims, reduce = attrs.get("axis"), attrs.get("keepdims", False), np.add.reduce
        blas = dot_sum(in_specs[0], axis, out_spec.shape)
        if blas is not None:
            return blas

        def sum(x, out=None):  # noqa: A001 - the op's name
            return reduce(x, axis=axis, keepdims=keepdims, out=out)

        return sum

    def grad(g, out, x, axis=None, keepdims=False):
        return (broadcast_like(g, x, axis=axis, keepdims=keepdims),)


@register
class Mean(Op):
    """Mean over `axis` (all axes when None)."""
    name, out_arg = "mean", True
    infer = _reduce_infer("mean", float_out=True)
    forward = _reduce_forward("mean")

    def bind(xp, attrs, in_specs, out_spec):
        """On NumPy, a float32 or float64 mean of known size as a sum and one division:
        the same result as np.mean without its Python-level argument handling. Not for
        float16, whose sum np.mean accumulates in float32 (a float16 sum of 20000 values
        near 5 overflows)."""
        (x,) = in_specs
        if xp is not np or np.dtype(x.dtype) not in (np.float32, np.float64) or not x.is_static:
            return None
        axis, keepdims = attrs.get("axis"), attrs.get("keepdims", False)
        axes = range(x.ndim) if axis is None else axis
        n = math.prod(x.shape[a] for a in axes)
        if n == 0:
            return None
        reduce, divide = np.add.reduce, np.true_divide
        blas = dot_sum(x, axis, out_spec.shape)
        if blas is not None:
            def reduce(x, axis, keepdims, out):
                return blas(x, out)

        def mean(x, out=None):
            total = reduce(x, axis=axis, keepdims=keepdims, out=out)
            return divide(total, n, out=total) if out is not None else total / n

        if out_spec.shape:
            return mean

        def mean_of_all(x, out=None):  # the sum a NumPy scalar, divided as one
            total = reduce(x, axis=axis, keepdims=keepdims, out=None) / n
            if out is None:
                return total
            out[...] = total
            return out

        return mean_of_all

    def grad(g, out, x, axis=None, keepdims=False):
        return (per_count(broadcast_like(g, x, axis=axis, keepdims=keepdims), x, axis),)


@register
class Prod(Op):
    """Product over `axis` (its gradient divides by x, so zeros in x give NaN)."""
    name, out_arg = "prod", True
    saves = ("out", 0)
    infer = _reduce_infer("prod")
    forward = _reduce_forward("prod")

    def grad(g, out, x, axis=None, keepdims=False):
        return (broadcast_like(g * out, x, axis=axis, keepdims=keepdims) / x,)


def _extremum_grad(g, out, x, axis=None, keepdims=False):
    """Gradient of max/min: split equally between tied extrema (as HIPS autograd and JAX)."""
    from knetflow.ops.binary import eq
    from knetflow.ops.elementwise import cast

    hit = cast(eq(x, broadcast_like(out, x, axis=axis, keepdims=keepdims)), x.dtype)
    ties = sum(hit, axis=axis, keepdims=True)
    return (broadcast_like(g, x, axis=axis, keepdims=keepdims) * hit / ties,)


@register
class Max(Op):
    """Maximum over `axis` (Knet `maximum`); tied maxima share the gradient equally."""
    name, out_arg = "max", True
    saves = ("out", 0)
    infer = _reduce_infer("max")
    forward = _reduce_forward("max")
    grad = staticmethod(_extremum_grad)


@register
class Min(Op):
    """Minimum over `axis` (Knet `minimum`); tied minima share the gradient equally."""
    name, out_arg = "min", True
    saves = ("out", 0)
    infer = _reduce_infer("min")
    forward = _reduce_forward("min")
    grad = staticmethod(_extremum_grad)


@register
class Cumsum(Op):
    """Running sums along `axis` (NumPy `cumsum`); `reverse` sums from the far end.

    The adjoint of a running sum is the running sum from the other end, so the
    gradient is this op again with `reverse` flipped (and differentiates again).
    Bool and small integer inputs widen as in NumPy (int32 -> int64).
    """
    name = "cumsum"

    def infer(x: Spec, axis=0, reverse=False) -> Spec:
        if not 0 <= axis < x.ndim:
            fail("cumsum", f"axis {axis} is out of range for {fmt(x)}")
        return x.with_dtype(accumulate_dtype(x.dtype))

    def forward(xp, x, axis=0, reverse=False):
        dtype = accumulate_dtype(str(x.dtype))
        if not reverse:
            return xp.cumsum(x, axis=axis, dtype=dtype)
        sums = xp.cumsum(xp.flip(x, axis), axis=axis, dtype=dtype)
        return xp.ascontiguousarray(xp.flip(sums, axis))

    def grad(g, out, x, axis=0, reverse=False):
        return (apply(Cumsum, g, axis=axis, reverse=not reverse),)


@register
class Count(Op):
    """Number of elements of x that a reduction over `axis` combines (a 0-d array)."""
    name, nondiff, shape_only = "count", (0,), (0,)

    def infer(x: Spec, axis=None, dtype=None) -> Spec:
        _check_axis("count", x, axis)
        return Spec((), _count_dtype(x.dtype, dtype))

    def forward(xp, x, axis=None, dtype=None):
        n = x.size if axis is None else int(math.prod([x.shape[a] for a in axis]))
        return xp.asarray(n, dtype=_count_dtype(x.dtype, dtype))

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan the shapes are known: the count is a constant (read-only, shared
        by every run)."""
        (x,) = in_specs
        if xp is not np or not x.is_static:
            return None
        axis = attrs.get("axis")
        n = math.prod(x.shape) if axis is None else math.prod(x.shape[a] for a in axis)
        value = np.asarray(n, dtype=out_spec.dtype)
        value.flags.writeable = False

        def count(x):
            return value

        return count


@register
class BroadcastLike(Op):
    """Broadcast g to the shape of `like` (after re-inserting reduced `axis`)."""
    name, view, nondiff, shape_only = "broadcast_like", True, (1,), (1,)

    def infer(g: Spec, like: Spec, axis=None, keepdims=False) -> Spec:
        shape = g.shape
        if not keepdims:
            axes = range(like.ndim) if axis is None else axis
            dims = list(shape)
            for a in sorted(axes):
                dims.insert(a, 1)
            shape = tuple(dims)
        out = broadcast_shapes("broadcast_like", Spec(shape, g.dtype), like)
        if len(out) != like.ndim or any(a is not None and b is not None and a != b
                                        for a, b in zip(out, like.shape)):
            fail("broadcast_like", f"cannot broadcast {fmt(g)} to {fmt(like)}")
        return Spec(like.shape, g.dtype)

    def forward(xp, g, like, axis=None, keepdims=False):
        if not keepdims:
            g = xp.expand_dims(g, tuple(range(like.ndim)) if axis is None else axis)
        return xp.broadcast_to(g, like.shape)

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan: the broadcast view made from strides worked out once (a C-contiguous
        g; anything else takes forward's path)."""
        g, like = in_specs
        if xp is not np or not (g.is_static and like.is_static):
            return None
        axis, keepdims = attrs.get("axis"), attrs.get("keepdims", False)
        shape = list(g.shape)
        if not keepdims:
            for a in sorted(range(like.ndim) if axis is None else axis):
                shape.insert(a, 1)
        shape = [1] * (like.ndim - len(shape)) + shape  # broadcasting adds leading axes
        itemsize = np.dtype(g.dtype).itemsize
        own, step = [], itemsize  # g's C-contiguous strides, on the expanded shape
        for d in reversed(shape):
            own.append(step)
            step *= d
        own.reverse()
        strides = tuple(0 if d == 1 and n != 1 else s for d, n, s in zip(shape, like.shape, own))
        out_shape, dtype, slow = like.shape, np.dtype(g.dtype), BroadcastLike.forward

        def broadcast_like(g, like):
            if not g.flags.c_contiguous or g.dtype != dtype:
                return slow(np, g, like, axis=axis, keepdims=keepdims)
            view = np.ndarray(out_shape, dtype, buffer=g, strides=strides)
            view.flags.writeable = False  # as np.broadcast_to's: no one writes through it
            return view

        return broadcast_like

    def grad(gout, out, g, like, axis=None, keepdims=False):
        s = sum_to(gout, like)
        if not keepdims:
            s = sum(s, axis=axis)
        return s, None


@register
class SumTo(Op):
    """Sum g down to the shape of `like` (undo broadcasting); the gradient's unbroadcast."""
    name, nondiff, shape_only = "sum_to", (1,), (1,)

    def infer(g: Spec, like: Spec) -> Spec:
        if like.ndim > g.ndim:
            fail("sum_to", f"cannot sum {fmt(g)} to the larger rank of {fmt(like)}")
        return Spec(like.shape, g.dtype)

    def forward(xp, g, like):
        lead = g.ndim - like.ndim
        axes = tuple(range(lead)) + tuple(
            lead + i for i, d in enumerate(like.shape) if d == 1 and g.shape[lead + i] != 1)
        if not axes:
            return g.copy()  # a new value, as plans take it to be (see `_first`)
        s = xp.sum(g, axis=axes, keepdims=True)
        return s.reshape(like.shape)

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan: the summed axes worked out once, from the concrete shapes."""
        g, like = in_specs
        if xp is not np or not (g.is_static and like.is_static):
            return None
        lead = g.ndim - like.ndim
        axes = tuple(range(lead)) + tuple(
            lead + i for i, d in enumerate(like.shape) if d == 1 and g.shape[lead + i] != 1)
        if not axes:
            return _first
        shape, reduce = like.shape, np.add.reduce
        blas = dot_sum(g, axes, shape)  # like.shape: the kept axes in order, 1s between
        if blas is not None:
            def sum_to(g, like):
                return blas(g)

            return sum_to

        def sum_to(g, like):
            return reduce(g, axis=axes, keepdims=True).reshape(shape)

        return sum_to

    def grad(gout, out, g, like):
        return broadcast_like(gout, g, keepdims=True), None


def _first(g, like):
    # a copy, not g: the plan's memory planner takes sum_to's result for a new value and
    # may hand g's buffer to another op while the result is still read
    return g.copy()


def _axis(opname, x, axis):
    spec = getattr(x, "spec", None)
    ndim = spec.ndim if spec is not None else len(getattr(x, "shape", ()))
    return norm_axis(opname, axis, ndim)


def sum(x, axis=None, keepdims=False):  # noqa: A001 - NumPy name
    """Sum of x over `axis` (all axes when None).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.sum(np.ones((2, 3)), axis=1)
        array([3., 3.])
    """
    return apply(Sum, x, axis=_axis("sum", x, axis), keepdims=bool(keepdims))


def mean(x, axis=None, keepdims=False):
    """Mean of x over `axis` (all axes when None)."""
    return apply(Mean, x, axis=_axis("mean", x, axis), keepdims=bool(keepdims))


def prod(x, axis=None, keepdims=False):
    """Product of x over `axis`."""
    return apply(Prod, x, axis=_axis("prod", x, axis), keepdims=bool(keepdims))


def max(x, axis=None, keepdims=False):  # noqa: A001 - NumPy name
    """Largest element of x over `axis` (Knet `maximum`); ties share the gradient equally."""
    return apply(Max, x, axis=_axis("max", x, axis), keepdims=bool(keepdims))


def min(x, axis=None, keepdims=False):  # noqa: A001 - NumPy name
    """Smallest element of x over `axis` (Knet `minimum`); ties share the gradient equally."""
    return apply(Min, x, axis=_axis("min", x, axis), keepdims=bool(keepdims))


def var(x, axis=None, keepdims=False, ddof=0):
    """Variance over `axis` (NumPy's `ddof=0` by default; `ddof=1` is Julia's `var`)."""
    axis = _axis("var", x, axis)
    centered = x - mean(x, axis=axis, keepdims=True)
    total = sum(centered * centered, axis=axis, keepdims=keepdims)
    return per_count(total, x, axis, ddof)


def std(x, axis=None, keepdims=False, ddof=0):
    """Standard deviation over `axis` (square root of `var`).

    Where the variance is 0 (one element, an axis of length 1, constant data) the
    gradient is 0, as autograd libraries define it: var'/(2 std) would be 0/0
    there. The square root is taken of 1 instead of 0 and its result discarded,
    so neither the value nor any gradient forms an inf.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> float(kf.std(np.array([1.0, 3.0])))
        1.0
    """
    from knetflow.ops.binary import eq, where
    from knetflow.ops.elementwise import sqrt

    v = var(x, axis=axis, keepdims=keepdims, ddof=ddof)
    flat = eq(v, 0)
    return where(flat, 0, sqrt(where(flat, 1, v)))


def cumsum(x, axis=None):
    """Running sums of x along `axis` (NumPy `cumsum`); over the flattened x when None.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.cumsum(np.array([[1.0, 2.0], [3.0, 4.0]]))
        array([ 1.,  3.,  6., 10.])
        >>> kf.cumsum(np.array([[1.0, 2.0], [3.0, 4.0]]), axis=0)
        array([[1., 2.],
               [4., 6.]])
    """
    if axis is None:
        from knetflow.ops.array import reshape

        return apply(Cumsum, reshape(x, (-1,)), axis=0, reverse=False)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        fail("cumsum", f"axis must be an int or None, got {axis!r}")
    spec = getattr(x, "spec", None)
    ndim = spec.ndim if spec is not None else np.ndim(x)
    if not -ndim <= axis < ndim:
        fail("cumsum", f"axis {axis} is out of range for an array of {ndim} dimensions")
    return apply(Cumsum, x, axis=int(axis) % ndim, reverse=False)


def count(x, axis=None, dtype=None):
    """Number of elements a reduction of x over `axis` combines, as a 0-d array of
    `dtype`: by default x's float dtype, float64 for integers and bools."""
    attrs = {}
    if dtype is not None:  # stored only where it is not the default, as files before it
        dtype = np.dtype(dtype).name
        if dtype != _count_dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype, None):
            attrs["dtype"] = dtype
    return apply(Count, x, axis=_axis("count", x, axis), **attrs)


def _count_dtype(x_dtype, dtype) -> str:
    if dtype is not None:
        return np.dtype(dtype).name
    x_dtype = np.dtype(x_dtype)
    return x_dtype.name if x_dtype.kind == "f" else "float64"


def mean_dtype(dtype) -> str:
    """The dtype np.mean sums `dtype` in: float32 for float16 (whose largest value,
    65504, a sum or a count passes), float64 for integers and bools, else `dtype`.
    knetflow's counts, label counts and optimizer math on float16 use it too."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return "float64"
    return "float32" if dtype == np.float16 else dtype.name


def per_count(a, x, axis=None, ddof=0):
    """a / (count(x, axis) - ddof) in a's dtype: a float16 `a` is divided in float32, by
    a count float16 could not hold, and the quotient cast back, as np.mean does.

    Example:
        >>> import numpy as np; from knetflow.ops.reduce import per_count
        >>> per_count(np.full(2, 7.0, "float16"), np.ones(70000, "float16"))
        array([0.0001, 0.0001], dtype=float16)
    """
    want = a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
    n = count(x, axis=axis, dtype=mean_dtype(want))  # no attribute where it is x's own
    return in_dtype(a / (n - ddof if ddof else n), want)


def in_dtype(value, dtype):
    """value as `dtype`: cast only where it is another (a float16 quantity computed in
    `mean_dtype`, float32)."""
    dtype = np.dtype(dtype)
    return value if np.dtype(value.dtype) == dtype else cast(value, dtype.name)


def broadcast_like(g, like, axis=None, keepdims=True):
    """Broadcast g to like's shape; with keepdims=False first re-insert reduced `axis`."""
    return apply(BroadcastLike, g, like, axis=axis, keepdims=bool(keepdims))


def sum_to(g, like):
    """Sum g down to like's shape (the reverse of broadcasting)."""
    return apply(SumTo, g, like)
