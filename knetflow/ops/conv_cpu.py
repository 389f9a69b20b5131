"""NumPy kernels that compiled plans bind for 2-D convolutions (`conv4`,
`conv4_data`, `conv4_filter`) with one group: the batch is cut into chunks
whose column matrix stays a few MB, and every chunk's scratch (the
transposed input, the columns, the GEMM result) lives in one workspace per
thread that the kernels share, so a step allocates no column matrix at all.

Layouts are those of `knetflow.ops.conv`'s general kernels, chosen by the same
rule (`batch_last`): with the batch last, a chunk of x is first transposed to
(C, H, W, n), so each kernel offset's copy moves runs of Wo*n elements and one
GEMM covers the chunk; with the batch first, each image is its own GEMM and
the result lands in NCHW directly. The general kernels stay the reference:
tests compare these with them.

    >>> import numpy as np
    >>> from knetflow.ops.conv_cpu import bind_conv
    >>> x, w = np.ones((2, 1, 4, 4)), np.ones((3, 1, 2, 2))
    >>> run = bind_conv("conv4", x.shape, w.shape, x.dtype, (0, 0), (1, 1), (1, 1), 0,
    ...                 1.0, last=False)
    >>> run(w, x)[0, 0]
    array([[4., 4., 4.],
           [4., 4., 4.],
           [4., 4., 4.]])
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["bind_conv", "scratch", "workspace_bytes"]

#: the largest column matrix a chunk builds (bytes): LeNet's kernels ran 3-10% faster with
#: 4 MB than with 1 or 2 (1 thread), and the workspace stays under 4 MB there
CHUNK_BYTES = 4 << 20

_local = threading.local()


def _workspace(nbytes: int) -> np.ndarray:
    """This thread's scratch bytes, at least `nbytes` of them (grown, never shrunk).

    Kernels carve their scratch from it within one call and return none of it, so
    every kernel a thread runs can share it; a plan run in another thread gets its own.
    """
    buf = getattr(_local, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _local.buf = np.empty(nbytes, dtype=np.uint8)
    return buf


def scratch(sizes) -> list:
    """Arrays cut from this thread's workspace, one per (size, dtype) of `sizes` (flat,
    64-byte aligned); valid until the caller's next kernel call, so a kernel returns
    none of them.

        >>> a, b = scratch([(3, "float32"), (2, "bool")])
        >>> a.shape, b.dtype
        ((3,), dtype('bool'))
    """
    offsets, total = [], 0
    for size, dtype in sizes:
        offsets.append(total)
        total += -(-size * np.dtype(dtype).itemsize // 64) * 64
    buf = _workspace(total)
    return [buf[o:o + size * np.dtype(d).itemsize].view(d) for o, (size, d) in zip(offsets, sizes)]


def workspace_bytes() -> int:
    """Bytes of the calling thread's kernel workspace (0 before any kernel ran in it)."""
    buf = getattr(_local, "buf", None)
    return 0 if buf is None else buf.nbytes


class _Carver:
    """Consecutive, aligned arrays cut from the workspace for one call."""

    def __init__(self, sizes, dtype):
        self.dtype = np.dtype(dtype)
        self.offsets, total = [], 0
        for size in sizes:
            self.offsets.append(total)
            total += -(-size * self.dtype.itemsize // 64) * 64
        self.total = total

    def arrays(self, shapes):
        buf = _workspace(self.total)
        return [buf[o:o + math.prod(s) * self.dtype.itemsize].view(self.dtype).reshape(s)
                for o, s in zip(self.offsets, shapes)]


class _Geometry:
    """The shapes of one 2-D convolution: x (N, C, H, W), w (Co, C, kh, kw)."""

    def __init__(self, xshape, wshape, padding, stride, dilation, itemsize):
        self.n, self.c, self.h, self.w = xshape
        self.co, _, self.kh, self.kw = wshape
        self.padding, self.stride, self.dilation = padding, stride, dilation
        self.hp, self.wp = self.h + 2 * padding[0], self.w + 2 * padding[1]
        self.ho = 1 + (self.hp - (self.kh - 1) * dilation[0] - 1) // stride[0]
        self.wo = 1 + (self.wp - (self.kw - 1) * dilation[1] - 1) // stride[1]
        self.rows, self.pixels = self.c * self.kh * self.kw, self.ho * self.wo
        self.padded = any(padding)
        self.interior = (slice(padding[0], padding[0] + self.h),
                         slice(padding[1], padding[1] + self.w))
        (sh, sw), (dh, dw) = stride, dilation
        self.taps = [(i, j, slice(i * dh, i * dh + (self.ho - 1) * sh + 1, sh),
                      slice(j * dw, j * dw + (self.wo - 1) * sw + 1, sw))
                     for i in range(self.kh) for j in range(self.kw)]
        per_image = self.rows * self.pixels
        self.chunk = max(1, min(self.n, CHUNK_BYTES // (itemsize * per_image)))
        count = -(-self.n // self.chunk)
        self.chunk = -(-self.n // count)     # even chunks: the last one is not a sliver
        self.spans = [(a, min(a + self.chunk, self.n)) for a in range(0, self.n, self.chunk)]


def _filters(w, mode, alpha):
    """w as a (Co, C*kh*kw) GEMM operand: flipped for mode 0, times alpha."""
    if mode == 0:
        w = w[:, :, ::-1, ::-1]
    wm = np.ascontiguousarray(w).reshape(w.shape[0], -1)
    return wm * alpha if alpha != 1 else wm


# ---- batch last: chunks transposed to (C, H, W, n), one GEMM per chunk ----


def _fill_last(g, x, a, b, xb, cols):
    """cols (C, kh, kw, Ho, Wo, n) of x[a:b], through xb (C, Hp, Wp, n)."""
    if g.padded:
        xb.fill(0)
    xb[(slice(None),) + g.interior] = x[a:b].transpose(1, 2, 3, 0)
    for i, j, hs, ws in g.taps:
        cols[:, i, j] = xb[:, hs, ws]


def _conv_last(g, w, x, out, mode, alpha, carve):
    wm = _filters(w, mode, alpha)
    for a, b in g.spans:
        n = b - a
        xb, cols, y = carve.arrays([(g.c, g.hp, g.wp, n), (g.c, g.kh, g.kw, g.ho, g.wo, n),
                                    (g.co, g.ho, g.wo, n)])
        _fill_last(g, x, a, b, xb, cols)
        np.matmul(wm, cols.reshape(g.rows, -1), out=y.reshape(g.co, -1))
        out[a:b] = y.transpose(3, 0, 1, 2)
    return out


def _filter_last(g, x, dy, dw, carve):
    for a, b in g.spans:
        n = b - a
        xb, cols, dyb, part = carve.arrays([
            (g.c, g.hp, g.wp, n), (g.c, g.kh, g.kw, g.ho, g.wo, n), (g.co, g.ho, g.wo, n),
            (g.co, g.rows)])
        _fill_last(g, x, a, b, xb, cols)
        dyb[...] = dy[a:b].transpose(1, 2, 3, 0)
        np.matmul(dyb.reshape(g.co, -1), cols.reshape(g.rows, -1).T,
                  out=dw if a == 0 else part)
        if a:
            dw += part
    return dw


def _data_last(g, w, dy, out, mode, alpha, carve):
    wt = _filters(w, mode, alpha).T
    for a, b in g.spans:
        n = b - a
        acc, cols, dyb = carve.arrays([(g.c, g.hp, g.wp, n), (g.c, g.kh, g.kw, g.ho, g.wo, n),
                                       (g.co, g.ho, g.wo, n)])
        dyb[...] = dy[a:b].transpose(1, 2, 3, 0)
        np.matmul(wt, dyb.reshape(g.co, -1), out=cols.reshape(g.rows, -1))
        acc.fill(0)
        for i, j, hs, ws in g.taps:
            acc[:, hs, ws] += cols[:, i, j]
        out[a:b] = acc[(slice(None),) + g.interior].transpose(3, 0, 1, 2)
    return out


# ---- batch first: chunks of images, one GEMM per image straight into NCHW ----


def _fill_first(g, x, a, b, xb, cols):
    """cols (n, C, kh, kw, Ho, Wo) of x[a:b] (through xb (n, C, Hp, Wp) when padded)."""
    src = x[a:b]
    if g.padded:
        xb.fill(0)
        xb[(Ellipsis,) + g.interior] = src
        src = xb
    for i, j, hs, ws in g.taps:
        cols[:, :, i, j] = src[:, :, hs, ws]


def _pad_shape(g, n):
    return (n, g.c, g.hp, g.wp) if g.padded else (0,)


def _conv_first(g, w, x, out, mode, alpha, carve):
    wm = _filters(w, mode, alpha)
    for a, b in g.spans:
        n = b - a
        xb, cols = carve.arrays([_pad_shape(g, n), (n, g.c, g.kh, g.kw, g.ho, g.wo)])
        _fill_first(g, x, a, b, xb, cols)
        np.matmul(wm, cols.reshape(n, g.rows, g.pixels),
                  out=out[a:b].reshape(n, g.co, g.pixels))
    return out


def _filter_first(g, x, dy, dw, carve):
    dyp = dy.reshape(g.n, g.co, g.pixels)
    for a, b in g.spans:
        n = b - a
        xb, cols, parts = carve.arrays([_pad_shape(g, n), (n, g.c, g.kh, g.kw, g.ho, g.wo),
                                        (n, g.co, g.rows)])
        _fill_first(g, x, a, b, xb, cols)
        np.matmul(dyp[a:b], cols.reshape(n, g.rows, g.pixels).transpose(0, 2, 1), out=parts)
        if a == 0:
            np.add.reduce(parts, axis=0, out=dw)
        else:
            dw += np.add.reduce(parts, axis=0)
    return dw


def _data_first(g, w, dy, out, mode, alpha, carve):
    wt = _filters(w, mode, alpha).T
    dyp = dy.reshape(g.n, g.co, g.pixels)
    for a, b in g.spans:
        n = b - a
        acc, cols = carve.arrays([_pad_shape(g, n), (n, g.c, g.kh, g.kw, g.ho, g.wo)])
        if not g.padded:
            acc = out[a:b]
        np.matmul(wt, dyp[a:b], out=cols.reshape(n, g.rows, g.pixels))
        acc.fill(0)
        for i, j, hs, ws in g.taps:
            acc[:, :, hs, ws] += cols[:, :, i, j]
        if g.padded:
            out[a:b] = acc[(Ellipsis,) + g.interior]
    return out


def _scratch_sizes(g, kind, last):
    n = g.chunk
    cols = g.rows * g.pixels * n
    if last:
        sizes = [g.c * g.hp * g.wp * n, cols, g.co * g.pixels * n]
        return sizes + [g.co * g.rows] if kind == "conv4_filter" else sizes
    pad = g.c * g.hp * g.wp * n if g.padded else 0
    return [pad, cols] + ([g.co * g.rows * n] if kind == "conv4_filter" else [])


def bind_conv(kind, xshape, wshape, dtype, padding, stride, dilation, mode, alpha, last):
    """A kernel for one 2-D, one-group convolution op of fixed shapes and dtype.

    `kind` is "conv4" (called as fn(w, x)), "conv4_data" (fn(w, dy, x)) or
    "conv4_filter" (fn(x, dy, w)); each takes `out=` (a buffer of the result's
    shape and dtype, written and returned) and otherwise returns a new array.
    `last` picks the batch-last layout (see the module docstring).
    """
    dtype = np.dtype(dtype)
    g = _Geometry(tuple(xshape), tuple(wshape), tuple(padding), tuple(stride),
                  tuple(dilation), dtype.itemsize)
    carve = _Carver(_scratch_sizes(g, kind, last), dtype)
    xshape, wshape = tuple(xshape), tuple(wshape)
    yshape = (g.n, g.co, g.ho, g.wo)
    if kind == "conv4":
        run = _conv_last if last else _conv_first

        def conv4(w, x, out=None):
            if out is None:
                out = np.empty(yshape, dtype=dtype)
            return run(g, w, x, out, mode, alpha, carve)

        return conv4
    if kind == "conv4_data":
        run = _data_last if last else _data_first

        def conv4_data(w, dy, x, out=None):
            if out is None:
                out = np.empty(xshape, dtype=dtype)
            return run(g, w, dy, out, mode, alpha, carve)

        return conv4_data
    run = _filter_last if last else _filter_first
    flip = (slice(None), slice(None), slice(None, None, -1), slice(None, None, -1))

    def conv4_filter(x, dy, w, out=None):
        dw = run(g, x, dy, np.empty((g.co, g.rows), dtype=dtype), carve).reshape(wshape)
        if alpha != 1:
            dw *= alpha
        if mode == 0:
            dw = dw[flip]
        if out is None:
            return np.ascontiguousarray(dw)
        out[...] = dw
        return out

    return conv4_filter
