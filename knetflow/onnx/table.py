"""The converter table of `kf.export_onnx`: what each knetflow op is in ONNX.

A converter is `fn(ctx, node) -> value name` (a tuple of names, None where an
output has no ONNX form, for a multi-output op), registered with
`@converts("opname")`. Converters read the node's inputs, attributes and
spec and emit ONNX nodes through `ctx` (see `knetflow.onnx.export._Exporter`):
`ctx.arg(input, dtype)` names an input (cast to dtype), `ctx.emit(op_type,
inputs, **attrs)` adds a node, `ctx.ints`/`ctx.scalar`/`ctx.const` add
constants, `ctx.value(input)` is an input's value when params and constants
alone give it, and `ctx.fail(msg)` refuses the node, naming the op and the
user's line.

The converters live in `to_onnx` (elementwise, reductions, shapes, indexing,
linear algebra) and `to_onnx_layers` (convolution, pooling, recurrent
networks, softmax and losses, dropout); importing them fills `TABLE`.
"""

from __future__ import annotations

TABLE: dict = {}

#: int64 bounds: Slice clamps them to "the end" and "before the start" of an axis
INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63


def converts(*names):
    """Register the decorated function as the converter of the ops `names`."""

    def register(fn):
        for name in names:
            TABLE[name] = fn
        return fn

    return register


def out_dtype(node) -> str:
    return node.spec.dtype


def reduce(ctx, op_type: str, x: str, axes, keepdims: bool) -> str:
    """ONNX reduction over `axes` (None: all); axes are an input from opset 18 (13 for sum)."""
    if axes is not None and not len(axes):
        return x
    keep = int(bool(keepdims))
    if axes is None:
        return ctx.emit(op_type, [x], keepdims=keep)
    if op_type == "ReduceSum" or ctx.opset >= 18:
        return ctx.emit(op_type, [x, ctx.ints(axes)], keepdims=keep)
    return ctx.emit(op_type, [x], axes=list(axes), keepdims=keep)
