"""ONNX ops as knetflow ops, one small converter per ONNX op type (general ops).

Each `@converter(op_type, versions...)` function reads its node through a
`NodeContext` and returns its outputs (see `import_context.py`); adding an op
is adding one such entry. Shape ops are in `from_onnx_shape.py`, the ops of
neural-network layers (Conv, pooling, BatchNormalization, LSTM) in
`from_onnx_nn.py`.

Values known at import (Constant nodes, integer initializers) go through the
same knetflow op functions, which run at once on arrays, so they fold into
constants. Float initializers used as data are trainable params.
"""

from __future__ import annotations

import numpy as np

from knetflow import ops
from knetflow.onnx.import_context import ShapeValue, converter
from knetflow.onnx.import_proto import DTYPES


# ---- elementwise ----


def _unary(op_type, fn, *versions):
    @converter(op_type, *versions)
    def convert(ctx):
        ctx.require(1)
        return fn(ctx.data(0))
    convert.__name__ = f"convert_{op_type.lower()}"
    convert.__doc__ = f"ONNX {op_type} as knetflow `{fn.__name__}`."
    return convert


_unary("Relu", ops.relu, 6, 13, 14)
_unary("Sigmoid", ops.sigm, 6, 13)
_unary("Tanh", ops.tanh, 6, 13)
_unary("Exp", ops.exp, 6, 13)
_unary("Log", ops.log, 6, 13)
_unary("Sqrt", ops.sqrt, 6, 13)
_unary("Neg", ops.neg, 6, 13)
_unary("Abs", ops.abs, 6, 13)
_unary("Erf", ops.erf, 9, 13)


def _binary(op_type, fn, *versions):
    @converter(op_type, *versions)
    def convert(ctx):
        ctx.require(2)
        a, b = ctx.data(0), ctx.data(1)
        if op_type == "Div" and _integer(a) and _integer(b):
            return _int_div(ctx, a, b)
        return fn(a, b)
    convert.__name__ = f"convert_{op_type.lower()}"
    convert.__doc__ = f"ONNX {op_type} (NumPy broadcasting) as knetflow `{fn.__name__}`."
    return convert


def _integer(x) -> bool:
    return np.dtype(x.dtype).kind in "iu"


def _int_div(ctx, a, b):
    """ONNX integer Div truncates; only import-time values are divided so."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        ctx.fail("integer division of run-time values is not supported")
    if np.any(b == 0):
        ctx.fail("integer division by zero")
    return (np.abs(a) // np.abs(b) * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))


_binary("Add", ops.add, 7, 13, 14)
_binary("Sub", ops.sub, 7, 13, 14)
_binary("Mul", ops.mul, 7, 13, 14)
_binary("Div", ops.div, 7, 13, 14)
_binary("Pow", ops.pow, 7, 12, 13, 15)
_binary("Greater", ops.gt, 7, 9, 13)


# through NumPy's protocol: symbols take np.isnan and np.logical_not as knetflow ops
# (graph/numpy_ufuncs.py)
_unary("IsNaN", np.isnan, 9, 13, 20)
_unary("Not", np.logical_not, 1)


@converter("Where", 9, 16)
def convert_where(ctx):
    """ONNX Where (NumPy broadcasting) as knetflow `where`: how the exporter writes a max
    pool's NaN rule."""
    ctx.require(3)
    return ops.where(ctx.data(0), ctx.data(1), ctx.data(2))


@converter("LeakyRelu", 6, 16)
def convert_leakyrelu(ctx):
    """x where x >= 0, else alpha * x."""
    ctx.require(1)
    x, alpha = ctx.data(0), ctx.attrs.float("alpha", 0.01)
    return ops.where(ops.ge(x, 0), x, x * alpha)


@converter("Identity", 1, 13, 14, 16, 19, 21, 23, 24, 25)
def convert_identity(ctx):
    ctx.require(1)
    return ctx.alias(0, ctx.node.output[0] if ctx.wants(0) else "")


@converter("Dropout", 7, 10, 12, 13, 22)
def convert_dropout(ctx):
    """Identity: an imported graph is an inference graph (refused in training mode)."""
    ctx.attrs.ignore("ratio", "seed")
    if ctx.has(2) and bool(np.any(ctx.const(2, "training_mode"))):
        ctx.fail("training_mode=True is not supported; import inference graphs")
    if ctx.wants(1):
        ctx.fail("the mask output is not supported")
    return ctx.data(0)


@converter("Cast", 6, 9, 13, 19, 21, 23, 24, 25)
def convert_cast(ctx):
    ctx.require(1)
    dtype = _dtype(ctx, ctx.attrs.int("to"))
    ctx.attrs.ignore("saturate")  # float8 targets only, which are refused
    value = ctx.raw(0)
    if isinstance(value, ShapeValue) and np.dtype(dtype).kind in "iu":
        return value
    return ops.cast(ctx.data(0), dtype)


def _dtype(ctx, code):
    if code not in DTYPES:
        ctx.fail(f"attribute 'to' names element type {code}, which knetflow does not have")
    return DTYPES[code]


# ---- products and normalizations ----


@converter("MatMul", 1, 9, 13)
def convert_matmul(ctx):
    ctx.require(2)
    return ops.matmul(ctx.data(0), ctx.data(1))


@converter("Gemm", 7, 9, 11, 13)
def convert_gemm(ctx):
    """alpha * A' @ B' + beta * C, A' and B' transposed where transA/transB say."""
    ctx.require(2, 3)
    a, b = ctx.data(0, "A"), ctx.data(1, "B")
    if len(a.shape) != 2 or len(b.shape) != 2:
        ctx.fail(f"A {tuple(a.shape)} and B {tuple(b.shape)} must be matrices")
    if ctx.attrs.int("transA", 0):
        a = ops.transpose(a)
    if ctx.attrs.int("transB", 0):
        b = ops.transpose(b)
    alpha, beta = ctx.attrs.float("alpha", 1.0), ctx.attrs.float("beta", 1.0)
    y = ops.matmul(a, b)
    if alpha != 1.0:
        y = y * alpha
    if ctx.has(2) and beta != 0.0:
        c = ctx.data(2, "C")
        y = y + (c if beta == 1.0 else c * beta)
    return y


@converter("Softmax", 1, 11, 13)
def convert_softmax(ctx):
    return _softmax(ctx, ops.softmax)


@converter("LogSoftmax", 1, 11, 13)
def convert_logsoftmax(ctx):
    return _softmax(ctx, ops.logsoftmax)


def _softmax(ctx, fn):
    """Version 13 normalizes over `axis` (default -1); earlier versions over every axis
    from `axis` (default 1) on, the input seen as a matrix."""
    ctx.require(1)
    x = ctx.data(0)
    ndim = len(x.shape)
    if ctx.version >= 13:
        return fn(x, axis=ctx.attrs.int("axis", -1))
    axis = ctx.attrs.int("axis", 1)
    axis = axis + ndim if axis < 0 else axis
    if not 0 <= axis < max(ndim, 1):
        ctx.fail(f"axis {axis} is out of range for {ndim} dimensions")
    return fn(x, axis=tuple(range(axis, ndim)))
