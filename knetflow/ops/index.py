"""Indexing ops: x[index] (`getitem`), its scatter-add gradient (`index_add`),
and `zeros_like`, the base that scatter starts from.

Indexing follows NumPy's basic and advanced rules and accepts dynamic (`None`)
dims; a boolean mask makes a dynamic axis. The gradient of indexing scatter-adds
into zeros (`index_add`), whose own gradient is indexing, so every gradient here
can be differentiated once more.

An index is kept as a static attribute, a tuple of tagged tuples such as
`(("slice", 0, None, 2), ("int", -1))`, while index arrays (integer or
boolean, NumPy arrays or Symbols) become extra, never-differentiated inputs;
`("array", k)` and `("mask", k)` name the k-th of them.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np

from knetflow.devices import registry
from knetflow.errors import ShapeError
from knetflow.ops.base import (
    INT_DTYPES,
    Op,
    Spec,
    apply,
    broadcast_shapes,
    fail,
    fmt,
    register,
)

__all__ = [
    "getitem",
    "index_add",
    "zeros_like",
]

#: index arrays a getitem/index_add may take (they follow the data inputs)
MAX_INDEX_ARRAYS = 32


def _same(d1, d2) -> bool:
    return d1 is None or d2 is None or d1 == d2


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
    """The index items with full slices for the axes the Ellipsis (or its absence) leaves."""
    items = [tuple(it) for it in items]
    used = sum(_consumes(it, arrays) for it in items)
    ellipses = [i for i, it in enumerate(items) if it[0] == "ellipsis"]
    if len(ellipses) > 1:
        fail(opname, f"an index can have only one Ellipsis, got {len(ellipses)} for {fmt(x)}")
    if used > x.ndim:
        fail(opname, f"too many indices for {fmt(x)}: the index uses {used} axes")
    fill = [("slice", None, None, None)] * (x.ndim - used)
    if not ellipses:
        return items + fill
    # the Ellipsis stays as a marker: even when it stands for no axes, NumPy takes it
    # to separate the advanced indices around it
    at = ellipses[0]
    return items[:at + 1] + fill + items[at + 1:]


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
        if tag == "ellipsis":
            continue
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
            _add_at(xp, out, where, update)  # integer arrays may repeat an index
        else:
            out[where] += update
        return out

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan, rows of x added to by one integer array of row ids with many repeats
        (an embedding's gradient: ids of a small vocabulary over a whole batch): the
        updates grouped by row with one stable sort and summed per group, then added once
        per row, instead of `add.at`'s one addition per id (20 -> 1.6 ms for 12800 ids of
        76 rows, 256 wide). Otherwise, and for ids out of [0, rows), forward."""
        if xp is not np or attrs.get("index") != (("array", 0),) or len(in_specs) != 3:
            return None
        x, update, ids = in_specs
        if not (x.is_static and update.is_static and ids.is_static) or x.ndim < 1:
            return None
        if (update.shape != ids.shape + x.shape[1:] or update.dtype != x.dtype
                or np.dtype(ids.dtype).kind not in "iu" or not ids.size
                or x.shape[0] * _REPEATS > ids.size):
            return None
        rows, width, n = x.shape[0], math.prod(x.shape[1:]), ids.size
        forward, index = IndexAdd.forward, attrs["index"]

        def index_add(x, update, ids, out=None):
            flat = ids.reshape(n)
            if (flat.min() < 0 or flat.max() >= rows  # negative ids, or an IndexError
                    or (out is not None and not out.flags.c_contiguous)):
                return forward(np, x, update, ids, index=index, out=out)
            order = flat.argsort(kind="stable")  # each row's updates in the order given
            ordered = flat[order]
            starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
            sums = _group_sums(update.reshape(n, width), order, starts)
            if out is None:
                out = x.copy()
            else:
                out[...] = x
            out.reshape(rows, width)[ordered[starts]] += sums  # one addition per row
            return out

        return index_add

    def grad(g, out, x, update, *arrays, index=()):
        return (g, apply(GetItem, g, *arrays, index=index)) + (None,) * len(arrays)


#: index_add groups the updates by row when there are at least this many ids per row
_REPEATS = 4
#: ... and sums each group on its own (else all with one add.reduceat) from this many
_GROUP_ROWS = 16


def _group_sums(update, order, starts):
    """The sums of update's rows in each group: rows order[starts[k]:starts[k + 1]].

    Large groups are gathered one at a time into a block that stays in cache and
    summed down its rows; `add.reduceat` over all rows gathered at once walks
    each column down the whole array, which for 4 KB rows costs 10x more.
    Small groups: the per-group calls would cost more than reduceat.
    """
    n, width = update.shape
    if len(starts) * _GROUP_ROWS > n:
        return np.add.reduceat(update.take(order, axis=0), starts, axis=0)
    bounds = np.append(starts, n)
    sizes = np.diff(bounds)
    sums = np.empty((len(starts), width), update.dtype)
    block = np.empty((int(sizes.max()), width), update.dtype)
    for k, (lo, hi) in enumerate(pairwise(bounds.tolist())):
        rows = block[:hi - lo]
        update.take(order[lo:hi], axis=0, out=rows)
        np.add.reduce(rows, axis=0, out=sums[k])
    return sums


def _add_at(xp, out, where, update):
    """out[where] += update, every repeat of an index counted (NumPy's add.at), by the
    device kind of `xp` (CuPy before v13 has no ufunc.at: the GPU kind knows)."""
    registry.scatter_add(xp, out, where, update)


# ---- public functions ----


def zeros_like(x, dtype=None):
    """Zeros with x's shape and dtype (or `dtype`); x's values are not read."""
    return apply(ZerosLike, x, dtype=None if dtype is None else str(np.dtype(dtype)))


def _index_array(item):
    """An index array as an op input: Symbols and arrays as they are, lists as arrays."""
    if (hasattr(item, "shape") and hasattr(item, "dtype")) or hasattr(item, "__knetflow_trace__"):
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
