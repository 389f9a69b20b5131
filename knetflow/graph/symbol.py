"""Symbol: the user-facing handle on a Node, with NumPy-like operators.

Arithmetic, comparisons, `@`, indexing, `.T`, `.reshape`, reductions and
NumPy's protocols (`np.exp(sym)`, `np.sum(sym)`) all build nodes through the
op functions. Python control flow on a symbol cannot work (its value is not
known while the graph is built), so `bool`, `float`, `int` raise a
TracingError that says what to use instead.
"""

from __future__ import annotations

import numpy as np

from knetflow.errors import TracingError
from knetflow.ops.base import fmt


class Operators:
    """NumPy-style operators that build ops; shared by Symbol and kf.Param."""

    __slots__ = ()

    # -- arithmetic --
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().sub(self, o)
    def __rsub__(self, o): return _ops().sub(o, self)
    def __mul__(self, o): return _ops().mul(self, o)
    def __rmul__(self, o): return _ops().mul(o, self)
    def __truediv__(self, o): return _ops().div(self, o)
    def __rtruediv__(self, o): return _ops().div(o, self)
    def __pow__(self, o): return _ops().pow(self, o)
    def __rpow__(self, o): return _ops().pow(o, self)
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __neg__(self): return _ops().neg(self)
    def __pos__(self): return self
    def __abs__(self): return _ops().abs(self)

    # -- comparisons build nodes (identity hashing is kept above) --
    def __lt__(self, o): return _ops().lt(self, o)
    def __le__(self, o): return _ops().le(self, o)
    def __gt__(self, o): return _ops().gt(self, o)
    def __ge__(self, o): return _ops().ge(self, o)
    def __eq__(self, o): return _ops().eq(self, o)  # type: ignore[override]
    def __ne__(self, o): return _ops().ne(self, o)  # type: ignore[override]

    # -- shape --
    def __getitem__(self, index): return _ops().getitem(self, index)

    @property
    def T(self):
        return _ops().transpose(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _ops().reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return _ops().transpose(self, axes or None)

    def astype(self, dtype):
        return _ops().cast(self, dtype)

    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops().max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _ops().min(self, axis, keepdims)
    def prod(self, axis=None, keepdims=False): return _ops().prod(self, axis, keepdims)


class Symbol(Operators):
    """A symbolic value: one output of a graph node.

    Example:
        >>> import knetflow as kf
        >>> x = kf.placeholder("x", (None, 3))
        >>> y = (x * 2 + 1).sum(axis=1)
        >>> y.shape
        (None,)
    """

    __slots__ = ("node",)
    __array_priority__ = 1000  # make ndarray <op> Symbol defer to Symbol

    def __init__(self, node):
        self.node = node

    # -- what it is --
    @property
    def spec(self):
        return self.node.spec

    @property
    def shape(self) -> tuple:
        return self.node.spec.shape

    @property
    def dtype(self):
        return np.dtype(self.node.spec.dtype)

    @property
    def ndim(self) -> int:
        return self.node.spec.ndim

    @property
    def name(self):
        return self.node.label()

    def __repr__(self) -> str:
        return f"Symbol({self.node.op} {self.node.spec.dtype}{fmt(self.node.spec)} at {self.node.where})"

    __hash__ = object.__hash__

    # -- Python needs concrete values for these --
    def __bool__(self):
        raise TracingError(
            f"the truth value of symbolic {self!r} is not known while the graph is built; "
            "use kf.where(cond, a, b) instead of `if`, or run the graph and test the result")

    def _concrete(self, what):
        raise TracingError(
            f"{what}() of symbolic {self!r}: its value is not known while the graph is built; "
            "keep it symbolic (use knetflow ops), or run the graph and convert the result")

    def __float__(self): self._concrete("float")
    def __int__(self): self._concrete("int")
    def __index__(self): self._concrete("index")
    def __complex__(self): self._concrete("complex")

    def __len__(self):
        if not self.shape or self.shape[0] is None:
            raise TracingError(f"len() of {self!r}: its first dimension is not static")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __array__(self, *args, **kwargs):
        raise TracingError(
            f"cannot convert symbolic {self!r} to a NumPy array; run the graph "
            "(kf.compile(...).run(feed)) to get its value")

    # -- NumPy protocols --
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = _ufunc_table().get(ufunc.__name__)
        if method != "__call__" or fn is None or kwargs:
            return NotImplemented
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        fn = getattr(_ops(), _ARRAY_FUNCTIONS.get(func.__name__, func.__name__), None)
        if fn is None:
            return NotImplemented
        return fn(*args, **kwargs)


# numpy function name -> knetflow op function name, where they differ
_ARRAY_FUNCTIONS = {
    "concatenate": "concat", "amax": "max", "amin": "min", "maximum": "maximum",
    "permute_dims": "transpose", "around": "round", "hstack": "hcat", "vstack": "vcat",
}


def _ops():
    import knetflow.ops as ops

    return ops


_UFUNCS: dict = {}


def _ufunc_table() -> dict:
    """numpy ufunc name -> knetflow op function (from the registry's `ufunc` names)."""
    if not _UFUNCS:
        ops = _ops()
        from knetflow.ops.base import REGISTRY

        for op in REGISTRY.values():
            if op.ufunc and hasattr(ops, op.name):
                _UFUNCS[op.ufunc] = getattr(ops, op.name)
        for name in ("add", "subtract", "multiply", "true_divide", "divide", "power", "matmul",
                     "negative", "maximum", "minimum", "less", "less_equal", "greater",
                     "greater_equal", "equal", "not_equal"):
            alias = {"subtract": "sub", "multiply": "mul", "true_divide": "div", "divide": "div",
                     "power": "pow", "negative": "neg", "less": "lt", "less_equal": "le",
                     "greater": "gt", "greater_equal": "ge", "equal": "eq", "not_equal": "ne"}
            _UFUNCS.setdefault(name, getattr(ops, alias.get(name, name)))
    return _UFUNCS
