"""Symbol: the user-facing handle on a Node, with NumPy-like operators.

Arithmetic, comparisons, `@`, indexing, `.T`, ndarray methods (`.reshape`,
`.sum`, `.var`, `.clip`, `.argmax`, ...) and NumPy's protocols (`np.exp(sym)`,
`np.linalg.norm(sym)`) all build nodes through the op functions, with NumPy's
meaning: the NumPy functions knetflow accepts are an explicit table
(graph/numpy_api.py, docs/NUMPY.md), and anything else raises a TracingError
naming the function. Python control flow on a symbol cannot work (its value is
not known while the graph is built), so `bool`, `float`, `int`, `.tolist()`,
`.item()` raise a TracingError that says what to use instead.
"""

from __future__ import annotations

import numpy as np

from knetflow.errors import TracingError
from knetflow.ops.base import fmt


class Operators:
    """NumPy-style operators and ndarray methods that build ops; shared by Symbol and kf.Param.

    On a Param outside a trace, the methods and NumPy's functions act on its array.
    """

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

    def __iter__(self):  # rows, as an ndarray's (not Python's fallback of __getitem__ to an error)
        for i in range(len(self)):
            yield self[i]

    def __setitem__(self, index, value): _api().setitem(self, index, value)

    @property
    def T(self): return _method(self, "transpose", (), {})

    @property
    def mT(self): return np.matrix_transpose(self)

    @property
    def ndim(self) -> int: return len(self.shape)

    @property
    def size(self) -> int:
        if None in self.shape:
            raise TracingError(f"size of {self!r}: it has a dynamic (None) dimension; use "
                               "kf.count(x) for the element count as a graph value")
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def real(self): return np.real(self)

    @property
    def imag(self): return np.imag(self)

    # -- ndarray methods with NumPy's meaning (graph/numpy_api.py) --
    def reshape(self, *shape, **kw): return _method(self, "reshape", shape, kw)
    def transpose(self, *axes, **kw): return _method(self, "transpose", axes, kw)
    def ravel(self, *args, **kw): return _method(self, "ravel", args, kw)
    def flatten(self, *args, **kw): return _method(self, "flatten", args, kw)
    def squeeze(self, *args, **kw): return _method(self, "squeeze", args, kw)
    def swapaxes(self, *args, **kw): return _method(self, "swapaxes", args, kw)
    def astype(self, *args, **kw): return _method(self, "astype", args, kw)
    def clip(self, *args, **kw): return _method(self, "clip", args, kw)
    def round(self, *args, **kw): return _method(self, "round", args, kw)
    def conj(self): return _method(self, "conj", (), {})
    def conjugate(self): return _method(self, "conjugate", (), {})
    def repeat(self, *args, **kw): return _method(self, "repeat", args, kw)
    def take(self, *args, **kw): return _method(self, "take", args, kw)
    def diagonal(self, *args, **kw): return _method(self, "diagonal", args, kw)
    def dot(self, *args, **kw): return _method(self, "dot", args, kw)
    def trace(self, *args, **kw): return _method(self, "trace", args, kw)
    def cumsum(self, *args, **kw): return _method(self, "cumsum", args, kw)

    # reductions
    def sum(self, *args, **kw): return _method(self, "sum", args, kw)
    def mean(self, *args, **kw): return _method(self, "mean", args, kw)
    def max(self, *args, **kw): return _method(self, "max", args, kw)
    def min(self, *args, **kw): return _method(self, "min", args, kw)
    def prod(self, *args, **kw): return _method(self, "prod", args, kw)
    def var(self, *args, **kw): return _method(self, "var", args, kw)
    def std(self, *args, **kw): return _method(self, "std", args, kw)
    def any(self, *args, **kw): return _method(self, "any", args, kw)
    def all(self, *args, **kw): return _method(self, "all", args, kw)
    def argmax(self, *args, **kw): return _method(self, "argmax", args, kw)
    def argmin(self, *args, **kw): return _method(self, "argmin", args, kw)

    # need a concrete value: refused while traced, the array's own on a Param outside a trace
    def tolist(self, *args, **kw): return _method(self, "tolist", args, kw)
    def item(self, *args, **kw): return _method(self, "item", args, kw)
    def tobytes(self, *args, **kw): return _method(self, "tobytes", args, kw)
    def fill(self, *args, **kw): return _method(self, "fill", args, kw)
    def sort(self, *args, **kw): return _method(self, "sort", args, kw)
    def argsort(self, *args, **kw): return _method(self, "argsort", args, kw)
    def nonzero(self, *args, **kw): return _method(self, "nonzero", args, kw)
    def cumprod(self, *args, **kw): return _method(self, "cumprod", args, kw)
    def view(self, *args, **kw): return _method(self, "view", args, kw)
    def resize(self, *args, **kw): return _method(self, "resize", args, kw)

    # -- NumPy protocols: NumPy's meaning, or a TracingError naming the function --
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _api().array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _api().array_function(func, args, kwargs)


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
        spec = self.node.spec
        return f"Symbol({self.node.op} {spec.dtype}{fmt(spec)} at {self.node.where})"

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

    def __array__(self, *args, **kwargs):
        raise TracingError(
            f"cannot convert symbolic {self!r} to a NumPy array; run the graph "
            "(kf.compile(...).run(feed)) to get its value")


def _ops():
    import knetflow.ops as ops

    return ops


def _api():
    from knetflow.graph import numpy_api

    return numpy_api


def _method(obj, name, args, kwargs):
    return _api().method(obj, name, args, kwargs)
