"""Gradients at the edges of their domains: pow at 0, std/var of constant data, abs at 0,
max/min and maximum/minimum at ties. Each value is the one HIPS autograd and JAX define
(where the two disagree, the test says which one knetflow follows)."""

import warnings

import numpy as np
import pytest

import knetflow as kf


def _grads(fn, *values, wrt=None):
    """d sum(fn(inputs)) / d each input, from a compiled backward graph, in float64."""
    syms = [kf.placeholder(f"a{i}", np.shape(v), "float64") for i, v in enumerate(values)]
    loss = kf.sum(fn(*syms))
    graph = kf.backward(kf.Graph([loss], inputs=syms), wrt=syms if wrt is None else
                        [syms[i] for i in wrt])
    feed = {f"a{i}": np.asarray(v, dtype="float64") for i, v in enumerate(values)}
    return kf.compile(graph).run(feed)[1:]


def _quiet_grads(fn, *values, wrt=None):
    """_grads, failing on any NumPy warning (an inf or NaN formed inside the rule)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with np.errstate(all="raise"):
            return _grads(fn, *values, wrt=wrt)


# ---- pow ----


def test_pow_zero_exponent_has_zero_gradient_at_zero():
    # x**0 is 1 for every x: d/dx is 0, also at x = 0 (was 0 * inf = NaN)
    gx, gy = _quiet_grads(lambda x, y: x ** y, [0.0, 0.0, 2.0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(gx, [0.0, 0.0, 0.0])
    # d/dy x**y = x**y log x; at x = 0 it is defined 0 (as autograd and JAX do)
    np.testing.assert_array_equal(gy[:2], [0.0, 0.0])
    np.testing.assert_allclose(gy[2], np.log(2.0))


def test_pow_zero_base_has_zero_exponent_gradient():
    # 0**y is 0 for every y > 0: d/dy is 0 (was 0 * log 0 = NaN)
    gy, = _quiet_grads(lambda x, y: x ** y, [0.0, 0.0, 0.0], [2.0, 1.0, 3.5], wrt=[1])
    np.testing.assert_array_equal(gy, [0.0, 0.0, 0.0])


def test_pow_base_gradient_at_zero_for_positive_exponents():
    gx, = _quiet_grads(lambda x, y: x ** y, [0.0, 0.0, 0.0], [1.0, 2.0, 3.0], wrt=[0])
    np.testing.assert_array_equal(gx, [1.0, 0.0, 0.0])


def test_pow_scalar_exponent_zero():
    gx, = _quiet_grads(lambda x: x ** 0, [0.0, 1.5])
    np.testing.assert_array_equal(gx, [0.0, 0.0])
    gx, = _quiet_grads(lambda x: x ** 0.0, [0.0])
    np.testing.assert_array_equal(gx, [0.0])


def test_pow_second_derivative_at_zero_exponent():
    # d2/dx2 x**0 = 0, also at 0
    x = kf.placeholder("x", (2,), "float64")
    first = kf.backward(kf.Graph([kf.sum(x ** 0)], inputs=[x]), wrt=[x])
    second = kf.backward(kf.Graph([kf.sum(kf.Symbol(first.outputs[1]))], inputs=[x]), wrt=[x])
    got = kf.compile(second).run({"x": np.array([0.0, 3.0])})[1]
    np.testing.assert_array_equal(got, [0.0, 0.0])


def test_pow_gradients_elsewhere_are_unchanged():
    x, y = np.array([0.5, 2.0, 1.5]), np.array([-1.0, 2.5, 0.5])
    gx, gy = _grads(lambda a, b: a ** b, x, y)
    np.testing.assert_allclose(gx, y * x ** (y - 1))
    np.testing.assert_allclose(gy, x ** y * np.log(x))


# ---- std and var ----


def test_std_of_one_element_has_zero_gradient():
    g, = _quiet_grads(kf.std, [3.0])
    np.testing.assert_array_equal(g, [0.0])


def test_std_over_an_axis_of_length_one_has_zero_gradient():
    g, = _quiet_grads(lambda x: kf.std(x, axis=1), np.arange(3.0).reshape(3, 1))
    np.testing.assert_array_equal(g, np.zeros((3, 1)))
    g, = _quiet_grads(lambda x: kf.std(x, axis=0, keepdims=True), [[1.0, 2.0]])
    np.testing.assert_array_equal(g, [[0.0, 0.0]])


def test_std_of_constant_rows_has_zero_gradient_only_there():
    x = np.array([[2.0, 2.0], [1.0, 3.0]])
    g, = _quiet_grads(lambda x: kf.std(x, axis=1), x)
    np.testing.assert_array_equal(g[0], [0.0, 0.0])
    np.testing.assert_allclose(g[1], [-0.5, 0.5])   # (x - mean) / (n std)


def test_std_value_unchanged():
    x = np.array([[2.0, 2.0], [1.0, 3.0]])
    np.testing.assert_allclose(kf.std(x, axis=1), x.std(axis=1))
    np.testing.assert_allclose(kf.std(x, ddof=1), x.std(ddof=1))
    assert kf.std(np.array([5.0])) == 0.0


def test_var_of_one_element_has_zero_gradient():
    g, = _quiet_grads(kf.var, [3.0])
    np.testing.assert_array_equal(g, [0.0])


def test_std_second_derivative_is_finite_at_zero_variance():
    x = kf.placeholder("x", (1,), "float64")
    first = kf.backward(kf.Graph([kf.std(x)], inputs=[x]), wrt=[x])
    second = kf.backward(kf.Graph([kf.sum(kf.Symbol(first.outputs[1]))], inputs=[x]), wrt=[x])
    got = kf.compile(second).run({"x": np.array([4.0])})[1]
    np.testing.assert_array_equal(got, [0.0])


# ---- abs: 0 at 0 (autograd, PyTorch; JAX gives 1) ----


def test_abs_gradient_at_zero_is_zero():
    g, = _quiet_grads(kf.abs, [0.0, -2.0, 3.0])
    np.testing.assert_array_equal(g, [0.0, -1.0, 1.0])


# ---- max/min over axes: ties share the gradient evenly (autograd and JAX) ----


def test_max_ties_split_evenly():
    g, = _grads(lambda x: kf.max(x, axis=1), [[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(g, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


def test_min_ties_split_evenly():
    g, = _grads(kf.min, [4.0, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(g, [0, 0.25, 0.25, 0.25, 0.25])


# ---- maximum/minimum: a tie gives half of the gradient to each side (autograd, JAX) ----


@pytest.mark.parametrize("op", [kf.maximum, kf.minimum])
def test_elementwise_extremum_ties_split_evenly(op):
    gx, gy = _grads(op, [1.0, 3.0, 0.0], [1.0, 2.0, 0.5])
    if op is kf.maximum:
        np.testing.assert_array_equal(gx, [0.5, 1.0, 0.0])
        np.testing.assert_array_equal(gy, [0.5, 0.0, 1.0])
    else:
        np.testing.assert_array_equal(gx, [0.5, 0.0, 1.0])
        np.testing.assert_array_equal(gy, [0.5, 1.0, 0.0])


def test_maximum_tie_with_a_broadcast_scalar():
    # relu written as maximum(x, 0): at x = 0 half of the gradient goes to x
    gx, = _grads(lambda x: kf.maximum(x, 0.0), [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(gx, [0.0, 0.5, 1.0])
