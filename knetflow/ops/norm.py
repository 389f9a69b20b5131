"""Batch normalization (Knet `batchnorm`, `bnmoments`, `bnparams`).

x is (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); statistics are per
channel (axis 1) over all other axes. Training normalizes with the batch mean
and biased variance, inference with the running moments. Ops: `batchnorm`, the
fused training forward giving (y, batch mean, batch var); `batchnorm_grad`, its
fused backward, whose own gradient is written in ops (second derivatives
work). Inference and the moment update are plain elementwise ops.

Running moments (`BNMoments`) are auxiliary state, updated in training as
new = (1 - momentum) * old + momentum * batch:
- eager calls on arrays: the object's `mean`/`var` arrays change in place (Knet);
- inside `kf.diff`/`kf.grad`: state that flows through the traced plan
  (knetflow/graph/state.py), so it works on any device. The running moments are
  inputs fed from `m.mean`/`m.var` at each call, and the new ones extra outputs
  of the plan; after every call, traced or cached, they are written into the
  arrays `m.mean`/`m.var` hold (identity kept: `m.mean[...] = saved` and
  `m.mean = saved` both load saved moments). While the function is traced,
  `m.mean`/`m.var` hold the symbols of the updated moments, so a second
  batchnorm with the same moments in one function continues from them, as eagerly;
- symbolic graphs: `param` nodes `<name>_moving_mean`/`<name>_moving_var` with
  attribute `trainable=False` (optimizers skip them); a training call records
  their new values and `bnupdates(m)` gives the `Graph(..., updates=...)` entries.

`training=None` is True inside `kf.diff` and False elsewhere (eager calls and
symbolic graphs, like dropout's eager default): build training graphs with
`training=True`.
"""

from __future__ import annotations

import numpy as np

from knetflow.ops.array import expand_dims
from knetflow.ops.base import Op, Spec, TupleSpec, apply_multi, fail, fmt, register
from knetflow.ops.index import getitem
from knetflow.ops.norm_moments import (
    BNMoments,
    bnmoments,
    bnupdates,
    moments_for,
    record_updates,
    to_dtype,
    update_moments,
)
from knetflow.ops.reduce import broadcast_like, count, sum

__all__ = ["BNMoments", "batchnorm", "batchnorm_train", "bnmoments", "bnparams", "bnupdates"]


def _axes(ndim: int) -> tuple:
    """The axes statistics reduce over: all but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def _check_input(opname, x: Spec) -> Spec:
    x.require_float(opname)
    if not 2 <= x.ndim <= 5:
        fail(opname, f"input must be (N, C) or (N, C, spatial...) with 1-3 spatial axes, "
                     f"got {x.ndim} dimensions {fmt(x)}")
    return Spec((x.shape[1],), x.dtype)


def _check_vector(opname, what, v: Spec, channels: Spec, x: Spec):
    c = channels.shape[0]
    if v.ndim != 1 or (v.shape[0] is not None and c is not None and v.shape[0] != c):
        fail(opname, f"{what} {fmt(v)} does not match the {c} channels of x {fmt(x)}")


def _bcast(v, ndim):
    """A per-channel (C,) value as (1, C, 1, ...) for broadcasting against x."""
    return expand_dims(v, _axes(ndim))


def _col(v, ndim):
    """An array (C,) reshaped to (1, C, 1, ...) (forward code, on arrays)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@register
class BatchNorm(Op):
    """Training-mode batch normalization: (y, batch mean, batch variance) of x (C,) each."""
    name = "batchnorm"
    saves = ("out", 0, 1)

    def infer(x: Spec, *affine: Spec, eps=1e-5) -> TupleSpec:
        channels = _check_input("batchnorm", x)
        if len(affine) not in (0, 2):
            fail("batchnorm", "give both gamma and beta, or neither")
        for what, v in zip(("gamma", "beta"), affine):
            _check_vector("batchnorm", what, v, channels, x)
        return TupleSpec((x, channels, channels))

    def forward(xp, x, *affine, eps=1e-5):
        axes = _axes(x.ndim)
        mean = x.mean(axis=axes)
        xc = x - _col(mean, x.ndim)
        y = xc * xc
        var = y.mean(axis=axes)
        scale = 1 / xp.sqrt(var + eps)
        if affine:
            scale = scale * affine[0].astype(x.dtype, copy=False)
        xp.multiply(xc, _col(scale, x.ndim), out=y)
        if affine:
            y += _col(affine[1].astype(x.dtype, copy=False), x.ndim)
        return y, mean, var

    def grad(gs, outs, x, *affine, eps=1e-5):
        gy, gmean, gvar = gs
        _, mean, var = outs
        dx = dgamma = dbeta = None
        if gy is not None:
            dx, dgamma, dbeta = apply_multi(BatchNormGrad, gy, x, mean, var, *affine[:1], eps=eps)
        m = count(x, axis=_axes(x.ndim))
        if gmean is not None:
            term = broadcast_like(_bcast(gmean, x.ndim) / m, x)
            dx = term if dx is None else dx + term
        if gvar is not None:
            term = _bcast(gvar * 2, x.ndim) * (x - _bcast(mean, x.ndim)) / m
            dx = term if dx is None else dx + term
        return (dx, dgamma, dbeta)[:1 + len(affine)]


@register
class BatchNormGrad(Op):
    """Backward of `batchnorm`: (dx, dgamma, dbeta) from gy, x, batch mean/var (and gamma)."""
    name = "batchnorm_grad"
    saves = (0, 1, 2, 3, 4)

    def infer(gy: Spec, x: Spec, mean: Spec, var: Spec, *gamma: Spec, eps=1e-5) -> TupleSpec:
        channels = _check_input("batchnorm_grad", x)
        if gy.ndim != x.ndim or any(a is not None and b is not None and a != b
                                    for a, b in zip(gy.shape, x.shape)):
            fail("batchnorm_grad", f"gradient {fmt(gy)} does not match x {fmt(x)}")
        for what, v in zip(("mean", "var", "gamma"), (mean, var) + gamma):
            _check_vector("batchnorm_grad", what, v, channels, x)
        return TupleSpec((x, channels, channels))

    def forward(xp, gy, x, mean, var, *gamma, eps=1e-5):
        axes, nd = _axes(x.ndim), x.ndim
        m = x.size // x.shape[1]
        gy = gy.astype(x.dtype, copy=False)
        r = 1 / xp.sqrt(var + eps)
        xh = x - _col(mean, nd)
        xh *= _col(r, nd)
        dbeta = gy.sum(axis=axes)
        dx = gy * xh
        dgamma = dx.sum(axis=axes)
        # dx = gamma * r * (gy - mean(gy) - xh * mean(gy * xh)), reusing the buffers
        xh *= _col(dgamma / m, nd)
        xp.subtract(gy, xh, out=dx)
        dx -= _col(dbeta / m, nd)
        scale = r * gamma[0].astype(x.dtype, copy=False) if gamma else r
        dx *= _col(scale, nd)
        return dx, dgamma, dbeta

    def grad(hs, outs, gy, x, mean, var, *gamma, eps=1e-5):
        return _second_order(hs, gy, x, mean, var, gamma[0] if gamma else None, eps)


def _second_order(hs, gy, x, mu, v, gamma, eps):
    """Gradients of <(hx, hg, hb), batchnorm_grad(gy, x, mu, v, gamma)> for each input.

    With r = (v + eps)^-1/2, xh = (x - mu) r, c = gamma gy, A = mean(c), B = mean(c xh):
    dx = r (c - A - xh B), dgamma = sum(gy xh), dbeta = sum(gy).
    """
    hx, hg, hb = hs
    nd, axes = x.ndim, _axes(x.ndim)
    m = count(x, axis=axes)

    def csum(t):
        return sum(t, axis=axes)

    def cmean(t):
        return _bcast(csum(t) / m, nd)

    rc = (v + eps) ** -0.5
    r, xc = _bcast(rc, nd), x - _bcast(mu, nd)
    xh = xc * r
    c = gy if gamma is None else gy * _bcast(gamma, nd)
    g_gy = broadcast_like(_bcast(hb, nd), x) if hb is not None else None
    g_c = g_xh = r_bar = None
    if hx is not None:
        u = hx * r
        b, mux = cmean(c * xh), cmean(u * xh)
        g_c = u - cmean(u) - xh * mux
        g_xh = -(c * mux) - b * u
        r_bar = csum(hx * (c - cmean(c) - xh * b))
    if hg is not None:
        g_gy = _add(g_gy, _bcast(hg, nd) * xh)
        g_xh = _add(g_xh, _bcast(hg, nd) * gy)
    g_gamma = None
    if g_c is not None:
        g_gy = _add(g_gy, g_c if gamma is None else g_c * _bcast(gamma, nd))
        g_gamma = None if gamma is None else csum(g_c * gy)
    g_x = g_mu = g_v = None
    if g_xh is not None:
        g_x, g_mu = g_xh * r, -csum(g_xh) * rc
        r_bar = _add(r_bar, csum(g_xh * xc))
    if r_bar is not None:
        g_v = r_bar * rc * rc * rc * -0.5
    return (g_gy, g_x, g_mu, g_v) + (() if gamma is None else (g_gamma,))


def _add(a, b):
    return b if a is None else a + b


# ---- params (the running moments are in norm_moments.py) ----


def bnparams(C: int, dtype="float32"):
    """[gamma; beta] of a batchnorm over C channels: C ones then C zeros (Knet `bnparams`)."""
    out = np.zeros(2 * int(C), dtype=dtype)
    out[:int(C)] = 1
    return out


# ---- the public function ----


def _graph():
    """(current tracer, Symbol class) from the graph layer, imported lazily as dropout does."""
    from knetflow.graph import trace
    from knetflow.graph.symbol import Symbol

    return trace.current(), Symbol


def _traced(v, tracer):
    """Inside a trace, a captured array as a fed input (not a constant frozen into the trace)."""
    if tracer is None or not isinstance(v, np.ndarray) or not v.ndim:
        return v
    from knetflow.graph.build import placeholder

    return tracer.leaf(v, lambda: placeholder(f"t{len(tracer.leaves)}", v.shape, v.dtype))


def _affine(params, channels, x):
    """(gamma, beta) from a [gamma; beta] vector of length 2C, a pair, or None."""
    if params is None or isinstance(params, (tuple, list)):
        gamma, beta = params or (None, None)
        return gamma, beta
    shape = tuple(params.shape)
    if len(shape) != 1 or (channels is not None and shape[0] not in (None, 2 * channels)):
        fail("batchnorm", f"params {shape} must be [gamma; beta] of length 2C = "
                          f"{None if channels is None else 2 * channels} for x {tuple(x.shape)}")
    return getitem(params, slice(0, channels)), getitem(params, slice(channels, None))


def _inference(x, mean, var, gamma, beta, eps):
    """Normalize with given moments: x * scale + shift, per channel."""
    nd = len(x.shape)
    scale = (var + eps) ** -0.5
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    return x * _bcast(scale, nd) + _bcast(shift, nd)


def batchnorm_train(x, gamma=None, beta=None, eps=1e-5) -> tuple:
    """Training-mode batchnorm returning (y, batch mean, batch variance); the fused op.

    `batchnorm` uses it; layers that keep their own moments can too.
    """
    affine = () if gamma is None and beta is None else (gamma, beta)
    return apply_multi(BatchNorm, x, *affine, eps=float(eps))


def batchnorm(x, moments=None, params=None, eps=1e-5, training=None):
    """Batch normalization of x per channel, axis 1 (Knet `batchnorm`).

    x is (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W). `moments` (from
    `bnmoments`) holds the running mean and variance: updated in training,
    used in inference (where it is required). `params` is [gamma; beta] of
    length 2C (`bnparams(C)`) or a pair (gamma, beta). `training=None` means
    True inside `kf.diff`/`kf.grad` and False elsewhere (see module docstring).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
        >>> kf.batchnorm(x, training=True, eps=0.0)
        array([[-1., -1.],
               [ 1.,  1.]])
    """
    tracer, symbol = _graph()
    training = tracer is not None if training is None else training
    x, params = _traced(x, tracer), _traced(params, tracer)
    channels = _check_input("batchnorm", Spec(tuple(x.shape), str(x.dtype))).shape[0]
    dtype = np.dtype(x.dtype)
    gamma, beta = (to_dtype(v, dtype) for v in _affine(params, channels, x))
    extra = () if moments is None else (moments.mean, moments.var)
    symbolic = tracer is None and any(isinstance(v, symbol) for v in (x, gamma, beta) + extra)
    if moments is None and not training:
        fail("batchnorm", "inference mode (training=False) needs moments with the running "
                          "mean and variance")
    mean, var = (None, None) if moments is None else moments_for(
        moments, x, channels, symbolic)
    if not training:
        return _inference(x, to_dtype(mean, dtype), to_dtype(var, dtype), gamma, beta,
                          float(eps))
    y, bmean, bvar = batchnorm_train(x, gamma, beta, eps)
    if moments is None:
        return y
    if symbolic:
        record_updates(moments, mean, var, bmean, bvar)
        return y
    update_moments(moments, mean, var, bmean, bvar)
    return y
