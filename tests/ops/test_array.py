"""Tests of knetflow/ops/array.py: reshaping, joining and squeezing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.array import Reshape, concat_part
from tests.ops.harness import Arg, Case, check

F = Arg


CASES = [
    # reshaping
    Case("reshape", lambda x: kf.reshape(x, (6, 4)), lambda x: x.reshape(6, 4), [F((2, 3, 4))],
         second=True),
    Case("reshape_infer", lambda x: x.reshape(4, -1, 3), lambda x: x.reshape(4, -1, 3),
         [F((2, 3, 4))]),
    Case("reshape_flat", lambda x: kf.reshape(x, -1), lambda x: x.reshape(-1), [F((2, 3))]),
    Case("reshape_scalar", lambda x: kf.reshape(x, ()), lambda x: x.reshape(()), [F((1, 1))]),
    Case("reshape_of_transpose", lambda x: kf.reshape(x.T, (3, 4)),
         lambda x: x.T.reshape(3, 4), [F((2, 6))]),
    Case("reshape_like", lambda x, y: kf.reshape_like(x, y), lambda x, y: x.reshape(y.shape),
         [F((2, 6)), F((3, 2, 2))], second=True),
    Case("transpose", kf.transpose, np.transpose, [F((2, 3, 4))], second=True),
    Case("transpose_axes", lambda x: kf.transpose(x, (1, -1, 0)),
         lambda x: x.transpose(1, 2, 0), [F((2, 3, 4))]),
    Case("permutedims", lambda x: kf.permutedims(x, (1, 0)), lambda x: x.T, [F((3, 5))]),
    Case("T", lambda x: x.T, lambda x: x.T, [F((4, 2))]),
    Case("mat", kf.mat, lambda x: x.reshape(2, -1), [F((2, 3, 2, 2))], second=True),
    Case("mat_dims1", lambda x: kf.mat(x, 1), lambda x: x.reshape(-1, 4), [F((3, 2, 4))]),
    Case("mat_dims0", lambda x: kf.mat(x, 0), lambda x: x.reshape(-1, 1), [F((3, 2))]),
    Case("mat_dimsall", lambda x: kf.mat(x, 2), lambda x: x.reshape(1, -1), [F((3, 2))]),
    Case("squeeze", kf.squeeze, np.squeeze, [F((1, 3, 1, 2))], second=True),
    Case("squeeze_axis", lambda x: kf.squeeze(x, -2), lambda x: x.squeeze(-2), [F((1, 3, 1, 2))]),
    Case("expand_dims", lambda x: kf.expand_dims(x, 1), lambda x: np.expand_dims(x, 1),
         [F((3, 2))], second=True),
    Case("expand_dims_many", lambda x: kf.expand_dims(x, (0, -1)),
         lambda x: np.expand_dims(x, (0, -1)), [F((3, 2))]),
    # joining
    Case("concat", lambda x, y: kf.concat([x, y]), lambda x, y: np.concatenate([x, y]),
         [F((2, 3)), F((4, 3))], second=True),
    Case("concat_axis", lambda x, y, z: kf.concat([x, y, z], axis=-1),
         lambda x, y, z: np.concatenate([x, y, z], -1), [F((2, 1, 3)), F((2, 1, 1)),
                                                         F((2, 1, 2))]),
    Case("concat_one", lambda x: kf.cat([x], axis=1), lambda x: x, [F((2, 3))]),
    Case("concat_part", lambda g, x, y: concat_part(g, [x, y], 1, axis=1),
         lambda g, x, y: g[:, 2:], [F((3, 5)), F((3, 2)), F((3, 3))], second=True),
    Case("hcat_vectors", kf.hcat, lambda x, y: np.hstack([x, y]), [F((3,)), F((2,))]),
    Case("hcat_matrices", kf.hcat, lambda x, y: np.hstack([x, y]), [F((2, 3)), F((2, 1))]),
    Case("vcat_vectors", kf.vcat, lambda x, y: np.vstack([x, y]), [F((3,)), F((2, 3))]),
    Case("vcat_matrices", lambda x, y: kf.vcat([x, y]), lambda x, y: np.vstack([x, y]),
         [F((2, 3)), F((1, 3))]),
    Case("cat1d", kf.cat1d, lambda x, y, z: np.concatenate([x.ravel(), y.ravel(), z.ravel()]),
         [F((2, 3)), F((4,)), F((1, 2, 2))], second=True),
    Case("stack", lambda x, y: kf.stack([x, y]), lambda x, y: np.stack([x, y]),
         [F((2, 3)), F((2, 3))], second=True),
    Case("stack_last", lambda x, y, z: kf.stack([x, y, z], axis=-1),
         lambda x, y, z: np.stack([x, y, z], -1), [F((2, 3)), F((2, 3)), F((2, 3))]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- values and seed examples ----


def test_seed_mat_examples():
    # Knet: dims = ndims(x)-1 turns a conv output into the input of a dense layer
    assert kf.mat(np.ones((100, 16, 4, 4))).shape == (100, 256)
    # dims = 1 turns the (T, B, X) output of an RNN into (T*B, X)
    x = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(kf.mat(x, dims=1), x.reshape(6, 4))
    # dims = 0 gives a column, dims = ndims(x) a row (row-major: the axes reversed)
    assert kf.mat(x, dims=0).shape == (24, 1)
    assert kf.mat(x, dims=3).shape == (1, 24)


def test_seed_cat1d_example():
    # cat1d(args...) == vcat(vec.(args)...): contents of arrays of any shapes
    a, b, c = np.arange(4.0).reshape(2, 2), np.array([7.0]), np.arange(6.0).reshape(1, 2, 3)
    np.testing.assert_array_equal(kf.cat1d(a, b, c), np.r_[a.ravel(), b, c.ravel()])
    np.testing.assert_array_equal(kf.cat1d([a, b]), np.r_[a.ravel(), b])


# ---- dynamic dims ----


def test_reshape_dynamic():
    x = kf.placeholder("x", (None, 28, 28))
    assert kf.reshape(x, (-1, 784)).shape == (None, 784)
    assert x.reshape(x.shape[0], -1).shape == (None, 784)
    assert x.reshape(None, 14, -1).shape == (None, 14, 56)
    assert kf.reshape(x, (2, -1)).shape == (2, None)
    assert kf.reshape(kf.placeholder("y", (None, None, 3)), (None, -1)).shape == (None, None)
    assert kf.mat(x).shape == (None, 784)
    assert kf.mat(kf.placeholder("h", (None, None, 8)), dims=1).shape == (None, 8)


def test_other_dynamic_shapes():
    x = kf.placeholder("x", (None, 1, 3))
    assert kf.squeeze(x).shape == (None, 3)  # a dynamic dim is never squeezed by default
    assert kf.squeeze(x, 0).shape == (1, 3)
    assert kf.concat([x, kf.placeholder("y", (2, 1, 3))]).shape == (None, 1, 3)
    assert kf.concat([x, x], axis=-1).shape == (None, 1, 6)
    assert kf.stack([x, x], axis=1).shape == (None, 2, 1, 3)
    v = kf.placeholder("v", (None,))
    assert kf.vcat(v, v).shape == (2, None)
    assert kf.hcat(v, 1.0).shape == (None,)
    assert x[1:].shape == (None, 1, 3)
    assert x[:, 0, [0, 0, 2, 1]].shape == (None, 4)
    assert x[x > 0].shape == (None,)
    assert x[:, 0][x[:, 0, 0] > 0].shape == (None, 3)


def test_compiled_dynamic_reshape_and_mask_with_gradient():
    x = kf.placeholder("x", (None, 2, 3), "float64")
    w = kf.param("w", value=np.arange(6.0).reshape(6, 1) - 2, dtype="float64")
    h = kf.matmul(x.reshape(x.shape[0], -1), w)
    loss = kf.sum(h[h > 0] ** 2)
    plan = kf.compile(kf.backward(kf.Graph([loss])))
    xv = np.random.default_rng(0).standard_normal((5, 2, 3))
    hv = xv.reshape(5, 6) @ (np.arange(6.0).reshape(6, 1) - 2)
    got_loss, gw = plan.run({"x": xv})
    assert got_loss == pytest.approx(np.sum(hv[hv > 0] ** 2))
    np.testing.assert_allclose(gw, xv.reshape(5, 6).T @ (2 * hv * (hv > 0)))


def test_reshape_gradients_with_dynamic_dims():
    x = kf.placeholder("x", (None, 2, 3), "float64")
    y = kf.placeholder("y", (None, None, 3), "float64")
    loss = kf.sum(kf.tanh(x.reshape(-1)) * kf.mat(y).reshape(-1))
    g = kf.backward(kf.Graph([loss]), wrt=["x", "y"])
    assert "reshape_like" in {n.op for n in g.nodes}  # y has two dynamic dims
    xv = np.linspace(-1, 1, 12).reshape(2, 2, 3)
    yv = np.arange(12.0).reshape(2, 2, 3)
    _, gx, gy = kf.compile(g).run({"x": xv, "y": yv})
    np.testing.assert_allclose(gx, (1 - np.tanh(xv) ** 2) * yv)
    np.testing.assert_allclose(gy, np.tanh(xv))


def test_concat_gradient_with_dynamic_axis():
    x = kf.placeholder("x", (None, 2), "float64")
    y = kf.placeholder("y", (None, 2), "float64")
    r = np.arange(14.0).reshape(7, 2)
    loss = kf.sum(kf.concat([x, kf.tanh(y)]) * r)
    g = kf.backward(kf.Graph([loss]), wrt=["x", "y"])
    assert "concat_part" in {n.op for n in g.nodes}
    xv, yv = np.ones((3, 2)), np.zeros((4, 2))
    _, gx, gy = kf.compile(g).run({"x": xv, "y": yv})
    np.testing.assert_allclose(gx, r[:3])
    np.testing.assert_allclose(gy, r[3:])


# ---- errors ----


def test_reshape_errors():
    with pytest.raises(kf.ShapeError, match=r"reshape: cannot reshape \(2, 3\) .*\(4, -1\)"):
        kf.reshape(np.ones((2, 3)), (4, -1))
    with pytest.raises(kf.ShapeError, match=r"reshape: .*\(2, 3\) \(6 elements\) into \(7,\)"):
        kf.reshape(np.ones((2, 3)), 7)
    with pytest.raises(kf.ShapeError, match="more than one -1"):
        kf.reshape(np.ones((2, 3)), (-1, -1))
    with pytest.raises(kf.ShapeError, match=r"reshape: .*\(\?, 5\) into \(\?, 3\).*test_array"):
        kf.placeholder("x", (None, 5)).reshape(None, 3)


def test_join_errors():
    with pytest.raises(kf.ShapeError, match=r"concat: .*same rank.*\(2, 3\), \(3,\)"):
        kf.concat([np.ones((2, 3)), np.ones(3)])
    with pytest.raises(kf.ShapeError, match=r"concat: .*\(2, 3\), \(2, 4\) differ on axis 1"):
        kf.concat([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(kf.ShapeError, match="concat: zero-dimensional"):
        kf.concat([np.ones(()), np.ones(())])
    with pytest.raises(kf.ShapeError, match=r"stack: .*\(2, 3\), \(3, 3\) differ on axis 0"):
        kf.stack([np.ones((2, 3)), np.ones((3, 3))])
    with pytest.raises(kf.ShapeError, match="concat: needs at least one input"):
        kf.concat([])


def test_shape_op_errors():
    with pytest.raises(kf.ShapeError, match=r"transpose: .*\(0, 0\).*\(2, 3\)"):
        kf.transpose(np.ones((2, 3)), (0, 0))
    with pytest.raises(kf.ShapeError, match=r"squeeze: cannot squeeze axis 1 of \(2, 3\)"):
        kf.squeeze(np.ones((2, 3)), 1)
    with pytest.raises(kf.ShapeError, match=r"mat: dims=3 .*\(2, 3\)"):
        kf.mat(np.ones((2, 3)), 3)
    with pytest.raises(kf.ShapeError, match="expand_dims: axis 3 is out of range"):
        kf.expand_dims(np.ones((2, 3)), 3)


# ---- properties ----

_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=4)


@settings(max_examples=60, deadline=None)
@given(_shapes, st.data())
def test_reshape_round_trip(shape, data):
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    factors = data.draw(st.permutations(_prime_factors(x.size)))
    split = data.draw(st.integers(0, len(factors)))
    target = [int(np.prod(factors[:split])), int(np.prod(factors[split:]))]
    target[data.draw(st.integers(0, 1))] = -1
    y = kf.reshape(x, target)
    np.testing.assert_array_equal(y, x.reshape(target))
    np.testing.assert_array_equal(kf.reshape(y, shape), x)
    spec = Reshape.infer(kf.Spec(tuple(shape), "float64"), shape=tuple(target))
    assert spec.shape == x.reshape(target).shape


def _prime_factors(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_transpose_concat_stack_match_numpy(shape, data):
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    axes = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(kf.transpose(x, axes), x.transpose(axes))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    y = np.ones(shape[:axis % len(shape)] + [2] + shape[axis % len(shape) + 1:])
    np.testing.assert_array_equal(kf.concat([x, y, x], axis=axis),
                                  np.concatenate([x, y, x], axis=axis))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    np.testing.assert_array_equal(kf.stack([x, x + 1], axis=axis), np.stack([x, x + 1], axis))
