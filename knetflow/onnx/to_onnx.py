"""Each knetflow op's ONNX form, part 1: elementwise functions and arithmetic,
reductions, shapes, indexing and linear algebra (the layers are in
`to_onnx_layers`; the converter protocol in `table`).

An op that is one ONNX op of the same meaning is one entry of `UNARY`,
`BINARY`, `COMPARE` or `REDUCE`; any other is one small function registered
with `@converts("opname")`.

Knetflow computes an op in its result's dtype (NumPy's promotion, so `exp`
of integers is float64 and `div` is true division), while ONNX ops want
their inputs in one dtype: converters cast inputs to the result's dtype.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow.onnx.table import INT64_MAX, INT64_MIN, converts, out_dtype, reduce


# ---- elementwise: one argument ----

#: ops that are one ONNX op on x (cast to the result's dtype)
UNARY = {
    "abs": "Abs", "acos": "Acos", "acosh": "Acosh", "asin": "Asin", "asinh": "Asinh",
    "atan": "Atan", "atanh": "Atanh", "ceil": "Ceil", "cos": "Cos", "cosh": "Cosh",
    "erf": "Erf", "exp": "Exp", "floor": "Floor", "invx": "Reciprocal", "log": "Log",
    "log1pexp": "Softplus", "neg": "Neg", "relu": "Relu", "round": "Round",
    "sigm": "Sigmoid", "sign": "Sign", "sin": "Sin", "sinh": "Sinh", "sqrt": "Sqrt",
    "tan": "Tan", "tanh": "Tanh",
}


@converts(*UNARY)
def _unary(ctx, node):
    return ctx.emit(UNARY[node.op], [ctx.arg(node.inputs[0], out_dtype(node))])


@converts("square")
def _square(ctx, node):
    x = ctx.arg(node.inputs[0], out_dtype(node))
    return ctx.emit("Mul", [x, x])


@converts("expm1")
def _expm1(ctx, node):
    x = ctx.arg(node.inputs[0], out_dtype(node))
    return ctx.emit("Sub", [ctx.emit("Exp", [x]), ctx.scalar(1, out_dtype(node))])


@converts("log1p")
def _log1p(ctx, node):
    x = ctx.arg(node.inputs[0], out_dtype(node))
    return ctx.emit("Log", [ctx.emit("Add", [x, ctx.scalar(1, out_dtype(node))])])


@converts("exp2", "exp10")
def _exp_base(ctx, node):
    base = 2 if node.op == "exp2" else 10
    x = ctx.arg(node.inputs[0], out_dtype(node))
    return ctx.emit("Pow", [ctx.scalar(base, out_dtype(node)), x])


@converts("log2", "log10")
def _log_base(ctx, node):
    base = 2 if node.op == "log2" else 10
    x = ctx.arg(node.inputs[0], out_dtype(node))
    return ctx.emit("Div", [ctx.emit("Log", [x]), ctx.scalar(math.log(base), out_dtype(node))])


@converts("cbrt")
def _cbrt(ctx, node):
    x = ctx.arg(node.inputs[0], out_dtype(node))
    root = ctx.emit("Pow", [ctx.emit("Abs", [x]), ctx.scalar(1 / 3, out_dtype(node))])
    return ctx.emit("Mul", [ctx.emit("Sign", [x]), root])


@converts("trunc")
def _trunc(ctx, node):
    x = ctx.arg(node.inputs[0], out_dtype(node))
    return ctx.emit("Mul", [ctx.emit("Sign", [x]), ctx.emit("Floor", [ctx.emit("Abs", [x])])])


@converts("elu")
def _elu(ctx, node):
    return ctx.emit("Elu", [ctx.arg(node.inputs[0], out_dtype(node))], alpha=1.0)


@converts("selu")
def _selu(ctx, node):
    from knetflow.ops.elementwise import SELU_ALPHA, SELU_LAMBDA

    return ctx.emit("Selu", [ctx.arg(node.inputs[0], out_dtype(node))], alpha=SELU_ALPHA,
                    gamma=SELU_LAMBDA)


@converts("cast")
def _cast(ctx, node):
    return ctx.arg(node.inputs[0], out_dtype(node))


# ---- elementwise: two or three arguments ----

#: ops that are one ONNX op on their inputs (cast to the result's dtype), broadcasting alike
BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow",
          "maximum": "Max", "minimum": "Min"}

#: comparisons: one ONNX op on the inputs cast to their common dtype
COMPARE = {"lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual",
           "eq": "Equal"}


@converts(*BINARY)
def _binary(ctx, node):
    return ctx.emit(BINARY[node.op], [ctx.arg(i, out_dtype(node)) for i in node.inputs])


def _compared(ctx, node) -> list:
    common = np.result_type(*[np.dtype(i.spec.dtype) for i in node.inputs])
    return [ctx.arg(i, common) for i in node.inputs]


@converts(*COMPARE)
def _compare(ctx, node):
    return ctx.emit(COMPARE[node.op], _compared(ctx, node))


@converts("ne")
def _ne(ctx, node):
    return ctx.emit("Not", [ctx.emit("Equal", _compared(ctx, node))])


@converts("where")
def _where(ctx, node):
    c, x, y = node.inputs
    return ctx.emit("Where", [ctx.arg(c, "bool"), ctx.arg(x, out_dtype(node)),
                              ctx.arg(y, out_dtype(node))])


# ---- reductions ----

REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
          "prod": "ReduceProd"}


@converts(*REDUCE)
def _reduce(ctx, node):
    x = ctx.arg(node.inputs[0], out_dtype(node))
    return reduce(ctx, REDUCE[node.op], x, node.attrs.get("axis"), node.attrs.get("keepdims"))


@converts("count")
def _count(ctx, node):
    x = node.inputs[0]
    axes = node.attrs.get("axis")
    axes = range(x.spec.ndim) if axes is None else axes
    dims = [x.spec.shape[a] for a in axes]
    if None not in dims:
        return ctx.scalar(math.prod(dims), out_dtype(node))
    shape = ctx.emit("Shape", [ctx.arg(x)])
    picked = ctx.emit("Gather", [shape, ctx.ints(axes)], axis=0)
    n = ctx.emit("ReduceProd", [picked], keepdims=0)
    return ctx.cast(n, "int64", out_dtype(node))


@converts("cumsum")
def _cumsum(ctx, node):
    x = ctx.arg(node.inputs[0], out_dtype(node))
    axis = ctx.scalar(node.attrs.get("axis", 0), "int64")
    return ctx.emit("CumSum", [x, axis], reverse=int(bool(node.attrs.get("reverse"))))


# ---- shapes ----


@converts("reshape")
def _reshape(ctx, node):
    shape = node.attrs["shape"]
    literal_zero = any(d == 0 for d in shape)
    if literal_zero and (None in shape or ctx.opset < 14):
        ctx.fail(f"a target shape {shape} with a 0 needs opset 14 and no copied (None) dim")
    target = ctx.ints(0 if d is None else d for d in shape)   # ONNX's 0 copies the input dim
    return ctx.emit("Reshape", [ctx.arg(node.inputs[0]), target],
                    allowzero=1 if literal_zero else None)


@converts("reshape_like")
def _reshape_like(ctx, node):
    x, like = node.inputs
    return ctx.emit("Reshape", [ctx.arg(x), ctx.emit("Shape", [ctx.arg(like)])])


@converts("mat")
def _mat(ctx, node):
    x = node.inputs[0]
    return ctx.emit("Flatten", [ctx.arg(x)], axis=x.spec.ndim - node.attrs.get("dims", 1))


@converts("transpose")
def _transpose(ctx, node):
    return ctx.emit("Transpose", [ctx.arg(node.inputs[0])], perm=list(node.attrs["axes"]))


@converts("squeeze")
def _squeeze(ctx, node):
    axes = node.attrs.get("axis") or ()
    x = ctx.arg(node.inputs[0])
    return ctx.emit("Squeeze", [x, ctx.ints(axes)]) if axes else x


@converts("expand_dims")
def _expand_dims(ctx, node):
    return ctx.emit("Unsqueeze", [ctx.arg(node.inputs[0]), ctx.ints(node.attrs["axis"])])


@converts("concat")
def _concat(ctx, node):
    parts = [ctx.arg(i, out_dtype(node)) for i in node.inputs]
    return ctx.emit("Concat", parts, axis=node.attrs.get("axis", 0))


@converts("stack")
def _stack(ctx, node):
    axis = node.attrs.get("axis", 0)
    parts = [ctx.emit("Unsqueeze", [ctx.arg(i, out_dtype(node)), ctx.ints([axis])])
             for i in node.inputs]
    return ctx.emit("Concat", parts, axis=axis)


@converts("zeros_like")
def _zeros_like(ctx, node):
    from onnx import numpy_helper

    x = node.inputs[0]
    shape = ctx.ints(x.spec.shape) if x.spec.is_static else ctx.emit("Shape", [ctx.arg(x)])
    zero = numpy_helper.from_array(np.zeros(1, dtype=out_dtype(node)))
    return ctx.emit("ConstantOfShape", [shape], value=zero)


@converts("tril", "triu")
def _trilu(ctx, node):
    if ctx.opset < 14:
        ctx.fail("needs opset 14 or newer (ONNX Trilu)")
    if node.inputs[0].spec.ndim < 2:
        ctx.fail("of a vector has no ONNX form (Trilu takes matrices)")
    k = ctx.scalar(node.attrs.get("k", 0), "int64")
    return ctx.emit("Trilu", [ctx.arg(node.inputs[0]), k], upper=int(node.op == "triu"))


# ---- indexing ----


def _expanded(items, ndim) -> list:
    """The index items with the Ellipsis (or its absence) turned into full slices."""
    used = sum(1 for it in items if it[0] in ("int", "slice", "array"))
    tags = [it[0] for it in items]
    at = tags.index("ellipsis") if "ellipsis" in tags else len(items)
    fill = [("slice", None, None, None)] * (ndim - used)
    return list(items[:at]) + fill + list(items[at + 1:])


def _slice_bounds(start, stop, step) -> tuple:
    """(start, end, step) for ONNX Slice of a Python slice; None bounds become int64 limits."""
    step = 1 if step is None else step
    if start is None:
        start = 0 if step > 0 else INT64_MAX
    if stop is None:
        stop = INT64_MAX if step > 0 else INT64_MIN
    return start, stop, step


@converts("getitem")
def _getitem(ctx, node):
    x, arrays = node.inputs[0], node.inputs[1:]
    items = node.attrs.get("index", ())
    if any(it[0] == "mask" for it in items):
        ctx.fail("a boolean mask index has no ONNX form here (its result's size depends on "
                 "the values)")
    items = _expanded(items, x.spec.ndim)
    if arrays:
        return _gather_index(ctx, x, arrays, items)
    bounds, squeeze, unsqueeze = [], [], []
    axis = out = 0
    for it in items:
        if it[0] == "none":
            unsqueeze.append(out)
            out += 1
            continue
        if it[0] == "int":
            i = it[1]
            bounds.append((axis, i, INT64_MAX if i == -1 else i + 1, 1))
            squeeze.append(axis)
        elif tuple(it[1:]) != (None, None, None):
            bounds.append((axis,) + _slice_bounds(*it[1:]))
            out += 1
        else:
            out += 1
        axis += 1
    y = ctx.arg(x)
    if bounds:
        axes, starts, ends, steps = zip(*bounds)
        y = ctx.emit("Slice", [y, ctx.ints(starts), ctx.ints(ends), ctx.ints(axes),
                               ctx.ints(steps)])
    if squeeze:
        y = ctx.emit("Squeeze", [y, ctx.ints(squeeze)])
    if unsqueeze:
        y = ctx.emit("Unsqueeze", [y, ctx.ints(unsqueeze)])
    return y


def _gather_index(ctx, x, arrays, items):
    """x[..., ids, ...]: one integer array among full slices is a Gather."""
    full = ("slice", None, None, None)
    picks = [k for k, it in enumerate(items) if it[0] == "array"]
    if len(picks) != 1 or any(tuple(it) != full for k, it in enumerate(items) if k != picks[0]):
        ctx.fail("only one integer array among full slices (x[ids], x[:, ids]) has an ONNX "
                 "form here")
    ids = arrays[items[picks[0]][1]]
    index = ctx.arg(ids, ids.spec.dtype if ids.spec.dtype in ("int32", "int64") else "int64")
    return ctx.emit("Gather", [ctx.arg(x), index], axis=picks[0])


@converts("embedding")
def _embedding(ctx, node):
    w, ids = node.inputs
    index = ctx.arg(ids, ids.spec.dtype if ids.spec.dtype in ("int32", "int64") else "int64")
    return ctx.emit("Gather", [ctx.arg(w), index], axis=0)


# ---- linear algebra ----


@converts("matmul")
def _matmul(ctx, node):
    return ctx.emit("MatMul", [ctx.arg(i, out_dtype(node)) for i in node.inputs])


@converts("bmm")
def _bmm(ctx, node):
    names = []
    for x, flag in zip(node.inputs, ("transA", "transB")):
        name = ctx.arg(x, out_dtype(node))
        if node.attrs.get(flag):
            perm = list(range(x.spec.ndim))
            perm[-2:] = perm[-1], perm[-2]
            name = ctx.emit("Transpose", [name], perm=perm)
        names.append(name)
    return ctx.emit("MatMul", names)


@converts("fused", "send", "recv")
def _compiled(ctx, node):
    ctx.fail("is made by kf.compile: export the source graph (or the Plan itself), not "
             "plan.graph")
