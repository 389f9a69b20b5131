"""Derived backward graphs (graph/autodiff.py): gradients of small literal graphs,
accumulation, unbroadcasting, integer inputs, unconnected params, higher order."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import knetflow as kf
from knetflow.graph.passes import optimize


def _run(graph, **feed):
    return kf.compile(graph).run(feed)


def _grad_of(loss, wrt, **feed):
    """Values of d loss / d wrt (a list) on `feed`."""
    return _run(kf.backward(kf.Graph([loss]), wrt=wrt), **feed)[1:]


def _f64(name, shape=()):
    return kf.placeholder(name, shape, "float64")


# ---- the shape of the result ----


def test_backward_returns_outputs_then_gradients_of_all_params():
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.array([1.0, 2.0, 3.0]))
    b = kf.param("b", value=np.array(0.5))
    loss = kf.sum(x * w + b)
    extra = kf.exp(x)
    g = kf.backward(kf.Graph([loss, extra]))
    assert isinstance(g, kf.Graph)
    assert g.outputs[:2] == (loss.node, extra.node)
    assert [o.spec for o in g.outputs[2:]] == [w.node.spec, b.node.spec]
    assert g.inputs == (x.node,) and g.params == (w.node, b.node)
    g.verify()
    out = kf.compile(g).run({"x": np.ones((4, 3))})
    np.testing.assert_allclose(out[0], 4 * 6 + 4 * 3 * 0.5)
    np.testing.assert_allclose(out[2], [4.0, 4.0, 4.0])
    np.testing.assert_allclose(out[3], 12.0)


def test_wrt_by_symbol_node_or_name():
    x = _f64("x", (2,))
    w = kf.param("w", value=np.array([3.0, 4.0]), dtype="float64")
    loss = kf.sum(x * w)
    for wrt in ([x, w], [x.node, w.node], ["x", "w"]):
        gx, gw = _run(kf.backward(kf.Graph([loss]), wrt=wrt), x=np.array([1.0, 2.0]))[1:]
        np.testing.assert_allclose(gx, [3.0, 4.0])
        np.testing.assert_allclose(gw, [1.0, 2.0])


def test_wrt_an_inner_node():
    #   x ── exp ── e ── mul(., 2) ── sum       d loss / d e = 2 (and d loss / d x = 2 exp x)
    x = _f64("x", (3,))
    e = kf.exp(x)
    ge, gx = _grad_of(kf.sum(e * 2.0), [e, x], x=np.zeros(3))
    np.testing.assert_allclose(ge, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(gx, [2.0, 2.0, 2.0])


def test_first_output_must_be_scalar():
    x = kf.placeholder("x", (3,))
    with pytest.raises(kf.ShapeError, match=r"backward: the first output must be a scalar, "
                                            r"got shape \(3,\) \(mul#\d+ at test_autodiff"):
        kf.backward(kf.Graph([x * 2.0]), wrt=[x])


def test_backward_accepts_a_list_of_outputs():
    w = kf.param("w", value=np.array([1.0, 2.0, 3.0]))
    g = kf.backward([kf.sum(w * w)])
    np.testing.assert_allclose(_run(g)[1], [2.0, 4.0, 6.0])


# ---- gradients of literal graphs ----


def test_elementwise_chain():
    #   x -> exp -> mul(., 3) -> sum        d/dx = 3 exp(x)
    x = _f64("x", (3,))
    v = np.array([-1.0, 0.0, 2.0])
    (g,) = _grad_of(kf.sum(kf.exp(x) * 3.0), [x], x=v)
    np.testing.assert_allclose(g, 3 * np.exp(v))


def test_fan_out_accumulates():
    #   x ──┬── mul ──┐
    #       └───┘     add ── sum         d/dx (x*x + x) = 2x + 1
    #   x ────────────┘
    x = _f64("x", (3,))
    (g,) = _grad_of(kf.sum(x * x + x), [x], x=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(g, [3.0, 5.0, 7.0])


def test_diamond_accumulates():
    #        x
    #      /   \
    #    sin   cos        d/dx sum(sin x * cos x) = cos 2x
    #      \   /
    #       mul
    x = _f64("x", (4,))
    v = np.linspace(-1, 1, 4)
    (g,) = _grad_of(kf.sum(kf.sin(x) * kf.cos(x)), [x], x=v)
    np.testing.assert_allclose(g, np.cos(2 * v))


def test_unbroadcast_sums_back_to_input_shapes():
    #   a (3,1) ─┐
    #            mul (3,4) ── sum
    #   b (4,) ──┘
    a = _f64("a", (3, 1))
    b = _f64("b", (4,))
    av, bv = np.arange(3.0).reshape(3, 1), np.arange(4.0) + 1
    ga, gb = _grad_of(kf.sum(a * b), [a, b], a=av, b=bv)
    assert ga.shape == (3, 1) and gb.shape == (4,)
    np.testing.assert_allclose(ga, np.full((3, 1), bv.sum()))
    np.testing.assert_allclose(gb, np.full(4, av.sum()))


def test_unbroadcast_over_a_dynamic_batch():
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.zeros(3))
    plan = kf.compile(kf.backward(kf.Graph([kf.sum(x + w)])))
    for batch in (1, 5):
        np.testing.assert_allclose(plan.run({"x": np.ones((batch, 3))})[1], [batch] * 3)


def test_no_gradient_flows_into_integer_inputs():
    v = _f64("v", (3,))
    i = kf.placeholder("i", (3,), "int64")
    g = kf.backward(kf.Graph([kf.sum(v * i)]), wrt=[v, i])
    gv, gi = _run(g, v=np.array([1.0, 2.0, 3.0]), i=np.array([4, 5, 6]))[1:]
    np.testing.assert_allclose(gv, [4.0, 5.0, 6.0])
    assert gi.dtype == np.dtype("int64")
    np.testing.assert_array_equal(gi, [0, 0, 0])
    # the int input's gradient is a broadcast zero, not a product computed from v
    assert g.outputs[2].op == "broadcast_like"
    assert g.outputs[2].inputs[0].op == "const"


def test_no_gradient_through_a_cast_from_int():
    i = kf.placeholder("i", (2,), "int32")
    w = kf.param("w", value=np.array([2.0, 3.0]))
    loss = kf.sum(kf.cast(i, "float32") * w)
    gw, gi = _run(kf.backward(kf.Graph([loss]), wrt=[w, i]), i=np.array([5, 7]))[1:]
    np.testing.assert_allclose(gw, [5.0, 7.0])
    np.testing.assert_array_equal(gi, [0, 0])


def test_unconnected_param_gets_zeros():
    p = kf.param("p", value=np.ones((2, 2)))
    q = kf.param("q", value=np.ones(3), dtype="float64")
    g = kf.backward(kf.Graph([kf.sum(p * 2.0)]), wrt=[p, q])
    gp, gq = _run(g)[1:]
    np.testing.assert_allclose(gp, np.full((2, 2), 2.0))
    assert gq.dtype == np.dtype("float64")
    np.testing.assert_array_equal(gq, np.zeros(3))


def test_gradient_dtype_follows_the_input():
    w = kf.param("w", value=np.array([1.0, 2.0]), dtype="float32")
    x = _f64("x", (2,))
    (gw,) = _grad_of(kf.sum(w * x), [w], x=np.array([3.0, 4.0]))
    assert gw.dtype == np.dtype("float32")
    np.testing.assert_allclose(gw, [3.0, 4.0])


def test_only_the_first_output_is_differentiated():
    w = kf.param("w", value=np.array([1.0, 2.0]))
    g = kf.backward(kf.Graph([kf.sum(w), kf.sum(w * w * 100.0)]))
    np.testing.assert_allclose(_run(g)[2], [1.0, 1.0])


# ---- higher order: the backward graph is an ordinary graph ----


def _derivatives(make, v, order):
    """d^k/dx^k of sum(make(x)) for k = 1..order, at v, by repeated `backward`."""
    x = _f64("x", np.shape(v))
    out = make(x)
    values = []
    for _ in range(order):
        g = kf.backward(kf.Graph([kf.sum(out)], inputs=[x]), wrt=[x])
        out = kf.Symbol(g.outputs[1])
        values.append(_run(g, x=v)[1])
    return values


def test_second_and_third_derivative_of_cube():
    v = np.array([-1.0, 0.5, 2.0])
    d1, d2, d3 = _derivatives(lambda x: x ** 3, v, 3)
    np.testing.assert_allclose(d1, 3 * v ** 2)
    np.testing.assert_allclose(d2, 6 * v)
    np.testing.assert_allclose(d3, [6.0, 6.0, 6.0])


def test_second_derivative_of_tanh():
    v = np.array([-1.5, 0.0, 0.5])
    t = np.tanh(v)
    d1, d2 = _derivatives(kf.tanh, v, 2)
    np.testing.assert_allclose(d1, 1 - t ** 2)
    np.testing.assert_allclose(d2, -2 * t * (1 - t ** 2))


def test_second_derivative_of_a_scalar():
    x = _f64("x")
    g1 = kf.backward(kf.Graph([x ** 3]), wrt=[x])
    g2 = kf.backward(kf.Graph([kf.Symbol(g1.outputs[1])], inputs=[x]), wrt=[x])
    d1, d2 = _run(g2, x=np.array(2.0))
    assert np.shape(d1) == () and np.shape(d2) == ()
    assert (float(d1), float(d2)) == (12.0, 12.0)


def test_backward_graph_survives_optimization():
    x = _f64("x", (3,))
    w = kf.param("w", value=np.array([0.1, 0.2, 0.3]), dtype="float64")
    g = kf.backward(kf.Graph([kf.sum(kf.tanh(x * w) * kf.tanh(x * w))], inputs=[x]))
    opt = optimize(g)
    opt.verify()
    assert len(opt.nodes) < len(g.nodes)
    v = np.array([1.0, -2.0, 0.5])
    want = kf.compile(g, optimize_graph=False).run({"x": v})
    got = kf.compile(opt, optimize_graph=False).run({"x": v})
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# ---- property: broadcasting gradients of add and mul agree with NumPy ----


def _sum_to(g, shape):
    """NumPy reference for summing a broadcast gradient back to `shape`."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead)))
    axes = tuple(k for k, d in enumerate(shape) if d == 1 and g.shape[k] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                max_side=3),
       op=st.sampled_from(["add", "mul", "sub"]), data=st.data())
def test_broadcast_gradients_match_numpy(shapes, op, data):
    (sa, sb), so = shapes.input_shapes, shapes.result_shape
    floats = st.floats(-2, 2, allow_nan=False, width=64)
    av = data.draw(hnp.arrays("float64", sa, elements=floats))
    bv = data.draw(hnp.arrays("float64", sb, elements=floats))
    r = np.random.RandomState(0).uniform(0.5, 1.5, so)
    a, b = _f64("a", sa), _f64("b", sb)
    out = {"add": a + b, "mul": a * b, "sub": a - b}[op]
    ga, gb = _grad_of(kf.sum(out * r), [a, b], a=av, b=bv)
    da = {"add": r, "mul": r * bv, "sub": r}[op]
    db = {"add": r, "mul": r * av, "sub": -r}[op]
    assert np.shape(ga) == sa and np.shape(gb) == sb
    np.testing.assert_allclose(ga, _sum_to(np.broadcast_to(da, so), sa), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, _sum_to(np.broadcast_to(db, so), sb), rtol=1e-12, atol=1e-12)
