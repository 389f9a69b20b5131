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

When NumPy's BLAS may use two threads or more (an OpenBLAS with its own
pthreads pool, as NumPy's wheels ship), a kernel call splits its chunks
between the calling thread and a thread of that pool: each runs its chunks'
copies and GEMMs, with BLAS held to one thread per call meanwhile, so the
copies, transposes and col2im sums use both cores too, not only the GEMMs.
`WORKERS` overrides the choice.

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

import ctypes
import itertools
import math
import os
import threading

import numpy as np

from knetflow.devices.cpu import blas as cpu_blas

__all__ = ["bind_conv", "scratch", "workspace_bytes"]

#: the largest column matrix a chunk builds (bytes): LeNet's kernels ran 3-10% faster with
#: 4 MB than with 1 or 2 (1 thread), and the workspace stays under 4 MB there
CHUNK_BYTES = 4 << 20

#: threads a kernel call splits its chunks between: None follows NumPy's BLAS (2 when it
#: may use 2 threads or more, else 1); an int asks for that many (at most the threads
#: OpenBLAS's pool has; without a pthreads OpenBLAS, always 1)
WORKERS = None

#: the most threads the BLAS budget gives a call (only two cores were there to measure)
MAX_WORKERS = 2

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
    """Bytes of the kernel workspaces of the calling thread and of OpenBLAS's threads
    that ran shares of split calls (0 before any kernel ran)."""
    buf = getattr(_local, "buf", None)
    return (0 if buf is None else buf.nbytes) + sum(b.nbytes for b in _pool_bufs.values())


# ---- kernel calls split between this thread and OpenBLAS's own threads ----

#: a share of a split call, as OpenBLAS's gotoblas_pthread calls it: void f(void *arg)
_SHARE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

#: the workspaces of OpenBLAS's threads, by thread id: a callback from a thread Python did
#: not start gets a new thread state each time, so `_local` would not keep them
_pool_bufs: dict = {}


class _OpenBlas:
    """NumPy's OpenBLAS when it is a pthreads build (one process-wide thread pool, as
    NumPy's wheels ship): its thread count, read and set through its C API, and its
    threads, which run the shares of split kernel calls. `usable` is False for any
    other BLAS, and the kernels then stay on the calling thread.

    Why OpenBLAS's threads and not threads of our own: after each threaded BLAS call
    its idle threads spin for a while (about 0.1 s by default) before they sleep, so a
    thread of ours running beside them got about half a core (LeNet's step on two
    cores: 1.25x the one-thread kernels' time that way, 0.92x this way). A job on a pool
    thread must not make a threaded BLAS call (its pool thread would wait for itself):
    `run` holds BLAS to one thread, so nothing else may raise the limit meanwhile.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active, self._saved = 0, 1
        self._get = self._set = self._pthread = self._pool = None
        self._found = False

    def _find(self):
        self._found = True
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return
        found = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
        # the OpenBLAS NumPy links (a wheel's numpy.libs, or any if none lies there)
        here = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
        mine = [i for i in found if os.path.abspath(i.get("filepath", "")).startswith(
            os.path.join(here, "numpy"))]
        libs = mine or found
        if len(libs) != 1 or libs[0].get("threading_layer") != "pthreads":
            return
        lib = ctypes.CDLL(libs[0]["filepath"])
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                break
        else:
            return
        try:    # the thread server's entry points (exported, not part of the documented API)
            pthread = lib.gotoblas_pthread
            pool = ctypes.c_int.in_dll(lib, "blas_num_threads")
        except (AttributeError, ValueError):
            return
        get.restype, get.argtypes = ctypes.c_int, []
        set_.restype, set_.argtypes = None, [ctypes.c_int]
        pthread.restype = ctypes.c_int
        pthread.argtypes = [ctypes.c_int, _SHARE, ctypes.c_void_p, ctypes.c_int]
        self._get, self._set, self._pthread, self._pool = get, set_, pthread, pool

    @property
    def usable(self) -> bool:
        if not self._found:
            with self._lock:
                if not self._found:
                    self._find()
        return self._get is not None

    def budget(self) -> int:
        """BLAS threads per call outside split calls, at most the threads its pool has
        (1 when not `usable`)."""
        if not self.usable:
            return 1
        return min(self._saved if self._active else self._get(), self._pool.value)

    def enter(self):
        """Holds BLAS to one thread per call (nested and concurrent splits count: the last
        one out restores the count the first one found); knetflow's own BLAS limit
        (devices/cpu.py) waits meanwhile."""
        cpu_blas.hold()
        with self._lock:
            if self._active == 0:
                self._saved = self._get()
                if self._saved != 1:
                    self._set(1)
            self._active += 1

    def exit(self):
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._saved != 1:
                self._set(self._saved)
        cpu_blas.release()

    def run(self, jobs) -> list:
        """Each of `jobs` (callables) at once, the first on this thread, the others on
        the pool's threads, BLAS held to one thread per call meanwhile (a job's BLAS
        call on a pool thread must not fan out to the pool it runs on); their results,
        or the first error raised.

        Needs as many pool threads as `jobs` (see `budget`).
        """
        results, errors = [None] * len(jobs), []

        def share(arg):
            k = arg - 1
            me = threading.get_ident()
            if k:
                _local.buf = _pool_bufs.get(me)
            try:
                results[k] = jobs[k]()
            except BaseException as e:      # raised by run, once every share is done
                errors.append(e)
            finally:
                if k and getattr(_local, "buf", None) is not None:
                    _pool_bufs[me] = _local.buf

        callback = _SHARE(share)    # referenced until the call returns
        self.enter()
        try:
            # job k gets arg = 1 + k (a null pointer would reach Python as None)
            self._pthread(len(jobs), callback, 1, 1)
        finally:
            self.exit()
        if errors:
            raise errors[0]
        return results

    def after_fork(self):
        """In a forked child: no split runs there (its threads did not come along)."""
        self._lock = threading.Lock()
        if self._active:
            self._active = 0
            if self._saved != 1:
                self._set(self._saved)


_blas = _OpenBlas()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: (_blas.after_fork(), _pool_bufs.clear()))


def _workers() -> int:
    """Threads for the next kernel call: `WORKERS`, else NumPy's BLAS budget (at most
    MAX_WORKERS); either at most the threads OpenBLAS's pool has, 1 without it."""
    if not _blas.usable:
        return 1
    wanted = min(MAX_WORKERS, _blas.budget()) if WORKERS is None else int(WORKERS)
    return max(1, min(wanted, _blas._pool.value))


def _split(g, job):
    """job(spans, k) over the batch's chunks: [job(g.spans, 0)] on one thread, else one
    result per thread k of the chunks g.share(threads) gives it, k = 0 on this thread."""
    workers = _workers()
    shares = g.share(workers) if workers > 1 else None
    if shares is None:
        return [job(g.spans, 0)]
    return _blas.run([lambda k=k: job(shares[k], k) for k in range(len(shares))])


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
        self._shares = {}

    def share(self, workers):
        """The chunks of each of `workers` threads (lists of (a, b) covering the batch in
        order), none bigger than a chunk, as many as `spans` rounded up to a multiple of
        the workers where the batch allows, so each thread gets as many; None when the
        batch has fewer images than workers."""
        if self.n < workers:
            return None
        if workers not in self._shares:
            count = min(self.n, -(-len(self.spans) // workers) * workers)
            spans = _even(self.n, count)
            self._shares[workers] = [spans[a:b] for a, b in _even(count, workers)]
        return self._shares[workers]


def _even(n, count):
    """[0, n) in `count` consecutive (a, b) whose sizes differ by at most one."""
    base, extra = divmod(n, count)
    bounds = list(itertools.accumulate([0] + [base + (i < extra) for i in range(count)]))
    return list(zip(bounds[:-1], bounds[1:]))


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
    def job(spans, k):
        acc = None
        for a, b in spans:
            n = b - a
            xb, cols, dyb, part, mine = carve.arrays([
                (g.c, g.hp, g.wp, n), (g.c, g.kh, g.kw, g.ho, g.wo, n), (g.co, g.ho, g.wo, n),
                (g.co, g.rows), (g.co, g.rows)])
            _fill_last(g, x, a, b, xb, cols)
            dyb[...] = dy[a:b].transpose(1, 2, 3, 0)
            if acc is None:
                # the first chunk's product is the sum so far: dw here, another thread's own buffer
                acc = dw if k == 0 else mine
                np.matmul(dyb.reshape(g.co, -1), cols.reshape(g.rows, -1).T, out=acc)
            else:
                np.matmul(dyb.reshape(g.co, -1), cols.reshape(g.rows, -1).T, out=part)
                acc += part
        return acc

    for part in _split(g, job)[1:]:
        dw += part
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
    for i, j, hs, ws in g.taps:
        cols[:, :, i, j] = src[:, :, hs, ws]


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
            xb, cols, parts, mine = carve.arrays([
                _pad_shape(g, n), (n, g.c, g.kh, g.kw, g.ho, g.wo), (n, g.co, g.rows),
                (g.co, g.rows)])
            _fill_first(g, x, a, b, xb, cols)
            np.matmul(dyp[a:b], cols.reshape(n, g.rows, g.pixels).transpose(0, 2, 1),
                      out=parts)
            if acc is None:
                # the first chunk's sum is the sum so far: dw here, another thread's own buffer
                acc = dw if k == 0 else mine
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


def _scratch_sizes(g, kind, last):
    n = g.chunk
    cols = g.rows * g.pixels * n
    # a filter gradient's last size: the sum another thread hands back
    if last:
        sizes = [g.c * g.hp * g.wp * n, cols, g.co * g.pixels * n]
        return sizes + [g.co * g.rows] * 2 if kind == "conv4_filter" else sizes
    pad = g.c * g.hp * g.wp * n if g.padded else 0
    return [pad, cols] + ([g.co * g.rows * n, g.co * g.rows] if kind == "conv4_filter" else [])


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
