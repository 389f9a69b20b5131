"""NumPy ufuncs on symbols: `np.exp(x)`, `np.add(a, b)`, `np.add.reduce(x)`, ...

Each supported ufunc maps to a knetflow op (or a short composition of ops)
with NumPy's meaning. The result dtype is NumPy's own: it is found by running
the ufunc on one-element stand-ins of the inputs' dtypes, the inputs are cast
to it first where it is a number type (so `np.exp` of int8 gives float16, and
`np.divide` of two ints gives float64, as in NumPy), and Python scalars stay
weak as in NumPy 2. Keyword arguments other than `dtype=` are accepted only
at NumPy's defaults (`out=None`, `where=True`, ...). Ufunc methods: `reduce`
of add/multiply/maximum/minimum/logical_and/logical_or (as np.sum, np.prod,
np.max, np.min, np.all, np.any with axis=0 by default), `accumulate` of add
(as np.cumsum), and `outer` of every binary ufunc here.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

import knetflow.ops as ops
from knetflow.graph.numpy_table import (
    FUNCTIONS, as_symbol, axis_index, bind, cast_to, dtype_of, is_arraylike, ndim, pin_scalars,
    refuse, stand_in, unsupported_function)
from knetflow.ops.base import DTYPES


@dataclass(frozen=True)
class Ufunc:
    """A supported ufunc: the NumPy object and the function building it on its inputs."""

    ufunc: np.ufunc
    build: Callable
    keywords: tuple = ()   # keyword arguments passed on to `build` (vecdot's axis)

    @property
    def name(self) -> str:
        return f"np.{self.ufunc.__name__}"


def _nonzero(x):
    return ops.ne(x, 0)


def _logaddexp(a, b, exp=ops.exp, log=ops.log):
    # m's own derivative cancels in m + log(exp(a-m) + exp(b-m)), so ties get 1/2 each
    m = ops.maximum(a, b)
    return m + log(exp(a - m) + exp(b - m))


def _logaddexp2(a, b):
    return _logaddexp(a, b, exp=ops.exp2, log=ops.log2)


def _isnan(x):
    return ops.ne(x, x)  # NaN is the one value unequal to itself


def _isfinite(x):
    return ops.eq(x - x, 0)  # inf - inf and nan - nan are nan; finite - finite is 0


def _isinf(x):
    return ops.minimum(ops.eq(x, x), ops.ne(x - x, 0))


def _vecdot(a, b, axis=-1):
    a = ops.transpose(a, _to_last(axis_index("np.vecdot", axis, ndim(a)), ndim(a)))
    b = ops.transpose(b, _to_last(axis_index("np.vecdot", axis, ndim(b)), ndim(b)))
    return ops.sum(a * b, axis=-1)


def _to_last(axis: int, n: int) -> tuple:
    return tuple(i for i in range(n) if i != axis) + (axis,)


_DEG = 180.0 / math.pi

_TABLE = [
    # exponentials, logarithms, powers
    (np.exp, ops.exp), (np.expm1, ops.expm1), (np.exp2, ops.exp2), (np.log, ops.log),
    (np.log1p, ops.log1p), (np.log2, ops.log2), (np.log10, ops.log10), (np.sqrt, ops.sqrt),
    (np.cbrt, ops.cbrt), (np.square, ops.square), (np.reciprocal, ops.invx),
    (np.logaddexp, _logaddexp), (np.logaddexp2, _logaddexp2),
    # trigonometric and hyperbolic
    (np.sin, ops.sin), (np.cos, ops.cos), (np.tan, ops.tan), (np.arcsin, ops.asin),
    (np.arccos, ops.acos), (np.arctan, ops.atan), (np.sinh, ops.sinh), (np.cosh, ops.cosh),
    (np.tanh, ops.tanh), (np.arcsinh, ops.asinh), (np.arccosh, ops.acosh),
    (np.arctanh, ops.atanh),
    (np.deg2rad, lambda x: x * (1 / _DEG)), (np.rad2deg, lambda x: x * _DEG),
    (np.radians, lambda x: x * (1 / _DEG)), (np.degrees, lambda x: x * _DEG),
    # sign, rounding, identity on real numbers
    (np.absolute, ops.abs), (np.fabs, ops.abs), (np.negative, ops.neg), (np.positive, as_symbol),
    (np.sign, ops.sign), (np.floor, ops.floor), (np.ceil, ops.ceil), (np.trunc, ops.trunc),
    (np.rint, ops.round), (np.conjugate, as_symbol),
    # arithmetic
    (np.add, ops.add), (np.subtract, ops.sub), (np.multiply, ops.mul), (np.divide, ops.div),
    (np.power, ops.pow), (np.float_power, ops.pow), (np.maximum, ops.maximum),
    (np.minimum, ops.minimum),
    # comparisons and logic (bool results, no gradient)
    (np.less, ops.lt), (np.less_equal, ops.le), (np.greater, ops.gt), (np.greater_equal, ops.ge),
    (np.equal, ops.eq), (np.not_equal, ops.ne),
    (np.logical_not, lambda x: ops.eq(_nonzero(x), False)),
    (np.logical_and, lambda a, b: ops.minimum(_nonzero(a), _nonzero(b))),
    (np.logical_or, lambda a, b: ops.maximum(_nonzero(a), _nonzero(b))),
    (np.logical_xor, lambda a, b: ops.ne(_nonzero(a), _nonzero(b))),
    (np.isnan, _isnan), (np.isfinite, _isfinite), (np.isinf, _isinf),
    # generalized ufuncs
    (np.matmul, ops.matmul),
]

UFUNCS: dict = {u: Ufunc(u, build) for u, build in _TABLE}
if hasattr(np, "vecdot"):
    UFUNCS[np.vecdot] = Ufunc(np.vecdot, _vecdot, ("axis",))

_DEFAULTS = {"where": True, "casting": "same_kind", "order": "K", "subok": True,
             "signature": None}


# ---- calls ----


def call(ufunc: np.ufunc, inputs: tuple, kwargs: dict):
    """ufunc(*inputs, **kwargs) on symbols, with NumPy's meaning and result dtype."""
    entry = UFUNCS.get(ufunc)
    if entry is None:
        unsupported_function(f"np.{ufunc.__name__}")
    extra = _keywords(entry, kwargs)
    dtype = extra.pop("dtype", None)
    expected = _result_dtype(entry, inputs, dtype)
    if expected.kind != "b":
        inputs = _computed_in(inputs, expected)
    inputs = pin_scalars(inputs)
    return cast_to(entry.build(*inputs, **extra), expected)


def _computed_in(inputs, expected: np.dtype) -> list:
    """Inputs cast where knetflow's promotion would not reach NumPy's dtype `expected`.

    Inputs of another kind (ints into a float result, bools into ints) are cast;
    when no input has `expected` itself (float_power of float32s), all are.
    """
    arrays = [x for x in inputs if is_arraylike(x)]
    every = all(dtype_of(x) != expected for x in arrays)
    return [cast_to(x, expected) if is_arraylike(x) and (every or dtype_of(x).kind != expected.kind)
            else x for x in inputs]


def _keywords(entry: Ufunc, kwargs: dict) -> dict:
    """The keyword arguments `build` takes (and dtype); refuses non-default others."""
    extra = {}
    for key, value in kwargs.items():
        if key == "dtype" or key in entry.keywords:
            if value is not None:
                extra[key] = value
        elif key == "out":
            if any(o is not None for o in value):
                refuse(entry.name, "out= (a symbolic result cannot be written into an array)")
        elif key not in _DEFAULTS or not _same(value, _DEFAULTS[key]):
            allowed = ", ".join(("dtype",) + entry.keywords)
            refuse(entry.name, f"the argument {key}={value!r} (knetflow takes: {allowed}; "
                               "out only as None)")
    return extra


def _same(value, default) -> bool:
    return value is default or (isinstance(value, (str, bool)) and value == default)


def _result_dtype(entry: Ufunc, inputs, dtype) -> np.dtype:
    """The dtype NumPy's ufunc gives for these inputs (and `dtype=`)."""
    stand_ins = [stand_in(x) for x in inputs]
    extra = {} if dtype is None else {"dtype": dtype}
    try:
        with np.errstate(all="ignore"):
            out = entry.ufunc(*stand_ins, **extra)
    except TypeError as e:
        raise TypeError(f"{entry.name}: {e}") from None
    result = np.asarray(out).dtype
    if str(result) not in DTYPES:
        refuse(entry.name, f"a result of dtype {result}")
    return result


# ---- ufunc methods ----


def _reduce_signature(array, axis=0, dtype=None, out=None, keepdims=False, initial=None,
                      where=True):
    """NumPy's ufunc.reduce signature (to bind a call's arguments)."""


def _accumulate_signature(array, axis=0, dtype=None, out=None):
    """NumPy's ufunc.accumulate signature."""


_REDUCE_AS = {np.add: np.sum, np.multiply: np.prod, np.maximum: np.max, np.minimum: np.min,
              np.logical_and: np.all, np.logical_or: np.any}
_ACCUMULATE_AS = {np.add: np.cumsum}


def method(ufunc: np.ufunc, name: str, inputs: tuple, kwargs: dict):
    """ufunc.reduce / .accumulate / .outer on symbols, through the function table."""
    fname = f"np.{ufunc.__name__}.{name}"
    if name == "outer" and ufunc in UFUNCS and ufunc.nin == 2 and ufunc.signature is None:
        a, b = inputs
        lead = ndim(a)
        if ndim(b):
            a = ops.expand_dims(a, tuple(range(lead, lead + ndim(b))))
        return call(ufunc, (a, b), kwargs)
    table, signature = {"reduce": (_REDUCE_AS, _reduce_signature),
                        "accumulate": (_ACCUMULATE_AS, _accumulate_signature)}.get(name, ({}, None))
    func = table.get(ufunc)
    if func is None or func not in FUNCTIONS:
        unsupported_function(fname)
    arguments = dict(inspect.signature(signature).bind(*inputs, **kwargs).arguments)
    if arguments.pop("initial", None) is not None:
        refuse(fname, "initial=")
    if arguments.pop("where", True) is not True:
        refuse(fname, "where=")
    arguments.setdefault("axis", 0)   # ufunc methods work along axis 0 by default
    arguments["a"] = arguments.pop("array")
    entry = FUNCTIONS[func]
    _, keywords = bind(entry, (), arguments)
    return entry.adapter(**keywords)
