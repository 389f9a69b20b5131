"""Array ops that move data rather than compute it: reshape, transpose, mat,
concatenation and stacking, squeeze/expand_dims, and indexing.

Shape rules accept dynamic (`None`) dims. Gradients are array ops again:
reshapes reshape back, concatenation slices, and indexing scatter-adds into
zeros (`index_add`, whose own gradient is indexing), so every gradient here
can be differentiated once more.

An index is kept as a static attribute, a tuple of tagged tuples such as
`(("slice", 0, None, 2), ("int", -1))`, while index arrays (integer or
boolean, NumPy arrays or Symbols) become extra, never-differentiated inputs;
`("array", k)` and `("mask", k)` name the k-th of them.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow.errors import ShapeError
from knetflow.ops.base import (
    INT_DTYPES, Op, Spec, apply, broadcast_shapes, fail, fmt, norm_axis, register, result_dtype)

__all__ = [
    "reshape", "reshape_like", "transpose", "permutedims", "mat", "concat", "cat", "hcat",
    "vcat", "cat1d", "stack", "squeeze", "expand_dims", "zeros_like", "getitem", "index_add",
]

#: index arrays a getitem/index_add may take (they follow the data inputs)
MAX_INDEX_ARRAYS = 32
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
    """g reshaped to x's shape, without reading x when that shape is static."""
    shape = _shape(x)
    if None in shape:
        return reshape_like(g, x)
    return reshape(g, shape)


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
                fail("reshape", f"cannot reshape {fmt(x)} ({known_in} elements) into {target}")
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

    def grad(g, out, x, axes=()):
        return (transpose(g, tuple(int(a) for a in np.argsort(axes))),)


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
        _check_joinable("concat", xs, axis, xs[0].ndim if xs else 0, free=axis)
        if xs[0].ndim == 0:
            fail("concat", "zero-dimensional arrays cannot be concatenated")
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


@register
class ZerosLike(Op):
    """Zeros of x's shape (and x's dtype unless `dtype` is given)."""
    name, out_arg, nondiff = "zeros_like", True, (0,)

    def infer(x: Spec, dtype=None) -> Spec:
        return x if dtype is None else x.with_dtype(dtype)

    def forward(xp, x, dtype=None, out=None):
        if out is None:
            return xp.zeros(x.shape, dtype=dtype or x.dtype)
        out.fill(0)
        return out


# ---- indexing ----


def _consumes(item, arrays) -> int:
    """How many axes of x an index item uses."""
    tag = item[0]
    if tag == "mask":
        return arrays[item[1]].ndim
    return 0 if tag in ("none", "ellipsis") else 1


def _full_index(opname, x: Spec, items, arrays) -> list:
    """The index items with the Ellipsis (or the implied trailing one) as full slices."""
    items = [tuple(it) for it in items]
    used = sum(_consumes(it, arrays) for it in items)
    ellipses = [i for i, it in enumerate(items) if it[0] == "ellipsis"]
    if len(ellipses) > 1:
        fail(opname, f"an index can have only one Ellipsis, got {len(ellipses)} for {fmt(x)}")
    if used > x.ndim:
        fail(opname, f"too many indices for {fmt(x)}: the index uses {used} axes")
    fill = [("slice", None, None, None)] * (x.ndim - used)
    at = ellipses[0] if ellipses else len(items)
    return items[:at] + fill + items[at + 1:]


def _advanced_shape(opname, x: Spec, axis, item, arrays) -> tuple:
    """The broadcast shape an advanced index item (array, mask, or int among them) adds."""
    tag = item[0]
    if tag == "int":
        return ()
    spec = arrays[item[1]]
    if tag == "array":
        if spec.dtype not in INT_DTYPES:
            fail(opname, f"index arrays must hold integers or booleans, got {spec!r}")
        return spec.shape
    if spec.dtype != "bool" or spec.ndim == 0:
        fail(opname, f"a mask must be a boolean array of at least one axis, got {spec!r}")
    if not all(_same(m, d) for m, d in zip(spec.shape, x.shape[axis:axis + spec.ndim])):
        fail(opname, f"boolean index {fmt(spec)} does not match axes {axis}.. of {fmt(x)}")
    return (None,)


def _slice_len(opname, d, item):
    start, stop, step = item[1:]
    if step == 0:
        fail(opname, "slice step cannot be zero")
    return None if d is None else len(range(*slice(start, stop, step).indices(d)))


def _indexed_shape(opname, x: Spec, items, arrays) -> tuple:
    """Shape of x[index], following NumPy's basic and advanced indexing rules."""
    items = _full_index(opname, x, items, arrays)
    has_advanced = any(it[0] in ("array", "mask") for it in items)
    out, advanced, slot, last, adjacent, axis = [], [], None, None, True, 0
    for pos, item in enumerate(items):
        tag = item[0]
        if tag == "none":
            out.append(1)
            continue
        if tag == "slice":
            out.append(_slice_len(opname, x.shape[axis], item))
            axis += 1
            continue
        if tag == "int":
            d = x.shape[axis]
            if d is not None and not -d <= item[1] < d:
                fail(opname, f"index {item[1]} is out of bounds for axis {axis} of {fmt(x)}")
            if not has_advanced:
                axis += 1
                continue
        advanced.append(_advanced_shape(opname, x, axis, item, arrays))
        axis += _consumes(item, arrays)
        if slot is None:
            slot = len(out)
        elif last != pos - 1:
            adjacent = False  # NumPy then puts the advanced axes first
        last = pos
    if advanced:
        try:
            shape = broadcast_shapes(opname, *[Spec(s, "int64") for s in advanced])
        except ShapeError:
            shapes = ", ".join(fmt(Spec(s, "int64")) for s in advanced)
            fail(opname, f"index arrays of shapes {shapes} do not broadcast")
        at = slot if adjacent else 0
        out[at:at] = shape
    return tuple(out)


def _build_index(items, arrays) -> tuple:
    """The Python index that the attribute `items` stands for, with arrays filled in."""
    out = []
    for item in items:
        tag = item[0]
        if tag == "int":
            out.append(item[1])
        elif tag == "slice":
            out.append(slice(item[1], item[2], item[3]))
        elif tag == "none":
            out.append(None)
        elif tag == "ellipsis":
            out.append(Ellipsis)
        else:
            out.append(arrays[item[1]])
    return tuple(out)


@register
class GetItem(Op):
    """x[index] with NumPy's rules; a boolean mask gives a dynamic axis."""
    name, view = "getitem", True
    nondiff = tuple(range(1, 1 + MAX_INDEX_ARRAYS))

    def infer(x: Spec, *arrays: Spec, index=()) -> Spec:
        return x.with_shape(_indexed_shape("getitem", x, index, arrays))

    def forward(xp, x, *arrays, index=()):
        # a full integer index gives a NumPy scalar; keep results arrays
        return xp.asarray(x[_build_index(index, arrays)])

    def grad(g, out, x, *arrays, index=()):
        base = zeros_like(x, dtype=g.dtype)
        return (apply(IndexAdd, base, g, *arrays, index=index),) + (None,) * len(arrays)


@register
class IndexAdd(Op):
    """A copy of x with `update` added at x[index]; repeated indices accumulate."""
    name, out_arg = "index_add", True
    nondiff = tuple(range(2, 2 + MAX_INDEX_ARRAYS))

    def infer(x: Spec, update: Spec, *arrays: Spec, index=()) -> Spec:
        shape = _indexed_shape("index_add", x, index, arrays)
        fits = update.ndim <= len(shape) and all(
            u in (1, None) or s is None or u == s
            for u, s in zip(update.shape[::-1], shape[::-1]))
        if not fits:
            fail("index_add", f"update {fmt(update)} does not broadcast to the indexed shape "
                              f"{fmt(Spec(shape, x.dtype))} of {fmt(x)}")
        if not np.can_cast(update.dtype, x.dtype, "same_kind"):
            fail("index_add", f"cannot add a {update.dtype} update into {x!r}")
        return x

    def forward(xp, x, update, *arrays, index=(), out=None):
        if out is None:
            out = x.copy()
        else:
            out[...] = x
        where = _build_index(index, arrays)
        if any(item[0] == "array" for item in index):
            xp.add.at(out, where, update)  # integer arrays may repeat an index
        else:
            out[where] += update
        return out

    def grad(g, out, x, update, *arrays, index=()):
        return (g, apply(GetItem, g, *arrays, index=index)) + (None,) * len(arrays)


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
    xs = tuple(reshape(x, (1,) * (2 - _ndim(x)) + _shape(x)) if _ndim(x) < 2 else x
               for x in _sequence(xs))
    return concat(xs, axis=0)


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


def zeros_like(x, dtype=None):
    """Zeros with x's shape and dtype (or `dtype`); x's values are not read."""
    return apply(ZerosLike, x, dtype=None if dtype is None else str(np.dtype(dtype)))


def _index_array(item):
    """An index array as an op input: Symbols and arrays as they are, lists as arrays."""
    if hasattr(item, "shape") and hasattr(item, "dtype") or hasattr(item, "__knetflow_trace__"):
        return item
    arr = np.asarray(item)
    return arr.astype(np.intp) if arr.size == 0 else arr


def _canon_index(index) -> tuple:
    """(items, arrays): the static attribute of an index and its index arrays."""
    items, arrays = [], []
    for item in index if isinstance(index, tuple) else (index,):
        if item is None:
            items.append(("none",))
        elif item is Ellipsis:
            items.append(("ellipsis",))
        elif isinstance(item, (bool, np.bool_)):
            fail("getitem", "boolean scalar indices are not supported; index with a mask array")
        elif isinstance(item, (int, np.integer)):
            items.append(("int", int(item)))
        elif isinstance(item, slice):
            bounds = [None if b is None else int(b) for b in (item.start, item.stop, item.step)]
            items.append(("slice", *bounds))
        else:
            arr = _index_array(item)
            tag = "mask" if str(getattr(arr, "dtype", "")) == "bool" else "array"
            items.append((tag, len(arrays)))
            arrays.append(arr)
    if len(arrays) > MAX_INDEX_ARRAYS:
        fail("getitem", f"at most {MAX_INDEX_ARRAYS} index arrays are supported")
    return tuple(items), arrays


def getitem(x, index):
    """x[index] with NumPy's indexing (Knet `getindex`): ints, slices, None, ..., arrays, masks.

    Index arrays may be NumPy arrays or Symbols. A boolean mask makes a dynamic
    axis. The gradient scatter-adds into zeros, so repeated indices accumulate.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.getitem(np.arange(6.0).reshape(2, 3), (slice(None), [2, 0]))
        array([[2., 0.],
               [5., 3.]])
    """
    items, arrays = _canon_index(index)
    return apply(GetItem, x, *arrays, index=items)


def index_add(x, index, update):
    """A copy of x with `update` added at x[index]; repeated indices accumulate.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.index_add(np.zeros(3), np.array([0, 0, 2]), 1.0)
        array([2., 0., 1.])
    """
    items, arrays = _canon_index(index)
    return apply(IndexAdd, x, update, *arrays, index=items)
