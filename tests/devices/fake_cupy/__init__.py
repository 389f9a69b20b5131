"""A fake CuPy for tests on machines without a GPU: NumPy underneath, CuPy's rules on top.

It models the part of CuPy that knetflow uses, strictly:

- `cupy.ndarray`: arrays that live on one device (`.device.id`, `.data.ptr`,
  `.nbytes`, `.get(stream=)`, `.set(host, stream=)`) and refuse to be mixed
  with arrays of another device or with host NumPy arrays (array.py);
- `cupy.cuda.Device(i)` and `cupy.cuda.Stream(non_blocking=True)` as
  per-thread context managers, `Event`, `stream.record()`, `wait_event`,
  `synchronize`; `cupy.cuda.runtime` (getDeviceCount, deviceCanAccessPeer,
  deviceEnablePeerAccess, memcpyPeerAsync, memGetInfo, getDeviceProperties,
  CUDARuntimeError); `cupy.get_default_memory_pool()` (cuda.py);
- NumPy's functions and ufuncs as kernels on the current device and stream,
  `cupy.random.default_rng`, `cupyx.scipy.special`.

Every stream operation is logged with a vector clock, and accesses to device
memory not ordered by CUDA's rules are recorded as races (runtime.py), so a
test can check that work is ordered, not just that results are right.

Example:
    rt = install(monkeypatch, 2)          # cupy in sys.modules is the fake; 2 GPUs
    g0, g1 = kf.gpu(0), kf.gpu(1)
    y = transfers.copy(g0.put(x), g1)
    assert rt.entries("peer") and not rt.races
"""

from __future__ import annotations

import sys
import types

import numpy as np
import scipy.special

from tests.devices.fake_cupy.array import ArrayModule, ndarray, random_module
from tests.devices.fake_cupy.cuda import cuda_module
from tests.devices.fake_cupy.runtime import (
    CUDADriverError,
    CUDARuntimeError,
    Entry,
    OutOfMemoryError,
    Runtime,
    happens_before,
)

__all__ = ["CUDADriverError", "CUDARuntimeError", "Entry", "OutOfMemoryError", "Runtime",
           "happens_before", "install", "make"]


def make(n_devices: int = 2, **options) -> Runtime:
    """A Runtime with its fake `cupy` module (`rt.cupy`) and `cupyx` (`rt.cupyx`).

    Options: `memory` (bytes per device), `peer_access` (bool or f(device, peer)),
    `count_error` (what getDeviceCount raises).
    """
    rt = Runtime(n_devices, **options)
    cupy = ArrayModule("cupy", rt, np)
    rt.cupy = cupy
    cupy.__version__ = "13.0.0+fake"
    cupy.ndarray = ndarray
    cupy.cuda = cuda_module(rt)
    cupy.random = random_module(rt)
    cupy.linalg = ArrayModule("cupy.linalg", rt, np.linalg, "linalg.")
    cupy.fft = ArrayModule("cupy.fft", rt, np.fft, "fft.")
    cupy.get_default_memory_pool = lambda: cupy.cuda._pool
    cupy.asnumpy = lambda a, stream=None: a.get(stream) if isinstance(a, ndarray) \
        else np.asarray(a)
    cupy.get_array_module = lambda *args: cupy if any(isinstance(a, ndarray) for a in args) \
        else np
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = ArrayModule("cupyx.scipy.special", rt, scipy.special, "special.")
    rt.cupyx = cupyx
    return rt


def install(monkeypatch, n_devices: int = 2, **options) -> Runtime:
    """Put a fake CuPy with `n_devices` GPUs in place of cupy; knetflow looks for GPUs anew.

    Everything is undone by `monkeypatch` (and tests/devices/conftest.py resets discovery).
    """
    from knetflow.devices import gpu, registry

    rt = make(n_devices, **options)
    monkeypatch.setitem(sys.modules, "cupy", rt.cupy)
    monkeypatch.setitem(sys.modules, "cupyx", rt.cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", rt.cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", rt.cupyx.scipy.special)
    monkeypatch.setattr(gpu, "_peers_enabled", set())  # peer access is per CUDA context
    registry.forget("gpu")
    return rt
