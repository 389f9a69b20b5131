"""simplify_powers, simplify_units and simplify_broadcasts (graph/passes/simplify.py):
x ** 1 is x, x ** 2 is x * x, x * 1 is x, and arithmetic reads a spread single value as
it is."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.passes import optimize, simplify_broadcasts, simplify_powers, simplify_units
from tests.graph.passes.common import assert_same_values, ops_of

X = {"x": np.array([0.5, -1.0, 2.0, np.nan, -np.inf], dtype="float32")}


def test_a_square_is_a_product_and_a_first_power_is_its_base():
    x = kf.placeholder("x", (5,))
    g = kf.Graph([x ** 2, kf.exp(x ** 1)])
    s = simplify_powers(g)
    s.verify()
    assert ops_of(s) == ["input", "mul", "exp"]
    assert_same_values(g, s, X)


@pytest.mark.parametrize("build", [
    lambda x: x ** 3,                                                # another exponent
    lambda x: x ** kf.const(np.full((2, 1), 2.0, "float32")),       # the result is (2, 5)
    lambda x: kf.cast(x, "int64") ** 1.0,                            # int ** float is float
    lambda x: x ** kf.placeholder("y", ()),                          # not a constant
])
def test_other_powers_stay(build):
    g = kf.Graph([build(kf.placeholder("x", (5,)))])
    assert simplify_powers(g) is g


def test_a_product_or_quotient_by_one_is_the_other_factor():
    x, one = kf.placeholder("x", (5,)), kf.const(np.ones((1,), "float32"))
    g = kf.Graph([x * one, kf.exp(one * x), x / kf.const(1.0)])
    s = simplify_units(g)
    s.verify()
    assert ops_of(s) == ["input", "exp"]
    assert_same_values(g, s, X)    # -inf and NaN among them


@pytest.mark.parametrize("build", [
    lambda x: kf.const(1.0) / x,                                     # 1 / x is not x
    lambda x: x * 2.0,                                               # another constant
    lambda x: x * kf.const(np.ones((2, 1), "float32")),              # the result is (2, 5)
    lambda x: kf.cast(x, "int64") * 1.0,                             # int * float is float
    lambda x: x * kf.placeholder("y", ()),                           # not a constant
])
def test_other_products_stay(build):
    g = kf.Graph([build(kf.placeholder("x", (5,)))])
    assert simplify_units(g) is g


def test_the_unit_gradient_of_the_loss_is_not_multiplied_in():
    x = kf.placeholder("x", (4, 3))
    w = kf.param("w", value=np.ones((3, 3), "float32"))
    g = kf.backward(kf.Graph([kf.nll(x @ w, kf.placeholder("y", (4,), "int64"))]))
    assert "mul" in ops_of(g) and "mul" not in ops_of(optimize(g))


def test_a_squared_error_gradient_has_no_powers_left():
    x = kf.placeholder("x", (5,))
    w = kf.param("w", value=np.ones(5, "float32"))
    g = kf.backward(kf.Graph([kf.mean((x * w - 1.0) ** 2)]))
    assert "pow" in ops_of(g)
    assert "pow" not in ops_of(optimize(g))
    feed = {"x": np.linspace(-1, 1, 5).astype("float32")}
    np.testing.assert_allclose(kf.compile(g).run(feed)[1],
                               kf.compile(g, optimize_graph=False).run(feed)[1], rtol=1e-6)


def _spread(s, like):
    return kf.expand_dims(kf.broadcast_like(s, like), 1)


def test_a_spread_value_is_read_as_it_is():
    x, s = kf.placeholder("x", (4, 3)), kf.placeholder("s", ())
    spread = _spread(s, kf.sum(x, axis=1))
    g = kf.Graph([x * spread, spread - x, x / kf.reshape(kf.broadcast_like(s, x), (3, 4)).T])
    out = simplify_broadcasts(g)
    out.verify()
    assert "broadcast_like" not in ops_of(out) and "expand_dims" not in ops_of(out)
    feed = {"x": np.arange(12, dtype="float32").reshape(4, 3) - 5, "s": np.float32(0.7)}
    assert_same_values(g, out, feed)


@pytest.mark.parametrize("build", [
    # the other input is smaller than the result: the spread sets the shape
    lambda x, s: kf.sum(x, axis=1, keepdims=True) * kf.broadcast_like(s, x),
    # the spread value is a whole row, not one number
    lambda x, s: x * kf.broadcast_like(kf.sum(x, axis=0), x),
    # another dtype: the product's dtype would change
    lambda x, s: kf.cast(x, "float64") * kf.cast(kf.broadcast_like(s, x), "float64"),
    # both inputs spread
    lambda x, s: kf.broadcast_like(s, x) * kf.broadcast_like(s, x),
])
def test_spreads_that_set_the_result_stay(build):
    x, s = kf.placeholder("x", (4, 3)), kf.placeholder("s", ())
    g = kf.Graph([build(x, s)])
    assert "broadcast_like" in ops_of(simplify_broadcasts(g))


def test_unknown_dims_keep_the_spread():
    x, s = kf.placeholder("x", (None, 3)), kf.placeholder("s", ())
    g = kf.Graph([x * kf.broadcast_like(s, x)])
    assert simplify_broadcasts(g) is g


def test_a_mean_nll_gradient_scales_by_the_number_itself():
    x = kf.placeholder("x", (5, 4))
    labels = kf.placeholder("y", (5,), "int64")
    w = kf.param("w", value=np.linspace(-1, 1, 16).reshape(4, 4).astype("float32"))
    # kf.nll's average is one op (nll_mean) whose gradient spreads nothing; its total
    # over its count, written out, spreads the count's reciprocal over the terms
    total, count = kf.nll(x @ w, labels, average=False)
    g = kf.backward(kf.Graph([total / count]))
    assert "broadcast_like" in ops_of(g)
    assert "broadcast_like" not in ops_of(optimize(g))
    feed = {"x": np.linspace(-2, 2, 20).reshape(5, 4).astype("float32"),
            "y": np.array([0, 3, -1, 2, 1])}
    for a, b in zip(kf.compile(g).run(feed), kf.compile(g, optimize_graph=False).run(feed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
