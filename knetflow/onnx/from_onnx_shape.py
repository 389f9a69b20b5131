"""ONNX shape ops as knetflow ops: Transpose, Squeeze, Unsqueeze, Flatten, Reshape,
Concat, Gather, Slice, and the shape arithmetic of exported graphs (Shape,
Constant, ConstantOfShape).

One converter per ONNX op type, as in `from_onnx.py`. Shape, Gather,
Unsqueeze, Concat and Slice also take the import-time `ShapeValue`s of
`import_context.py`, so the `x.view(x.size(0), -1)` pattern PyTorch's exporter
writes (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) and the zeros it
builds for an LSTM's initial state become static attributes.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow import ops
from knetflow.graph.symbol import Symbol
from knetflow.onnx.import_context import (
    DimRef,
    Filled,
    ShapeValue,
    converter,
    shape_items,
    shape_value,
)

_ALL_SINCE_13 = (1, 13, 21, 23, 24, 25)   # versions that differ in types only after 13


@converter("Transpose", *_ALL_SINCE_13)
def convert_transpose(ctx):
    ctx.require(1)
    x = ctx.data(0)
    perm = ctx.attrs.ints("perm")
    if perm is not None and sorted(perm) != list(range(len(x.shape))):
        ctx.fail(f"perm {list(perm)} is not a permutation of the {len(x.shape)} axes")
    return ops.transpose(x, perm)


def _axes(ctx, input_index):
    """Axes from the attribute (before version 13) or the optional constant input."""
    if ctx.version < 13:
        return ctx.attrs.ints("axes")
    if ctx.has(input_index):
        return tuple(int(a) for a in ctx.const(input_index, "axes").reshape(-1))
    return None


@converter("Squeeze", 1, 11, 13, 21, 23, 24, 25)
def convert_squeeze(ctx):
    axes = _axes(ctx, 1)
    value = ctx.raw(0)
    if isinstance(value, ShapeValue):
        if value.scalar or len(value.items) != 1 or axes not in (None, (0,), (-1,)):
            ctx.fail("only a one-element shape value can be squeezed")
        return ShapeValue(value.items, scalar=True)
    return ops.squeeze(ctx.data(0), axes)


@converter("Unsqueeze", 1, 11, 13, 21, 23, 24, 25)
def convert_unsqueeze(ctx):
    axes = _axes(ctx, 1)
    if axes is None:
        ctx.fail("axes are required")
    value = ctx.raw(0)
    if isinstance(value, ShapeValue):
        if not value.scalar or axes not in ((0,), (-1,)):
            ctx.fail("only a scalar shape value can be unsqueezed (to one item)")
        return ShapeValue(value.items)
    return ops.expand_dims(ctx.data(0), axes)


@converter("Flatten", 1, 9, 11, 13, 21, 23, 24, 25)
def convert_flatten(ctx):
    """x as a matrix: the axes before `axis` become the rows, the others the columns."""
    ctx.require(1)
    x = ctx.data(0)
    shape = tuple(x.shape)
    axis = ctx.attrs.int("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        ctx.fail(f"axis {axis} is out of range for {len(shape)} dimensions")
    rows, cols = shape[:axis], shape[axis:]
    if None not in cols:
        return ops.reshape(x, (1 if axis == 0 else -1, math.prod(cols)))
    if None not in rows:
        return ops.reshape(x, (math.prod(rows), -1))
    if axis == 1:
        return ops.reshape(x, (None, -1))
    ctx.fail(f"cannot flatten {shape} at axis {axis}: dynamic dims on both sides")


@converter("Reshape", 5, 13, 14, 19, 21, 23, 24, 25)
def convert_reshape(ctx):
    """0 copies the input's dim (unless allowzero), -1 is inferred. The shape must be
    known at import: a constant, or the run-time dims of x itself kept in place."""
    ctx.require(2)
    x = ctx.data(0)
    value = ctx.raw(1, "shape")
    if not isinstance(value, ShapeValue):
        value = ctx.const(1, "shape")
    allowzero = ctx.attrs.int("allowzero", 0)
    target = []
    for i, d in enumerate(shape_items(value, ctx.where)):
        if isinstance(d, DimRef):
            if not (isinstance(x, Symbol) and d.node is x.node and d.axis == i):
                ctx.fail(f"shape item {i} is a run-time dimension of another tensor; knetflow "
                         "takes only constants and x's own dims kept in place")
            target.append(None)
        elif d == 0 and not allowzero:
            if i >= len(x.shape):
                ctx.fail(f"shape item {i} is 0 (copy) but x has {len(x.shape)} dimensions")
            target.append(None)
        else:
            target.append(d)
    return ops.reshape(x, tuple(target))


@converter("Concat", 4, 11, 13)
def convert_concat(ctx):
    axis = ctx.attrs.int("axis")
    if axis is None:
        ctx.fail("attribute 'axis' is required")
    values = [ctx.raw(i) for i in range(len(ctx.node.input))]
    if any(isinstance(v, ShapeValue) for v in values):
        if axis not in (0, -1):
            ctx.fail("shape values are joined along axis 0 only")
        items = []
        for i, v in enumerate(values):
            items.extend(shape_items(v if isinstance(v, ShapeValue) else ctx.const(i), ctx.where))
        return shape_value(items)
    return ops.concat([ctx.data(i) for i in range(len(values))], axis=axis)


@converter("Shape", 1, 13, 15, 19, 21, 23, 24, 25)
def convert_shape(ctx):
    """The dims of x as an int64 vector: an array when all are static, else a ShapeValue."""
    ctx.require(1)
    value = ctx.raw(0)
    if isinstance(value, ShapeValue):
        dims = () if value.scalar else (len(value.items),)
    elif isinstance(value, Filled):
        dims = value.shape
    else:
        x = ctx.data(0)
        node = x.node if isinstance(x, Symbol) else None
        dims = tuple(DimRef(node, i) if d is None else int(d) for i, d in enumerate(x.shape))
    start, end = ctx.attrs.int("start", 0), ctx.attrs.int("end", None)
    return shape_value(dims[slice(start, end)])


@converter("Gather", 1, 11, 13)
def convert_gather(ctx):
    """Rows of a float table at integer ids (axis 0) as `embedding`; constant indices
    as indexing; picks from a shape value."""
    ctx.require(2)
    axis = ctx.attrs.int("axis", 0)
    value = ctx.raw(0)
    if isinstance(value, ShapeValue):
        index = ctx.const(1, "indices")
        items = value.items
        picked = [items[int(i)] for i in index.reshape(-1)] if index.ndim else [items[int(index)]]
        return shape_value(picked, scalar=index.ndim == 0)
    data = ctx.data(0)
    ndim = len(data.shape)
    axis = axis + ndim if axis < 0 else axis
    if not 0 <= axis < ndim:
        ctx.fail(f"axis {axis} is out of range for {ndim} dimensions")
    indices = ctx.known(1)
    if indices is None:
        ids = ctx.data(1, "indices")
        if axis != 0 or ndim != 2:
            ctx.fail("run-time indices are supported only as rows of a matrix (an embedding)")
        return ops.embedding(data, ids)
    if indices.dtype.kind not in "iu":
        ctx.fail(f"indices must be integers, got {indices.dtype}")
    size = data.shape[axis]
    if size is not None:
        if np.any((indices < -size) | (indices >= size)):
            ctx.fail(f"an index is out of range for dimension {axis} of size {size}")
        indices = np.where(indices < 0, indices + size, indices)
    elif np.any(indices < 0):
        ctx.fail("negative indices into a dynamic dimension are not supported")
    index = (slice(None),) * axis + ((int(indices),) if indices.ndim == 0 else (indices,))
    return ops.getitem(data, index)


@converter("Constant", 1, 9, 11, 12, 13, 19, 21, 23, 24, 25)
def convert_constant(ctx):
    """The value attribute (one of value, value_float(s), value_int(s)) as an array."""
    found = [name for name in ("value", "value_float", "value_floats", "value_int",
                               "value_ints", "value_string", "value_strings", "sparse_value")
             if name in ctx.attrs]
    if len(found) != 1:
        ctx.fail(f"exactly one value attribute is required, got {found or 'none'}")
    name = found[0]
    if name == "value":
        return ctx.attrs.tensor("value")
    if name in ("value_float", "value_floats"):
        read = ctx.attrs.float if name == "value_float" else ctx.attrs.floats
        return np.array(read(name), dtype=np.float32)
    if name in ("value_int", "value_ints"):
        read = ctx.attrs.int if name == "value_int" else ctx.attrs.ints
        return np.array(read(name), dtype=np.int64)
    ctx.fail(f"attribute {name!r} is not supported (strings and sparse tensors)")


@converter("ConstantOfShape", 9, 20, 21, 23, 24, 25)
def convert_constantofshape(ctx):
    """A tensor of one value, its shape known at import (possibly with run-time dims)."""
    ctx.require(1)
    value = ctx.attrs.tensor("value")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    if value.size != 1:
        ctx.fail(f"attribute 'value' must hold one element, got {value.size}")
    shape = ctx.raw(0, "shape")
    if not isinstance(shape, ShapeValue):
        shape = ctx.const(0, "shape")
    dims = shape_items(shape, ctx.where)
    if any(isinstance(d, int) and d < 0 for d in dims):
        ctx.fail(f"shape {list(dims)} has a negative dim")
    return Filled(dims, value.reshape(()))


@converter("Slice", 1, 10, 11, 13)
def convert_slice(ctx):
    """Python slicing per axis (ONNX clamps starts and ends as Python does); also on
    shape values and on ConstantOfShape tensors with run-time dims left whole."""
    if ctx.version < 10:
        starts, ends = ctx.attrs.ints("starts"), ctx.attrs.ints("ends")
        axes, steps = ctx.attrs.ints("axes"), None
    else:
        ctx.require(3, 4, 5)
        starts, ends = (tuple(int(v) for v in ctx.const(i, what).reshape(-1))
                        for i, what in ((1, "starts"), (2, "ends")))
        axes = tuple(int(v) for v in ctx.const(3, "axes").reshape(-1)) if ctx.has(3) else None
        steps = tuple(int(v) for v in ctx.const(4, "steps").reshape(-1)) if ctx.has(4) else None
    if starts is None or ends is None or len(starts) != len(ends):
        ctx.fail(f"starts {starts} and ends {ends} must be given, of one length")
    axes = tuple(range(len(starts))) if axes is None else axes
    steps = (1,) * len(starts) if steps is None else steps
    if len(axes) != len(starts) or len(steps) != len(starts) or 0 in steps:
        ctx.fail(f"axes {axes} and steps {steps} must match starts, and steps be non-zero")
    value = ctx.raw(0)
    if isinstance(value, ShapeValue):
        if value.scalar or any(a not in (0, -1) for a in axes):
            ctx.fail("a shape value is sliced along its one axis only")
        return shape_value(value.items[slice(starts[0], ends[0], steps[0])])
    rank = len(value.shape) if isinstance(value, Filled) else len(ctx.data(0).shape)
    cuts = {}
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = a + rank if a < 0 else a
        if not 0 <= a < rank or a in cuts:
            ctx.fail(f"axes {list(axes)} are out of range or repeated for rank {rank}")
        cuts[a] = slice(s, e, st)
    if isinstance(value, Filled):
        return Filled(tuple(_sliced_dim(ctx, d, cuts.get(a)) for a, d in enumerate(value.shape)),
                      value.value)
    return ops.getitem(ctx.data(0), tuple(cuts.get(a, slice(None)) for a in range(rank)))


def _sliced_dim(ctx, d, cut):
    if cut is None:
        return d
    if isinstance(d, DimRef):
        if cut.step == 1 and cut.start in (0, None) and cut.stop >= 2**31 - 1:
            return d
        ctx.fail("a run-time dimension of a ConstantOfShape can be kept whole only")
    return len(range(*cut.indices(d)))
