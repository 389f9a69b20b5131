"""Building nodes: the dispatcher behind every op function, and graph leaves.

`apply(op, *inputs, **attrs)` comes here. If any input is a Symbol (or, while
tracing, an object that traces, such as a `kf.Param`), a node is built: the
op's shape rule runs now, so a mismatch is reported at build time with the
user's file:line. Otherwise the op runs at once on the concrete arrays
through the same op implementation, and an array comes back.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from knetflow import rng
from knetflow.devices import annotate, registry
from knetflow.devices.base import is_device_array
from knetflow.errors import ShapeError
from knetflow.graph import trace
from knetflow.graph.node import Node
from knetflow.graph.symbol import Symbol
from knetflow.ops import base
from knetflow.ops.base import Spec, spec_of

# with a trailing separator, so that e.g. `knetflow_extra/` or `numpyro/` stay user code
_PKG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")
_NUMPY_DIR = os.path.join(os.path.dirname(os.path.abspath(np.__file__)), "")
_LIBRARY = {}   # a code object's file name -> whether it is knetflow's, numpy's or frozen


def _is_library(path: str) -> bool:
    known = _LIBRARY.get(path)
    if known is None:
        # absolute first: a package imported through a relative sys.path entry (a script's
        # `sys.path.insert(0, "..")`) has relative file names
        full = os.path.abspath(path)
        known = _LIBRARY[path] = (full.startswith(_PKG_DIR) or full.startswith(_NUMPY_DIR)
                                  or path.startswith("<frozen"))
    return known


def user_line() -> str:
    """`file:line` of the innermost caller outside knetflow and numpy."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not _is_library(path):
            return f"{os.path.basename(path)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def current_device():
    """The device annotation of the innermost `kf.device(...)` block, or None."""
    return annotate.current()


def push_device(name: str) -> None:
    """Annotate symbols built from now on with device `name` (until `pop_device`)."""
    annotate.push(name)


def pop_device() -> None:
    annotate.pop()


def make_node(op: str, inputs, attrs, spec, name=None) -> Symbol:
    return Symbol(Node(op, tuple(inputs), attrs, spec, name=name,
                       device=current_device(), where=user_line()))


# ---- leaves ----


def placeholder(name: str, shape, dtype="float32") -> Symbol:
    """An input fed at run time; `None` in `shape` is a dynamic dimension.

    Example: `x = kf.placeholder("x", (None, 784))`.
    """
    _check_dtype("placeholder", dtype)
    shape = tuple(None if d is None else int(d) for d in shape)
    return make_node("input", (), {"name": name}, Spec(shape, str(np.dtype(dtype))))


def param(name: str, shape=None, init=None, dtype="float32", value=None) -> Symbol:
    """A trainable parameter; its value comes from `value`, else from `init(*shape)`.

    Example: `w = kf.param("w", (784, 10), init=kf.init.xavier)`.
    """
    if value is not None:
        value = np.asarray(value, dtype=dtype if dtype else None)
        if shape is not None and tuple(shape) != value.shape:
            raise ShapeError(f"param {name!r}: shape {tuple(shape)} but value has shape {value.shape}")
        shape = value.shape
    if shape is None:
        raise ShapeError(f"param {name!r} needs a shape or a value")
    _check_dtype("param", dtype)
    spec = Spec(tuple(int(d) for d in shape), str(np.dtype(dtype)))
    return make_node("param", (), {"name": name, "init": init, "value": value}, spec)


def const(value, dtype=None) -> Symbol:
    """A constant in the graph. Python floats become float32 (knetflow's default)."""
    if isinstance(value, float) and not isinstance(value, np.generic) and dtype is None:
        dtype = "float32"
    arr = np.asarray(value, dtype=dtype)
    arr.setflags(write=False)
    return make_node("const", (), {"value": arr}, spec_of(arr))


def _check_dtype(what, dtype):
    if str(np.dtype(dtype)) not in base.DTYPES:
        raise ShapeError(f"{what}: unsupported dtype {dtype!r}; knetflow supports {', '.join(base.DTYPES)}")


# ---- dispatch ----


def _lift(x, like_dtype, tracer):
    """A Symbol for an op input: symbols as they are, the rest as leaves or consts."""
    if isinstance(x, Symbol):
        return x
    if tracer is not None and hasattr(x, "__knetflow_trace__"):
        return x.__knetflow_trace__(tracer)
    if tracer is not None and (isinstance(x, np.ndarray) or is_device_array(x)) and x.ndim:
        # captured arrays are fed at each run, not frozen into the graph
        return tracer.leaf(x, lambda: placeholder(f"t{len(tracer.leaves)}", x.shape, x.dtype))
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return const(x, dtype=_scalar_dtype(x, like_dtype))
    return const(np.asarray(x))


def _scalar_dtype(x, like_dtype):
    """Python scalars take the dtype of the other operands (NumPy 2's weak scalars)."""
    if like_dtype is None:
        return None if not isinstance(x, float) else "float32"
    if isinstance(x, float) and np.dtype(like_dtype).kind not in "fc":
        return "float64"
    if isinstance(x, bool):
        return "bool" if like_dtype == "bool" else like_dtype
    return like_dtype


def _like_dtype(inputs):
    """The dtype Python scalars among `inputs` take: the first float operand's, else the first."""
    found = None
    for x in inputs:
        spec = getattr(x, "spec", None)
        if isinstance(spec, Spec):
            dtype = spec.dtype
        elif spec is None and hasattr(x, "dtype") and hasattr(x, "shape"):
            dtype = str(x.dtype)
        else:  # a multi-output value, or no array at all
            continue
        if np.dtype(dtype).kind == "f":
            return dtype
        found = found or dtype
    return found


def dispatch(op, inputs, attrs):
    tracer = trace.current()
    symbolic = any(isinstance(x, Symbol) or (tracer is not None and hasattr(x, "__knetflow_trace__"))
                   for x in inputs)
    if not symbolic:
        return run_now(op, inputs, attrs)
    like = _like_dtype(inputs)
    syms = [_lift(x, like, tracer) for x in inputs]
    specs = [s.node.spec for s in syms]
    try:
        spec = op.infer(*specs, **attrs)
    except ShapeError as e:
        raise ShapeError(f"{e} (at {user_line()})") from None
    return make_node(op.name, [s.node for s in syms], attrs, spec)


def array_module(arrays):
    """The array module the op runs with: numpy, or the device kind's of the first device
    array (cupy for a GPU's, the device's strict module for a sim device's)."""
    return registry.array_module(arrays)


def _concrete(x, like):
    value = getattr(x, "value", None) if hasattr(x, "__knetflow_trace__") else None
    if value is not None:
        return value
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return np.asarray(x, dtype=_scalar_dtype(x, like))
    if isinstance(x, np.ndarray) or is_device_array(x) or hasattr(x, "__array_namespace__"):
        return x
    return np.asarray(x)


def run_now(op, inputs, attrs):
    """Run one op on concrete arrays at once (Knet's functions on arrays)."""
    like = _like_dtype(inputs)
    arrays = [_concrete(x, like) for x in inputs]
    try:
        op.infer(*[spec_of(a) for a in arrays], **attrs)
    except ShapeError as e:
        raise ShapeError(f"{e} (at {user_line()})") from None
    xp = array_module(arrays)
    if op.random:
        return op.forward(xp, *arrays, rng=rng.generator(), **attrs)
    if xp is not np:  # on CuPy, eager calls of the heavy ops use cuDNN as plans do
        forward, _ = base.kernel(op, xp, attrs, exact=False)
        return forward(xp, *arrays, **attrs)
    return op.forward(xp, *arrays, **attrs)


base.set_dispatcher(dispatch)
