"""`cupy.cuda` of the fake: Device, Stream, Event, runtime calls, the memory pool.

Modelled on CuPy's documented behaviour (cupy/cuda/stream.pyx, device.pyx):
the current device and, per device, the current stream belong to the calling
thread; `with Device(i)` and `with stream` push and pop them; entering a
stream made on another device than the current one raises RuntimeError; an
event is made on the current device and can only be recorded on a stream of
that device; `stream.record()` makes a new event; waits may cross devices.
`cupy.cuda.runtime.memcpyPeerAsync` copies by address between live blocks.
"""

from __future__ import annotations

import types

from tests.devices.fake_cupy.runtime import (
    CUDADriverError,
    CUDARuntimeError,
    OutOfMemoryError,
    Runtime,
)


class Device:
    """cupy.cuda.Device: a context manager making device `id` current for this thread."""

    _rt: Runtime = None

    def __init__(self, device=None):
        if device is None:
            device = self._rt.current_device()
        self.id = int(getattr(device, "id", device))

    def __enter__(self):
        rt = self._rt
        st = rt.state()
        st.device_stack.append(st.device)
        st.device = rt.check_device(self.id)
        return self

    def __exit__(self, *exc):
        st = self._rt.state()
        st.device = st.device_stack.pop()

    def use(self) -> None:
        self._rt.state().device = self._rt.check_device(self.id)

    def synchronize(self) -> None:
        self._rt.synchronize_device(self._rt.check_device(self.id))
        self._rt.enqueue(self._rt.queue_of(None, self.id), "sync", "device")

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Event:
    """cupy.cuda.Event: made on the current device; `record` it on a stream of that device."""

    _rt: Runtime = None

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.ptr = self._rt.new_handle()
        self.device_id = self._rt.current_device()
        self.clock = None  # set when recorded

    def record(self, stream=None):
        rt = self._rt
        queue = rt.current_queue() if stream is None else rt.queue_of(stream)
        if queue.device != self.device_id:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle: invalid resource handle "
                                   f"(event of device {self.device_id} recorded on a stream "
                                   f"of device {queue.device})")
        with rt.lock:
            rt.enqueue(queue, "record", event=self.ptr)
            self.clock = dict(queue.clock)

    def synchronize(self) -> None:
        if self.clock is not None:
            self._rt.host_waits(self.clock)

    @property
    def done(self) -> bool:
        return True


class Stream:
    """cupy.cuda.Stream: a queue of work on the device current when it was made."""

    _rt: Runtime = None
    null = None  # set per runtime: the legacy default stream (ptr 0, any device)

    def __init__(self, null=False, non_blocking=False, ptds=False):
        rt = self._rt
        self.non_blocking = bool(non_blocking)
        if null:
            self.ptr, self.device_id, self._queue = 0, -1, None
        else:
            self.device_id = rt.current_device()
            self._queue = rt.new_queue(self.device_id, blocking=not non_blocking)
            self.ptr = self._queue.key

    def _check_device(self) -> int:
        current = self._rt.current_device()
        if self.device_id not in (-1, current):
            raise RuntimeError(f"The device that the stream is created on ({self.device_id}) "
                               f"does not match with the current device ({current})")
        return current

    def __enter__(self):
        device = self._check_device()
        st = self._rt.state()
        st.streams[device].append(self)
        st.stream_devices.append(device)  # the stack to pop at exit, as CuPy keeps it
        return self

    def __exit__(self, *exc):
        st = self._rt.state()
        st.streams[st.stream_devices.pop()].pop()

    def use(self):
        device = self._check_device()
        self._rt.state().streams[device][-1] = self
        return self

    def record(self, event=None):
        if event is None:
            event = self._Event()
        event.record(self)
        return event

    def wait_event(self, event) -> None:
        rt = self._rt
        queue = rt.queue_of(self)
        rt.enqueue(queue, "wait", event=event.ptr, waits=event.clock)

    def synchronize(self) -> None:
        rt = self._rt
        queue = rt.queue_of(self)
        with rt.lock:
            rt.host_waits(queue.clock)
            rt.enqueue(queue, "sync")

    @property
    def done(self) -> bool:
        return True

    @property
    def is_non_blocking(self) -> bool:
        return self.non_blocking

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return hash(self.ptr)

    def __repr__(self):
        return f"<Stream {self.ptr} (device {self.device_id})>"


class MemoryPool:
    """cupy.get_default_memory_pool(): figures for the current device."""

    def __init__(self, rt: Runtime):
        self._rt = rt

    def used_bytes(self) -> int:
        return self._rt.used[self._rt.current_device()]

    def free_bytes(self) -> int:
        return self._rt.held[self._rt.current_device()]

    def total_bytes(self) -> int:
        return self.used_bytes() + self.free_bytes()

    def free_all_blocks(self, stream=None) -> None:
        self._rt.free_all_blocks(self._rt.current_device())


def _runtime_module(rt: Runtime) -> types.ModuleType:
    """cupy.cuda.runtime: the calls knetflow makes."""
    m = types.ModuleType("cupy.cuda.runtime")
    m.CUDARuntimeError = CUDARuntimeError

    def getDeviceCount():
        rt.maybe_fail("getDeviceCount")
        if rt.count_error is not None:
            raise rt.count_error
        return rt.n

    def getDevice():
        return rt.current_device()

    def deviceCanAccessPeer(device, peer):
        rt.check_device(device), rt.check_device(peer)
        allowed = rt.peer_access
        ok = allowed(device, peer) if callable(allowed) else bool(allowed)
        return int(ok and device != peer)

    def deviceEnablePeerAccess(peer, flags=0):
        device = rt.current_device()
        if not deviceCanAccessPeer(device, peer):
            raise CUDARuntimeError("cudaErrorPeerAccessUnsupported: peer access is not "
                                   "supported between these two devices")
        with rt.lock:
            if (device, peer) in rt.peers_enabled:
                raise CUDARuntimeError("cudaErrorPeerAccessAlreadyEnabled: peer access is "
                                       "already enabled")
            rt.peers_enabled.add((device, peer))

    def memcpyPeerAsync(dst, dstDevice, src, srcDevice, size, stream):
        rt.maybe_fail("memcpyPeerAsync")
        size = int(size)
        to, at = rt.find_block(int(dst), size, rt.check_device(dstDevice))
        frm, off = rt.find_block(int(src), size, rt.check_device(srcDevice))
        queue = rt.queue_by_ptr(int(stream))
        entry = rt.enqueue(queue, "peer", f"{srcDevice}->{dstDevice}", size)
        rt.read(frm, entry)
        rt.write(to, entry)
        to.byte_view()[at:at + size] = frm.byte_view()[off:off + size]

    def memGetInfo():
        d = rt.current_device()
        return rt.memory - rt.used[d] - rt.held[d], rt.memory

    def getDeviceProperties(device):
        device = rt.check_device(device)
        return {"name": f"Fake GPU {device}".encode(), "totalGlobalMem": rt.memory,
                "major": 8, "minor": 0, "multiProcessorCount": 1}

    def deviceSynchronize():
        rt.synchronize_device(rt.current_device())

    for fn in (getDeviceCount, getDevice, deviceCanAccessPeer, deviceEnablePeerAccess,
               memcpyPeerAsync, memGetInfo, getDeviceProperties, deviceSynchronize):
        setattr(m, fn.__name__, fn)
    return m


def cuda_module(rt: Runtime) -> types.ModuleType:
    """cupy.cuda bound to `rt`: its classes know their runtime."""
    m = types.ModuleType("cupy.cuda")
    bound = {"_rt": rt, "__module__": "cupy.cuda"}
    m.Device = type("Device", (Device,), dict(bound))
    m.Event = type("Event", (Event,), dict(bound))
    m.Stream = type("Stream", (Stream,), dict(bound, _Event=m.Event))
    m.Stream.null = m.Stream(null=True)
    m.runtime = _runtime_module(rt)
    m.driver = types.SimpleNamespace(CUDADriverError=CUDADriverError)
    pool = MemoryPool(rt)
    m.memory = types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError, MemoryPool=MemoryPool,
                                     get_default_pool=lambda: pool)
    m._pool = pool

    def get_current_stream(device_id=-1):
        st = rt.state()
        device = st.device if device_id == -1 else rt.check_device(device_id)
        top = st.streams[device][-1]
        return m.Stream.null if top is None else top

    m.get_current_stream = get_current_stream
    return m
