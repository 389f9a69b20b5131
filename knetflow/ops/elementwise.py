"""Unary elementwise ops: Knet's math functions, special functions, activations, cast.

Most ops here differ only in their forward and their derivative, so they are
declared from one table with `_unary(name, doc, rule, ...)`, which builds and
registers the op class and returns it with its public function. `rule(g, out, x)`
gives the gradient at x as a knetflow expression, so a backward graph made of
these ops can be differentiated again. A rule of None means a zero gradient
(sign, floor, ceil, round, trunc).

Float math functions give float64 for integer and bool inputs (`base.float_dtype`)
and keep float16/32/64. Special functions (erf, gamma, ...) come from the device
kind of `xp` (`_special`): `scipy.special` on the CPU, `cupyx.scipy.special` on a GPU.
Ops with attributes (polygamma's `n`, cast's `dtype`) are written out as classes.

Compiled plans and the fusion pass call a declared `ufunc` directly, so an op
declares one only when the raw xp ufunc gives what `infer` says; the forwards
given beside a ufunc only add the int-to-float64 conversion for eager calls.

Example:
    >>> import knetflow as kf, numpy as np
    >>> kf.elu(np.array([-1.0, 2.0]))
    array([-0.63212056,  2.        ])
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from knetflow.devices import registry
from knetflow.ops import cpu_threads
from knetflow.ops.base import Op, Spec, apply, broadcast_shapes, float_dtype, register
from knetflow.ops.binary import gt, neg, where

__all__ = [
    "abs", "abs2", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cast", "cbrt", "ceil",
    "cos", "cosh", "digamma", "elu", "erf", "erfc", "erfcinv", "erfcx", "erfinv", "exp", "exp2",
    "exp10", "expm1", "floor", "gamma", "invx", "lgamma", "log", "log1p", "log2", "log10",
    "loggamma", "polygamma", "relu", "round", "selu", "sigm", "sign", "sin", "sinh", "sqrt",
    "square", "tan", "tanh", "trigamma", "trunc",
]

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_SQRT_PI_OVER_TWO = math.sqrt(math.pi) / 2.0
#: SELU's constants lambda01 and alpha01 (Klambauer et al. 2017; Knet `selu`)
SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543778


# ---- building blocks ----


def _special(xp):
    """The special-function module for arrays of `xp`, as its device kind says
    (scipy.special on a CPU, cupyx.scipy.special on a GPU, the sim module's own)."""
    return registry.special(xp)


def _as_float(x):
    """x itself when it is a float array, else x as float64 (the dtype `float_dtype` promises)."""
    return x if x.dtype.kind == "f" else x.astype("float64")


def _to_float(x: Spec) -> Spec:
    return x.with_dtype(float_dtype(x))


def _same(x: Spec) -> Spec:
    return x


def _float_ufunc(ufunc_name):
    """Forward of a float math ufunc: integer inputs are converted to float64 first."""
    def forward(xp, x, out=None):
        return getattr(xp, ufunc_name)(_as_float(x), out=out)

    return forward


def _special_forward(fn_name):
    """Forward through the special-function module, keeping the float dtype of x."""
    def forward(xp, x):
        x = _as_float(x)
        return getattr(_special(xp), fn_name)(x).astype(x.dtype, copy=False)

    return forward


def _rounding_forward(ufunc_name):
    """Forward of floor/ceil/rint/trunc: integers and bools are already whole, so a copy."""
    def forward(xp, x, out=None):
        if x.dtype.kind == "f":
            return getattr(xp, ufunc_name)(x, out=out)
        if out is None:
            return x.copy()
        xp.copyto(out, x)
        return out

    return forward


def _unary(name, doc, rule, *, ufunc=None, forward=None, saves=(0,), infer=_to_float,
           bind=None):
    """Declare and register a unary elementwise op; return (op class, public function).

    `rule(g, out, x)` is the gradient expression, None for a zero gradient. With only
    `ufunc` given, the forward is that xp ufunc (after converting integers to float64
    when the op gives floats).
    """
    if forward is None and ufunc is not None and infer is _to_float:
        forward = _float_ufunc(ufunc)

    def grad(g, out, x):
        return (None if rule is None else rule(g, out, x),)

    body = {"__doc__": doc, "name": name, "ufunc": ufunc, "elementwise": True,
            "saves": saves if rule is not None else (), "infer": infer, "grad": grad}
    if bind is not None:
        body["bind"] = bind
    if forward is not None:
        body["forward"] = forward
        body["out_arg"] = "out" in inspect.signature(forward).parameters
    cls = register(type(name.capitalize(), (Op,), body))

    def public(x):
        return apply(cls, x)

    public.__name__ = public.__qualname__ = name
    public.__doc__ = doc
    return cls, public


# ---- exponentials, logarithms, powers ----

Exp, exp = _unary("exp", "e**x, elementwise (Knet `exp`).",
                  lambda g, out, x: g * out, ufunc="exp", saves=("out",))
Expm1, expm1 = _unary("expm1", "exp(x) - 1, accurate near 0 (Knet `expm1`).",
                      lambda g, out, x: g * (out + 1), ufunc="expm1", saves=("out",))
Exp2, exp2 = _unary("exp2", "2**x, elementwise (Knet `exp2`).",
                    lambda g, out, x: g * out * _LN2, ufunc="exp2", saves=("out",))
Exp10, exp10 = _unary("exp10", "10**x, elementwise (Knet `exp10`).",
                      lambda g, out, x: g * out * _LN10, forward=_special_forward("exp10"),
                      saves=("out",))
Log, log = _unary("log", "Natural logarithm, elementwise (Knet `log`).",
                  lambda g, out, x: g / x, ufunc="log")
Log1p, log1p = _unary("log1p", "log(1 + x), accurate near 0 (Knet `log1p`).",
                      lambda g, out, x: g / (x + 1), ufunc="log1p")
Log2, log2 = _unary("log2", "Base-2 logarithm, elementwise (Knet `log2`).",
                    lambda g, out, x: g / (x * _LN2), ufunc="log2")
Log10, log10 = _unary("log10", "Base-10 logarithm, elementwise (Knet `log10`).",
                      lambda g, out, x: g / (x * _LN10), ufunc="log10")
Sqrt, sqrt = _unary("sqrt", "Square root, elementwise (Knet `sqrt`).",
                    lambda g, out, x: g / (2 * out), ufunc="sqrt", saves=("out",))
Cbrt, cbrt = _unary("cbrt", "Real cube root, elementwise (Knet `cbrt`).",
                    lambda g, out, x: g / (3 * out * out), ufunc="cbrt", saves=("out",))
Square, square = _unary("square", "x * x, elementwise (Knet `abs2` for real x).",
                        lambda g, out, x: 2 * g * x, ufunc="square", infer=_same)
Invx, invx = _unary("invx", "1 / x, elementwise (Knet `invx`).",
                    lambda g, out, x: neg(g * out * out), ufunc="reciprocal", saves=("out",))
Abs, abs = _unary("abs", "Absolute value |x|, elementwise (Knet `abs`); its gradient is "
                  "sign(x), 0 at x = 0 (as HIPS autograd and PyTorch; JAX gives 1).",
                  lambda g, out, x: g * sign(x), ufunc="absolute", infer=_same)

# ---- trigonometric and hyperbolic ----

Sin, sin = _unary("sin", "Sine, elementwise (Knet `sin`).",
                  lambda g, out, x: g * cos(x), ufunc="sin")
Cos, cos = _unary("cos", "Cosine, elementwise (Knet `cos`).",
                  lambda g, out, x: neg(g * sin(x)), ufunc="cos")
Tan, tan = _unary("tan", "Tangent, elementwise (Knet `tan`).",
                  lambda g, out, x: g * (1 + out * out), ufunc="tan", saves=("out",))
Sinh, sinh = _unary("sinh", "Hyperbolic sine, elementwise (Knet `sinh`).",
                    lambda g, out, x: g * cosh(x), ufunc="sinh")
Cosh, cosh = _unary("cosh", "Hyperbolic cosine, elementwise (Knet `cosh`).",
                    lambda g, out, x: g * sinh(x), ufunc="cosh")
Tanh, tanh = _unary("tanh", "Hyperbolic tangent, elementwise (Knet `tanh`).",
                    lambda g, out, x: g * (1 - out * out), ufunc="tanh", saves=("out",))
Asin, asin = _unary("asin", "Inverse sine on [-1, 1] (Knet `asin`).",
                    lambda g, out, x: g / sqrt(1 - x * x), ufunc="arcsin")
Acos, acos = _unary("acos", "Inverse cosine on [-1, 1] (Knet `acos`).",
                    lambda g, out, x: neg(g / sqrt(1 - x * x)), ufunc="arccos")
Atan, atan = _unary("atan", "Inverse tangent, elementwise (Knet `atan`).",
                    lambda g, out, x: g / (1 + x * x), ufunc="arctan")
Asinh, asinh = _unary("asinh", "Inverse hyperbolic sine, elementwise (Knet `asinh`).",
                      lambda g, out, x: g / sqrt(x * x + 1), ufunc="arcsinh")
Acosh, acosh = _unary("acosh", "Inverse hyperbolic cosine on [1, inf) (Knet `acosh`).",
                      lambda g, out, x: g / sqrt(x * x - 1), ufunc="arccosh")
Atanh, atanh = _unary("atanh", "Inverse hyperbolic tangent on (-1, 1) (Knet `atanh`).",
                      lambda g, out, x: g / (1 - x * x), ufunc="arctanh")

# ---- error and gamma functions ----

Erf, erf = _unary("erf", "The error function (Knet `erf`).",
                  lambda g, out, x: g * _TWO_OVER_SQRT_PI * exp(neg(x * x)),
                  forward=_special_forward("erf"))
Erfc, erfc = _unary("erfc", "1 - erf(x), accurate for large x (Knet `erfc`).",
                    lambda g, out, x: neg(g * _TWO_OVER_SQRT_PI * exp(neg(x * x))),
                    forward=_special_forward("erfc"))
Erfinv, erfinv = _unary("erfinv", "Inverse of erf on (-1, 1) (Knet `erfinv`).",
                        lambda g, out, x: g * _SQRT_PI_OVER_TWO * exp(out * out),
                        forward=_special_forward("erfinv"), saves=("out",))
Erfcinv, erfcinv = _unary("erfcinv", "Inverse of erfc on (0, 2) (Knet `erfcinv`).",
                          lambda g, out, x: neg(g * _SQRT_PI_OVER_TWO * exp(out * out)),
                          forward=_special_forward("erfcinv"), saves=("out",))
Erfcx, erfcx = _unary("erfcx", "Scaled erfc: exp(x**2) * erfc(x) without overflow (Knet `erfcx`).",
                      lambda g, out, x: g * (2 * x * out - _TWO_OVER_SQRT_PI),
                      forward=_special_forward("erfcx"), saves=("out", 0))
Gamma, gamma = _unary("gamma", "The gamma function (Knet `gamma`).",
                      lambda g, out, x: g * out * digamma(x),
                      forward=_special_forward("gamma"), saves=("out", 0))
Lgamma, lgamma = _unary("lgamma", "log|gamma(x)|, elementwise (Knet `lgamma`, `loggamma`).",
                        lambda g, out, x: g * digamma(x), forward=_special_forward("gammaln"))
Digamma, digamma = _unary("digamma", "The digamma function d/dx lgamma(x) (Knet `digamma`).",
                          lambda g, out, x: g * polygamma(x, 1),
                          forward=_special_forward("digamma"))


@register
class Polygamma(Op):
    """The n-th derivative of digamma, n >= 1 (Knet `trigamma` is n = 1)."""
    name, elementwise = "polygamma", True
    saves = (0,)

    def infer(x: Spec, n=1) -> Spec:
        return _to_float(x)

    def forward(xp, x, n=1):
        x = _as_float(x)
        return _special(xp).polygamma(n, x).astype(x.dtype, copy=False)

    def grad(g, out, x, n=1):
        return (g * polygamma(x, n + 1),)


def loggamma(x):
    """log|gamma(x)|, elementwise (Knet `loggamma`; the same op as `lgamma`)."""
    return lgamma(x)


def polygamma(x, n):
    """The n-th derivative of digamma at x (SciPy's `polygamma(n, x)`; n=0 is digamma).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> bool(np.isclose(kf.polygamma(np.array(1.0), 1), np.pi**2 / 6))
        True
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"polygamma: n must be an integer >= 0, got {n!r}")
    if n == 0:
        return digamma(x)
    return apply(Polygamma, x, n=int(n))


def trigamma(x):
    """The trigamma function, d/dx digamma(x) (Knet `trigamma`)."""
    return polygamma(x, 1)


def abs2(x):
    """|x|**2 (Knet `abs2`); for real x the same op as `square`."""
    return square(x)


# ---- rounding and sign: zero gradient, integers keep their dtype ----
# round declares no ufunc: plans and fusion call a declared ufunc directly, and rint turns
# integers into float64

Sign, sign = _unary("sign", "Sign of x (-1, 0, 1), elementwise; zero gradient (Knet `sign`).",
                    None, ufunc="sign", infer=_same)
Floor, floor = _unary("floor", "Largest integer <= x, elementwise; zero gradient (Knet `floor`).",
                      None, ufunc="floor", forward=_rounding_forward("floor"), infer=_same)
Ceil, ceil = _unary("ceil", "Smallest integer >= x, elementwise; zero gradient (Knet `ceil`).",
                    None, ufunc="ceil", forward=_rounding_forward("ceil"), infer=_same)
Round, round = _unary(
    "round", "Nearest integer, ties to even, elementwise; zero gradient (Knet `round`).",
    None, forward=_rounding_forward("rint"), infer=_same)
Trunc, trunc = _unary("trunc", "x rounded toward zero, elementwise; zero gradient (Knet `trunc`).",
                      None, ufunc="trunc", forward=_rounding_forward("trunc"), infer=_same)


# ---- activations ----


def _relu_forward(xp, x, out=None):
    return xp.maximum(x, 0, out=out)


#: elements per call of a plan's relu (a 256 KB float32 block of zeros)
_RELU_BLOCK = 65536


def _relu_bind(xp, attrs, in_specs, out_spec):
    """In a plan: the maximum against an array of zeros made once, not the scalar 0
    (NumPy's maximum with a scalar operand runs about 3x slower than with an array of
    the same shape: 2.5 against 0.7 us for 100x64 float32, 337 against 112 us for 1.15M
    elements). Arrays above `_RELU_BLOCK` elements go through in blocks of that many, so
    the zeros stay small; a non-contiguous one takes the forward's path."""
    (x,) = in_specs
    if xp is not np or not x.is_static or not x.is_float or not x.size:
        return None
    n, shape, maximum = x.size, x.shape, np.maximum
    zeros = np.zeros(min(n, _RELU_BLOCK), x.dtype)
    zeros.flags.writeable = False
    if n <= _RELU_BLOCK:
        zeros = zeros.reshape(shape)

        def relu(x, out=None):
            return maximum(x, zeros, out=out)

        return relu
    tail = n % _RELU_BLOCK
    starts = range(0, n - tail, _RELU_BLOCK)

    def relu(x, out=None):
        if out is None:
            out = np.empty(shape, x.dtype)
        if not (x.flags.c_contiguous and out.flags.c_contiguous):
            return maximum(x, 0, out=out)
        src, dst = x.reshape(-1), out.reshape(-1)
        for i in starts:
            maximum(src[i:i + _RELU_BLOCK], zeros, out=dst[i:i + _RELU_BLOCK])
        if tail:
            maximum(src[n - tail:], zeros[:tail], out=dst[n - tail:])
        return out

    return relu


def _sigm_forward(xp, x):
    x = _as_float(x)
    # expit is the logistic function evaluated without overflow for any x
    return _special(xp).expit(x).astype(x.dtype, copy=False)


def _elu_forward(xp, x):
    x = _as_float(x)
    # expm1 of min(x, 0): accurate near 0 and no overflow where the branch is unused
    return xp.where(x > 0, x, xp.expm1(xp.minimum(x, 0)))


def _selu_forward(xp, x):
    x = _as_float(x)
    negative = SELU_ALPHA * xp.expm1(xp.minimum(x, 0))
    return SELU_LAMBDA * xp.where(x > 0, x, negative)


def _relu_grad_bind(xp, in_specs, out_spec):
    """In a plan, for g and y of one shape big enough to split (`cpu_threads`): the
    batch cut in parts, one per thread, each g * (y > 0) on its rows; None (the forward,
    on one thread) otherwise."""
    g, y = in_specs
    if (xp is not np or not out_spec.is_static or not out_spec.ndim or not out_spec.size
            or g.shape != out_spec.shape or y.shape != out_spec.shape):
        return None
    # reads g and y, writes and reads the mask, writes the result
    moved = g.nbytes + y.nbytes + out_spec.nbytes + 2 * out_spec.size
    if moved < cpu_threads.SPLIT_BYTES:
        return None
    return cpu_threads.split_batch(out_spec.shape, out_spec.dtype,
                                   lambda g, y, out: np.multiply(g, y > 0, out=out), moved)


@register
class ReluGrad(Op):
    """g where out > 0, else 0: relu's gradient as one pass (no where/copy pair)."""
    name, elementwise, out_arg, inplace = "relu_grad", True, True, True
    nondiff = (1,)

    def infer(g: Spec, y: Spec) -> Spec:
        return g.with_shape(broadcast_shapes("relu_grad", g, y))

    def forward(xp, g, y, out=None):
        return xp.multiply(g, y > 0, out=out)

    def bind(xp, attrs, in_specs, out_spec):
        return _relu_grad_bind(xp, in_specs, out_spec)

    def grad(gg, res, g, y):
        return relu_grad(gg, y), None


def relu_grad(g, y):
    """g * (y > 0): the gradient of relu given its output y."""
    return apply(ReluGrad, g, y)


# out > 0 exactly where x > 0, and on x <= 0 the derivative is a function of out
Relu, relu = _unary("relu", "max(x, 0), elementwise (Knet `relu`).",
                    lambda g, out, x: relu_grad(g, out),
                    forward=_relu_forward, saves=("out",), infer=_same, bind=_relu_bind)
Sigm, sigm = _unary("sigm", "The logistic sigmoid 1 / (1 + exp(-x)) (Knet `sigm`).",
                    lambda g, out, x: g * out * (1 - out), forward=_sigm_forward, saves=("out",))
Elu, elu = _unary("elu", "x > 0 ? x : exp(x) - 1, elementwise (Knet `elu`).",
                  lambda g, out, x: where(gt(out, 0), g, g * (out + 1)),
                  forward=_elu_forward, saves=("out",))
Selu, selu = _unary(
    "selu", "lambda01 * (x > 0 ? x : alpha01 * (exp(x) - 1)), elementwise (Knet `selu`).",
    lambda g, out, x: where(gt(out, 0), g * SELU_LAMBDA, g * (out + SELU_LAMBDA * SELU_ALPHA)),
    forward=_selu_forward, saves=("out",))


# ---- dtype conversion ----


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


def cast(x, dtype):
    """x converted to `dtype` (a NumPy dtype or its name)."""
    return apply(Cast, x, dtype=str(np.dtype(dtype)))
