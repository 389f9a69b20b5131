"""Gradients of gradients: kf.grad, kf.gradloss and kf.diff called inside a traced
function trace into the outer graph (train/knet/autograd.py), checked against finite
differences in float64 and against PyTorch's `create_graph=True`."""

import numpy as np
import pytest

import knetflow as kf

X = np.array([0.3, -1.2, 2.0, 0.7])


def f(x):
    return kf.sum(kf.sin(x) * x ** 3)


def f_np(x):
    return np.sum(np.sin(x) * x ** 3)


def numeric_grad(fn, x, eps=1e-6):
    """Central differences of a scalar or array function, float64."""
    x = np.asarray(x, dtype="float64")
    out = []
    for i in range(x.size):
        d = np.zeros_like(x)
        d.flat[i] = eps
        out.append((np.asarray(fn(x + d)) - np.asarray(fn(x - d))) / (2 * eps))
    return np.moveaxis(np.array(out), 0, -1).reshape(np.shape(fn(x)) + x.shape)


def test_second_derivative_of_a_python_function():
    d2 = kf.grad(lambda x: kf.sum(kf.grad(f)(x)))(X)
    exact = -np.sin(X) * X ** 3 + 6 * X ** 2 * np.cos(X) + 6 * X * np.sin(X)
    np.testing.assert_allclose(d2, exact, rtol=1e-12)
    hessian = numeric_grad(lambda x: kf.grad(f)(x), X)
    np.testing.assert_allclose(d2, hessian.sum(axis=0), rtol=1e-6, atol=1e-8)


def test_hessian_vector_product_of_a_coupled_function():
    A = np.random.RandomState(0).randn(4, 4)

    def g(x):
        return kf.sum(kf.tanh(A @ x) ** 2) + kf.sum(x * x * x)

    v = np.array([1.0, -2.0, 0.5, 0.0])
    hvp = kf.grad(lambda x: kf.sum(kf.grad(g)(x) * v))(X)
    hessian = numeric_grad(lambda x: kf.grad(g)(x), X)
    np.testing.assert_allclose(hvp, hessian @ v, rtol=1e-6, atol=1e-8)


def test_third_order_and_gradloss_inside():
    d3 = kf.grad(lambda x: kf.grad(lambda y: kf.grad(lambda z: z ** 4)(y))(x))(np.array(2.0))
    assert d3 == pytest.approx(24 * 2.0, rel=1e-12)

    def loss_plus_slope(x):
        g, loss = kf.gradloss(f)(x)
        return loss + kf.sum(g)

    want = numeric_grad(lambda x: f_np(x) + kf.grad(f)(x).sum(), X)
    np.testing.assert_allclose(kf.grad(loss_plus_slope)(X), want, rtol=1e-6, atol=1e-8)


def test_a_gradient_penalty_on_params_with_diff():
    W = kf.Param(np.random.RandomState(1).randn(3, 2))
    x = np.random.RandomState(2).randn(5, 3)

    def penalized():
        inner = kf.diff(lambda: kf.sum(kf.tanh(x @ W) ** 2))
        return kf.value(inner) + 0.5 * kf.sum(kf.grad(inner, W) ** 2)

    r = kf.diff(penalized)

    def loss_at(w):
        inner = kf.Param(w.reshape(3, 2))
        value = kf.diff(lambda: kf.sum(kf.tanh(x @ inner) ** 2))
        return kf.value(value) + 0.5 * np.sum(kf.grad(value, inner) ** 2)

    want = numeric_grad(loss_at, W.value.ravel()).reshape(3, 2)
    assert kf.value(r) == pytest.approx(loss_at(W.value.ravel()), rel=1e-12)
    np.testing.assert_allclose(kf.grad(r, W), want, rtol=1e-6, atol=1e-8)


def test_the_inner_gradient_is_taken_for_its_own_argument_only():
    # d/dx [x * d/dy (x + y)] = d/dx [x * 1] = 1: the inner derivative must not see x
    d = kf.grad(lambda x: x * kf.grad(lambda y: x + y)(np.array(1.0)))(np.array(1.0))
    assert d == 1.0
    # an outer value computed from x, captured by the inner function, is a constant there
    g = kf.grad(lambda x: kf.sum(kf.grad(lambda y: kf.sum(y * (2 * x)))(x)))(X)
    np.testing.assert_allclose(g, np.full(4, 2.0))


def test_grad_of_a_symbol_builds_a_graph():
    x = kf.placeholder("x", (4,), "float64")
    g = kf.grad(f)(x)
    assert isinstance(g, kf.Symbol) and g.shape == (4,)
    plan = kf.compile([g, kf.grad(lambda x: kf.sum(kf.grad(f)(x)))(x)])
    first, second = plan.run({"x": X})
    np.testing.assert_allclose(first, kf.grad(f)(X), rtol=1e-12)
    np.testing.assert_allclose(second, kf.grad(lambda x: kf.sum(kf.grad(f)(x)))(X), rtol=1e-12)


def test_diff_of_a_symbol_outside_a_trace_says_what_to_use():
    x = kf.placeholder("x", (4,), "float64")
    with pytest.raises(kf.TracingError, match=r"was given Symbol\(input .*outside a traced "
                                              r"function; .*kf.grad\(f\)\(symbol\)"):
        kf.diff(f, x)


def test_agrees_with_pytorch_create_graph():
    torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed")
    A = np.random.RandomState(3).randn(4, 4)

    def loss_kf(w):
        g = kf.grad(lambda w: kf.sum(kf.tanh(A @ w) ** 3))(w)
        return kf.sum(w * w) + kf.sum(g * g)

    wt = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    inner = torch.sum(torch.tanh(torch.tensor(A) @ wt) ** 3)
    (g,) = torch.autograd.grad(inner, wt, create_graph=True)
    outer = torch.sum(wt * wt) + torch.sum(g * g)
    (want,) = torch.autograd.grad(outer, wt)
    got, value = kf.gradloss(loss_kf)(X)
    assert value == pytest.approx(outer.item(), rel=1e-12)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10)
