"""Array ops that move data rather than compute it: reshape, transpose, mat,
concatenation and stacking, and squeeze/expand_dims.

Shape rules accept dynamic (`None`) dims. Gradients are array ops again:
reshapes reshape back and concatenation slices (with the indexing ops of
`knetflow.ops.index`), so every gradient here can be differentiated once more.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow.ops.base import (
    Op,
    Spec,
    apply,
    fail,
    fmt,
    norm_axis,
    register,
    result_dtype,
)
from knetflow.ops.index import getitem, zeros_like

__all__ = [
    "cat",
    "cat1d",
    "concat",
    "expand_dims",
    "hcat",
    "mat",
    "permutedims",
    "reshape",
    "reshape_like",
    "squeeze",
    "stack",
    "transpose",
    "vcat",
]

#: inputs of variadic ops beyond the first that are shape-only (concat_part's `xs`)
MAX_PARTS = 256


def _prod(dims):
    """Product of dims, or None when one is dynamic."""
    return None if None in dims else math.prod(dims)


def _same(d1, d2) -> bool:
    return d1 is None or d2 is None or d1 == d2


def _shape(x) -> tuple:
    """Static shape of a Symbol or array-like (None for dynamic dims)."""
    spec = getattr(x, "spec", None)
    if isinstance(spec, Spec):
        return spec.shape
    if hasattr(x, "shape"):
        return tuple(x.shape)
    return np.shape(x)


def _reshape_back(g, x):
    """g reshaped to x's shape; x itself is read only when two or more dims are dynamic."""
    shape = _shape(x)
    if shape.count(None) > 1 or (None in shape and 0 in shape):
        return reshape_like(g, x)
    return reshape(g, tuple(-1 if d is None else d for d in shape))


# ---- reshaping ----


@register
class Reshape(Op):
    """x with a new shape; -1 is inferred, None copies the input dim at that position."""
    name, view = "reshape", True

    def infer(x: Spec, shape=()) -> Spec:
        target = fmt(Spec(shape, x.dtype))
        dims, copied_dynamic = [], 0
        for i, d in enumerate(shape):
            if d is None:
                if i >= x.ndim:
                    fail("reshape", f"None at position {i} of {target} has no dim of {fmt(x)} "
                                    "to copy")
                copied_dynamic += x.shape[i] is None
                dims.append(x.shape[i])
            elif d < -1:
                fail("reshape", f"invalid target shape {target} for {fmt(x)}")
            else:
                dims.append(d)
        if dims.count(-1) > 1:
            fail("reshape", f"target {target} for {fmt(x)} has more than one -1")
        known_in = math.prod(d for d in x.shape if d is not None)
        known_out = math.prod(d for d in dims if d not in (None, -1))
        if copied_dynamic == x.shape.count(None):
            # the dynamic dims carry over unchanged, so the static parts must agree
            if -1 in dims:
                if known_out == 0 or known_in % known_out:
                    fail("reshape", f"cannot reshape {fmt(x)} into {target}")
                dims[dims.index(-1)] = known_in // known_out
            elif known_in != known_out:
                size = f" ({known_in} elements)" if x.is_static else ""
                fail("reshape", f"cannot reshape {fmt(x)}{size} into {target}")
        elif -1 in dims:
            dims[dims.index(-1)] = None
        return x.with_shape(dims)

    def forward(xp, x, shape=()):
        return xp.reshape(x, tuple(x.shape[i] if d is None else d for i, d in enumerate(shape)))

    def grad(g, out, x, shape=()):
        return (_reshape_back(g, x),)


@register
class ReshapeLike(Op):
    """x reshaped to the shape of `like` (used when that shape is dynamic)."""
    name, view, nondiff = "reshape_like", True, (1,)

    def infer(x: Spec, like: Spec) -> Spec:
        if x.is_static and like.is_static and x.size != like.size:
            fail("reshape_like", f"cannot reshape {fmt(x)} into {fmt(like)}")
        return Spec(like.shape, x.dtype)

    def forward(xp, x, like):
        return xp.reshape(x, like.shape)

    def grad(g, out, x, like):
        return _reshape_back(g, x), None


@register
class Mat(Op):
    """x as a matrix: the last `dims` axes joined into columns, the others into rows."""
    name, view = "mat", True

    def infer(x: Spec, dims=1) -> Spec:
        if not 0 <= dims <= x.ndim:
            fail("mat", f"dims={dims} is out of range for {fmt(x)}")
        split = x.ndim - dims
        return x.with_shape((_prod(x.shape[:split]), _prod(x.shape[split:])))

    def forward(xp, x, dims=1):
        split = x.ndim - dims
        return xp.reshape(x, (math.prod(x.shape[:split]), math.prod(x.shape[split:])))

    def grad(g, out, x, dims=1):
        return (_reshape_back(g, x),)


@register
class Transpose(Op):
    """x with its axes permuted by `axes`."""
    name, view = "transpose", True

    def infer(x: Spec, axes=()) -> Spec:
        if sorted(axes) != list(range(x.ndim)):
            fail("transpose", f"axes {tuple(axes)} are not a permutation of the axes of {fmt(x)}")
        return x.with_shape(x.shape[a] for a in axes)

    def forward(xp, x, axes=()):
        return xp.transpose(x, axes)

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan on NumPy: the array's own transpose method (no argument handling)."""
        if xp is not np:
            return None
        axes = tuple(attrs.get("axes", ()))

        def transpose(x):
            return x.transpose(axes)

        return transpose

    def grad(g, out, x, axes=()):
        return (transpose(g, tuple(int(a) for a in np.argsort(axes))),)


def _unit_axes_bind(xp, attrs, in_specs, out_spec):
    """In a plan: adding or removing size-1 axes is a reshape to the known shape (always
    a view; np.expand_dims and np.squeeze cost about 1.5 us of Python per call)."""
    if not out_spec.is_static:
        return None
    shape = out_spec.shape

    def to_shape(x):
        return x.reshape(shape)

    return to_shape


@register
class Squeeze(Op):
    """x without the size-1 axes `axis`."""
    name, view = "squeeze", True

    def infer(x: Spec, axis=()) -> Spec:
        for a in axis:
            if not 0 <= a < x.ndim or x.shape[a] not in (1, None):
                fail("squeeze", f"cannot squeeze axis {a} of {fmt(x)}: its size is not 1")
        return x.with_shape(d for i, d in enumerate(x.shape) if i not in axis)

    def forward(xp, x, axis=()):
        return xp.squeeze(x, axis=tuple(axis))

    bind = _unit_axes_bind

    def grad(g, out, x, axis=()):
        return (expand_dims(g, axis),)


@register
class ExpandDims(Op):
    """x with new size-1 axes at positions `axis` of the result."""
    name, view = "expand_dims", True

    def infer(x: Spec, axis=()) -> Spec:
        ndim = x.ndim + len(axis)
        if any(not 0 <= a < ndim for a in axis):
            fail("expand_dims", f"axis {tuple(axis)} is out of range for {fmt(x)}")
        rest = iter(x.shape)
        return x.with_shape(1 if i in axis else next(rest) for i in range(ndim))

    def forward(xp, x, axis=()):
        return xp.expand_dims(x, tuple(axis))

    bind = _unit_axes_bind

    def grad(g, out, x, axis=()):
        return (squeeze(g, axis),)


# ---- joining ----


def _check_joinable(opname, xs, axis, ndim_out, free):
    """Fail unless the xs have one rank and agree on every axis but `free`."""
    if not xs:
        fail(opname, "needs at least one input")
    shapes = ", ".join(fmt(x) for x in xs)
    if any(x.ndim != xs[0].ndim for x in xs):
        fail(opname, f"inputs must have the same rank, got {shapes}")
    if not 0 <= axis < ndim_out:
        fail(opname, f"axis {axis} is out of range for inputs {shapes}")
    for i in range(xs[0].ndim):
        if i != free and not all(_same(x.shape[i], xs[0].shape[i]) for x in xs):
            fail(opname, f"input shapes {shapes} differ on axis {i}")


def _known(dims):
    """The static value among dims (all compatible), or None."""
    return next((d for d in dims if d is not None), None)


@register
class Concat(Op):
    """The xs joined along an existing axis."""
    name, out_arg = "concat", True

    def infer(*xs: Spec, axis=0) -> Spec:
        if xs and xs[0].ndim == 0:
            fail("concat", "zero-dimensional arrays cannot be concatenated")
        _check_joinable("concat", xs, axis, xs[0].ndim if xs else 0, free=axis)
        shape = [_known([x.shape[i] for x in xs]) for i in range(xs[0].ndim)]
        sizes = [x.shape[axis] for x in xs]
        shape[axis] = None if None in sizes else sum(sizes)
        return Spec(tuple(shape), result_dtype(*xs))

    def forward(xp, *xs, axis=0, out=None):
        return xp.concatenate(xs, axis=axis, out=out)

    def grad(g, out, *xs, axis=0):
        sizes = [_shape(x)[axis] for x in xs]
        if None in sizes:
            return tuple(concat_part(g, xs, k, axis=axis) for k in range(len(xs)))
        parts, start = [], 0
        for n in sizes:
            parts.append(getitem(g, (slice(None),) * axis + (slice(start, start + n),)))
            start += n
        return tuple(parts)


@register
class ConcatPart(Op):
    """The block of g along `axis` that xs[k] fills in concat(xs, axis); xs give shapes only."""
    name, view = "concat_part", True
    nondiff = tuple(range(1, 1 + MAX_PARTS))

    def infer(g: Spec, *xs: Spec, axis=0, k=0) -> Spec:
        _check_joinable("concat_part", xs, axis, g.ndim, free=axis)
        if g.ndim != xs[0].ndim or not 0 <= k < len(xs):
            fail("concat_part", f"cannot take part {k} of {fmt(g)} for parts "
                                f"{', '.join(fmt(x) for x in xs)}")
        return Spec(xs[k].shape, g.dtype)

    def forward(xp, g, *xs, axis=0, k=0):
        start = sum(x.shape[axis] for x in xs[:k])
        return g[(slice(None),) * axis + (slice(start, start + xs[k].shape[axis]),)]

    def grad(gout, out, g, *xs, axis=0, k=0):
        blocks = [gout if i == k else zeros_like(x, dtype=gout.dtype) for i, x in enumerate(xs)]
        return (concat(blocks, axis=axis),) + (None,) * len(xs)


@register
class Stack(Op):
    """The xs (all of one shape) joined along a new axis."""
    name, out_arg = "stack", True

    def infer(*xs: Spec, axis=0) -> Spec:
        _check_joinable("stack", xs, axis, xs[0].ndim + 1 if xs else 0, free=None)
        shape = [_known([x.shape[i] for x in xs]) for i in range(xs[0].ndim)]
        shape.insert(axis, len(xs))
        return Spec(tuple(shape), result_dtype(*xs))

    def forward(xp, *xs, axis=0, out=None):
        return xp.stack(xs, axis=axis, out=out)

    def grad(g, out, *xs, axis=0):
        return tuple(getitem(g, (slice(None),) * axis + (k,)) for k in range(len(xs)))


# ---- public functions ----


def _ndim(x) -> int:
    return len(_shape(x))


def _sequence(xs) -> tuple:
    """Variadic arguments, or one list/tuple of them."""
    if len(xs) == 1 and isinstance(xs[0], (list, tuple)):
        return tuple(xs[0])
    return tuple(xs)


def reshape(x, shape):
    """x with a new shape (Knet/NumPy `reshape`); a view when possible.

    One dim may be -1 (inferred from the size). `None` at position i keeps the
    input's dim i, so `x.reshape(x.shape[0], -1)` works with a dynamic batch.

    Example:
        >>> import knetflow as kf
        >>> kf.placeholder("x", (None, 28, 28)).reshape(-1, 784).shape
        (None, 784)
    """
    if shape is None or isinstance(shape, (int, np.integer)):
        shape = (shape,)
    return apply(Reshape, x, shape=tuple(None if d is None else int(d) for d in shape))


def reshape_like(x, like):
    """x reshaped to the shape of `like` (whose values are not read)."""
    return apply(ReshapeLike, x, like)


def transpose(x, axes=None):
    """x with its axes permuted (Knet `permutedims`); all axes reversed when `axes` is None.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.transpose(np.ones((2, 3, 4)), (0, 2, 1)).shape
        (2, 4, 3)
    """
    ndim = _ndim(x)
    if axes is None:
        axes = tuple(range(ndim - 1, -1, -1))
    axes = tuple(int(a) + ndim if -ndim <= int(a) < 0 else int(a) for a in axes)
    return apply(Transpose, x, axes=axes)


permutedims = transpose


def mat(x, dims=None):
    """x as a matrix (Knet `mat`): the last `dims` axes become the columns.

    Row-major form of Knet's rule: `dims` defaults to `x.ndim - 1`, so (N, C, H, W)
    becomes (N, C*H*W); `dims=1` turns an RNN output (T, B, X) into (T*B, X).
    `dims=0` gives a column (n, 1), `dims=x.ndim` a row (1, n).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.mat(np.ones((10, 3, 5, 5))).shape
        (10, 75)
    """
    dims = _ndim(x) - 1 if dims is None else int(dims)
    return apply(Mat, x, dims=dims)


def concat(xs, axis=0):
    """The arrays xs joined along `axis` (NumPy `concatenate`, Knet `cat`).

    `axis=None` joins the flattened arrays, like `cat1d`.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.concat([np.ones((2, 3)), np.zeros((2, 1))], axis=1).shape
        (2, 4)
    """
    xs = tuple(xs)
    if axis is None:
        return cat1d(*xs)
    if not xs:
        fail("concat", "needs at least one input")
    ndim = _ndim(xs[0])
    axis = int(axis)
    return apply(Concat, *xs, axis=axis + ndim if -ndim <= axis < 0 else axis)


cat = concat


def hcat(*xs):
    """Arrays joined horizontally (Knet `hcat`, NumPy `hstack`): along axis 1, or 0 for 1-D."""
    xs = tuple(reshape(x, (1,)) if _ndim(x) == 0 else x for x in _sequence(xs))
    return concat(xs, axis=0 if all(_ndim(x) == 1 for x in xs) else 1)


def vcat(*xs):
    """Arrays joined vertically (Knet `vcat`, NumPy `vstack`): 1-D arrays become rows."""
    rows = []
    for x in _sequence(xs):
        ndim = _ndim(x)
        rows.append(reshape(x, (1, 1)) if ndim == 0 else expand_dims(x, 0) if ndim == 1 else x)
    return concat(rows, axis=0)


def cat1d(*xs):
    """The contents of the arrays, flattened and joined into one vector (Knet `cat1d`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.cat1d(np.ones((2, 2)), np.zeros(3)).shape
        (7,)
    """
    return concat([reshape(x, (-1,)) for x in _sequence(xs)], axis=0)


def concat_part(g, xs, k, axis=0):
    """The block of g that xs[k] fills in `concat(xs, axis)` (concat's gradient)."""
    return apply(ConcatPart, g, *xs, axis=int(axis), k=int(k))


def stack(xs, axis=0):
    """The arrays xs, all of one shape, joined along a new axis (NumPy `stack`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.stack([np.ones(3), np.zeros(3)], axis=1).shape
        (3, 2)
    """
    xs = tuple(xs)
    if not xs:
        fail("stack", "needs at least one input")
    ndim = _ndim(xs[0]) + 1
    axis = int(axis)
    return apply(Stack, *xs, axis=axis + ndim if -ndim <= axis < 0 else axis)


def squeeze(x, axis=None):
    """x without size-1 axes (NumPy `squeeze`); `axis=None` drops every static size-1 axis."""
    shape = _shape(x)
    if axis is None:
        axis = tuple(i for i, d in enumerate(shape) if d == 1)
    return apply(Squeeze, x, axis=norm_axis("squeeze", axis, len(shape)))


def expand_dims(x, axis):
    """x with new size-1 axes at positions `axis` of the result (NumPy `expand_dims`)."""
    count = 1 if isinstance(axis, (int, np.integer)) else len(axis)
    return apply(ExpandDims, x, axis=norm_axis("expand_dims", axis, _ndim(x) + count))
