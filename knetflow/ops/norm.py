"""Batch normalization ops (Knet `batchnorm`'s arithmetic, `bnparams`).

x is (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); statistics are per
channel (axis 1) over all other axes. Ops: `batchnorm`, the fused training
forward giving (y, batch mean, batch var); `batchnorm_grad`, its fused
backward, whose own gradient is written in ops (second derivatives work).
Inference and the moment update are plain elementwise ops.

The public `kf.batchnorm`, with running moments (state) and its training
default, is a layer: knetflow/layers/batchnorm.py.
"""

from __future__ import annotations

import numpy as np

from knetflow.ops.array import expand_dims
from knetflow.ops.base import Op, Spec, TupleSpec, apply_multi, fail, fmt, register
from knetflow.ops.reduce import broadcast_like, per_count, sum

__all__ = ["batchnorm_train", "bnparams"]


def _axes(ndim: int) -> tuple:
    """The axes statistics reduce over: all but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def check_input(opname, x: Spec) -> Spec:
    x.require_float(opname)
    if not 2 <= x.ndim <= 5:
        fail(opname, f"input must be (N, C) or (N, C, spatial...) with 1-3 spatial axes, "
                     f"got {x.ndim} dimensions {fmt(x)}")
    return Spec((x.shape[1],), x.dtype)


def _check_vector(opname, what, v: Spec, channels: Spec, x: Spec):
    c = channels.shape[0]
    if v.ndim != 1 or (v.shape[0] is not None and c is not None and v.shape[0] != c):
        fail(opname, f"{what} {fmt(v)} does not match the {c} channels of x {fmt(x)}")


def per_channel(v, ndim):
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
        channels = check_input("batchnorm", x)
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
        axes = _axes(x.ndim)
        if gmean is not None:
            term = broadcast_like(per_count(per_channel(gmean, x.ndim), x, axes), x)
            dx = term if dx is None else dx + term
        if gvar is not None:
            term = per_count(per_channel(gvar * 2, x.ndim) * (x - per_channel(mean, x.ndim)),
                             x, axes)
            dx = term if dx is None else dx + term
        return (dx, dgamma, dbeta)[:1 + len(affine)]


@register
class BatchNormGrad(Op):
    """Backward of `batchnorm`: (dx, dgamma, dbeta) from gy, x, batch mean/var (and gamma)."""
    name = "batchnorm_grad"
    saves = (0, 1, 2, 3, 4)

    def infer(gy: Spec, x: Spec, mean: Spec, var: Spec, *gamma: Spec, eps=1e-5) -> TupleSpec:
        channels = check_input("batchnorm_grad", x)
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

    def csum(t):
        return sum(t, axis=axes)

    def cmean(t):
        return per_channel(per_count(csum(t), x, axes), nd)

    rc = (v + eps) ** -0.5
    r, xc = per_channel(rc, nd), x - per_channel(mu, nd)
    xh = xc * r
    c = gy if gamma is None else gy * per_channel(gamma, nd)
    g_gy = broadcast_like(per_channel(hb, nd), x) if hb is not None else None
    g_c = g_xh = r_bar = None
    if hx is not None:
        u = hx * r
        b, mux = cmean(c * xh), cmean(u * xh)
        g_c = u - cmean(u) - xh * mux
        g_xh = -(c * mux) - b * u
        r_bar = csum(hx * (c - cmean(c) - xh * b))
    if hg is not None:
        g_gy = _add(g_gy, per_channel(hg, nd) * xh)
        g_xh = _add(g_xh, per_channel(hg, nd) * gy)
    g_gamma = None
    if g_c is not None:
        g_gy = _add(g_gy, g_c if gamma is None else g_c * per_channel(gamma, nd))
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


def batchnorm_train(x, gamma=None, beta=None, eps=1e-5) -> tuple:
    """Training-mode batchnorm returning (y, batch mean, batch variance); the fused op.

    `batchnorm` uses it; layers that keep their own moments can too.
    """
    affine = () if gamma is None and beta is None else (gamma, beta)
    return apply_multi(BatchNorm, x, *affine, eps=float(eps))
