"""`kf.Param`: a value to differentiate with respect to (Knet `Param`).

It lives in the graph layer so that anything that builds graphs (layers such
as `kf.RNN`, the tracer) can hold and trace Params without importing the
training front end. Inside a trace a Param becomes a leaf symbol fed from its
current `.value` at every call (see graph/trace.py and graph/capture.py).
"""

from __future__ import annotations

import numpy as np

from knetflow.devices.base import is_device_array
from knetflow.errors import TracingError
from knetflow.graph import trace
from knetflow.graph.build import placeholder
from knetflow.graph.capture import float_dtype
from knetflow.graph.symbol import Operators

__all__ = ["Param"]


class Param(Operators):
    """A value to differentiate with respect to (Knet `Param`), with its optimizer in `.opt`.

    Example:
        >>> import knetflow as kf
        >>> x = kf.Param([1., 2., 3.])
        >>> kf.grad(kf.diff(lambda: kf.sum(x * x)), x)
        array([2., 4., 6.])
    """

    __slots__ = ("value", "opt", "name")
    __hash__ = object.__hash__
    __array_priority__ = 1000

    def __init__(self, value, opt=None, name=None):
        if not is_device_array(value):  # a GPU's (or sim device's) array stays there
            value = np.asarray(value)
        if value.dtype.kind in "iub":
            value = value.astype("float64")
        self.value = value
        self.opt = opt
        self.name = name

    def __knetflow_trace__(self, tracer):
        return tracer.leaf(self, lambda: placeholder(f"t{len(tracer.leaves)}", self.value.shape,
                                                     float_dtype(self.value.dtype)))

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        return self.value.size

    def __array__(self, dtype=None, copy=None):
        if trace.current() is not None:  # the value would be frozen into the trace
            raise TracingError(
                f"np.asarray of a kf.Param ({self.shape} {self.dtype}) inside a function being "
                "differentiated would freeze its current value and lose its gradient; use "
                "knetflow ops or NumPy functions on the Param itself (np.sum(p), p @ x)")
        return self.value if dtype is None else self.value.astype(dtype)

    def __len__(self):
        return len(self.value)

    def __repr__(self) -> str:
        return f"Param({self.value!r})"
