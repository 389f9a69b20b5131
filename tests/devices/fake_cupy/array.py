"""Arrays and array functions of the fake CuPy: NumPy underneath, CuPy's rules on top.

An `ndarray` is a NumPy view of a device block (runtime.Allocation). Every
function of the fake module, ufunc, operator and array method runs as a
*kernel*: on the calling thread's current device and current stream, and only
on arrays of that device. A host NumPy array (of one or more dimensions) is
refused except by creation functions (`asarray`, `array`, ...), which copy it
in; implicit conversion to NumPy (`np.asarray(x)`) raises. Mismatches raise
knetflow's DeviceMismatchError (a TypeError and a ValueError, as CuPy raises
one or the other).

Stricter than CuPy on purpose: CuPy raises for an array of another device only
where the two GPUs cannot access each other; where they can, it warns and
reads across the bus. Either way a missing transfer is a bug, so the fake
always raises. It also offers every NumPy function, while CuPy lacks some.

Each kernel is logged on its stream with the blocks it read and wrote (see
runtime.py); results that are views of an argument (reshape, transpose,
basic slicing) share its block and log nothing, as in CuPy they launch
nothing.
"""

from __future__ import annotations

import types

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from knetflow.devices.sim import _CREATION
from knetflow.devices.simarray import _HOST_ONLY, DeviceMismatchError

# functions and methods that write into their first argument or into the array itself
_WRITES_FIRST = frozenset({"copyto", "put", "place", "putmask", "fill_diagonal", "at"})
_INPLACE_METHODS = frozenset({"fill", "sort", "partition", "put", "resize", "itemset"})
# allocate without writing anything
_UNINITIALIZED = frozenset({"empty", "empty_like"})


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class _Call:
    """One kernel: its arguments unwrapped, and the blocks it reads and writes."""

    def __init__(self, rt, name: str, host_ok: bool):
        self.rt, self.name, self.host_ok = rt, name, host_ok
        self.device = rt.current_device()
        self.queue = rt.current_queue()
        self.reads: dict = {}    # id(block) -> block
        self.writes: dict = {}
        self.fresh: list = []    # blocks the kernel allocated
        self._same: dict = {}    # id(NumPy data) -> the fake array holding it
        self._roots: dict = {}   # id(root NumPy array) -> its block
        self.host_bytes = 0

    def unwrap(self, x, written=False):
        """x with fake arrays of the current device replaced by their NumPy data."""
        t = type(x)
        if t is ndarray:
            block = x._block
            if block.rt is not self.rt or block.device != self.device:
                raise DeviceMismatchError(
                    f"{self.name}: the device where the array resides ({block.device}) is "
                    f"different from the current device ({self.device}) (CuPy: ValueError "
                    f"without peer access, a PerformanceWarning with it)")
            (self.writes if written else self.reads)[id(block)] = block
            self._same[id(x._data)] = x
            self._roots[id(block.root)] = block
            return x._data
        if t is list or t is tuple:
            return t(self.unwrap(i, written) for i in x)
        if isinstance(x, np.ndarray):
            if x.ndim == 0:
                return x
            if self.host_ok:
                self.host_bytes += x.nbytes
                return np.array(x)  # device memory is not host memory
            raise DeviceMismatchError(
                f"{self.name}: Unsupported type {type(x)}: a host array of shape {x.shape} "
                f"where a cupy.ndarray is expected")
        return x

    def wrap(self, x):
        """NumPy results as fake arrays: views share their base's block, the rest are new."""
        t = type(x)
        if t is np.ndarray:
            same = self._same.get(id(x))
            if same is not None and same._data is x:
                return same
            root = _root(x)
            block = self._roots.get(id(root))
            if block is None:
                block = self.rt.allocate(root, self.device, self.queue)
                self._roots[id(root)] = block
                self.fresh.append(block)
            return ndarray._make(x, block)
        if isinstance(x, np.generic):  # CuPy gives 0-d arrays, never scalars
            return self.wrap(np.asarray(x))
        if t is list or t is tuple:
            return t(self.wrap(i) for i in x)
        if isinstance(x, tuple) and hasattr(x, "_fields"):  # named results (linalg)
            return t(*(self.wrap(i) for i in x))
        return x

    def finish(self, fresh_written=True) -> None:
        """Log the kernel (if it touched memory) and check its accesses are ordered."""
        written = dict(self.writes)
        if fresh_written:
            written.update((id(b), b) for b in self.fresh)
        if not written:
            return  # a view or a metadata query: nothing launched
        kind = "h2d" if self.host_bytes and not self.reads else "kernel"
        nbytes = sum(b.nbytes for b in written.values())
        entry = self.rt.enqueue(self.queue, kind, self.name, nbytes)
        for block in self.reads.values():
            self.rt.read(block, entry)
        for block in written.values():
            self.rt.write(block, entry)


def launch(rt, name, fn, args, kwargs, host_ok=False, this=None, inplace=False,
           writes_first=False, fresh_written=True):
    """Run NumPy's `fn` as a kernel on the current device and stream (see module docstring)."""
    rt.maybe_fail(name)
    call = _Call(rt, name, host_ok)
    if this is not None:
        call.unwrap(this, written=inplace)
    raw = list(call.unwrap(args))
    if writes_first and raw:
        raw[0] = call.unwrap(args[0], written=True)
    out = kwargs.get("out")
    raw_kwargs = {k: call.unwrap(v, written=(k == "out")) for k, v in kwargs.items()}
    result = fn(*raw, **raw_kwargs)
    if out is None:
        result = call.wrap(result)
    else:
        result = out[0] if isinstance(out, tuple) and len(out) == 1 else out
    call.finish(fresh_written)
    return result


class ndarray(NDArrayOperatorsMixin):
    """cupy.ndarray of the fake: NumPy data in a block of one device's memory."""

    __slots__ = ("__weakref__", "_block", "_data")

    @classmethod
    def _make(cls, data: np.ndarray, block) -> ndarray:
        self = object.__new__(cls)
        self._data, self._block = data, block
        return self

    def __init__(self, *args, **kwargs):
        raise TypeError("fake cupy: make arrays with cupy.empty, cupy.asarray or device.put")

    # -- NumPy protocols: everything is a kernel on the current device --
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        return launch(self._block.rt, name, getattr(ufunc, method), inputs, kwargs,
                      writes_first=method == "at")

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        return launch(self._block.rt, func.__name__, func, args, kwargs,
                      writes_first=func.__name__ in _WRITES_FIRST)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    # -- what CuPy adds: the device, the memory, copies to and from the host --
    @property
    def device(self):
        return self._block.rt.cupy.cuda.Device(self._block.device)

    @property
    def data(self) -> types.SimpleNamespace:
        """The memory pointer: `.ptr` is the address of the first element."""
        block = self._block
        offset = self._data.__array_interface__["data"][0] - \
            block.root.__array_interface__["data"][0]
        ptr = block.ptr + offset if block.ptr else 0
        return types.SimpleNamespace(ptr=ptr, device_id=block.device, device=self.device)

    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        """A host copy, made on `stream` (default: the current one); waits unless not blocking."""
        rt, block = self._block.rt, self._block
        if self._data.size == 0:
            return np.array(self._data, order=order)
        if stream is None:
            stream = rt.cupy.cuda.get_current_stream()
        queue = rt.queue_of(stream, device=block.device)
        entry = rt.enqueue(queue, "d2h", "get", self._data.nbytes)
        rt.read(block, entry)
        host = np.array(self._data, order=order)
        if out is not None:
            out[...] = host
            host = out
        if blocking:
            rt.host_waits(queue.clock)
        return host

    def set(self, arr, stream=None) -> None:
        """Copy host array `arr` (same shape and dtype) in, on `stream` (default: current)."""
        self._block.rt.maybe_fail("set")
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not (self._data.flags.c_contiguous or self._data.flags.f_contiguous):
            raise RuntimeError("Cannot set to non-contiguous array")
        rt, block = self._block.rt, self._block
        if stream is None:
            stream = rt.cupy.cuda.get_current_stream()
        entry = rt.enqueue(rt.queue_of(stream, device=block.device), "h2d", "set", arr.nbytes)
        rt.write(block, entry)
        self._data[...] = arr

    def _host(self) -> np.ndarray:
        return self.get()

    # -- metadata: no kernel --
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)
    itemsize = property(lambda self: self._data.itemsize)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: self._data.flags)

    @property
    def T(self) -> ndarray:
        return ndarray._make(self._data.T, self._block)

    def __len__(self) -> int:
        return len(self._data)

    # -- the rest of NumPy's ndarray, as kernels --
    def __getattr__(self, name):
        if name.startswith("_") or name in _HOST_ONLY:
            raise AttributeError(f"fake cupy.ndarray has no attribute {name!r}")
        value = getattr(self._data, name)
        if callable(value):
            return _Method(self, name, value)
        call = _Call(self._block.rt, name, False)
        call.unwrap(self)
        return call.wrap(value)

    def __getitem__(self, key):
        return launch(self._block.rt, "getitem", self._data.__getitem__, (key,), {},
                      host_ok=True, this=self)

    def __setitem__(self, key, value):
        launch(self._block.rt, "setitem", self._data.__setitem__, (key, value), {},
               host_ok=True, this=self, inplace=True)

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    def item(self):
        return self._host().item()

    def tolist(self):
        return self._host().tolist()

    def __bool__(self) -> bool:
        return bool(self._host())

    def __float__(self) -> float:
        return float(self._host())

    def __int__(self) -> int:
        return int(self._host())

    def __index__(self) -> int:
        return self._host().__index__()

    def __complex__(self) -> complex:
        return complex(self._host())

    def __copy__(self) -> ndarray:
        return self.copy()

    def __deepcopy__(self, memo) -> ndarray:
        return self.copy()

    def __repr__(self) -> str:
        return repr(self._host()).replace("array(", "cupy.array(", 1)


ndarray.__module__ = "cupy"  # as CuPy's own (knetflow asks `isinstance(x, cupy.ndarray)`)


class _Method:
    """A NumPy ndarray method run as a kernel on its array."""

    __slots__ = ("array", "method", "name")

    def __init__(self, array, name, method):
        self.array, self.name, self.method = array, name, method

    def __call__(self, *args, **kwargs):
        return launch(self.array._block.rt, self.name, self.method, args, kwargs,
                      this=self.array, inplace=self.name in _INPLACE_METHODS)


class _Function:
    """A NumPy function of the fake module, run as a kernel."""

    def __init__(self, rt, fn, name, host_ok=False):
        self.rt, self.fn, self.__name__, self.host_ok = rt, fn, name, host_ok

    def __call__(self, *args, **kwargs):
        short = self.__name__.rpartition(".")[2]
        return launch(self.rt, self.__name__, self.fn, args, kwargs, host_ok=self.host_ok,
                      writes_first=short in _WRITES_FIRST,
                      fresh_written=short not in _UNINITIALIZED)

    def __repr__(self) -> str:
        return f"<fake cupy function {self.__name__}>"


class _Ufunc:
    """A NumPy ufunc of the fake module, with reduce, accumulate, outer and at."""

    def __init__(self, rt, ufunc):
        self.rt, self.ufunc, self.__name__ = rt, ufunc, ufunc.__name__

    def __call__(self, *args, **kwargs):
        return launch(self.rt, self.__name__, self.ufunc, args, kwargs)

    def __getattr__(self, name):
        if name in ("reduce", "accumulate", "reduceat", "outer", "at"):
            method = getattr(self.ufunc, name)
            return lambda *args, **kwargs: launch(self.rt, f"{self.__name__}.{name}", method,
                                                  args, kwargs, writes_first=name == "at")
        return getattr(self.ufunc, name)


class ArrayModule(types.ModuleType):
    """A module of the fake whose functions come from a NumPy-family module, run as kernels."""

    def __init__(self, name: str, rt, source, prefix: str = ""):
        super().__init__(name)
        self._rt, self._source, self._prefix = rt, source, prefix

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            value = getattr(self._source, name)
        except AttributeError:
            raise AttributeError(f"module {self.__name__!r} (fake) has no attribute "
                                 f"{name!r}") from None
        if isinstance(value, np.ufunc):
            found = _Ufunc(self._rt, value)
        elif isinstance(value, (type, types.ModuleType)) or not callable(value):
            found = value
        else:
            found = _Function(self._rt, value, self._prefix + name,
                              host_ok=not self._prefix and name in _CREATION)
        setattr(self, name, found)  # looked up once
        return found


class Generator:
    """cupy.random.Generator of the fake: draws land on the device it was made on."""

    def __init__(self, rt, generator, device):
        self._rt, self._generator, self._device = rt, generator, device

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._generator, name)
        if not callable(value):
            return value

        def draw(*args, **kwargs):
            current = self._rt.current_device()
            if current != self._device:
                raise DeviceMismatchError(
                    f"random.{name}: the generator's state is on device {self._device}, "
                    f"the current device is {current}")
            return launch(self._rt, f"random.{name}", value, args, kwargs)

        return draw


def random_module(rt) -> types.ModuleType:
    """cupy.random: `default_rng(seed)` on the current device."""
    m = types.ModuleType("cupy.random")
    m.Generator = Generator
    m.default_rng = lambda seed=None: Generator(rt, np.random.default_rng(seed),
                                                rt.current_device())
    return m
