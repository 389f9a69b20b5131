"""How an op is declared, and the registry of ops.

An op is a stateless class holding everything about it: its attributes (plain
keyword values that msgpack can store), its shape/dtype rule `infer`, its
`forward` written against an array module `xp` (numpy or cupy), and its `grad`
written with knetflow ops, so that a backward graph is an ordinary graph.

    @register
    class Exp(Op):
        name = "exp"
        ufunc = "exp"              # forward is xp.exp(x, out=out)
        saves = ("out",)
        def infer(x):
            return x.require_float("exp")
        def grad(g, out, x):
            return (g * out,)

Ops are used through `apply(op, *inputs, **attrs)`. This module knows nothing
of graphs: the graph layer installs a dispatcher (see `set_dispatcher`) that
builds a node when an input is symbolic; otherwise the op runs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from knetflow.devices import registry
from knetflow.errors import ShapeError

FLOAT_DTYPES = ("float16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)


@dataclass(frozen=True)
class Spec:
    """Shape and dtype of a value; `None` in the shape is a dynamic dimension."""

    shape: tuple
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_static(self) -> bool:
        return None not in self.shape

    @property
    def size(self):
        """Number of elements, or None when a dimension is dynamic."""
        if not self.is_static:
            return None
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        size = self.size
        return None if size is None else size * np.dtype(self.dtype).itemsize

    def require_float(self, opname: str) -> "Spec":
        if not self.is_float:
            raise ShapeError(f"{opname} needs a floating-point input, got {self.dtype} {fmt(self)}")
        return self

    def with_shape(self, shape) -> "Spec":
        return Spec(tuple(shape), self.dtype)

    def with_dtype(self, dtype) -> "Spec":
        return Spec(self.shape, str(np.dtype(dtype)))

    def __repr__(self) -> str:
        return f"{self.dtype}{fmt(self)}"


class TupleSpec(tuple):
    """The Specs of a multi-output op's outputs; `get(x, i)` nodes extract each one.

    Gradient rules of multi-output ops receive a tuple of output gradients
    (None where an output is unused) and a tuple of output symbols.
    """

    is_float = False
    dtype = "tuple"
    shape = ()
    ndim = 0
    size = None

    @property
    def is_static(self) -> bool:
        return all(s.is_static for s in self)

    @property
    def nbytes(self):
        sizes = [s.nbytes for s in self]
        return None if None in sizes else sum(sizes)

    def __repr__(self) -> str:
        return "(" + ", ".join(repr(s) for s in self) + ")"


def fmt(spec: Spec) -> str:
    """Shape as the user reads it, `?` for dynamic dimensions: (?, 784)."""
    if isinstance(spec, TupleSpec):
        return "(" + ", ".join(fmt(s) for s in spec) + ")"
    dims = ["?" if d is None else str(d) for d in spec.shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def spec_of(value) -> Spec:
    """The Spec of a concrete array-like value."""
    return Spec(tuple(int(d) for d in value.shape), str(value.dtype))


class Op:
    """Base class of ops. Subclasses are used as classes, never instantiated."""

    name: str = ""
    #: deterministic and free of side effects: CSE and constant folding may touch it
    pure = True
    #: out[i] depends only on the inputs at i after broadcasting: fusable
    elementwise = False
    #: forward may return a view of input 0 (never given out=)
    view = False
    #: forward accepts `out=` (a planned buffer of the output's spec)
    out_arg = False
    #: a multi-output op whose forward accepts `out=` a tuple with one entry per output:
    #: a planned buffer of that output's spec, which it must fill, or None, for which it
    #: returns a new array; it never reads a buffer before writing it
    outs_arg = False
    #: name of the xp ufunc that is the forward (out_arg implied)
    ufunc: str | None = None
    #: forward may be given as `out=` the buffer of a dying input of the same spec (one
    #: pass reading each element before writing it); ufunc ops always may
    inplace = False
    #: what grad reads ("out", or input indices); the memory planner keeps these
    saves: tuple = ()
    #: indices of inputs whose values forward never reads, only their shape and dtype
    #: (broadcast_like's `like`): constant folding treats such an input of known shape
    #: as known
    shape_only: tuple = ()
    #: indices of inputs that never receive a gradient (labels, indices)
    nondiff: tuple = ()
    #: forward takes `rng=` (a numpy/cupy Generator owned by the plan)
    random = False
    #: optional `bind(xp, attrs, in_specs, out_spec)`: a kernel specialized when a plan is
    #: compiled (shapes are concrete then), called as `fn(*inputs, out=...)` in place of
    #: forward with its attributes; None from it (or no bind) means forward
    bind = None

    def infer(*specs: Spec, **attrs) -> Spec:  # type: ignore[misc]
        raise NotImplementedError

    def forward(xp, *args, **attrs):  # type: ignore[misc]
        raise NotImplementedError

    def grad(g, out, *inputs, **attrs):  # type: ignore[misc]
        return None


def _ufunc_forward(ufunc_name: str) -> Callable:
    def forward(xp, *args, out=None):
        return getattr(xp, ufunc_name)(*args, out=out)

    return forward


REGISTRY: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add an op to the registry under `cls.name`."""
    if not cls.name:
        raise ValueError(f"op class {cls.__name__} has no name")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"op {cls.name!r} is registered twice")
    if cls.ufunc is not None:
        cls.out_arg = True
        if "forward" not in cls.__dict__:
            cls.forward = staticmethod(_ufunc_forward(cls.ufunc))
    for method in ("infer", "forward", "grad"):
        if method in cls.__dict__ and not isinstance(cls.__dict__[method], staticmethod):
            setattr(cls, method, staticmethod(cls.__dict__[method]))
    REGISTRY[cls.name] = cls
    return cls


def get_op(name: str) -> type[Op]:
    """The op class registered as `name`; a clear error if there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; knetflow has no op of that name") from None


def kernel(op: type[Op], xp, attrs: dict, exact=True) -> tuple[Callable, bool]:
    """A callable running `op` on arrays with `attrs` bound, and whether it takes xp.

    The plan binds these once at compile time so the hot loop makes one call per op.
    `exact` says the inputs' dtypes give the output's dtype under the bare ufunc;
    otherwise the op's own forward (which may convert) runs. The device kind of
    `xp` may have faster kernels, registered for it from this floor (on a GPU:
    cuDNN's for convolution, pooling and batchnorm where cuDNN supports their
    attributes, `knetflow.ops.cudnn`; KNETFLOW_CUDNN=0 turns it off).
    """
    if op.ufunc is not None and not attrs and exact:
        return getattr(xp, op.ufunc), False
    fast = registry.fast_kernel(op.name, xp, attrs)
    if fast is not None:
        return fast, True
    return op.forward, True


# ---- dispatch: symbolic values build nodes, concrete values run at once ----

_dispatcher: Callable[..., Any] | None = None


def set_dispatcher(fn: Callable[..., Any]) -> None:
    """Installed by the graph layer: fn(op, inputs, attrs) -> result."""
    global _dispatcher
    _dispatcher = fn


def apply(op: type[Op], *inputs, **attrs):
    """Apply `op` to inputs: a node when any input is symbolic, else an array now."""
    return _dispatcher(op, inputs, attrs)


def apply_multi(op: type[Op], *inputs, **attrs) -> tuple:
    """Apply a multi-output op; returns one value (symbol or array) per output."""
    result = _dispatcher(op, inputs, attrs)
    if isinstance(result, tuple):  # ran at once: the arrays themselves
        return result
    return tuple(_dispatcher(Get, (result,), {"index": i}) for i in range(len(result.spec)))


class Get(Op):  # registered below, once `register` exists
    """Output `index` of a multi-output op (gradients handled by autodiff)."""
    name, view = "get", True

    def infer(t, index=0):
        if not isinstance(t, TupleSpec):
            fail("get", f"input is a single value {t!r}, not the outputs of a multi-output op")
        return t[index]

    def forward(xp, t, index=0):
        return t[index]


# ---- helpers for shape rules ----


def fail(opname: str, message: str):
    """Raise the ShapeError of op `opname` (the dispatcher adds the user's line)."""
    raise ShapeError(f"{opname}: {message}")


def broadcast_shapes(opname: str, *specs: Spec) -> tuple:
    """NumPy broadcasting of shapes with dynamic dims; a mismatch names op and shapes."""
    ndim = max(s.ndim for s in specs)
    out = []
    for axis in range(ndim):
        dims = [s.shape[axis - ndim + s.ndim] for s in specs if axis - ndim + s.ndim >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            shapes = " and ".join(fmt(s) for s in specs)
            fail(opname, f"shapes {shapes} do not broadcast")
        if known:
            out.append(known.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def result_dtype(*specs: Spec) -> str:
    """NumPy's promotion of the dtypes of specs."""
    return str(np.result_type(*[np.dtype(s.dtype) for s in specs]))


def float_dtype(spec: Spec) -> str:
    """The float dtype a math function gives for `spec` (ints and bools become float64)."""
    return spec.dtype if spec.is_float else "float64"


def accumulate_dtype(dtype: str) -> str:
    """The dtype NumPy's cumsum and trace give for `dtype`: bool and small ints widen to 64 bits."""
    return str(np.cumsum(np.zeros(1, dtype=dtype)).dtype)


def norm_axis(opname: str, axis, ndim: int):
    """Canonical axis attribute: None or a sorted tuple of non-negative ints."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < max(ndim, 1):
            fail(opname, f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        fail(opname, f"repeated axis in {axis}")
    return tuple(sorted(out))


register(Get)
