"""Strict simulated devices ("sim:0", "sim:1", ...) for testing on a CPU.

A sim device behaves like a GPU as far as placement and transfers are
concerned, while computing with NumPy: its arrays are `SimArray`s that know
their device (simarray.py), its `xp` is a NumPy stand-in whose functions
accept only arrays of this device (and scalars), and creation functions
(`xp.asarray`, `xp.empty`, ...) make arrays on it. An op given an array of
another device, or a host NumPy array where a device array belongs, raises
`DeviceMismatchError` as CuPy would, so a missing transfer is caught on a
machine without a GPU.

A sim device also counts the bytes its live arrays hold (`memory_info()`:
used, peak) and, when given a `memory_budget`, fails allocations past it with
`SimOutOfMemoryError`, so memory planning can be tested against real use.

`KNETFLOW_SIM_DEVICES=N` or `kf.set_sim_devices(N)` makes N of them.

The kind (`SimKind`, registered at the end): SimArrays of sim devices, the
device's strict module as `xp` (eager ops on sim arrays run on it too), its
`xp.special` for special functions, and a copy between two sim devices as
their peer copy.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from knetflow.devices import registry, transfers
from knetflow.devices.base import Device, is_device_array
from knetflow.devices.simarray import (
    DeviceMismatchError,
    SimArray,
    SimOutOfMemoryError,
    unwrap,
    unwrap_kwargs,
    wrap,
)

__all__ = ["DeviceMismatchError", "SimArray", "SimDevice", "SimOutOfMemoryError",
           "set_sim_devices"]

# functions that make arrays from host data or from nothing: host arrays are copied in
_CREATION = frozenset({
    "array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray", "empty", "zeros",
    "ones", "full", "arange", "eye", "identity", "linspace", "logspace", "geomspace", "tri",
    "fromiter", "frombuffer",
})
_SUBMODULES = ("linalg", "fft")


class SimDevice(Device):
    """A strict simulated device (see module docstring)."""

    kind = "sim"

    def __init__(self, index: int = 0, memory_budget: int | None = None):
        super().__init__(index, memory_budget)
        self._xp = SimModule(self)
        self._lock = threading.RLock()
        self._live: dict = {}   # id of an array owning memory -> its bytes
        self.allocated = 0
        self.peak = 0

    @property
    def xp(self):
        return self._xp

    def put(self, array):
        """A copy of host data on this device; an array already here is returned as is."""
        if type(array) is SimArray and array.device == self:
            return array
        if is_device_array(array):
            return transfers.copy(array, self)
        return SimArray._make(np.array(array), self)

    def get(self, array) -> np.ndarray:
        """A NumPy copy of a sim array (of any sim device); host arrays as they are."""
        if type(array) is SimArray:
            return array._data.copy()
        if is_device_array(array):
            return transfers.copy(array, "cpu:0")
        return np.asarray(array)

    def owns(self, array) -> bool:
        return type(array) is SimArray and array.device == self

    def rng(self, seed=None):
        return _SimGenerator(np.random.default_rng(seed), self)

    def memory_info(self) -> dict:
        """Bytes held by live arrays ("used"), the most ever held ("peak"), and the budget."""
        budget = self._budget
        with self._lock:
            used, peak = self.allocated, self.peak
        return {"free": None if budget is None else budget - used, "total": budget,
                "used": used, "peak": peak}

    def reset_peak(self) -> None:
        """Start measuring the peak again from what is held now."""
        with self._lock:
            self.peak = self.allocated

    def _track(self, data: np.ndarray) -> None:
        """Count the memory behind a new sim array (once per owning array)."""
        root = data
        while isinstance(root.base, np.ndarray):
            root = root.base
        key = id(root)
        with self._lock:
            if key in self._live:
                return
            nbytes = root.nbytes
            budget = self._budget
            if budget is not None and self.allocated + nbytes > budget:
                raise SimOutOfMemoryError(
                    f"out of memory on {self.name}: allocating {nbytes:,} bytes with "
                    f"{self.allocated:,} in use, budget {budget:,}")
            self._live[key] = nbytes
            self.allocated += nbytes
            self.peak = max(self.peak, self.allocated)
        weakref.finalize(root, self._release, key)

    def _release(self, key) -> None:
        with self._lock:
            self.allocated -= self._live.pop(key, 0)

    def __repr__(self) -> str:
        return f"SimDevice({self.name!r})"


class SimModule:
    """The `xp` of a sim device: NumPy's namespace, made strict about devices."""

    def __init__(self, device):
        self._device = device
        self._cache: dict = {}
        self.ndarray = SimArray
        self.random = _SimRandom(device)
        for sub in _SUBMODULES:
            setattr(self, sub, _SimSubmodule(device, getattr(np, sub), sub))

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        cache = self.__dict__["_cache"]
        found = cache.get(name)
        if found is None:
            device = self.__dict__["_device"]
            if name == "special":  # cupyx.scipy.special's counterpart, checked the same way
                from scipy import special

                found = _SimSubmodule(device, special, "special")
            else:
                found = _strict(device, np, name)
            cache[name] = found
        return found

    def __repr__(self) -> str:
        return f"<array module of {self._device.name}>"


class _SimSubmodule:
    def __init__(self, device, module, name):
        self._device, self._module, self._name = device, module, name

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _strict(self._device, self._module, name, f"{self._name}.{name}")


def _strict(device, module, name, qualname=None):
    """`module.name` for sim arrays: functions and ufuncs checked, types and constants as is."""
    value = getattr(module, name)
    if isinstance(value, np.ufunc):
        return _Ufunc(device, value)
    if isinstance(value, type) or not callable(value):
        return value
    return _Function(device, value, qualname or name, host_ok=name in _CREATION)


class _Function:
    """A NumPy function taking and returning arrays of one sim device."""

    def __init__(self, device, fn, name, host_ok=False):
        self.device, self.fn, self.__name__, self.host_ok = device, fn, name, host_ok

    def __call__(self, *args, **kwargs):
        device, what = self.device, self.__name__
        raw = unwrap(args, device, what, self.host_ok)
        out = kwargs.get("out")
        result = self.fn(*raw, **unwrap_kwargs(kwargs, device, what, self.host_ok))
        if out is not None:
            return out
        if args and type(args[0]) is SimArray and result is raw[0]:
            return args[0]  # asarray of an array already here
        return wrap(result, device)

    def __repr__(self) -> str:
        return f"<{self.__name__} on {self.device.name}>"


class _Ufunc:
    """A NumPy ufunc for arrays of one sim device, with its reduce/accumulate/at/outer."""

    def __init__(self, device, ufunc):
        self.device, self.ufunc = device, ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return self._apply("__call__", args, kwargs)

    def __getattr__(self, name):
        if name in ("reduce", "accumulate", "reduceat", "outer", "at"):
            return lambda *args, **kwargs: self._apply(name, args, kwargs)
        return getattr(self.ufunc, name)

    def _apply(self, method, args, kwargs):
        device = self.device
        what = self.__name__ if method == "__call__" else f"{self.__name__}.{method}"
        out = kwargs.get("out")
        raw = unwrap(args, device, what)
        result = getattr(self.ufunc, method)(*raw, **unwrap_kwargs(kwargs, device, what))
        if out is not None:
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return wrap(result, device)


class _SimRandom:
    """`xp.random` of a sim device: generators whose draws land on the device."""

    def __init__(self, device):
        self._device = device

    def default_rng(self, seed=None):
        return _SimGenerator(np.random.default_rng(seed), self._device)


class _SimGenerator:
    """A NumPy Generator whose draws are arrays on a sim device."""

    def __init__(self, generator, device):
        self._generator, self._device = generator, device

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._generator, name)
        if not callable(value):
            return value
        return _Function(self._device, value, f"random.{name}")


def set_sim_devices(n: int, memory_budget: int | None = None) -> list:
    """Expose `n` strict simulated devices sim:0..n-1 (for tests; see knetflow.devices.sim).

    `memory_budget` (bytes per device) makes allocations past it fail.
    Overrides `KNETFLOW_SIM_DEVICES`; `set_sim_devices(0)` removes them.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"set_sim_devices needs n >= 0, got {n}")
    return registry.set_found("sim", [SimDevice(i, memory_budget) for i in range(n)])


class SimKind(registry.DeviceKind):
    """Sim devices as a kind: SimArrays whose device is a sim device, the strict module."""

    name = "sim"
    order = 2
    flops = 2e10

    def discover(self) -> list:
        n = registry.env_count("KNETFLOW_SIM_DEVICES", 0, 0)
        return [SimDevice(i) for i in range(n)]

    def why_missing(self, found: list) -> str:
        return " (set KNETFLOW_SIM_DEVICES or call kf.set_sim_devices(n) for some)"

    def array_types(self) -> tuple:
        return (SimArray,)

    def owns(self, array) -> bool:
        return type(array) is SimArray and array.device.kind == self.name

    def device_of(self, array):
        return array.device

    def owns_module(self, xp) -> bool:
        return type(xp) is SimModule and xp._device.kind == self.name

    def special(self, xp):
        return xp.special

    def peer_copy(self, array, src, dst):
        return SimArray._make(array._data.copy(), dst)


registry.register(SimKind())
