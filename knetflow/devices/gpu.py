"""GPU devices through CuPy: discovery, one stream per device, transfers, the GPU kind.

With gpu_cudnn.py, the only module of knetflow that imports CuPy, and only
when GPUs are looked for or CuPy's own modules are needed. Discovery returns
no GPU, quickly and without raising, when CuPy is not installed, fails to
import (no CUDA runtime libraries), finds no driver, or sees no device;
`unavailable_reason()` says which.

Each GpuDevice has its own non-blocking CUDA stream; `activate()` makes its
CUDA device and stream current for the calling thread, so an executor thread
runs the ops of one device on that device's stream, concurrently with the
others. Arrays come from CuPy's (per-device, stream-aware) memory pool.
`put`/`get` copy between host and device on the device's stream;
`peer_copy` copies between two GPUs, ordered after the producer's stream.
Called outside `activate()` (where the current stream is usually the legacy
default stream, which never waits for a non-blocking stream), they order the
caller's current stream and the device's stream with events, so eager work
before or after them sees the data.

    g = kf.gpu(1)
    x = g.put(host)                     # h2d on g.stream
    with g.activate():
        y = g.xp.exp(x)                 # a kernel on g.stream, GPU 1 current
    z = transfers.copy(y, "gpu:0")      # peer copy on gpu:0's stream, after exp
    kf.gpu(0).get(z)                    # d2h on gpu:0's stream, then a host wait

tests/devices/fake_cupy models CuPy closely enough to check this ordering
on a machine without a GPU (tests/devices/test_gpu_logic.py).

The kind (`GpuKind`, registered at the end) answers for CuPy without
importing it: an array is a GPU's when it is a `cupy.ndarray` of the CuPy
that is imported (none can exist before), and an array module is the GPU's
when it is that CuPy module. Special functions come from cupyx.scipy.special,
scatter-adds from `ufunc.at` or, before CuPy 13, `cupyx.scatter_add`. Its fast
kernels are cuDNN's: the op-level code is knetflow/ops/cudnn.py (it needs the
ops' semantics, a floor above this one) and registers itself for this kind
with `registry.set_fast_kernels("gpu", ...)`; the cuDNN library calls it
makes through CuPy are in gpu_cudnn.py, beside this file.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np

from knetflow.devices import registry, transfers
from knetflow.devices.base import Device, is_device_array

_reason = "GPUs not looked for yet"
_peer_lock = threading.Lock()
_peers_enabled: set = set()


def _import_cupy():
    """The cupy module, or None with the reason it cannot be used."""
    try:
        import cupy
    except ImportError as e:  # not installed, or its CUDA libraries failed to load
        missing = isinstance(e, ModuleNotFoundError) and e.name == "cupy"
        return None, "CuPy is not installed" if missing else f"CuPy failed to import: {e}"
    except OSError as e:  # a shared library that exists but cannot be loaded
        return None, f"CuPy failed to load a CUDA library: {e}"
    return cupy, ""


def _cuda_errors(cupy) -> tuple:
    """CuPy's CUDA runtime and driver error classes (what a machine without GPU raises)."""
    errors = []
    for module, name in (("runtime", "CUDARuntimeError"), ("driver", "CUDADriverError")):
        cls = getattr(getattr(cupy.cuda, module, None), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            errors.append(cls)
    return tuple(errors)


def discover() -> list:
    """GpuDevices for every GPU CuPy sees; [] (never an error) when there are none."""
    global _reason
    cupy, reason = _import_cupy()
    if cupy is None:
        _reason = reason
        return []
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except _cuda_errors(cupy) as e:  # no driver, driver too old, no device visible
        _reason = f"CUDA reports no usable device: {e}"
        return []
    _reason = "" if count else "CuPy sees no GPU"
    return [GpuDevice(i, cupy) for i in range(count)]


def unavailable_reason() -> str:
    """Why the last discovery found no GPU ("" when it found some)."""
    return _reason


class GpuDevice(Device):
    """A CUDA GPU through CuPy, with its own non-blocking stream."""

    kind = "gpu"

    def __init__(self, index: int, cupy, memory_budget: int | None = None):
        super().__init__(index, memory_budget)
        self._cp = cupy
        self._stream = None
        self._lock = threading.Lock()

    @property
    def xp(self):
        return self._cp

    @property
    def stream(self):
        """This device's own non-blocking CUDA stream (made on first use)."""
        if self._stream is None:
            with self._lock:
                if self._stream is None:
                    with self._cp.cuda.Device(self.index):
                        self._stream = self._cp.cuda.Stream(non_blocking=True)
        return self._stream

    @contextlib.contextmanager
    def activate(self):
        """Make this GPU and its stream current for the calling thread."""
        stream = self.stream
        with self._cp.cuda.Device(self.index), stream:
            yield self

    def owns(self, array) -> bool:
        return isinstance(array, self._cp.ndarray) and array.device.id == self.index

    def put(self, array):
        """A copy of host data on this GPU (on its stream); arrays of other GPUs peer-copied.

        The calling thread's current stream on this GPU is made to wait for the copy,
        so work it queues next (inside `activate()` or not) reads the data.
        """
        cp = self._cp
        if isinstance(array, cp.ndarray):
            if array.device.id == self.index:
                return array
            return peer_copy(array, self, registry.lookup("gpu", array.device.id))
        if is_device_array(array):  # another kind's array: through the host, explicitly
            return transfers.copy(array, self)
        host = np.asarray(array, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        with self.activate():
            out = cp.empty(host.shape, dtype=host.dtype)
            if host.size:
                out.set(host, stream=self.stream)
        self._caller_waits()
        return out

    def from_dlpack(self, obj):
        """A CUDA array of another library (DLPack) as this GPU's CuPy array, no copy."""
        with self.activate():
            return self.xp.from_dlpack(obj)

    def get(self, array) -> np.ndarray:
        """A NumPy copy on the host, read on the owning GPU's stream after the work queued there.

        "The work queued there": on the GPU's own stream, and on the calling thread's
        current stream on that GPU (e.g. the legacy stream, for eager ops outside
        `activate()`). An array of another GPU is read by that GPU; a sim array goes
        through the transfers module.
        """
        cp = self._cp
        if not isinstance(array, cp.ndarray):
            if is_device_array(array):
                return transfers.copy(array, "cpu:0")
            return np.asarray(array)
        if array.device.id != self.index:
            return registry.lookup("gpu", array.device.id).get(array)
        self._wait_for_caller()
        with cp.cuda.Device(self.index):
            host = array.get(stream=self.stream)
            self.stream.synchronize()  # CuPy before v11 copies asynchronously when given a stream
        return host

    def _wait_for_caller(self) -> None:
        """This GPU's stream waits for what the calling thread queued on its current stream here.

        Inside `activate()` the two are one stream and nothing is needed; outside, the
        current stream is usually the legacy default stream, which a non-blocking
        stream never waits for by itself.
        """
        cuda = self._cp.cuda
        with cuda.Device(self.index):
            caller = cuda.get_current_stream()
            if caller != self.stream:
                self.stream.wait_event(caller.record())

    def _caller_waits(self) -> None:
        """The calling thread's current stream here waits for the work on this GPU's stream."""
        cuda = self._cp.cuda
        with cuda.Device(self.index):
            caller = cuda.get_current_stream()
            if caller != self.stream:
                caller.wait_event(self.stream.record())

    def synchronize(self) -> None:
        with self._cp.cuda.Device(self.index) as dev:
            if self._stream is not None:
                self._stream.synchronize()
            dev.synchronize()

    def rng(self, seed=None):
        with self._cp.cuda.Device(self.index):
            return self._cp.random.default_rng(seed)

    def memory_info(self) -> dict:
        """Free and total device memory, and what CuPy's pool holds and uses here."""
        cp = self._cp
        with cp.cuda.Device(self.index):
            free, total = cp.cuda.runtime.memGetInfo()
            pool = cp.get_default_memory_pool()
            return {"free": int(free), "total": int(total),
                    "pool_used": int(pool.used_bytes()), "pool_held": int(pool.total_bytes())}

    def free_pool(self) -> None:
        """Give the blocks CuPy's pool holds unused on this GPU back to the driver."""
        with self._cp.cuda.Device(self.index):
            self._cp.get_default_memory_pool().free_all_blocks()

    def _default_budget(self) -> int | None:
        return self.memory_info()["total"]

    @property
    def model(self) -> str:
        """The GPU's name as CUDA reports it."""
        props = self._cp.cuda.runtime.getDeviceProperties(self.index)
        name = props.get("name", b"?")
        return name.decode() if isinstance(name, bytes) else str(name)

    def describe(self) -> str:
        return f"{super().describe()}  {self.model}"

    def __repr__(self) -> str:
        return f"GpuDevice({self.name!r})"


def _enable_peer_access(cp, dst: int, src: int) -> None:
    """Let GPU `dst` read GPU `src` directly, where the hardware allows (once per pair)."""
    if (dst, src) in _peers_enabled:
        return
    with _peer_lock:
        if (dst, src) in _peers_enabled:
            return
        runtime = cp.cuda.runtime
        try:
            if runtime.deviceCanAccessPeer(dst, src):
                with cp.cuda.Device(dst):
                    runtime.deviceEnablePeerAccess(src)
        except runtime.CUDARuntimeError:  # already enabled, or not supported: copy anyway
            pass
        _peers_enabled.add((dst, src))


def peer_copy(array, dst: GpuDevice, src: GpuDevice):
    """A copy of `array` (on GPU `src`) on GPU `dst`, ordered on both devices' streams.

    The copy runs on dst's stream after the work queued on src's stream (and on
    the caller's current stream on src), through an event, with no host wait; src's
    stream waits for the copy before reusing the source memory, and so does the
    caller's current stream on dst before reading the result.
    """
    cp = dst.xp
    shape = array.shape  # ascontiguousarray makes a 0-d array 1-d
    src._wait_for_caller()
    with src.activate():
        array = cp.ascontiguousarray(array)
        produced = src.stream.record()
    _enable_peer_access(cp, dst.index, src.index)
    with dst.activate():
        out = cp.empty(shape, dtype=array.dtype)
        if array.nbytes:
            dst.stream.wait_event(produced)
            cp.cuda.runtime.memcpyPeerAsync(out.data.ptr, dst.index, array.data.ptr, src.index,
                                            array.nbytes, dst.stream.ptr)
        copied = dst.stream.record()
    src.stream.wait_event(copied)
    dst._caller_waits()
    return out


def _imported_cupy():
    """The CuPy module if it is imported (never importing it), else None."""
    return sys.modules.get("cupy")


class GpuKind(registry.DeviceKind):
    """GPUs as a kind: CuPy arrays, peer copies, cupyx's special functions (see module doc)."""

    name = "gpu"
    order = 1
    flops = 1e13

    def discover(self) -> list:
        return discover()

    def why_missing(self, found: list) -> str:
        return "" if found else f" (no GPU: {unavailable_reason()})"

    def array_types(self) -> tuple:
        ndarray = getattr(_imported_cupy(), "ndarray", None)
        return (ndarray,) if isinstance(ndarray, type) else ()

    def device_of(self, array):
        return registry.lookup(self.name, array.device.id)

    def owns_module(self, xp) -> bool:
        return xp is not None and xp is _imported_cupy()

    def special(self, xp):
        from cupyx.scipy import special

        return special

    def scatter_add(self, xp, out, where, update) -> None:
        at = getattr(xp.add, "at", None)
        if at is not None:
            at(out, where, update)
        else:  # CuPy's ufuncs had no .at before v13; cupyx.scatter_add is the same operation
            import cupyx

            cupyx.scatter_add(out, where, update)

    def peer_copy(self, array, src, dst):
        return peer_copy(array, dst, src)


registry.register(GpuKind())
