"""Unary elementwise ops: math functions, activations, cast.

Each is an op class with its ufunc (or forward), shape rule and gradient.
"""

from __future__ import annotations

import numpy as np

from knetflow.ops.base import Op, Spec, apply, float_dtype, register

__all__ = ["exp", "log", "sqrt", "tanh", "abs", "sign", "relu", "sigm", "cast"]


def _float_infer(name):
    def infer(x: Spec) -> Spec:
        return x.with_dtype(float_dtype(x))

    return staticmethod(infer)


@register
class Exp(Op):
    """e**x."""
    name, ufunc, elementwise = "exp", "exp", True
    saves = ("out",)
    infer = _float_infer("exp")

    def grad(g, out, x):
        return (g * out,)


@register
class Log(Op):
    """Natural logarithm."""
    name, ufunc, elementwise = "log", "log", True
    saves = (0,)
    infer = _float_infer("log")

    def grad(g, out, x):
        return (g / x,)


@register
class Sqrt(Op):
    """Square root."""
    name, ufunc, elementwise = "sqrt", "sqrt", True
    saves = ("out",)
    infer = _float_infer("sqrt")

    def grad(g, out, x):
        return (g / (2 * out),)


@register
class Tanh(Op):
    """Hyperbolic tangent."""
    name, ufunc, elementwise = "tanh", "tanh", True
    saves = ("out",)
    infer = _float_infer("tanh")

    def grad(g, out, x):
        return (g * (1 - out * out),)


@register
class Abs(Op):
    """|x|."""
    name, ufunc, elementwise = "abs", "absolute", True
    saves = (0,)

    def infer(x: Spec) -> Spec:
        return x

    def grad(g, out, x):
        return (g * sign(x),)


@register
class Sign(Op):
    """Sign of x (-1, 0, 1); zero gradient."""
    name, ufunc, elementwise = "sign", "sign", True

    def infer(x: Spec) -> Spec:
        return x

    def grad(g, out, x):
        return (None,)


@register
class Relu(Op):
    """max(x, 0) (Knet `relu`)."""
    name, elementwise, out_arg = "relu", True, True
    saves = ("out",)

    def infer(x: Spec) -> Spec:
        return x

    def forward(xp, x, out=None):
        return xp.maximum(x, 0, out=out)

    def grad(g, out, x):
        from knetflow.ops.binary import gt, where

        return (where(gt(out, 0), g, 0),)


@register
class Sigm(Op):
    """1 / (1 + exp(-x)) (Knet `sigm`), computed without overflow."""
    name, elementwise = "sigm", True
    saves = ("out",)
    infer = _float_infer("sigm")

    def forward(xp, x):
        # exp of a non-positive number never overflows
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype if x.dtype.kind == "f" else "float64", copy=False)

    def grad(g, out, x):
        return (g * out * (1 - out),)


@register
class Cast(Op):
    """Convert x to `dtype`; the gradient is cast back (none into integer inputs)."""
    name, elementwise, out_arg = "cast", True, True

    def infer(x: Spec, dtype="float32") -> Spec:
        return x.with_dtype(dtype)

    def forward(xp, x, dtype="float32", out=None):
        if out is None:
            return x.astype(dtype)
        xp.copyto(out, x, casting="unsafe")
        return out

    def grad(g, out, x, dtype="float32"):
        return (cast(g, x.dtype),)


def exp(x):
    """e**x, elementwise."""
    return apply(Exp, x)


def log(x):
    """Natural logarithm, elementwise."""
    return apply(Log, x)


def sqrt(x):
    """Square root, elementwise."""
    return apply(Sqrt, x)


def tanh(x):
    """Hyperbolic tangent, elementwise."""
    return apply(Tanh, x)


def abs(x):  # noqa: A001 - Knet/NumPy name
    """Absolute value, elementwise."""
    return apply(Abs, x)


def sign(x):
    """Sign of x, elementwise (zero gradient)."""
    return apply(Sign, x)


def relu(x):
    """max(x, 0), elementwise (Knet `relu`)."""
    return apply(Relu, x)


def sigm(x):
    """The logistic sigmoid 1/(1+exp(-x)) (Knet `sigm`)."""
    return apply(Sigm, x)


def cast(x, dtype):
    """x converted to `dtype` (a NumPy dtype or its name)."""
    return apply(Cast, x, dtype=str(np.dtype(dtype)))
