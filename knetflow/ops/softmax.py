"""Normalizing exponentials: softmax, logsoftmax (Knet `logp`) and logsumexp.

Knet semantics: with `axis=None` the whole array is normalized (Knet's
`dims=:`); otherwise the normalization runs over the given axes. Every forward
subtracts the maximum over the axes before exponentiating, so large scores
neither overflow nor lose precision. The gradients are written in ops, so
second derivatives (Hessian-vector products) work.
"""

from __future__ import annotations

import numpy as np

from knetflow.ops.base import Op, Spec, apply, float_dtype, norm_axis, register
from knetflow.ops.reduce import broadcast_like, sum
from knetflow.ops.small_reduce import dot_sum, row_max

__all__ = ["logp", "logsoftmax", "logsumexp", "softmax"]


def _float_infer(x: Spec, axis=None, **_) -> Spec:
    return x.with_dtype(float_dtype(x))


def _as_float(x):
    """x itself when floating, else x as float64 (what NumPy's exp gives integers)."""
    return x if x.dtype.kind == "f" else x.astype("float64")


def _shifted(xp, x, axis):
    """(x - m, m) with m the max of x over `axis` (keepdims): the largest finite float
    where m is +inf, 0 where m is -inf or NaN.

    Zeroing a max of -inf keeps a slice of all -inf at -inf (not NaN); clamping +inf
    keeps a slice's finite entries finite after the shift, so their softmax is 0 (where
    the +inf is NaN), as plans' `shift_kernel` gives.
    """
    x = _as_float(x)
    m = xp.max(x, axis=axis, keepdims=True)
    big = x.dtype.type(np.finfo(x.dtype).max)
    m = xp.where(xp.isfinite(m), m, xp.where(m > 0, big, x.dtype.type(0)))
    return x - m, m


def _log_normalizer(xp, z, axis):
    """log(sum(exp(z))) over `axis` with keepdims, for z whose max is 0."""
    return xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def shift_kernel(x: Spec, axis):
    """For a float x of known, non-empty shape on NumPy: a kernel x -> x - m, m the max
    over `axis` (keepdims) clamped to the finite range (as `_shifted`'s clamp and
    zeroing: the same results for +-inf and NaN), in a new array; None otherwise. Over
    the last axis the max is `row_max` (the short rows of a (batch, classes) score
    matrix).

    The first step of every normalization a plan binds (softmax, logsoftmax, nll_terms).
    """
    if not x.is_float or not x.is_static or not x.size:
        return None
    big = float(np.finfo(x.dtype).max)
    top, low, sub = np.maximum.reduce, np.minimum, np.subtract
    rows = row_max(x) if axis == (x.ndim - 1,) else None
    if rows is None:
        def rows(x):
            return top(x, axis=axis, keepdims=True, initial=-big)

    def shifted(x):
        m = rows(x)
        low(m, big, out=m)
        return sub(x, m)

    return shifted


def _bound(xp, in_specs, axis, finish):
    """A plan's kernel for a normalization over `axis`: `finish(z, total)` with z from
    `shift_kernel` and `total(e)` the keepdims sum of e over `axis` (`dot_sum`, BLAS, where
    it applies), through ufuncs only."""
    (x,) = in_specs
    shifted = shift_kernel(x, axis) if xp is np else None
    if shifted is None:
        return None
    keep = tuple(1 if axis is None or i in axis else d for i, d in enumerate(x.shape))
    total, reduce = dot_sum(x, axis, keep), np.add.reduce
    if total is None:
        def total(e):
            return reduce(e, axis=axis, keepdims=True)

    def kernel(x):
        return finish(shifted(x), total)

    return kernel


def _softmax(z, total):
    e = np.exp(z, out=z)
    return np.divide(e, total(e), out=e)


def _logsoftmax(z, total):
    s = total(np.exp(z))
    return np.subtract(z, np.log(s, out=s), out=z)


@register
class Softmax(Op):
    """exp(x) / sum(exp(x)) over `axis` (all of x when None)."""
    name = "softmax"
    saves = ("out",)
    infer = staticmethod(_float_infer)

    def forward(xp, x, axis=None):
        if x.size == 0:
            return _as_float(x).copy()
        z, _ = _shifted(xp, x, axis)
        e = xp.exp(z, out=z)
        e /= xp.sum(e, axis=axis, keepdims=True)
        return e

    def bind(xp, attrs, in_specs, out_spec):
        axis = attrs.get("axis")
        return _bound(xp, in_specs, axis, _softmax)

    def grad(g, out, x, axis=None):
        return (out * (g - sum(g * out, axis=axis, keepdims=True)),)


@register
class LogSoftmax(Op):
    """x - log(sum(exp(x))) over `axis` (all of x when None)."""
    name = "logsoftmax"
    saves = ("out",)
    infer = staticmethod(_float_infer)

    def forward(xp, x, axis=None):
        if x.size == 0:
            return _as_float(x).copy()
        z, _ = _shifted(xp, x, axis)
        z -= _log_normalizer(xp, z, axis)
        return z

    def bind(xp, attrs, in_specs, out_spec):
        axis = attrs.get("axis")
        return _bound(xp, in_specs, axis, _logsoftmax)

    def grad(g, out, x, axis=None):
        from knetflow.ops.elementwise import exp

        return (g - exp(out) * sum(g, axis=axis, keepdims=True),)


@register
class LogSumExp(Op):
    """log(sum(exp(x))) over `axis` (all of x when None)."""
    name = "logsumexp"
    saves = ("out", 0)

    def infer(x: Spec, axis=None, keepdims=False) -> Spec:
        axes = range(x.ndim) if axis is None else axis
        if keepdims:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return Spec(shape, float_dtype(x))

    def forward(xp, x, axis=None, keepdims=False):
        if x.size == 0:  # no max to subtract; an empty sum is 0, its log -inf
            total = xp.sum(xp.exp(_as_float(x)), axis=axis, keepdims=keepdims)
            return xp.log(xp.asarray(total))
        z, m = _shifted(xp, x, axis)
        s = _log_normalizer(xp, z, axis)
        s += m
        if not keepdims:
            s = xp.squeeze(s, axis=axis)
        return s

    def grad(g, out, x, axis=None, keepdims=False):
        from knetflow.ops.elementwise import exp

        gx = broadcast_like(g, x, axis=axis, keepdims=keepdims)
        return (gx * exp(x - broadcast_like(out, x, axis=axis, keepdims=keepdims)),)


def _axis(opname, x, axis):
    spec = getattr(x, "spec", None)
    if isinstance(spec, Spec):
        ndim = spec.ndim
    elif hasattr(x, "shape"):
        ndim = len(x.shape)
    else:
        import numpy as np

        ndim = np.ndim(x)
    return norm_axis(opname, axis, ndim)


def softmax(x, axis=None):
    """Normalized probabilities exp(x) / sum(exp(x)) over `axis` (Knet `softmax`).

    With `axis=None` (Knet's `dims=:`) the whole of x sums to 1; `axis=-1`
    normalizes each row of a (batch, classes) matrix. Stable for large x.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.softmax(np.array([[1000., 1000.], [0., 0.]]), axis=1)
        array([[0.5, 0.5],
               [0.5, 0.5]])
    """
    return apply(Softmax, x, axis=_axis("softmax", x, axis))


def logsoftmax(x, axis=None):
    """Normalized log probabilities x - logsumexp(x) over `axis` (Knet `logsoftmax`/`logp`).

    With `axis=None` the normalization is over the whole of x. Stable for large x.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.logsoftmax(np.array([0., 0.]))
        array([-0.69314718, -0.69314718])
    """
    return apply(LogSoftmax, x, axis=_axis("logsoftmax", x, axis))


logp = logsoftmax


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over `axis`, computed without overflow (Knet `logsumexp`).

    With `axis=None` the sum is over all of x and the result is a scalar.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> float(kf.logsumexp(np.array([1000., 1000.])))
        1000.6931471805599
    """
    return apply(LogSumExp, x, axis=_axis("logsumexp", x, axis), keepdims=bool(keepdims))
