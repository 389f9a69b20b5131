"""The CUDA runtime of the fake: current device and stream per thread, memory, and order.

Nothing here runs asynchronously: NumPy computes every kernel and copy at once,
on the calling thread. What the fake keeps is the *order* CUDA would
guarantee. Every operation put on a stream (kernel, copy, event record or
wait) gets an `Entry` in `Runtime.log` with a vector clock: for each stream,
the last operation of that stream known to have finished before this one
starts. Clocks grow by the rules of CUDA:

- operations on one stream run in the order they were enqueued;
- `stream.wait_event(e)` makes later work wait for what preceded `e.record()`;
- the legacy default (null) stream waits for, and is waited for by, the
  device's *blocking* streams, never its non-blocking ones;
- a host thread that synchronized a stream (or event, or device) enqueues
  later work after that stream's work; knowledge passed between threads by
  Python (a queue, a future) orders nothing on the GPU.

Each device allocation remembers its last write and the reads since, so an
access not ordered after a conflicting one is recorded in `Runtime.races`.
Memory freed into CuPy's pool is reused by later allocations on the stream it
was allocated on, so an allocation on a stream that has not caught up with
every access to freed memory is a race too.

    s0: [kernel x] -- record(e) ------------------------------
    s1: ---------------------- wait(e) -- [copy reads x] ------   ordered
    s1: ---------------------------------- [copy reads x] ------   race
"""

from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np


class CUDARuntimeError(RuntimeError):
    """cupy.cuda.runtime.CUDARuntimeError: a CUDA runtime call failed."""


class CUDADriverError(RuntimeError):
    """cupy.cuda.driver.CUDADriverError: a CUDA driver call failed."""


class OutOfMemoryError(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError: the device has no room for an allocation."""


_ALIGN = 512  # CuPy's memory pool rounds allocations up to 512 bytes


@dataclass(eq=False)
class Entry:
    """One operation put on a stream: what it was, where, by which thread, and its clock."""

    index: int
    kind: str           # "kernel", "h2d", "d2h", "peer", "record", "wait", "sync"
    stream: int         # the stream's ptr; 0 for the legacy default stream
    device: int
    name: str = ""      # the kernel's function, e.g. "add", "matmul"
    nbytes: int = 0
    event: int = 0      # the event's ptr for "record" and "wait"
    thread: str = ""
    queue: int = 0      # internal: the queue's key (null streams have one per device)
    seq: int = 0
    clock: dict = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        what = f"{self.kind} {self.name}".strip()
        return f"#{self.index} {what} on stream {self.stream} of GPU {self.device} " \
               f"({self.thread})"


class Queue:
    """The work queue behind a stream; null streams have one per device."""

    def __init__(self, key: int, device: int, blocking: bool):
        self.key, self.device, self.blocking = key, device, blocking
        self.clock: dict = {}
        self.seq = 0


class Allocation:
    """One block of device memory: its data, address and access history."""

    __slots__ = ("__weakref__", "arena", "device", "last_write", "nbytes", "ptr", "reads",
                 "root", "rt", "touched")

    def __init__(self, rt, device, root, ptr, nbytes, arena):
        self.rt, self.device, self.root = rt, device, root
        self.ptr, self.nbytes, self.arena = ptr, nbytes, arena
        self.last_write = None  # Entry
        self.reads: dict = {}   # queue key -> the latest Entry reading it since the write
        self.touched: dict = {}  # queue key -> seq of its latest access (for pool reuse)

    def byte_view(self) -> np.ndarray:
        """The block's bytes, for copies by address."""
        root = self.root
        if root.flags.c_contiguous:
            return root.reshape(-1).view(np.uint8)
        if root.flags.f_contiguous:
            return root.T.reshape(-1).view(np.uint8)
        raise NotImplementedError("fake cupy: copy by address of a non-contiguous block")


class _ThreadState:
    def __init__(self, n):
        self.device = 0
        self.device_stack: list = []
        self.stream_devices: list = []
        self.streams = {d: [None] for d in range(n)}  # None: the null stream
        self.host: dict = {}  # what this thread has synchronized with


def _merge(into: dict, other: dict) -> None:
    for k, v in other.items():
        if into.get(k, 0) < v:
            into[k] = v


def happens_before(a: Entry, b: Entry) -> bool:
    """Whether operation `a` is known to finish before operation `b` starts."""
    return b.clock.get(a.queue, 0) >= a.seq


class Runtime:
    """The state of the fake CUDA (one per FakeCupy); tests read `log` and `races`.

    Example:
        rt = Runtime(2); with rt.device(1): ...  (see fake_cupy.install)
    """

    def __init__(self, n_devices: int = 2, memory: int = 1 << 30, peer_access=True,
                 count_error: BaseException | None = None):
        self.n = int(n_devices)
        self.memory = int(memory)
        self.peer_access = peer_access
        self.count_error = count_error
        self.lock = threading.RLock()
        self._tls = threading.local()
        self.log: list = []
        self.races: list = []
        self._race_keys: set = set()
        self._handles = itertools.count(1)
        self._nulls = {d: Queue(-1 - d, d, blocking=True) for d in range(self.n)}
        self._queues: dict = {q.key: q for q in self._nulls.values()}
        self.used = [0] * self.n
        self.held = [0] * self.n
        self._next_address = [(d + 1) << 40 for d in range(self.n)]
        self._blocks: dict = {}      # base ptr -> weakref to Allocation
        self._hazards: dict = {}     # arena (queue key) -> clock of accesses to freed memory
        self.peers_enabled: set = set()
        self._faults: dict = {}      # call name -> [error, remaining]

    # -- per-thread state --
    def state(self) -> _ThreadState:
        st = getattr(self._tls, "state", None)
        if st is None:
            st = self._tls.state = _ThreadState(self.n)
        return st

    def check_device(self, device: int) -> int:
        device = int(device)
        if not 0 <= device < self.n:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        return device

    def current_device(self) -> int:
        return self.state().device

    def current_queue(self) -> Queue:
        """The queue of the calling thread's current stream on its current device."""
        st = self.state()
        top = st.streams[st.device][-1]
        return self._nulls[st.device] if top is None or top.ptr == 0 else top._queue

    def queue_of(self, stream, device: int | None = None) -> Queue:
        """The queue behind `stream` (the null stream: that of `device`, or the current one)."""
        if stream is None or stream.ptr == 0:
            return self._nulls[self.current_device() if device is None else device]
        return stream._queue

    def queue_by_ptr(self, ptr: int) -> Queue:
        if ptr == 0:
            return self._nulls[self.current_device()]
        queue = self._queues.get(ptr)
        if queue is None:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle: invalid resource handle")
        return queue

    def new_handle(self) -> int:
        return next(self._handles)

    def new_queue(self, device: int, blocking: bool) -> Queue:
        with self.lock:
            queue = Queue(self.new_handle(), device, blocking)
            self._queues[queue.key] = queue
            return queue

    # -- faults injected by tests --
    def inject(self, name: str, error: BaseException, times: int = 1) -> None:
        """Make the next `times` calls of `name` (a runtime call or kernel) raise `error`."""
        with self.lock:
            self._faults[name] = [error, times]

    def maybe_fail(self, name: str) -> None:
        with self.lock:
            fault = self._faults.get(name)
            if fault is None:
                return
            fault[1] -= 1
            if fault[1] <= 0:
                del self._faults[name]
        raise fault[0]

    # -- ordering --
    def enqueue(self, queue: Queue, kind: str, name: str = "", nbytes: int = 0,
                event: int = 0, waits: dict | None = None) -> Entry:
        """Put an operation on `queue`; it waits for what the rules of CUDA say."""
        with self.lock:
            clock = queue.clock
            _merge(clock, self.state().host)
            if queue.key < 0:  # the legacy stream waits for the device's blocking streams
                for q in list(self._queues.values()):
                    if q.blocking and q.device == queue.device and q is not queue:
                        _merge(clock, q.clock)
            elif queue.blocking:  # and blocking streams wait for the legacy stream
                _merge(clock, self._nulls[queue.device].clock)
            if waits:
                _merge(clock, waits)
            queue.seq += 1
            clock[queue.key] = queue.seq
            entry = Entry(len(self.log), kind, max(queue.key, 0), queue.device, name, nbytes,
                          event, threading.current_thread().name, queue.key, queue.seq,
                          dict(clock))
            self.log.append(entry)
            return entry

    def host_waits(self, clock: dict) -> None:
        """The calling thread has waited for everything in `clock`."""
        _merge(self.state().host, clock)

    def synchronize_device(self, device: int) -> None:
        with self.lock:
            for q in list(self._queues.values()):
                if q.device == device:
                    self.host_waits(q.clock)

    def race(self, message: str, key=None) -> None:
        with self.lock:
            key = key or message
            if key not in self._race_keys:
                self._race_keys.add(key)
                self.races.append(message)

    def read(self, block: Allocation, entry: Entry) -> None:
        """`entry` reads `block`: it must come after the block's last write."""
        with self.lock:
            w = block.last_write
            if w is not None and not happens_before(w, entry):
                self.race(f"{entry} reads memory written by {w} without waiting for it")
            block.reads[entry.queue] = entry
            block.touched[entry.queue] = entry.seq

    def write(self, block: Allocation, entry: Entry) -> None:
        """`entry` writes `block`: it must come after its last write and the reads since."""
        with self.lock:
            earlier = list(block.reads.values())
            if block.last_write is not None:
                earlier.append(block.last_write)
            for e in earlier:
                if not happens_before(e, entry):
                    self.race(f"{entry} writes memory {e.kind}-accessed by {e} without "
                              f"waiting for it")
            block.last_write, block.reads = entry, {}
            block.touched[entry.queue] = entry.seq

    # -- memory --
    def allocate(self, root: np.ndarray, device: int, queue: Queue) -> Allocation:
        """Register `root` (a fresh NumPy array) as a block on `device`, from `queue`'s arena."""
        nbytes = int(root.nbytes)
        size = -(-nbytes // _ALIGN) * _ALIGN
        with self.lock:
            if size and self.used[device] + self.held[device] + size > self.memory:
                self.free_all_blocks(device)  # the pool gives its cached blocks back, retries
                if self.used[device] + size > self.memory:
                    raise OutOfMemoryError(f"Out of memory allocating {size:,} bytes "
                                           f"(allocated so far: {self.used[device]:,} bytes).")
            self._check_reuse(queue)
            ptr = 0
            if size:
                ptr = self._next_address[device]
                self._next_address[device] += size
                self.used[device] += size
            block = Allocation(self, device, root, ptr, nbytes, queue.key)
            if size:
                self._blocks[ptr] = weakref.ref(block)
                done = weakref.finalize(block, self._free, device, ptr, size, queue.key,
                                        block.touched)
                done.atexit = False
            return block

    def _check_reuse(self, queue: Queue) -> None:
        hazard = self._hazards.get(queue.key)
        if not hazard:
            return
        now = dict(queue.clock)
        _merge(now, self.state().host)
        late = sorted(k for k, seq in hazard.items() if now.get(k, 0) < seq)
        if late:
            self.race(f"memory freed into the pool of stream {max(queue.key, 0)} (GPU "
                      f"{queue.device}) after use on stream(s) {[max(k, 0) for k in late]} may "
                      f"be reused there before that use is over", key=("reuse", queue.key))

    def _free(self, device, ptr, size, arena, touched) -> None:
        with self.lock:
            self.used[device] -= size
            self.held[device] += size
            self._blocks.pop(ptr, None)
            _merge(self._hazards.setdefault(arena, {}), touched)

    def free_all_blocks(self, device: int) -> None:
        """The pool returns its cached blocks (cudaFree synchronizes the device)."""
        with self.lock:
            self.synchronize_device(device)
            self.held[device] = 0
            for key in [k for k, q in self._queues.items() if q.device == device]:
                self._hazards.pop(key, None)

    def find_block(self, ptr: int, nbytes: int, device: int) -> tuple:
        """(block, offset) of the live block on `device` holding [ptr, ptr + nbytes)."""
        with self.lock:
            for base, ref in list(self._blocks.items()):
                block = ref()
                if block is not None and base <= ptr and ptr + nbytes <= base + block.nbytes:
                    if block.device != device:
                        break
                    return block, ptr - base
        raise CUDARuntimeError(f"cudaErrorInvalidValue: invalid argument (no {nbytes} bytes "
                               f"at {ptr:#x} on device {device})")

    # -- reading the log --
    def entries(self, kind: str | None = None, **match) -> list:
        """Log entries of `kind` whose fields equal `match` (e.g. stream=s.ptr)."""
        with self.lock:
            return [e for e in self.log if (kind is None or e.kind == kind)
                    and all(getattr(e, k) == v for k, v in match.items())]
