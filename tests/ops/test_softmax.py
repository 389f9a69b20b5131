"""softmax, logsoftmax (logp), logsumexp: harness cases, Knet semantics, stability, gradients."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

import knetflow as kf
from knetflow.ops.softmax import (
    LogSoftmax, LogSumExp, Softmax, logp, logsoftmax, logsumexp, softmax)
from tests.ops.harness import Arg, Case, check


CASES = [
    Case("softmax_all", lambda x: softmax(x), lambda x: special.softmax(x), [Arg((3, 4))],
         second=True),
    Case("softmax_last", lambda x: softmax(x, axis=-1), lambda x: special.softmax(x, axis=-1),
         [Arg((3, 4))], second=True),
    Case("softmax_axis0_3d", lambda x: softmax(x, axis=0), lambda x: special.softmax(x, axis=0),
         [Arg((2, 3, 4))]),
    Case("softmax_axes02", lambda x: softmax(x, axis=(0, 2)),
         lambda x: special.softmax(x, axis=(0, 2)), [Arg((2, 3, 4))]),
    Case("logsoftmax_all", lambda x: logsoftmax(x), lambda x: special.log_softmax(x),
         [Arg((3, 4))], second=True),
    Case("logsoftmax_last", lambda x: logsoftmax(x, axis=1),
         lambda x: special.log_softmax(x, axis=1), [Arg((5, 3))], second=True),
    Case("logp_axis0", lambda x: logp(x, axis=0), lambda x: special.log_softmax(x, axis=0),
         [Arg((2, 3, 2))]),
    Case("logsumexp_all", lambda x: logsumexp(x), lambda x: special.logsumexp(x),
         [Arg((3, 4))], second=True),
    Case("logsumexp_axis1", lambda x: logsumexp(x, axis=1),
         lambda x: special.logsumexp(x, axis=1), [Arg((3, 4))], second=True),
    Case("logsumexp_keepdims", lambda x: logsumexp(x, axis=(0, 2), keepdims=True),
         lambda x: special.logsumexp(x, axis=(0, 2), keepdims=True), [Arg((2, 3, 4))]),
    Case("softmax_large", lambda x: softmax(x, axis=-1), lambda x: special.softmax(x, axis=-1),
         [Arg((2, 3), value=np.array([[1e4, 1e4 - 1, 0.0], [-1e4, 3.0, 1e4]]))], grad=False),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- Knet semantics ----


def test_seed_formulas():
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    for axis in (None, 0, 1):
        dims = axis if axis is not None else (0, 1)
        e = np.exp(x)
        np.testing.assert_allclose(softmax(x, axis=axis), e / e.sum(axis=dims, keepdims=True))
        np.testing.assert_allclose(logsoftmax(x, axis=axis),
                                   x - np.log(e.sum(axis=dims, keepdims=True)))
        np.testing.assert_allclose(logsumexp(x, axis=axis), np.log(e.sum(axis=dims)))


def test_axis_none_normalizes_whole_array():
    x = np.arange(6.0).reshape(2, 3)
    assert softmax(x).sum() == pytest.approx(1.0)
    assert np.exp(logsoftmax(x)).sum() == pytest.approx(1.0)
    assert np.shape(logsumexp(x)) == ()


def test_logp_is_logsoftmax():
    assert logp is logsoftmax


def test_integer_input_gives_float64():
    out = softmax(np.array([1, 2, 3]))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, special.softmax([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_kept(dtype):
    x = np.ones((2, 3), dtype=dtype)
    for out in (softmax(x, axis=1), logsoftmax(x, axis=1), logsumexp(x, axis=1)):
        assert out.dtype == dtype


# ---- numerical stability ----


def test_large_scores_do_not_overflow():
    x = np.array([[1e4, 1e4 - 2.0], [-1e4, -1e4 - 2.0]])
    want = special.softmax([0.0, -2.0])
    np.testing.assert_allclose(softmax(x, axis=1), [want, want])
    np.testing.assert_allclose(logsoftmax(x, axis=1), np.log([want, want]))
    np.testing.assert_allclose(logsumexp(x, axis=1), [1e4, -1e4] + np.log1p(np.exp(-2.0)))
    np.testing.assert_allclose(logsumexp(np.float32(1e4) * np.ones(3, "float32")),
                               1e4 + np.log(3.0), rtol=1e-6)


def test_minus_infinity_entries():
    x = np.array([-np.inf, 0.0, 0.0])
    np.testing.assert_allclose(softmax(x), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(logsoftmax(x), [-np.inf, -np.log(2), -np.log(2)])
    with np.errstate(divide="ignore"):
        assert logsumexp(np.array([-np.inf, -np.inf])) == -np.inf


# ---- gradient rules, run eagerly against central differences ----


def _numgrad(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        grad[i] = (np.sum(f(x + d)) - np.sum(f(x - d))) / (2 * eps)
    return grad


@pytest.mark.parametrize("op, fn, attrs", [
    (Softmax, softmax, {"axis": (1,)}),
    (Softmax, softmax, {"axis": None}),
    (LogSoftmax, logsoftmax, {"axis": (0,)}),
    (LogSoftmax, logsoftmax, {"axis": None}),
    (LogSumExp, logsumexp, {"axis": (1,), "keepdims": False}),
    (LogSumExp, logsumexp, {"axis": None, "keepdims": True}),
])
def test_grad_rules(op, fn, attrs):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4))
    out = fn(x, **attrs)
    c = rng.normal(size=np.shape(out))
    (gx,) = op.grad(c, out, x, **attrs)
    np.testing.assert_allclose(gx, _numgrad(lambda t: fn(t, **attrs) * c, x), atol=1e-8)


def test_grads_through_backward_graph_and_second_order():
    rng = np.random.default_rng(2)
    value, c = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    s = kf.param("s", value=value, dtype="float64")
    g = kf.backward(kf.Graph([kf.sum(softmax(s, axis=1) * c)]))
    assert [n.op for n in g.nodes].count("softmax") == 1  # the backward reuses the forward's out
    v = rng.normal(size=(3, 4))
    h = kf.backward(kf.Graph([kf.sum(kf.Symbol(g.outputs[1]) * v)]))
    assert h.outputs[1].spec.shape == (3, 4)


# ---- symbolic building ----


def test_symbolic_shapes_with_dynamic_batch():
    x = kf.placeholder("x", (None, 10))
    assert softmax(x, axis=-1).shape == (None, 10)
    assert logsoftmax(x).shape == (None, 10)
    assert logsumexp(x, axis=1).shape == (None,)
    assert logsumexp(x, axis=1, keepdims=True).shape == (None, 1)
    assert logsumexp(x).shape == ()
    assert softmax(kf.placeholder("i", (2, 3), "int32")).dtype == np.float64
    assert softmax(x, axis=-1).node.attrs["axis"] == (1,)


def test_axis_out_of_range():
    with pytest.raises(kf.ShapeError, match="softmax: axis 2 is out of range"):
        softmax(kf.placeholder("x", (None, 3)), axis=2)
    with pytest.raises(kf.ShapeError, match="logsumexp: axis -3"):
        logsumexp(np.zeros((2, 3)), axis=-3)


# ---- properties ----


@st.composite
def _array_and_axis(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    ndim = len(shape)
    axis = draw(st.one_of(
        st.none(), st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))
    scale = draw(st.sampled_from([1.0, 100.0, 1e4]))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).normal(size=shape) * scale, axis


@settings(max_examples=60, deadline=None)
@given(_array_and_axis())
def test_softmax_sums_to_one(data):
    x, axis = data
    p = softmax(x, axis=axis)
    assert p.shape == x.shape
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    np.testing.assert_allclose(np.sum(p, axis=axis), 1.0, rtol=1e-12)
    np.testing.assert_allclose(logsoftmax(x, axis=axis), special.log_softmax(x, axis=axis),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(logsumexp(x, axis=axis), special.logsumexp(x, axis=axis),
                               rtol=1e-12)


@pytest.mark.parametrize("fn", [kf.softmax, kf.logsoftmax])
@pytest.mark.parametrize("axis", [None, 1, (0, 1)])
def test_a_plan_gives_the_eager_values_at_infinities_and_nan(fn, axis):
    # plans run a kernel bound to the shapes (Softmax/LogSoftmax.bind); eager calls forward
    x = np.array([[1.0, 2.0, 3.0], [-np.inf] * 3, [np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0],
                  [1e30, -1e30, 0.0], [np.inf, 1000.0, 1.0]])
    ph = kf.placeholder("x", x.shape, "float64")
    with np.errstate(all="ignore"):
        planned = kf.compile([fn(ph, axis=axis)]).run({"x": x})[0]
        eager = fn(x, axis=axis)
    np.testing.assert_array_equal(planned, eager)


def test_beside_an_infinity_a_large_finite_score_gets_probability_zero_in_both_paths():
    # the eager shift once replaced a max of +inf by 0, so exp(1000) overflowed and the
    # row gave inf / inf = NaN there, where a plan (its max clamped) gave 0
    x = np.array([[np.inf, 1000.0, 1.0]])
    ph = kf.placeholder("x", x.shape, "float64")
    with np.errstate(all="ignore"):
        for got in (kf.softmax(x, axis=1), kf.compile([kf.softmax(ph, axis=1)]).run({"x": x})[0]):
            assert np.isnan(got[0, 0]) and got[0, 1] == 0 and got[0, 2] == 0
