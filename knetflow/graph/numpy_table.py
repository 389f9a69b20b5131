"""The table of NumPy functions knetflow builds on symbols, and what its adapters share.

NumPy hands a symbolic argument to `Symbol.__array_function__` (graph/symbol.py),
which looks the NumPy function up here *by identity*, never by name: a name
can mean something else in knetflow (Knet's `vcat` is not NumPy's `vstack`,
`knetflow.ops.norm` is a module). Each entry is an adapter with NumPy's
semantics, written with knetflow ops, registered under the NumPy names it
serves:

    @numpy_function("sum")
    def _sum(a, axis=None, dtype=None, keepdims=False): ...

The call is bound against NumPy's own signature first, so positional and
keyword forms work as in NumPy. An argument the adapter does not take is
accepted only at NumPy's default (`out=None`, `where=True`, `order="C"` ...);
anything else, and any function not in the table, raises `kf.TracingError`
(a TypeError) naming the NumPy function and what knetflow supports.
docs/NUMPY.md lists the table; a test keeps the two in sync.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

import knetflow.ops as ops
from knetflow.errors import TracingError

DOCS = "docs/NUMPY.md"
_NO_VALUE = getattr(np, "_NoValue", object())


@dataclass(frozen=True)
class Entry:
    """One supported NumPy function: its public name and the adapter that builds it."""

    name: str            # as users write it: "np.linalg.norm"
    func: Callable       # the NumPy function itself
    adapter: Callable    # adapter(**arguments) -> symbols, with NumPy's parameter names
    signature: inspect.Signature   # NumPy's, to bind a call's arguments
    takes: frozenset     # parameter names the adapter reads


FUNCTIONS: dict = {}  # NumPy function -> Entry


def _resolve(name: str):
    """np.<name> (dotted for submodules), or None when this NumPy lacks it."""
    obj = np
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def numpy_function(*names: str):
    """Decorator: register an adapter for the NumPy functions `np.<name>` of `names`."""
    def register(adapter):
        takes = frozenset(inspect.signature(adapter).parameters)
        for name in names:
            func = _resolve(name)
            if func is None or func in FUNCTIONS:  # not in this NumPy, or an alias (concat)
                continue
            entry = Entry(f"np.{name}", func, adapter, inspect.signature(func), takes)
            FUNCTIONS[func] = entry
        return adapter

    return register


# ---- errors ----


def refuse(fname: str, what: str):
    """Raise the TracingError for a NumPy form knetflow does not build."""
    raise TracingError(f"{fname}: {what} is not supported on knetflow symbols; "
                       f"see {DOCS} for the supported NumPy functions and argument forms")


def unsupported_function(fname: str):
    """Raise the TracingError for a NumPy function that is not in the table."""
    raise TracingError(
        f"{fname} is not supported on knetflow symbols (knetflow builds only the NumPy "
        f"functions listed in {DOCS}, each with NumPy's meaning); use knetflow ops, or run "
        "the graph and apply NumPy to the result")


# ---- binding a call ----


def _is_default(value, default) -> bool:
    if value is default:
        return True
    simple = (str, bool, int, float, type(None))
    return isinstance(value, simple) and isinstance(default, simple) and value == default


_HARMLESS = {"out": (None,), "where": (True,), "casting": ("same_kind",), "subok": (True, False),
             "optimize": (False, True, "greedy", "optimal"), "device": (None, "cpu")}


def bind(entry: Entry, args: tuple, kwargs: dict) -> tuple:
    """(positional, keyword) arguments for the adapter; refuses what it cannot take."""
    try:
        bound = entry.signature.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{entry.name}: {e}") from None
    positional, keywords = (), {}
    for name, value in bound.arguments.items():
        kind = entry.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            positional = tuple(value)
            continue
        items = value.items() if kind is inspect.Parameter.VAR_KEYWORD else [(name, value)]
        for key, val in items:
            if key in entry.takes:
                keywords[key] = val
            else:
                _check_ignored(entry, key, val)
    return positional, keywords


def _check_ignored(entry: Entry, key: str, value) -> None:
    param = entry.signature.parameters.get(key)
    default = param.default if param is not None else _NO_VALUE
    if value is _NO_VALUE or _is_default(value, default):
        return
    if any(_is_default(value, ok) for ok in _HARMLESS.get(key, ())):
        return
    takes = ", ".join(sorted(entry.takes)) or "none"
    refuse(entry.name, f"the argument {key}={value!r} (knetflow takes: {takes}; out only as None)")


# ---- helpers the adapters share ----


def shape(x) -> tuple:
    """The shape of a symbol, Param, array or array-like (None for dynamic dims)."""
    s = getattr(x, "shape", None)
    return tuple(s) if s is not None else np.shape(x)


def ndim(x) -> int:
    return len(shape(x))


def dtype_of(x) -> np.dtype:
    """The dtype of x; Python scalars give NumPy's default for their kind."""
    dt = getattr(x, "dtype", None)
    return np.dtype(dt) if dt is not None else np.asarray(x).dtype


def is_arraylike(x) -> bool:
    """A single array value (symbol, Param, array), as opposed to a list or tuple of them."""
    return hasattr(x, "shape") and hasattr(x, "dtype")


def static(fname: str, dims, what: str = "this form") -> tuple:
    """dims, all known; a dynamic (None) dimension is refused with a clear error."""
    dims = tuple(dims)
    if None in dims:
        refuse(fname, f"{what} on a value with a dynamic (None) dimension {dims}")
    return dims


def axis_index(fname: str, axis, n: int) -> int:
    """One axis as a non-negative int, with NumPy's range check."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{fname}: an axis must be an integer, got {axis!r}")
    axis = int(axis)
    if not -n <= axis < n:
        raise np.exceptions.AxisError(axis, n)
    return axis % n


def axes_tuple(fname: str, axis, n: int):
    """None, or a tuple of non-negative axes (from an int or a sequence)."""
    if axis is None:
        return None
    if isinstance(axis, (int, np.integer)):
        return (axis_index(fname, axis, n),)
    out = tuple(axis_index(fname, a, n) for a in axis)
    if len(set(out)) != len(out):
        raise ValueError(f"{fname}: repeated axis in {axis}")
    return out


def cast_to(x, dtype):
    """x as `dtype` (no node when it already is)."""
    dtype = np.dtype(dtype)
    return x if dtype_of(x) == dtype else ops.cast(x, dtype)


def accumulate_dtype(dtype) -> np.dtype:
    """The dtype NumPy's sum/prod/cumsum give for `dtype`: small ints widen to 64 bits."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b" or (dtype.kind == "i" and dtype.itemsize < 8):
        return np.dtype("int64")
    if dtype.kind == "u" and dtype.itemsize < 8:
        return np.dtype("uint64")
    return dtype


def as_symbol(x):
    """x as a graph value: a symbol as it is, anything else through an identity reshape."""
    if hasattr(x, "node"):
        return x
    return ops.reshape(x, shape(x))


def moveaxis(x, source: int, destination: int):
    """x with axis `source` moved to `destination` (both non-negative)."""
    order = [i for i in range(ndim(x)) if i != source]
    order.insert(destination, source)
    if order == list(range(ndim(x))):
        return x
    return ops.transpose(x, tuple(order))


def stand_in(x):
    """A one-element array of x's dtype and rank (Python scalars stay weak, as in NumPy)."""
    if is_arraylike(x):
        return np.ones((1,) * ndim(x), dtype_of(x))
    if isinstance(x, (bool, int, float)) or x is None:
        return x
    return np.ones((1,) * np.ndim(x), np.asarray(x).dtype)


def pin_scalars(values) -> list:
    """Python scalars among `values` as 0-d arrays of the dtype NumPy computes them in.

    NumPy 2 treats Python scalars as weak (`float32_array + 2.0` stays float32, a bool
    array compared with 2 compares integers); pinning them here keeps that meaning
    whatever dtype knetflow would give a bare scalar.
    """
    dtypes = [dtype_of(v) for v in values if is_arraylike(v)]
    out = []
    for v in values:
        if isinstance(v, (bool, int, float)) and not isinstance(v, np.generic):
            v = np.asarray(v, np.result_type(*dtypes, v))
        out.append(v)
    return out
