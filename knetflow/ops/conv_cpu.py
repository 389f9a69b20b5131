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

When NumPy's BLAS may use two threads or more, a kernel call splits its chunks
between the calling thread and a thread of OpenBLAS's own pool
(`knetflow.ops.cpu_threads`): each runs its chunks' copies and GEMMs, with BLAS
held to one thread per call meanwhile, so the copies, transposes and col2im sums
use both cores too, not only the GEMMs. `WORKERS` overrides the choice for
convolutions.

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

import itertools
import math

import numpy as np

from knetflow.ops import cpu_threads
from knetflow.ops.cpu_threads import scratch, workspace_bytes

__all__ = ["bind_conv", "scratch", "workspace_bytes"]

#: the largest column matrix a chunk builds (bytes): LeNet's kernels ran 3-10% faster with
#: 4 MB than with 1 or 2 (1 thread), and the workspace stays under 4 MB there
CHUNK_BYTES = 4 << 20

#: the largest column matrix a thread's chunk builds when a call is split between threads,
#: so the threads' workspaces together stay near one thread's (LeNet at 2 threads: 2 x 2.1
#: MB instead of 2 x 4.0; its step took as long as with 4 MB, paired A/B 1.00)
SHARE_BYTES = 2 << 20

#: threads a convolution call splits its chunks between: None follows
#: `cpu_threads.workers()` (NumPy's BLAS budget); an int asks for that many
WORKERS = None


def _workers() -> int:
    """Threads for the next convolution call (see `WORKERS`)."""
    return cpu_threads.workers(WORKERS)


def _split(g, job):
    """job(spans, k) over the batch's chunks: [job(g.spans, 0)] on one thread, else one
    result per thread k of the chunks g.share(threads) gives it, k = 0 on this thread."""
    workers = _workers()
    shares = g.share(workers) if workers > 1 else None
    if shares is None:
        return [job(g.spans, 0)]
    return cpu_threads.run([lambda k=k: job(shares[k], k) for k in range(len(shares))])


class _Carver:
    """Arrays of one dtype cut from this thread's workspace for one call, sized by the
    chunk in hand (a thread running smaller chunks keeps a smaller workspace)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def arrays(self, shapes):
        flat = scratch([(math.prod(s), self.dtype) for s in shapes])
        return [a.reshape(s) for a, s in zip(flat, shapes)]


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
        self.image_bytes = itemsize * per_image
        self.chunk = max(1, min(self.n, CHUNK_BYTES // self.image_bytes))
        count = -(-self.n // self.chunk)
        self.chunk = -(-self.n // count)     # even chunks: the last one is not a sliver
        self.spans = [(a, min(a + self.chunk, self.n)) for a in range(0, self.n, self.chunk)]
        self._shares = {}

    def tap_steps(self, sh, sw):
        """Strides (kh, kw, Ho, Wo) of the column view of an input whose H and W strides
        are sh and sw: a kernel offset steps by the dilation, an output pixel by the stride."""
        (dh, dw), (th, tw) = self.dilation, self.stride
        return dh * sh, dw * sw, th * sh, tw * sw

    def share(self, workers):
        """The chunks of each of `workers` threads (lists of (a, b) covering the batch in
        order), none bigger than a chunk nor, where one image allows, than SHARE_BYTES of
        columns, their count rounded up to a multiple of the workers where the batch
        allows, so each thread gets as many; None when the batch has fewer images than
        workers."""
        if self.n < workers:
            return None
        key = (workers, SHARE_BYTES)
        if key not in self._shares:
            images = max(1, min(self.chunk, SHARE_BYTES // self.image_bytes))
            chunks = -(-self.n // images)
            count = min(self.n, -(-chunks // workers) * workers)
            spans = _even(self.n, count)
            self._shares[key] = [spans[a:b] for a, b in _even(count, workers)]
        return self._shares[key]


def _windows(a, shape, strides):
    """A read-only view of `a`'s bytes with `shape` and `strides`: every kernel offset's
    strided window at once, so the columns are one copy, not one per offset (one NumPy
    call: fewer calls, and none to pass the GIL between split threads)."""
    return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=False)


def _even(n, count):
    """[0, n) in `count` consecutive (a, b) whose sizes differ by at most one."""
    base, extra = divmod(n, count)
    bounds = list(itertools.accumulate([0] + [base + (i < extra) for i in range(count)]))
    return list(zip(bounds[:-1], bounds[1:]))


def _own_sum(shape, dtype):
    """A new array for the running sum of a share that runs on OpenBLAS's thread.

    The sum outlives the share, until the calling thread adds it up; in that thread's
    workspace, a split call from another thread of ours (a plan's executor for a second
    device) could run its own share there first and overwrite it."""
    return np.empty(shape, dtype)


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
    sc, sh, sw, sn = xb.strides
    cols[...] = _windows(xb, cols.shape, (sc,) + g.tap_steps(sh, sw) + (sn,))


def _conv_last(g, w, x, out, mode, alpha, carve):
    wm = _filters(w, mode, alpha)

    def job(spans, _):
        for a, b in spans:
            n = b - a
            xb, cols, y = carve.arrays([(g.c, g.hp, g.wp, n),
                                        (g.c, g.kh, g.kw, g.ho, g.wo, n), (g.co, g.ho, g.wo, n)])
            _fill_last(g, x, a, b, xb, cols)
            np.matmul(wm, cols.reshape(g.rows, -1), out=y.reshape(g.co, -1))
            out[a:b] = y.transpose(3, 0, 1, 2)

    _split(g, job)
    return out


def _filter_last(g, x, dy, dw, carve):
    # the sum is built transposed, (rows, Co) = cols @ dy^T: OpenBLAS runs that orientation
    # faster than dy @ cols^T (LeNet's second layer: 0.73x with SkylakeX kernels, 0.94x Haswell)
    def job(spans, k):
        acc = None
        for a, b in spans:
            n = b - a
            # the running sum first: its place in the workspace does not depend on n
            mine, part, xb, cols, dyb = carve.arrays([
                (g.rows, g.co), (g.rows, g.co), (g.c, g.hp, g.wp, n),
                (g.c, g.kh, g.kw, g.ho, g.wo, n), (g.co, g.ho, g.wo, n)])
            if k and acc is None:
                mine = _own_sum((g.rows, g.co), mine.dtype)
            _fill_last(g, x, a, b, xb, cols)
            dyb[...] = dy[a:b].transpose(1, 2, 3, 0)
            product = np.matmul(cols.reshape(g.rows, -1), dyb.reshape(g.co, -1).T,
                                out=mine if acc is None else part)
            if acc is None:
                acc = product
            else:
                acc += product
        return acc

    parts = _split(g, job)
    for part in parts[1:]:
        parts[0] += part
    dw[...] = parts[0].T
    return dw


def _data_last(g, w, dy, out, mode, alpha, carve):
    wt = _filters(w, mode, alpha).T

    def job(spans, _):
        for a, b in spans:
            n = b - a
            acc, cols, dyb = carve.arrays([(g.c, g.hp, g.wp, n),
                                           (g.c, g.kh, g.kw, g.ho, g.wo, n), (g.co, g.ho, g.wo, n)])
            dyb[...] = dy[a:b].transpose(1, 2, 3, 0)
            np.matmul(wt, dyb.reshape(g.co, -1), out=cols.reshape(g.rows, -1))
            acc.fill(0)
            for i, j, hs, ws in g.taps:
                acc[:, hs, ws] += cols[:, i, j]
            out[a:b] = acc[(slice(None),) + g.interior].transpose(3, 0, 1, 2)

    _split(g, job)
    return out


# ---- batch first: chunks of images, one GEMM per image straight into NCHW ----


def _fill_first(g, x, a, b, xb, cols):
    """cols (n, C, kh, kw, Ho, Wo) of x[a:b] (through xb (n, C, Hp, Wp) when padded)."""
    src = x[a:b]
    if g.padded:
        xb.fill(0)
        xb[(Ellipsis,) + g.interior] = src
        src = xb
    sn, sc, sh, sw = src.strides
    cols[...] = _windows(src, cols.shape, (sn, sc) + g.tap_steps(sh, sw))


def _pad_shape(g, n):
    return (n, g.c, g.hp, g.wp) if g.padded else (0,)


def _conv_first(g, w, x, out, mode, alpha, carve):
    wm = _filters(w, mode, alpha)

    def job(spans, _):
        for a, b in spans:
            n = b - a
            xb, cols = carve.arrays([_pad_shape(g, n), (n, g.c, g.kh, g.kw, g.ho, g.wo)])
            _fill_first(g, x, a, b, xb, cols)
            np.matmul(wm, cols.reshape(n, g.rows, g.pixels),
                      out=out[a:b].reshape(n, g.co, g.pixels))

    _split(g, job)
    return out


def _filter_first(g, x, dy, dw, carve):
    dyp = dy.reshape(g.n, g.co, g.pixels)

    def job(spans, k):
        acc = None
        for a, b in spans:
            n = b - a
            xb, cols, parts = carve.arrays([
                _pad_shape(g, n), (n, g.c, g.kh, g.kw, g.ho, g.wo), (n, g.co, g.rows)])
            _fill_first(g, x, a, b, xb, cols)
            np.matmul(dyp[a:b], cols.reshape(n, g.rows, g.pixels).transpose(0, 2, 1),
                      out=parts)
            if acc is None:
                # the first chunk's sum is the sum so far: dw here, a buffer of this call's
                # on another thread (`_own_sum`)
                acc = dw if k == 0 else _own_sum(dw.shape, dw.dtype)
                np.add.reduce(parts, axis=0, out=acc)
            else:
                acc += np.add.reduce(parts, axis=0)
        return acc

    for part in _split(g, job)[1:]:
        dw += part
    return dw


def _data_first(g, w, dy, out, mode, alpha, carve):
    wt = _filters(w, mode, alpha).T
    dyp = dy.reshape(g.n, g.co, g.pixels)

    def job(spans, _):
        for a, b in spans:
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

    _split(g, job)
    return out


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
    carve = _Carver(dtype)
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
