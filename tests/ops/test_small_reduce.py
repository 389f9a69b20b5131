"""ops/small_reduce.py: BLAS row/column sums and argmax row maxima equal NumPy's."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.base import Spec
from knetflow.ops.small_reduce import DOT_SUM_MAX, dot_sum, row_max

shapes = st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple)


@settings(max_examples=80, deadline=None)
@given(shape=shapes, lead=st.integers(0, 3), trail=st.integers(0, 3), keepdims=st.booleans(),
       into=st.booleans(), seed=st.integers(0, 2**16))
def test_dot_sum_equals_numpy_sum_over_leading_and_trailing_axes(shape, lead, trail, keepdims,
                                                                 into, seed):
    lead = min(lead, len(shape))
    trail = min(trail, len(shape) - lead)
    axes = tuple(range(lead)) + tuple(range(len(shape) - trail, len(shape)))
    x = np.random.RandomState(seed).randn(*shape)
    want = x.sum(axis=axes, keepdims=keepdims)
    kernel = dot_sum(Spec(shape, "float64"), axes, want.shape)
    length = int(np.prod([shape[a] for a in axes]))
    if length < 2:
        assert kernel is None  # nothing summed: add.reduce's job (a copy)
        return
    out = np.full(want.shape, np.nan) if into else None
    got = kernel(x, out) if into else kernel(x)
    if into:
        assert got is out
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_dot_sum_in_float32_is_within_float32_rounding_of_a_float64_sum():
    x = np.random.RandomState(0).rand(300, DOT_SUM_MAX).astype("float32")
    got = dot_sum(Spec(x.shape, "float32"), (1,), (300,))(x)
    want = x.astype("float64").sum(axis=1)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=DOT_SUM_MAX * np.finfo("float32").eps / 16)


def test_dot_sum_takes_non_contiguous_inputs_and_propagates_nan_and_inf():
    x = np.random.RandomState(1).randn(6, 4).T  # a transposed view: (4, 6), not contiguous
    x[1, 2], x[2, 0], x[3, 3], x[3, 4] = np.nan, np.inf, np.inf, -np.inf
    with np.errstate(invalid="ignore"):
        got = dot_sum(Spec(x.shape, "float64"), (1,), (4,))(x)
        want = x.sum(axis=1)
    np.testing.assert_allclose(got, want)
    assert np.isnan(got[1]) and got[2] == np.inf and np.isnan(got[3])


@pytest.mark.parametrize("shape, axes, dtype", [
    ((1, 1), (0, 1), "float32"),                 # one element: nothing to sum
    ((4, 5, 6), (1,), "float32"),                # a middle axis
    ((4, 5, 6, 7), (0, 2), "float32"),           # a first and a middle axis
    ((3, DOT_SUM_MAX + 1), (1,), "float32"),     # too long for BLAS's rounding
    ((4, 5), (1,), "float16"),                   # no BLAS for half precision
    ((4, 5), (1,), "int64"),
    ((None, 5), (1,), "float32"),                # shape unknown until run
    ((DOT_SUM_MAX + 1,), None, "float32"),       # a whole sum too long for BLAS
])
def test_dot_sum_declines_what_blas_should_not_sum(shape, axes, dtype):
    assert dot_sum(Spec(shape, dtype), axes, (4,)) is None


@pytest.mark.parametrize("axes", [None, (0, 1, 2)])
def test_dot_sum_of_a_whole_array_is_one_dot_of_vectors_giving_a_numpy_scalar(axes):
    x = np.random.RandomState(2).rand(4, 5, 6).astype("float32")
    kernel = dot_sum(Spec(x.shape, "float32"), axes, ())
    got = kernel(x)
    assert type(got) is np.float32  # divides for a mean as a scalar, not a 0-d array
    np.testing.assert_allclose(got, x.astype("float64").sum(), rtol=1e-6)
    out = np.full((), np.nan, "float32")
    assert kernel(x, out) is out and out == got


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_row_max_equals_max_over_the_last_axis(shape, seed):
    x = np.random.RandomState(seed).randn(*shape).astype("float32")
    got = row_max(Spec(shape, "float32"))(x)
    np.testing.assert_array_equal(got, x.max(axis=-1, keepdims=True))


def test_row_max_gives_nan_for_a_row_with_nan_and_falls_back_on_strided_input():
    x = np.array([[1.0, np.nan, 3.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0]])
    kernel = row_max(Spec(x.shape, "float64"))
    np.testing.assert_array_equal(kernel(x), x.max(axis=-1, keepdims=True))
    xt = np.ascontiguousarray(x.T).T  # the same values, column-major
    np.testing.assert_array_equal(kernel(xt), x.max(axis=-1, keepdims=True))
    assert row_max(Spec((0, 3), "float64")) is None
    assert row_max(Spec((None, 3), "float64")) is None


@pytest.mark.parametrize("build, eager", [
    (lambda x: kf.sum(x, axis=1, keepdims=True), lambda x: x.sum(1, keepdims=True)),
    (lambda x: kf.sum(x, axis=0), lambda x: x.sum(0)),
    (lambda x: kf.mean(x, axis=1), lambda x: x.mean(1)),
    (lambda x: kf.softmax(x, axis=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
])
def test_plans_use_them_and_agree_with_numpy(build, eager):
    x = np.random.RandomState(2).randn(50, 10)
    ph = kf.placeholder("x", x.shape, "float64")
    plan = kf.compile([build(ph)])
    np.testing.assert_allclose(plan.run({"x": x})[0], eager(x), rtol=1e-12)
    np.testing.assert_allclose(plan.run({"x": x.T.copy().T})[0], eager(x), rtol=1e-12)


def test_a_bias_gradient_in_a_plan_is_a_column_sum():
    x = np.random.RandomState(3).randn(40, 7)
    b = kf.param("b", value=np.zeros(7), dtype="float64")
    ph = kf.placeholder("x", x.shape, "float64")
    loss = kf.sum((ph + b) ** 2)
    (gb,) = kf.compile(kf.backward(kf.Graph([loss]), wrt=[b])).run({"x": x})[1:]
    np.testing.assert_allclose(gb, (2 * x).sum(0), rtol=1e-12)


@pytest.mark.parametrize("axes", [(2,), (0,), (0, 2)])
def test_dot_sum_writes_through_a_strided_out(axes):
    x = np.random.RandomState(5).randn(6, 4, 3)
    want = x.sum(axis=axes)
    out = np.zeros(want.shape + (2,))[..., 0]  # every other element: not C-contiguous
    got = dot_sum(Spec(x.shape, "float64"), axes, want.shape)(x, out)
    assert got is out
    np.testing.assert_allclose(out, want, rtol=1e-13)


@pytest.mark.parametrize("shape", [(506, 1), (3, 4, 5), (DOT_SUM_MAX + 1,)])
def test_a_plans_mean_of_a_whole_array_equals_numpys_given_out_or_not(shape):
    from knetflow.ops.reduce import Mean

    x = np.random.RandomState(3).rand(*shape).astype("float32")
    kernel = Mean.bind(np, {"axis": None}, [Spec(shape, "float32")], Spec((), "float32"))
    want = x.astype("float64").mean()
    np.testing.assert_allclose(kernel(x), want, rtol=1e-6)
    out = np.full((), np.nan, "float32")
    assert kernel(x, out) is out
    np.testing.assert_allclose(out, want, rtol=1e-6)


@pytest.mark.parametrize("op, shape, axis", [
    ("mean", (100, 200), None), ("mean", (100, 200), 1), ("mean", (5000, 3), 0),
    ("var", (100, 200), 1), ("var", (5000, 3), 0), ("std", (5000, 3), 0)])
def test_a_plans_float16_mean_accumulates_as_numpy_does(op, shape, axis):
    """np.mean sums float16 in float32: a plan's mean (and var and std, made of means)
    must neither overflow where it does not (20000 values near 5 sum past float16's
    largest, 65504) nor lose what float16 sums lose (5000 values: 14% off)."""
    a = (np.random.RandomState(0).rand(*shape) * 10).astype("float16")
    x = kf.placeholder("x", a.shape, "float16")
    (got,) = kf.compile([getattr(kf, op)(x, axis=axis)]).run({"x": a})
    want = np.asarray(getattr(kf, op)(a, axis=axis))  # eager: NumPy's own
    assert got.dtype == want.dtype == np.float16 and np.isfinite(want).all()
    np.testing.assert_allclose(got.astype("float64"), want, rtol=2e-3)
