"""Arrays of the strict simulated devices: NumPy data that remembers its device.

A `SimArray` wraps a NumPy array and the sim device it lives on. It takes
part in NumPy's protocols (`__array_ufunc__`, `__array_function__`, the
operators) so op forwards run on it unchanged, but, like a CuPy array, it
refuses to be mixed: an op given arrays of two different devices, or a plain
NumPy array where a device array is expected, raises `DeviceMismatchError`
with a CuPy-like message, and implicit conversion to NumPy (`np.asarray(x)`)
raises as CuPy's does. So a transfer missing from a plan fails on a machine
without a GPU. Scalars (Python or NumPy, and 0-d NumPy arrays) mix freely,
as they do with CuPy. Results of reductions are 0-d arrays, as in CuPy.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

# host-memory views that a device array does not offer (use device.get(x) instead)
_HOST_ONLY = frozenset({"ctypes", "data", "tobytes", "tofile", "dump", "dumps"})


class DeviceMismatchError(TypeError, ValueError):
    """An op was given arrays of two devices, or a host array where a device array belongs.

    A TypeError and a ValueError, as CuPy raises one or the other for these cases.
    """


class SimOutOfMemoryError(MemoryError):
    """A sim device's allocations went past its memory budget."""


def _mismatch(what, array, device) -> DeviceMismatchError:
    return DeviceMismatchError(
        f"{what}: array device must be same as the current device: array device = "
        f"{array.device.name} while current = {device.name}; arrays of different devices "
        f"need an explicit transfer (knetflow.devices.transfers.copy)")


def _host(what, array, device) -> DeviceMismatchError:
    return DeviceMismatchError(
        f"{what}: Unsupported type {type(array)}: a host (NumPy) array of shape "
        f"{array.shape} was given where an array on {device.name} is expected; put it on the "
        f"device first (device.put or knetflow.devices.transfers.copy)")


def unwrap(x, device, what: str, host_ok: bool = False):
    """x with SimArrays of `device` replaced by their data (lists and tuples too).

    Arrays of another device fail; so do NumPy arrays of 1 or more dimensions,
    unless `host_ok` (a creation function copying host data in).
    """
    t = type(x)
    if t is SimArray:
        if x.device is not device and x.device != device:
            raise _mismatch(what, x, device)
        return x._data
    if t is list or t is tuple:
        return t(unwrap(i, device, what, host_ok) for i in x)
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            return x
        if host_ok:
            return np.array(x)  # a copy: device memory is not host memory
        raise _host(what, x, device)
    return x


def unwrap_kwargs(kwargs: dict, device, what: str, host_ok: bool = False) -> dict:
    return {k: unwrap(v, device, what, host_ok) for k, v in kwargs.items()}


def wrap(x, device):
    """NumPy results as arrays on `device` (scalars become 0-d arrays, as in CuPy)."""
    t = type(x)
    if t is np.ndarray:
        return SimArray._make(x, device)
    if isinstance(x, np.generic):
        return SimArray._make(np.asarray(x), device)
    if t is list or t is tuple:
        return t(wrap(i, device) for i in x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # named results, e.g. of linalg
        return t(*(wrap(i, device) for i in x))
    return x


def _out_result(out, result, device):
    """A call given `out=` returns the out array(s) the caller passed."""
    if out is None:
        return wrap(result, device)
    if isinstance(out, tuple):
        return out[0] if len(out) == 1 else out
    return out


class SimArray(NDArrayOperatorsMixin):
    """An array on a sim device (see module docstring). Make them with `device.put(x)`."""

    __slots__ = ("__weakref__", "_data", "device")

    @classmethod
    def _make(cls, data: np.ndarray, device) -> SimArray:
        self = object.__new__(cls)
        self._data = data
        self.device = device
        device._track(data)
        return self

    def __init__(self, *args, **kwargs):
        raise TypeError("make sim arrays with a sim device's put() or its xp module")

    # -- NumPy protocols --
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        device = self.device
        what = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        args = [unwrap(i, device, what) for i in inputs]
        out = kwargs.get("out")
        kwargs = unwrap_kwargs(kwargs, device, what)
        result = getattr(ufunc, method)(*args, **kwargs)
        return _out_result(out, result, device)

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, (SimArray, np.ndarray)) for t in types):
            return NotImplemented
        device = self.device
        what = func.__name__
        out = kwargs.get("out")
        result = func(*unwrap(args, device, what), **unwrap_kwargs(kwargs, device, what))
        return _out_result(out, result, device)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"Implicit conversion to a NumPy array is not allowed for an array on "
                        f"{self.device.name}: use device.get(x) (or x.get()) to copy it to the "
                        f"host explicitly")

    # -- the ndarray surface: common attributes directly, the rest delegated --
    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    @property
    def itemsize(self) -> int:
        return self._data.itemsize

    @property
    def T(self) -> SimArray:
        return SimArray._make(self._data.T, self.device)

    def get(self) -> np.ndarray:
        """A NumPy copy on the host (CuPy's `ndarray.get`)."""
        return self._data.copy()

    def __getattr__(self, name):
        if name.startswith("_") or name in _HOST_ONLY:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} "
                                 f"(device arrays do not expose host memory)")
        value = getattr(self._data, name)
        if callable(value):
            return _Method(self, name, value)
        return wrap(value, self.device)

    def __getitem__(self, key):
        key = unwrap(key, self.device, "__getitem__", host_ok=True)
        return wrap(self._data[key], self.device)

    def __setitem__(self, key, value):
        key = unwrap(key, self.device, "__setitem__", host_ok=True)
        self._data[key] = unwrap(value, self.device, "__setitem__", host_ok=True)

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self):
        for row in self._data:
            yield wrap(row, self.device)

    def __bool__(self) -> bool:
        return bool(self._data)

    def __float__(self) -> float:
        return float(self._data)

    def __int__(self) -> int:
        return int(self._data)

    def __index__(self) -> int:
        return self._data.__index__()

    def __complex__(self) -> complex:
        return complex(self._data)

    def __copy__(self) -> SimArray:
        return SimArray._make(self._data.copy(), self.device)

    def __deepcopy__(self, memo) -> SimArray:
        return self.__copy__()

    def __repr__(self) -> str:
        return f"SimArray({np.array2string(self._data, separator=', ')}, " \
               f"dtype={self._data.dtype}, device={self.device.name!r})"

    __str__ = __repr__


class _Method:
    """An ndarray method of a SimArray: arguments checked, results on the device."""

    __slots__ = ("array", "method", "name")

    def __init__(self, array, name, method):
        self.array, self.name, self.method = array, name, method

    def __call__(self, *args, **kwargs):
        array = self.array
        device = array.device
        out = kwargs.get("out")
        result = self.method(*unwrap(args, device, self.name),
                             **unwrap_kwargs(kwargs, device, self.name))
        if result is array._data:  # e.g. astype(copy=False) of the same dtype
            return array
        return _out_result(out, result, device)
