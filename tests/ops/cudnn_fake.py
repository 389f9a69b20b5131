"""A NumPy model of the cuDNN calls `knetflow.ops.cudnn` makes, for CPU tests.

`NumpyCudnn` offers the methods of `knetflow.devices.gpu_cudnn.CupyCudnn` with
cuDNN's documented semantics, written from the definitions with loops over
kernel offsets and output positions (no knetflow code): convolutions
cross-correlate, with groups; pooling takes the max (padding never wins, NaN
propagated or not) or the average counting or not counting the padding, and
its backward sends the gradient to each window's first maximum; batchnorm
normalizes per channel of (N, C, S, 1). Every call first checks what cuDNN
requires of its arguments (C-contiguous 4-D/5-D arrays of one float dtype,
geometry of the right length, output shapes that agree with the geometry),
then records its name in `calls`.
"""

from __future__ import annotations

import math

import numpy as np

POOL = {"CUDNN_POOLING_MAX": "max", "CUDNN_POOLING_MAX_DETERMINISTIC": "max",
        "CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING": "include",
        "CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING": "exclude"}
NAN = {"CUDNN_PROPAGATE_NAN": True, "CUDNN_NOT_PROPAGATE_NAN": False}


def _check_tensors(*arrays):
    for a in arrays:
        assert a.flags.c_contiguous, "cuDNN takes C-contiguous arrays"
        assert a.ndim in (4, 5), f"cuDNN takes 4-D or 5-D tensors, got {a.shape}"
        assert a.dtype == arrays[0].dtype, "cuDNN takes one dtype"
        assert a.dtype.kind == "f"


def _out_size(x, k, p, s, d):
    return 1 + (x + 2 * p - (k - 1) * d - 1) // s


def _taps(ksize, dilation, stride, ys):
    for k in np.ndindex(*ksize):
        yield k, (Ellipsis,) + tuple(slice(ki * d, ki * d + (y - 1) * s + 1, s)
                                     for ki, d, s, y in zip(k, dilation, stride, ys))


def _conv_shapes(x_shape, w, y_shape, pad, stride, dilation, groups):
    """Checks the conv geometry against the shapes cuDNN would compute; gives Y."""
    nd = len(x_shape) - 2
    assert len(pad) == len(stride) == len(dilation) == nd
    assert x_shape[1] == w.shape[1] * groups and w.shape[0] % groups == 0
    ys = tuple(_out_size(*a) for a in zip(x_shape[2:], w.shape[2:], pad, stride, dilation))
    assert tuple(y_shape) == (x_shape[0], w.shape[0]) + ys, (y_shape, ys)
    return ys


def _grouped(a, groups):
    return a.reshape((a.shape[0], groups, a.shape[1] // groups) + a.shape[2:])


class NumpyCudnn:
    """cuDNN's semantics in NumPy (see the module docstring)."""

    min_bn_epsilon = 1e-5
    errors = (NotImplementedError,)   # what `fail_with` raises

    def __init__(self, fail_with=None):
        self.calls = []
        self.fail_with = fail_with   # a message: every convolution_forward raises it

    def convolution_forward(self, x, w, y, pad, stride, dilation, groups):
        if self.fail_with:
            raise NotImplementedError(self.fail_with)
        _check_tensors(x, w, y)
        ys = _conv_shapes(x.shape, w, y.shape, pad, stride, dilation, groups)
        xg = _grouped(np.pad(x, [(0, 0)] * 2 + [(p, p) for p in pad]), groups)
        wg = w.reshape((groups, -1) + w.shape[1:])
        acc = np.zeros((x.shape[0], groups, w.shape[0] // groups) + ys)
        for k, window in _taps(w.shape[2:], dilation, stride, ys):
            acc += np.einsum("ngc...,goc->ngo...", xg[window], wg[(Ellipsis,) + k])
        y[...] = acc.reshape(y.shape)
        self.calls.append("convolution_forward")

    def convolution_backward_data(self, w, dy, dx, pad, stride, dilation, groups):
        _check_tensors(w, dy, dx)
        ys = _conv_shapes(dx.shape, w, dy.shape, pad, stride, dilation, groups)
        padded = dx.shape[:2] + tuple(n + 2 * p for n, p in zip(dx.shape[2:], pad))
        acc = _grouped(np.zeros(padded), groups)
        wg, dyg = w.reshape((groups, -1) + w.shape[1:]), _grouped(dy, groups)
        for k, window in _taps(w.shape[2:], dilation, stride, ys):
            acc[window] += np.einsum("ngo...,goc->ngc...", dyg, wg[(Ellipsis,) + k])
        inner = (Ellipsis,) + tuple(slice(p, p + n) for p, n in zip(pad, dx.shape[2:]))
        dx[...] = acc.reshape(padded)[inner]
        self.calls.append("convolution_backward_data")

    def convolution_backward_filter(self, x, dy, dw, pad, stride, dilation, groups):
        _check_tensors(x, dy, dw)
        ys = _conv_shapes(x.shape, dw, dy.shape, pad, stride, dilation, groups)
        xg = _grouped(np.pad(x, [(0, 0)] * 2 + [(p, p) for p in pad]), groups)
        dyg = _grouped(dy, groups)
        out = np.zeros((groups, dw.shape[0] // groups) + dw.shape[1:])
        for k, window in _taps(dw.shape[2:], dilation, stride, ys):
            patch = xg[window].reshape(xg.shape[:3] + (-1,))
            out[(Ellipsis,) + k] = np.einsum("ngcp,ngop->goc", patch,
                                             dyg.reshape(dyg.shape[:3] + (-1,)))
        dw[...] = out.reshape(dw.shape)
        self.calls.append("convolution_backward_filter")

    # ---- pooling ----

    @staticmethod
    def _windows(x_shape, window, padding, stride):
        """For each output position: it, the clipped region of x, and the real element count."""
        nd = len(x_shape) - 2
        assert len(window) == len(padding) == len(stride) == nd
        ys = tuple(1 + (n + 2 * p - w) // s for n, w, p, s in
                   zip(x_shape[2:], window, padding, stride))
        for pos in np.ndindex(*ys):
            lo = [i * s - p for i, s, p in zip(pos, stride, padding)]
            region = tuple(slice(max(a, 0), min(a + w, n))
                           for a, w, n in zip(lo, window, x_shape[2:]))
            yield pos, (Ellipsis,) + region, math.prod(r.stop - r.start for r in region)

    def _pool_value(self, x, sl, count, window, kind, propagate):
        flat = x[sl].reshape(x.shape[:2] + (-1,))
        if kind == "max":
            return flat.max(-1) if propagate else np.fmax.reduce(flat, axis=-1)
        return flat.sum(-1) / (math.prod(window) if kind == "include" else count)

    def pooling_forward(self, x, y, window, padding, stride, mode, nan_opt, alpha):
        _check_tensors(x, y)
        kind, propagate = POOL[mode], NAN[nan_opt]
        for pos, sl, count in self._windows(x.shape, window, padding, stride):
            y[(Ellipsis,) + pos] = alpha * self._pool_value(x, sl, count, window, kind, propagate)
        self.calls.append("pooling_forward")

    def pooling_backward(self, x, y, dy, dx, window, padding, stride, mode, nan_opt, alpha):
        _check_tensors(x, y, dy, dx)
        kind, propagate = POOL[mode], NAN[nan_opt]
        acc = np.zeros(x.shape)
        for pos, sl, count in self._windows(x.shape, window, padding, stride):
            g = alpha * dy[(Ellipsis,) + pos]
            region = x[sl]
            if kind == "max":   # cuDNN's backward reads y: it must be this window's max
                np.testing.assert_array_equal(
                    y[(Ellipsis,) + pos], self._pool_value(x, sl, count, window, kind, propagate))
                flat = region.reshape(x.shape[:2] + (-1,))
                hit = np.arange(flat.shape[-1]) == flat.argmax(-1)[..., None]
                acc[sl] += (hit * g[..., None]).reshape(region.shape)
            else:
                size = math.prod(window) if kind == "include" else count
                acc[sl] += (g / size).reshape(g.shape + (1,) * (x.ndim - 2))
        dx[...] = acc
        self.calls.append("pooling_backward")

    # ---- batch normalization ----

    @staticmethod
    def _check_bn(x, *per_channel):
        _check_tensors(x)
        assert x.ndim == 4 and x.shape[3] == 1, "knetflow passes (N, C, S, 1)"
        want = np.float32 if x.dtype == np.float16 else x.dtype
        for v in per_channel:
            assert v.shape == (x.shape[1],) and v.dtype == want and v.flags.c_contiguous
        return want

    def batchnorm_forward(self, x, gamma, beta, eps):
        pdt = self._check_bn(x, gamma, beta)
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=(0, 2, 3))
        inv_std = 1 / np.sqrt(x64.var(axis=(0, 2, 3)) + eps)
        col = (1, -1, 1, 1)
        y = (x64 - mean.reshape(col)) * (inv_std * gamma).reshape(col) + beta.reshape(col)
        self.calls.append("batchnorm_forward")
        return y.astype(x.dtype), mean.astype(pdt), inv_std.astype(pdt)

    def batchnorm_backward(self, x, gamma, gy, mean, inv_std, eps):
        pdt = self._check_bn(x, gamma, mean, inv_std)
        _check_tensors(x, gy)
        col, m = (1, -1, 1, 1), x.size // x.shape[1]
        xh = (x.astype(np.float64) - mean.reshape(col)) * inv_std.reshape(col)
        dbeta = gy.sum(axis=(0, 2, 3), dtype=np.float64)
        dgamma = (gy * xh).sum(axis=(0, 2, 3))
        dx = (gamma * inv_std).reshape(col) * (gy - dbeta.reshape(col) / m
                                               - xh * dgamma.reshape(col) / m)
        self.calls.append("batchnorm_backward")
        return dx.astype(x.dtype), dgamma.astype(pdt), dbeta.astype(pdt)
