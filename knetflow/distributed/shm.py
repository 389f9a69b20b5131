"""All-reduce through shared memory, for replicas whose workers share a host.

On one machine the ring's TCP messages cost more than the sums themselves.
Here each replica's gradient buffer lives in a shared-memory segment it
owns, which its peers map read-only. For a few replicas (up to
`FUSED_MAX`), one reduction is one barrier and no copy at all:

    accumulate into own buffer ─ barrier ─ the update reads every buffer,
    adding them in rank order inside its fused kernel (steps.py `apply`)

For more, whose every buffer would be read by every replica, it is two
barriers and a third of the traffic per replica:

    accumulate into own buffer ─ barrier 1 ─ rank r sums chunk r of every
    buffer, in rank order, into its own ─ barrier 2 ─ copy the other summed
    chunks from their owners

A barrier is a counter in each segment that only its owner writes; waiting
is polling the peers' counters (with short sleeps, checking the mailbox for
an abort). Each segment holds two buffers used on alternate reductions: a
replica refills one only after passing the next reduction's first barrier,
which its peers reach only once they finished reading it, so no reader ever
sees a buffer being refilled. Sums run in a fixed order on every replica,
so parameters stay identical, as with the ring.

Segments are unlinked by their owner when the ring changes or the fit ends;
a lost worker's by a survivor; and, should every process of a fit be killed
at once, by the next `create_segment` on that host (segments are named
after their owner's pid, and those of dead pids are swept).
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import uuid
from multiprocessing import shared_memory

import numpy as np

from knetflow.distributed.reduce import chunk_bounds

__all__ = ["SharedGroup", "create_segment", "sweep_stale", "unlink"]

FUSED_MAX = 4  # replicas up to which each reads every buffer (one barrier, no copy)
_HEADER = 64  # bytes before the buffers: the barrier counter, padded to a cache line
# acquiring and releasing a lock is a full memory barrier: a peer that sees a counter
# also sees the sums written before it, on CPUs with weaker ordering than x86 too
_FENCE = threading.Lock()


def create_segment(size: int, dtype) -> shared_memory.SharedMemory:
    """A new segment holding a counter and two flat buffers of `size` elements, named
    after this process (`kf-<pid>-<random>`)."""
    sweep_stale()
    nbytes = _HEADER + 2 * _padded(size * np.dtype(dtype).itemsize)
    return shared_memory.SharedMemory(name=f"kf-{os.getpid()}-{uuid.uuid4().hex[:16]}",
                                      create=True, size=nbytes)


def unlink(name: str) -> None:
    """Remove a segment by name (a lost peer's; its mappings elsewhere stay valid)."""
    try:
        import _posixshmem

        _posixshmem.shm_unlink("/" + name.lstrip("/"))
    except (ImportError, OSError):
        pass


def sweep_stale(folder="/dev/shm", min_age=60.0) -> int:
    """Unlink segments whose owner process is gone (when a whole process group is killed,
    Python's resource tracker dies with it and cannot); the number removed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != "kf" or not parts[1].isdigit():
            continue
        if _alive(int(parts[1])):
            continue
        path = os.path.join(folder, name)
        try:
            if time.time() - os.stat(path).st_mtime > min_age:
                os.unlink(path)
                removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def _padded(n: int) -> int:
    return (n + 63) // 64 * 64


def _attach(name: str):
    """Map a peer's segment without registering it with this process's resource
    tracker: only its owner may unlink it (a tracker shared by the workers of one
    nanny would otherwise unlink it, or complain, twice)."""
    import _posixshmem  # POSIX only; elsewhere the ring runs over TCP

    fd = _posixshmem.shm_open("/" + name.lstrip("/"), os.O_RDWR, mode=0o600)
    try:
        return _Mapped(mmap.mmap(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


class _Mapped:
    """A peer's segment mapped here (the `.buf` and `.close()` of a SharedMemory)."""

    def __init__(self, mapping):
        self._mmap = mapping
        self.buf = memoryview(mapping)

    def close(self) -> None:
        self.buf.release()
        self._mmap.close()


class SharedGroup:
    """The segments of one ring generation: this replica's own and its peers' mapped."""

    def __init__(self, own, names: list, rank: int, size: int, dtype, mailbox, timeout):
        self.rank, self.size, self.dtype = rank, size, np.dtype(dtype)
        self.mailbox, self.timeout = mailbox, timeout
        self.segments = [own if k == rank else _attach(n) for k, n in enumerate(names)]
        self.counters = [np.ndarray((1,), np.int64, s.buf, 0) for s in self.segments]
        stride = _padded(size * self.dtype.itemsize)
        self.buffers = [[np.ndarray((size,), self.dtype, s.buf, _HEADER + p * stride)
                         for p in (0, 1)] for s in self.segments]
        self.bounds = chunk_bounds(size, len(names))
        self.fused = len(names) <= FUSED_MAX
        self.round = self.passed = 0  # reductions done, barriers passed
        self.waited = 0.0
        self.counters[rank][0] = 0

    def buffer(self) -> np.ndarray:
        """This replica's buffer for the next reduction (fill it, then `allreduce`)."""
        return self.buffers[self.rank][self.round % 2]

    def gather(self) -> list:
        """Every replica's `buffer()` of this reduction, in rank order, once all are
        filled (fused mode); read them before filling the next `buffer()`."""
        parity = self.round % 2
        self._first_barrier()
        self.round += 1
        return [buffers[parity] for buffers in self.buffers]

    def allreduce(self) -> np.ndarray:
        """Sum `buffer()` over the group; returns the summed buffer (this replica's)."""
        parity, n, r = self.round % 2, len(self.segments), self.rank
        own = self.buffers[r][parity]
        self._first_barrier()
        a, b = self.bounds[r], self.bounds[r + 1]
        total = self.buffers[0][parity][a:b].copy()
        for k in range(1, n):
            total += self.buffers[k][parity][a:b]
        own[a:b] = total
        self._barrier()
        for k in range(n):
            if k != r:
                a, b = self.bounds[k], self.bounds[k + 1]
                own[a:b] = self.buffers[k][parity][a:b]
        self.round += 1
        return own

    def _first_barrier(self) -> None:
        tic = time.perf_counter()
        self._barrier()
        self.waited = time.perf_counter() - tic  # for the slowest peer: load imbalance

    def _barrier(self) -> None:
        self.passed += 1
        value = self.passed
        with _FENCE:
            pass
        self.counters[self.rank][0] = value
        deadline = time.monotonic() + self.timeout
        pause = 0.0
        while any(c[0] < value for c in self.counters):
            self.mailbox.check()
            if time.monotonic() > deadline:
                late = [k for k, c in enumerate(self.counters) if c[0] < value]
                raise TimeoutError(f"replicas {late} did not reach the barrier within "
                                   f"{self.timeout:g} s")
            time.sleep(pause)
            pause = min(0.0002, pause + 0.00002)
        with _FENCE:
            pass

    def close(self, unlink: bool) -> None:
        """Unmap every segment; the owner (`unlink`) also removes its own."""
        self.counters = self.buffers = []
        for k, segment in enumerate(self.segments):
            try:
                segment.close()
                if unlink and k == self.rank:
                    segment.unlink()
            except (BufferError, FileNotFoundError):
                pass
        self.segments = []
