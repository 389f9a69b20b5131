"""NumPy's protocols on knetflow values: which NumPy calls build nodes, and how.

`Symbol` and `kf.Param` (through their shared base `Operators`) implement
`__array_ufunc__`, `__array_function__` and the ndarray methods by calling
here. A call builds graph nodes when one of its arguments is traced (a Symbol,
or a Param while `kf.diff`/`kf.grad` traces): then the NumPy function must be
in the table (numpy_table.py, filled by numpy_ufuncs/math/shape/linalg/einsum),
which gives it NumPy's meaning, or the call raises `kf.TracingError` naming the
function. A Param outside a trace is just its array: NumPy runs on `.value`.

    >>> import knetflow as kf, numpy as np
    >>> x = kf.placeholder("x", (None, 3))
    >>> np.linalg.norm(x, axis=1).shape
    (None,)
"""

from __future__ import annotations

import numpy as np

from knetflow.graph import (  # noqa: F401  (these fill the table)
    numpy_arrange, numpy_einsum, numpy_linalg, numpy_math, numpy_shape, numpy_ufuncs, trace)
from knetflow.graph.node import Node
from knetflow.graph.numpy_table import (
    DOCS, FUNCTIONS, as_symbol, bind, cast_to, refuse, unsupported_function)
from knetflow.errors import TracingError

_NESTING = 4  # how deep lists and tuples of arguments are searched for traced values


def is_traced(x) -> bool:
    """Whether x stands for a graph value now: a Symbol, or a Param while tracing."""
    if isinstance(getattr(x, "node", None), Node):
        return True
    return hasattr(x, "__knetflow_trace__") and trace.current() is not None


def _any_traced(values, depth=0) -> bool:
    for v in values:
        if isinstance(v, (list, tuple)) and depth < _NESTING:
            if _any_traced(v, depth + 1):
                return True
        elif is_traced(v):
            return True
    return False


def _concrete(x, depth=0):
    """x with every Param (outside a trace) replaced by its array, in lists and tuples too."""
    if isinstance(x, (list, tuple)) and depth < _NESTING:
        return type(x)(_concrete(v, depth + 1) for v in x)
    if hasattr(x, "__knetflow_trace__") and hasattr(x, "value"):
        return x.value
    return x


def _name(func) -> str:
    module = getattr(func, "__module__", None) or "numpy"
    prefix = module.replace("numpy", "np", 1) if module.startswith("numpy") else module
    return f"{prefix}.{func.__name__}"


# ---- the protocols ----


def array_function(func, args: tuple, kwargs: dict):
    """`func(*args, **kwargs)` for a NumPy function that met a knetflow value."""
    if not _any_traced(args) and not _any_traced(kwargs.values()):
        return func(*_concrete(args), **{k: _concrete(v) for k, v in kwargs.items()})
    entry = FUNCTIONS.get(func)
    if entry is None:
        unsupported_function(_name(func))
    positional, keywords = bind(entry, args, kwargs)
    return entry.adapter(*positional, **keywords)


def array_ufunc(ufunc, method: str, inputs: tuple, kwargs: dict):
    """`ufunc.method(*inputs, **kwargs)` for a NumPy ufunc that met a knetflow value."""
    if not _any_traced(inputs) and not _any_traced(kwargs.get("out", ())):
        return getattr(ufunc, method)(*_concrete(inputs),
                                      **{k: _concrete(v) for k, v in kwargs.items()})
    if method == "__call__":
        return numpy_ufuncs.call(ufunc, inputs, kwargs)
    return numpy_ufuncs.method(ufunc, method, inputs, kwargs)


# ---- ndarray methods ----

# method -> the NumPy function with the same parameters after the array
_SAME_AS_FUNCTION = {
    "sum": np.sum, "prod": np.prod, "mean": np.mean, "max": np.max, "min": np.min,
    "var": np.var, "std": np.std, "any": np.any, "all": np.all, "argmax": np.argmax,
    "argmin": np.argmin, "ravel": np.ravel, "squeeze": np.squeeze, "swapaxes": np.swapaxes,
    "clip": np.clip, "round": np.round, "dot": np.dot, "trace": np.trace,
    "diagonal": np.diagonal, "take": np.take, "repeat": np.repeat, "cumsum": np.cumsum,
}

def supported_methods() -> list:
    """The ndarray methods and properties knetflow values have (for the docs and tests)."""
    return sorted(set(_SAME_AS_FUNCTION) | {"reshape", "transpose", "flatten", "astype",
                                            "conj", "conjugate", "T", "mT", "real", "imag",
                                            "shape", "ndim", "size", "dtype"})


def method(obj, name: str, args: tuple, kwargs: dict):
    """`obj.name(*args, **kwargs)` with ndarray's meaning."""
    if not is_traced(obj) and hasattr(obj, "value"):
        return getattr(obj.value, name)(*args, **kwargs)
    if name in _SAME_AS_FUNCTION:
        return array_function(_SAME_AS_FUNCTION[name], (obj,) + tuple(args), kwargs)
    if name == "reshape":
        shape, order = _varargs(args), kwargs.pop("order", "C")
        return array_function(np.reshape, (obj, shape), dict(kwargs, order=order))
    if name == "transpose":
        axes = _varargs(args) if args else None
        return array_function(np.transpose, (obj, axes), kwargs)
    if name == "flatten":
        return array_function(np.ravel, (obj,) + tuple(args), kwargs)
    if name == "astype":
        return _astype(obj, *args, **kwargs)
    if name in ("conj", "conjugate"):
        return as_symbol(obj)
    return refused_method(obj, name)


def setitem(obj, index, value) -> None:
    """`obj[index] = value`: into a Param's array outside a trace; refused on graph values."""
    if not is_traced(obj) and hasattr(obj, "value"):
        obj.value[index] = _concrete(value)
        return
    raise TracingError(
        f"item assignment into symbolic {obj!r}: graph values cannot change in place; "
        "build a new value with kf.where(mask, new, x) or kf.index_add(x, index, update)")


def _varargs(args):
    """`x.reshape(2, 3)` and `x.reshape((2, 3))` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return args[0]
    return tuple(args)


def _astype(obj, dtype, order="K", casting="unsafe", subok=True, copy=True):
    if order not in ("K", "A", "C"):
        refuse("ndarray.astype", f"order={order!r}")
    if casting != "unsafe":
        refuse("ndarray.astype", f"casting={casting!r} (casts are unsafe, as by default)")
    return as_symbol(cast_to(obj, dtype))


def refused_method(obj, name: str):
    """The TracingError for an ndarray method a traced value cannot have."""
    raise TracingError(
        f".{name}() of symbolic {obj!r}: its value is not known while the graph is built; "
        f"use knetflow ops (see {DOCS} for the ndarray methods traced values have), or run "
        "the graph and call it on the result")
