"""NumPy ufuncs on symbols (graph/numpy_ufuncs.py): NumPy's values, dtypes and gradients."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.numpy_ufuncs import UFUNCS
from tests.graph.numpy_harness import F, case, check

X = F((2, 3))
P = F((2, 3), "positive")
U = F((2, 3), "unit")

_UNARY = [
    ("exp", X), ("expm1", X), ("exp2", X), ("log", P), ("log1p", P), ("log2", P), ("log10", P),
    ("sqrt", P), ("cbrt", P), ("square", X), ("reciprocal", P), ("sin", X), ("cos", X),
    ("tan", U), ("arcsin", U), ("arccos", U), ("arctan", X), ("sinh", X), ("cosh", X),
    ("tanh", X), ("arcsinh", X), ("arctanh", U), ("deg2rad", X), ("rad2deg", X),
    ("radians", X), ("degrees", X),
    ("absolute", X), ("fabs", X), ("negative", X), ("positive", X), ("sign", X), ("floor", X),
    ("ceil", X), ("trunc", X), ("rint", X), ("conjugate", X),
    ("logical_not", X), ("isnan", X), ("isfinite", X), ("isinf", X),
]

_BINARY = [
    ("add", X, F((3,))), ("subtract", X, F((2, 1))), ("multiply", X, X), ("divide", X, P),
    ("power", P, X), ("float_power", P, F((3,))), ("maximum", X, F((3,))),
    ("minimum", X, X), ("logaddexp", X, F((3,))), ("logaddexp2", X, X),
    ("less", X, X), ("less_equal", X, F((3,))), ("greater", X, X), ("greater_equal", X, X),
    ("equal", X, F((3,), value=[0.0, 1.0, -1.0])), ("not_equal", X, X),
    ("logical_and", X, F((3,), value=[0.0, 1.0, -1.0])), ("logical_or", X, X),
    ("logical_xor", X, F((2, 3), value=[[0.0, 1, 0], [2, 0, 0]])),
    ("matmul", F((2, 3)), F((3, 4))), ("vecdot", F((2, 3)), F((3,))),
]


def _unary(name):
    return lambda x: getattr(np, name)(x)


def _binary(name):
    return lambda x, y: getattr(np, name)(x, y)


CASES = (
    [case(f"np.{name}", _unary(name), arg) for name, arg in _UNARY]
    + [case(f"np.{name}", _binary(name), a, b) for name, a, b in _BINARY]
    + [case("np.arccosh", lambda x: np.arccosh(1.5 + x), P),
       case("np.matmul[batched]", np.matmul, F((2, 2, 3)), F((3, 2))),
       case("np.matmul[vector]", np.matmul, F((3,)), F((2, 3, 4))),
       case("np.vecdot[axis=0]", lambda a, b: np.vecdot(a, b, axis=0), F((3, 2)), F((3, 2))),
       case("np.add[scalar]", lambda x: np.add(x, 2.0), X),
       case("np.power[scalar exponent]", lambda x: np.power(x, 3), X),
       case("np.divide[scalar left]", lambda x: np.divide(1.5, x), P),
       case("np.exp[dtype=float64]", lambda x: np.exp(x, dtype="float64"), X),
       case("np.multiply[where=True, out=None]",
            lambda x, y: np.multiply(x, y, where=True, out=None, casting="same_kind"), X, X),
       case("np.add.reduce", lambda x: np.add.reduce(x), X),
       case("np.add.reduce[axis=None, keepdims]",
            lambda x: np.add.reduce(x, axis=None, keepdims=True), X),
       case("np.multiply.reduce[axis=1]", lambda x: np.multiply.reduce(x, 1), X),
       case("np.maximum.reduce", lambda x: np.maximum.reduce(x, axis=-1), X),
       case("np.minimum.reduce", lambda x: np.minimum.reduce(x), X),
       case("np.logical_and.reduce", lambda x: np.logical_and.reduce(x), X),
       case("np.logical_or.reduce", lambda x: np.logical_or.reduce(x, axis=1), X),
       case("np.add.accumulate", lambda x: np.add.accumulate(x), X),
       case("np.add.accumulate[axis=1]", lambda x: np.add.accumulate(x, axis=1), X),
       case("np.multiply.outer", lambda x, y: np.multiply.outer(x, y), F((2,)), F((3,))),
       case("np.subtract.outer", lambda x, y: np.subtract.outer(x, y), F((2, 2)), F((3,))),
       case("np.greater.outer", lambda x, y: np.greater.outer(x, y), F((2,)), F((3,))),
       # operators with an ndarray on the left go through the ufunc protocol
       case("np.multiply[ndarray operator]", lambda x: np.linspace(1, 2, 3) * x, X),
       case("np.subtract[ndarray operator]", lambda x: np.ones((2, 3)) - x, X),
       ]
)


@pytest.mark.parametrize("c", CASES, ids=str)
def test_ufunc(c):
    check(c)


# ---- NumPy's result dtypes ----


@pytest.mark.parametrize("fn, dtypes", [
    (np.exp, ["int8", "int16", "int32", "int64", "bool", "float16", "float32"]),
    (np.sqrt, ["uint8", "int64"]),
    (np.rint, ["int8", "int64"]),
    (np.square, ["bool", "int32", "float32"]),
    (np.sign, ["int8", "float32"]),
    (np.floor, ["int32", "float16"]),
    (np.negative, ["int16"]),
    (np.reciprocal, ["float32"]),
    (lambda x: np.divide(x, 2), ["int32", "bool", "float32"]),
    (lambda x: np.add(x, 2), ["bool", "int8", "float16"]),
    (lambda x: np.add(x, 2.5), ["int8", "float32"]),
    (lambda x: np.less(x, 2), ["bool", "int8", "float32"]),
    (lambda x: np.maximum(x, np.ones(3, "int64")), ["int8", "float32"]),
    (lambda x: np.power(x, 2), ["int32", "float32"]),
    (lambda x: np.float_power(x, 2), ["int32", "float32"]),
    (lambda x: np.add.reduce(x), ["bool", "int32", "float32"]),
    (lambda x: np.multiply(x, x, dtype="float32"), ["int64", "float64"]),
])
def test_result_dtype_and_value_are_numpys(fn, dtypes):
    for dtype in dtypes:
        value = (np.arange(6).reshape(2, 3) % 4 + 1).astype(dtype)
        x = kf.placeholder("x", (2, 3), dtype)
        y = fn(x)
        want = fn(value)
        assert y.dtype == want.dtype, (dtype, y.dtype, want.dtype)
        got = kf.compile([y]).run({"x": value})[0]
        np.testing.assert_allclose(got.astype("float64"), want.astype("float64"), rtol=2e-3)


def test_every_ufunc_in_the_table_has_a_case():
    names = {c.name.split("[")[0] for c in CASES}
    missing = [e.name for e in UFUNCS.values() if e.name not in names]
    assert not missing


# ---- refused forms ----


@pytest.mark.parametrize("call, match", [
    (lambda x: np.exp(x, out=np.empty((2, 3))), r"np\.exp: out= \(a symbolic result"),
    (lambda x: np.exp(x, where=x > 0), r"np\.exp: the argument where="),
    (lambda x: np.add(x, x, casting="unsafe"), r"np\.add: the argument casting='unsafe'"),
    (lambda x: np.matmul(x, x.T, axes=[(0, 1), (0, 1), (0, 1)]), r"np\.matmul: the argument axes"),
    (lambda x: np.arctan2(x, x), r"^np\.arctan2 is not supported on knetflow symbols"),
    (lambda x: np.fmod(x, 2.0), r"^np\.fmod is not supported"),
    (lambda x: np.modf(x), r"^np\.modf is not supported"),
    (lambda x: np.multiply.accumulate(x), r"^np\.multiply\.accumulate is not supported"),
    (lambda x: np.add.reduceat(x, [0, 1]), r"^np\.add\.reduceat is not supported"),
    (lambda x: np.add.reduce(x, initial=1.0), r"np\.add\.reduce: initial= is not supported"),
    (lambda x: np.add.reduce(x, out=np.empty(3)), r"the argument out="),
])
def test_refused_ufunc_forms_name_the_ufunc(call, match):
    x = kf.placeholder("x", (2, 3), "float64")
    with pytest.raises(kf.TracingError, match=match) as info:
        call(x)
    assert "docs/NUMPY.md" in str(info.value)


def test_numpy_errors_stay_numpys():
    x = kf.placeholder("b", (3,), "bool")
    with pytest.raises(TypeError, match=r"np\.sign: .*did not contain a loop"):
        np.sign(x)
