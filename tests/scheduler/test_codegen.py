"""scheduler/codegen.py: the generated function reads one-element operands as 0-d views,
with the same values, dtypes and shapes as NumPy's own broadcasting, and writes a
matrix's transpose and a multi-output op's outputs as plain expressions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.scheduler.codegen import _inline_view, _one_element_as_0d

ONE = [(), (1,), (1, 1), (1, 1, 1)]
shapes = st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from(["float32", "float64"])


@settings(max_examples=60, deadline=None)
@given(big=shapes, one=st.sampled_from(ONE), big_dtype=dtypes, one_dtype=dtypes,
       swap=st.booleans(), seed=st.integers(0, 2**16))
def test_a_plan_with_a_one_element_operand_equals_numpy(big, one, big_dtype, one_dtype,
                                                        swap, seed):
    rng = np.random.RandomState(seed)
    a = np.asarray(rng.rand(*big) + 0.5, dtype=big_dtype)
    b = np.asarray(rng.rand(*one) + 0.5, dtype=one_dtype)
    x = kf.placeholder("x", big, big_dtype)
    y = kf.placeholder("y", one, one_dtype)
    xs, ys = (y, x) if swap else (x, y)
    an, bn = (b, a) if swap else (a, b)
    # a lone ufunc, a fused chain, and a result that is then reduced (a planned buffer)
    outs = [xs - ys, (xs + ys) * xs / ys, kf.sum(kf.maximum(xs, ys) * 2.0)]
    wants = [an - bn, (an + bn) * an / bn, np.sum(np.maximum(an, bn) * 2.0)]
    got = kf.compile(outs).run({"x": a, "y": b})
    for g, w in zip(got, wants):
        w = np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_array_equal(got[0], wants[0])  # elementwise: the same ufunc calls
    np.testing.assert_array_equal(got[1], wants[1])
    np.testing.assert_allclose(got[2], wants[2], rtol=1e-5)  # a sum: BLAS's order or not


def _node(shape_a, shape_b):
    a = kf.placeholder("a", shape_a, "float32")
    b = kf.placeholder("b", shape_b, "float32")
    return (a + b).node


@pytest.mark.parametrize("shape_a, shape_b, want", [
    ((506, 1), (1,), ["a", "b.reshape(())"]),        # the bias of a linear regression
    ((1, 1), (3, 4), ["a.reshape(())", "b"]),
    ((2, 3), (), ["a", "b"]),                          # already 0-d
    ((1,), (1, 1), ["a", "b"]),                        # the output has one element too
    ((3, 1), (1, 4), ["a", "b"]),                      # no input has the output's shape
    ((None, 3), (1,), ["a", "b"]),                     # shapes known only at run time
])
def test_only_one_element_inputs_beside_an_input_of_the_output_shape_become_0d(
        shape_a, shape_b, want):
    assert _one_element_as_0d(_node(shape_a, shape_b), ["a", "b"]) == want


def test_a_matrix_transpose_and_an_output_of_a_multi_output_op_are_inline_expressions():
    x = kf.placeholder("x", (4, 3), "float32")
    y = kf.placeholder("y", (4,), "int64")
    mean, grad = kf.ops.loss.nll_mean(x, y)
    names = {x.node.id: "v1", mean.node.inputs[0].id: "v7"}
    assert _inline_view(kf.transpose(x).node, names) == "v1.T"
    assert _inline_view(grad.node, names) == "v7[1]"
    # other views keep their kernels: an N-D transpose, a reshape
    cube = kf.placeholder("c", (2, 3, 4), "float32")
    assert _inline_view(kf.transpose(cube, (1, 0, 2)).node, {cube.node.id: "v2"}) is None
    assert _inline_view(kf.reshape(x, (3, 4)).node, names) is None


def test_a_plan_with_inline_views_gives_numpy_s_values_and_a_fresh_result():
    rng = np.random.RandomState(0)
    a, labels = rng.randn(5, 3), np.array([0, 2, 1, 1, 0])
    x = kf.placeholder("x", (5, 3), "float64")
    y = kf.placeholder("y", (5,), "int64")
    mean, grad = kf.ops.loss.nll_mean(x, y)
    plan = kf.compile([kf.transpose(x), kf.transpose(x) @ grad, mean])
    t, product, m = plan.run({"x": a, "y": labels})
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want_grad = (p - np.eye(3)[labels]) / 5
    np.testing.assert_array_equal(t, a.T)
    assert not np.shares_memory(t, a)  # a result that is a view of an input is copied
    np.testing.assert_allclose(product, a.T @ want_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(m, -np.log(p[np.arange(5), labels]).mean(), rtol=1e-12)


@pytest.mark.parametrize("shapes", [[(4,), (1, 1), (1, 4)], [(3, 4), (1, 1, 1), (1, 3, 4)]])
def test_a_fused_chain_whose_first_step_gets_its_leading_axes_from_a_one_element_input(
        shapes):
    # (a - s) * b: b has the result's shape, but the first step's shape comes from s;
    # read as 0-d, s gave that step a result too short for the next one's out=
    rng = np.random.RandomState(5)
    arrays = [rng.rand(*shape).astype("float32") for shape in shapes]
    a, s, b = (kf.placeholder(n, shape, "float32") for n, shape in zip("asb", shapes))
    plan = kf.compile([(a - s) * b])
    assert [n.op for n in plan.graph.nodes if n.op not in ("input", "param")] == ["fused"]
    got = plan.run(dict(zip("asb", arrays)))[0]
    want = (arrays[0] - arrays[1]) * arrays[2]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
