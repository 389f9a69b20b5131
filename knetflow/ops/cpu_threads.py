"""Kernel work split between the calling thread and OpenBLAS's own threads, and the
per-thread scratch workspace bound CPU kernels share.

Bound NumPy kernels (2-D convolutions in `conv_cpu`, 2-D pooling in `pool` and its
max gradient in `pool_cpu`, relu's gradient in `elementwise`) carve their scratch from
one workspace per thread (`scratch`), so a step allocates none. When NumPy's BLAS may
use two threads or more (an OpenBLAS with its own pthreads pool, as NumPy's wheels
ship), a kernel call can split its work between the calling thread and a thread of
that pool (`run`, `split_rows`; `split_batch` makes a kernel whose inputs and output
are cut by rows): NumPy releases the GIL in its loops, so both cores copy, compare and
multiply, not only the GEMMs. The split follows the BLAS thread budget a CPU device
sets (`knetflow.devices.cpu`): a budget of 1 keeps every kernel on the calling thread.
`WORKERS` overrides the choice for every split kernel.

    >>> import numpy as np
    >>> out = np.empty(6)
    >>> parts = split_rows(6, lambda a, b: np.multiply(np.arange(a, b), 2, out=out[a:b]), 48)
    >>> out
    array([ 0.,  2.,  4.,  6.,  8., 10.])
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading

import numpy as np

from knetflow.devices.cpu import blas as cpu_blas

__all__ = ["run", "scratch", "split_batch", "split_rows", "workers", "workspace",
           "workspace_bytes"]

#: threads a kernel call splits its work between: None follows NumPy's BLAS (2 when it
#: may use 2 threads or more, else 1); an int asks for that many (at most the threads
#: OpenBLAS's pool has; without a pthreads OpenBLAS, always 1)
WORKERS = None

#: the most threads the BLAS budget gives a call (only two cores were there to measure)
MAX_WORKERS = 2

#: the least data (bytes read and written, over all its passes) a `split_rows` call splits:
#: below it the hand-over to OpenBLAS's thread (about 20 us) and the GIL passed between
#: the threads' NumPy calls cost about what half the work saves (relu's gradient on
#: 100x50x8x8 float32, 4.5 MB moved: 1.3x slower split; max pooling's, 10 MB: 0.7x)
SPLIT_BYTES = 12 << 20

_local = threading.local()


def workspace(nbytes: int) -> np.ndarray:
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
    buf = workspace(total)
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


def workers(wanted=None) -> int:
    """Threads for the next split call: `wanted` when not None, else `WORKERS`, else NumPy's
    BLAS budget (at most MAX_WORKERS); at most the threads OpenBLAS's pool has, 1 without it."""
    if not _blas.usable:
        return 1
    if wanted is None:
        wanted = WORKERS
    wanted = min(MAX_WORKERS, _blas.budget()) if wanted is None else int(wanted)
    return max(1, min(wanted, _blas._pool.value))


def run(jobs) -> list:
    """Each of `jobs` (callables) at once, the first on this thread, the others on OpenBLAS's
    threads (as many as `workers()` allows); their results, or the first error raised."""
    return _blas.run(jobs)


def split_rows(n: int, job, nbytes: int) -> list:
    """job(a, b) over consecutive, near-even parts of range(n), one per thread, when the
    call moves `nbytes` bytes or more (`SPLIT_BYTES`) and the BLAS budget gives it two
    threads or more; else [job(0, n)] on this thread. The results, in order.

    Each part runs on its own thread with its own `scratch`; job must write only its rows.
    """
    count = workers() if nbytes >= SPLIT_BYTES else 1
    count = min(count, n)
    if count < 2:
        return [job(0, n)]
    bounds = [n * k // count for k in range(count + 1)]
    return run([lambda a=a, b=b: job(a, b) for a, b in zip(bounds[:-1], bounds[1:])])


def split_batch(out_shape, dtype, part, nbytes):
    """A kernel `(*inputs, out=None)` running `part(*input rows, out rows)` over the parts
    of the batch (the first axis of every input and of out) that `split_rows` makes for a
    call moving `nbytes`; out, of `out_shape` and `dtype`, is made when not given.

        >>> import numpy as np
        >>> double = split_batch((4, 2), "float64", lambda x, out: np.multiply(x, 2, out=out), 64)
        >>> double(np.ones((4, 2)))[:, 0]
        array([2., 2., 2., 2.])
    """
    n, dtype = out_shape[0], np.dtype(dtype)

    def kernel(*inputs, out=None):
        if out is None:
            out = np.empty(out_shape, dtype=dtype)
        split_rows(n, lambda a, b: part(*[x[a:b] for x in inputs], out[a:b]), nbytes)
        return out

    return kernel
