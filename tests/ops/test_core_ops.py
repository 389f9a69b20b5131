"""Harness cases for the binary and reduction families (ops/binary.py, ops/reduce.py)."""

import numpy as np
import pytest

import knetflow as kf
from tests.ops.harness import Arg, Case, check

F = Arg
CASES = [
    Case("add", lambda x, y: x + y, np.add, [F((3, 4)), F((3, 4))], second=True),
    Case("add_broadcast", lambda x, y: x + y, np.add, [F((3, 1)), F((4,))], second=True),
    Case("sub", lambda x, y: x - y, np.subtract, [F((2, 3)), F((1, 3))], second=True),
    Case("mul", lambda x, y: x * y, np.multiply, [F((2, 3)), F((2, 1))], second=True),
    Case("div", lambda x, y: x / y, np.divide, [F((2, 3)), Arg((3,), "positive")], second=True),
    Case("pow", lambda x, y: x ** y, np.power, [Arg((2, 3), "positive"), F((2, 3))],
         second=True),
    Case("pow_scalar", lambda x: x ** 3, lambda x: x ** 3, [F((4,))], second=True),
    Case("neg", lambda x: -x, np.negative, [F((3,))], second=True),
    Case("maximum", kf.maximum, np.maximum, [F((3, 4)), F((4,))]),
    Case("minimum", kf.minimum, np.minimum, [F((3, 4)), F((3, 1))]),
    Case("compare", lambda x, y: (x < y, x <= y, x > y, x >= y, kf.eq(x, y), kf.ne(x, y)),
         lambda x, y: (x < y, x <= y, x > y, x >= y, x == y, x != y), [F((3,)), F((2, 3))]),
    Case("where", kf.where, np.where, [Arg((2, 3), "bool"), F((2, 3)), F((3,))]),
    Case("sum_all", kf.sum, np.sum, [F((3, 4))], second=True),
    Case("sum_axis", lambda x: kf.sum(x, axis=1), lambda x: x.sum(1), [F((3, 4, 2))]),
    Case("sum_keep", lambda x: kf.sum(x, axis=(0, 2), keepdims=True),
         lambda x: x.sum((0, 2), keepdims=True), [F((3, 4, 2))], second=True),
    Case("mean", lambda x: kf.mean(x, axis=-1), lambda x: x.mean(-1), [F((3, 4))], second=True),
    Case("prod", lambda x: kf.prod(x, axis=0), lambda x: x.prod(0), [Arg((3, 4), "positive")]),
    Case("max", lambda x: kf.max(x, axis=1), lambda x: x.max(1), [F((3, 5))]),
    Case("min_all", kf.min, np.min, [F((3, 5))]),
    Case("var", lambda x: kf.var(x, axis=0), lambda x: x.var(0), [F((5, 3))], second=True),
    Case("std_ddof", lambda x: kf.std(x, ddof=1), lambda x: x.std(ddof=1), [F((6,))]),
    Case("cumsum_flat", kf.cumsum, np.cumsum, [F((3, 4))], second=True),
    Case("cumsum_axis", lambda x: kf.cumsum(x, axis=1), lambda x: np.cumsum(x, axis=1),
         [F((2, 4, 3))], second=True),
    Case("cumsum_last", lambda x: kf.cumsum(x, axis=-1), lambda x: np.cumsum(x, axis=-1),
         [F((5,))]),
    Case("cumsum_scalar", kf.cumsum, np.cumsum, [F(())]),
    Case("broadcast_like", lambda x, y: kf.broadcast_like(x, y), lambda x, y: x + 0 * y,
         [F((3, 1)), F((2, 3, 4))], second=True),
    Case("sum_to", lambda x, y: kf.sum_to(x, y), lambda x, y: x.sum((0, 2), keepdims=True)[0],
         [F((2, 3, 4)), F((3, 1))], second=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


def test_max_gradient_splits_ties():
    x = kf.Param(np.array([1.0, 3.0, 3.0]))
    g = kf.grad(kf.diff(lambda: kf.max(x)), x)
    np.testing.assert_allclose(g, [0, 0.5, 0.5])


def test_broadcast_error_names_op_shapes_and_line():
    x = kf.placeholder("x", (None, 3))
    with pytest.raises(kf.ShapeError, match=r"add: shapes \(\?, 3\) and \(4,\) do not broadcast "
                                            r"\(at test_core_ops.py:\d+\)"):
        x + kf.placeholder("y", (4,))


def test_axis_out_of_range():
    with pytest.raises(kf.ShapeError, match="sum: axis 3 is out of range"):
        kf.sum(kf.placeholder("x", (2, 3)), axis=3)


# ---- cumsum ----


def test_cumsum_gradient_is_the_reversed_running_sum():
    x = kf.Param(np.zeros(4))
    w = np.array([1.0, 2.0, 3.0, 4.0])
    g = kf.grad(kf.diff(lambda: kf.sum(kf.cumsum(x) * w)), x)
    np.testing.assert_allclose(g, np.cumsum(w[::-1])[::-1])   # [10, 9, 7, 4]


def test_cumsum_reverse_attribute():
    from knetflow.ops.reduce import Cumsum

    x = np.arange(6.0).reshape(2, 3)
    got = Cumsum.forward(np, x, axis=1, reverse=True)
    np.testing.assert_allclose(got, np.cumsum(x[:, ::-1], axis=1)[:, ::-1])
    assert got.flags.c_contiguous


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint16", "bool", "float32"])
def test_cumsum_dtypes_follow_numpy(dtype):
    x = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    got = kf.cumsum(x, axis=0)
    want = np.cumsum(x, axis=0)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert kf.cumsum(kf.placeholder("x", (2, 3), dtype)).dtype == want.dtype


def test_cumsum_dynamic_dims():
    x = kf.placeholder("x", (None, 3), "float64")
    assert kf.cumsum(x, axis=0).shape == (None, 3)
    assert kf.cumsum(x).shape == (None,)
    value = np.arange(6.0).reshape(2, 3)
    got = kf.compile([kf.cumsum(x), kf.cumsum(x, axis=0)]).run({"x": value})
    np.testing.assert_array_equal(got[0], np.cumsum(value))
    np.testing.assert_array_equal(got[1], np.cumsum(value, axis=0))


def test_cumsum_errors():
    x = kf.placeholder("x", (2, 3))
    with pytest.raises(kf.ShapeError, match=r"cumsum: axis 2 is out of range for an array of "
                                            r"2 dimensions"):
        kf.cumsum(x, axis=2)
    with pytest.raises(kf.ShapeError, match=r"cumsum: axis must be an int or None, got \(0, 1\)"):
        kf.cumsum(x, axis=(0, 1))
    with pytest.raises(kf.ShapeError, match=r"cumsum: axis 0 is out of range for an array of "
                                            r"0 dimensions"):
        kf.cumsum(np.float64(2.0), axis=0)
    from knetflow.ops.reduce import Cumsum

    with pytest.raises(kf.ShapeError, match=r"cumsum: axis 1 is out of range for \(3,\)"):
        Cumsum.infer(kf.Spec((3,), "float32"), axis=1)


@pytest.mark.parametrize("dtype", ["bool", "int8", "int16", "int32", "int64", "uint8",
                                   "uint32", "uint64"])
@pytest.mark.parametrize("name", ["sum", "prod"])
def test_integer_sums_and_products_declare_numpys_dtype_and_give_it(dtype, name):
    # np.sum of int32 is int64: the spec said int32 while plans gave int64, and an ONNX
    # runtime, following the spec, overflowed at 2**31
    a = np.arange(1, 7).reshape(2, 3).astype(dtype)
    fn = getattr(kf, name)
    x = kf.placeholder("x", a.shape, dtype)
    sym = fn(x, axis=1)
    want = getattr(np, name)(a, axis=1)
    got = kf.compile([sym]).run({"x": a})[0]
    assert np.dtype(sym.spec.dtype) == got.dtype == want.dtype == fn(a, axis=1).dtype
    np.testing.assert_array_equal(got, want)
