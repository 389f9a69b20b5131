"""simplify_powers (graph/passes/simplify.py): x ** 1 is x, x ** 2 is x * x."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.passes import optimize, simplify_powers
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


def test_a_squared_error_gradient_has_no_powers_left():
    x = kf.placeholder("x", (5,))
    w = kf.param("w", value=np.ones(5, "float32"))
    g = kf.backward(kf.Graph([kf.mean((x * w - 1.0) ** 2)]))
    assert "pow" in ops_of(g)
    assert "pow" not in ops_of(optimize(g))
    feed = {"x": np.linspace(-1, 1, 5).astype("float32")}
    np.testing.assert_allclose(kf.compile(g).run(feed)[1],
                               kf.compile(g, optimize_graph=False).run(feed)[1], rtol=1e-6)
