"""Multi-output ops: a TupleSpec node, `get` nodes, and gradients through them."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.ops.base import REGISTRY, Op, Spec, TupleSpec, apply_multi, register


class _ScaleTwice(Op):
    """(2x, 3x): a multi-output op for these tests only."""
    name = "test_scale_twice"

    def infer(x: Spec) -> TupleSpec:
        return TupleSpec((x, x))

    def forward(xp, x):
        return 2 * x, 3 * x

    def grad(gs, outs, x):
        total = None
        for g, k in zip(gs, (2, 3)):
            if g is not None:
                total = g * k if total is None else total + g * k
        return (total,)


@pytest.fixture(autouse=True)
def scale_twice():
    register(_ScaleTwice)
    yield
    del REGISTRY["test_scale_twice"]


def scale_twice_(x):
    return apply_multi(_ScaleTwice, x)


def test_outputs_are_get_nodes_of_one_node():
    x = kf.placeholder("x", (None, 2))
    a, b = scale_twice_(x)
    assert a.node.op == b.node.op == "get"
    assert a.node.inputs[0] is b.node.inputs[0]
    assert isinstance(a.node.inputs[0].spec, TupleSpec)
    assert a.shape == (None, 2)


def test_eager_and_compiled_values():
    v = np.array([1.0, -2.0])
    a, b = scale_twice_(v)
    np.testing.assert_array_equal(a, 2 * v)
    x = kf.placeholder("x", (2,), "float64")
    outs = kf.compile(list(scale_twice_(x))).run({"x": v})
    np.testing.assert_array_equal(outs[0], 2 * v)
    np.testing.assert_array_equal(outs[1], 3 * v)


def test_gradient_through_both_outputs_and_one():
    w = kf.Param(np.array([1.0, 2.0]))

    def both():
        a, b = scale_twice_(w)
        return kf.sum(a * a) + kf.sum(b)

    np.testing.assert_allclose(kf.grad(kf.diff(both), w), 8 * w.value + 3)
    first_only = kf.diff(lambda: kf.sum(scale_twice_(w)[0]))
    np.testing.assert_allclose(kf.grad(first_only, w), [2.0, 2.0])


def test_second_derivative_through_get():
    x = kf.placeholder("x", (), "float64")
    a, _ = scale_twice_(x)
    g1 = kf.backward(kf.Graph([a * a * a]), wrt=["x"])          # d/dx 8x^3 = 24x^2
    g2 = kf.backward(kf.Graph([kf.Symbol(g1.outputs[1])], inputs=[x]), wrt=["x"])  # 48x
    np.testing.assert_allclose(kf.compile(g2).run({"x": np.array(2.0)})[1], 96.0)


def test_get_of_a_single_value_is_a_shape_error():
    from knetflow.ops.base import Get, apply

    with pytest.raises(kf.ShapeError, match="get: input is a single value"):
        apply(Get, kf.placeholder("x", (2,)), index=0)
