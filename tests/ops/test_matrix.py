"""Tests of knetflow/ops/matrix.py: tril, triu, diag (and its adjoint diag_scatter), trace
(and the mask eye_like its gradient uses)."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.ops.matrix import DiagScatter, EyeLike, Tril, diag_scatter, eye_like
from tests.ops.harness import Arg, Case, check

F = Arg


def _np_diag_scatter(g, like, k):
    out = np.zeros(like.shape, g.dtype)
    rows = np.arange(len(g)) + max(-k, 0)
    out[rows, rows + k] = g
    return out


def _np_eye_like(x, k):
    eye = np.eye(x.shape[0], x.shape[1], k, dtype=x.dtype)
    return eye.reshape(eye.shape + (1,) * (x.ndim - 2))


CASES = [
    Case("tril", kf.tril, np.tril, [F((4, 4))], second=True),
    Case("tril_k", lambda x: kf.tril(x, 1), lambda x: np.tril(x, 1), [F((3, 5))]),
    Case("tril_batched", lambda x: kf.tril(x, -1), lambda x: np.tril(x, -1), [F((2, 3, 4, 3))],
         second=True),
    Case("tril_vector", kf.tril, np.tril, [F((3,))]),
    Case("triu", kf.triu, np.triu, [F((4, 4))], second=True),
    Case("triu_k", lambda x: kf.triu(x, -2), lambda x: np.triu(x, -2), [F((5, 3))]),
    Case("triu_batched", lambda x: kf.triu(x, 1), lambda x: np.triu(x, 1), [F((2, 3, 3))]),
    Case("triu_vector", lambda x: kf.triu(x, 1), lambda x: np.triu(x, 1), [F((4,))]),
    Case("diag_of_vector", kf.diag, np.diag, [F((4,))], second=True),
    Case("diag_of_vector_above", lambda x: kf.diag(x, 2), lambda x: np.diag(x, 2), [F((3,))]),
    Case("diag_of_vector_below", lambda x: kf.diag(x, -1), lambda x: np.diag(x, -1), [F((3,))],
         second=True),
    Case("diag_of_matrix", kf.diag, np.diag, [F((4, 4))], second=True),
    Case("diag_of_wide_matrix", lambda x: kf.diag(x, 1), lambda x: np.diag(x, 1), [F((3, 5))],
         second=True),
    Case("diag_of_tall_matrix", lambda x: kf.diag(x, -2), lambda x: np.diag(x, -2),
         [F((5, 3))]),
    Case("diag_outside", lambda x: kf.diag(x, 4), lambda x: np.diag(x, 4), [F((3, 3))]),
    Case("diag_scatter", lambda g, m: diag_scatter(g, m, -1),
         lambda g, m: _np_diag_scatter(g, m, -1), [F((3,)), F((4, 3))], second=True),
    Case("eye_like", lambda x: eye_like(x, 1), lambda x: _np_eye_like(x, 1), [F((3, 4, 2))]),
    Case("trace", kf.trace, np.trace, [F((4, 4))], second=True),
    Case("trace_offset", lambda x: kf.trace(x, 1), lambda x: np.trace(x, 1), [F((3, 5))],
         second=True),
    Case("trace_below", lambda x: kf.trace(x, -2), lambda x: np.trace(x, -2), [F((4, 3))]),
    Case("trace_nd", lambda x: kf.trace(x, -1), lambda x: np.trace(x, -1), [F((3, 3, 2, 2))],
         second=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- values, dtypes, shapes ----


@pytest.mark.parametrize("k", [-4, -1, 0, 2, 5])
def test_triangles_match_numpy_for_every_k(k):
    x = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(kf.tril(x, k), np.tril(x, k))
    np.testing.assert_array_equal(kf.triu(x, k), np.triu(x, k))
    assert kf.tril(x, k).dtype == x.dtype
    np.testing.assert_array_equal(kf.tril(np.array([True, True]), k),
                                  np.tril(np.array([True, True]), k))


def test_triangles_add_up_to_the_matrix():
    x = np.random.RandomState(0).randn(4, 4)
    np.testing.assert_allclose(kf.tril(x) + kf.triu(x, 1), x)


@pytest.mark.parametrize("k", [-3, -1, 0, 1, 4])
def test_diag_matches_numpy(k):
    v = np.arange(1, 4)
    np.testing.assert_array_equal(kf.diag(v, k), np.diag(v, k))
    m = np.arange(12).reshape(3, 4)
    got = kf.diag(m, k)
    np.testing.assert_array_equal(got, np.diag(m, k))
    got += 100  # a writable copy, not NumPy's read-only view of m
    np.testing.assert_array_equal(m, np.arange(12).reshape(3, 4))


def test_diag_round_trip():
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(kf.diag(kf.diag(v, -1), -1), v)


def test_trace_matches_numpy():
    x = np.arange(24).reshape(4, 3, 2).astype(np.int32)
    for offset in (-3, -1, 0, 1, 2, 3):
        got = kf.trace(x, offset)
        np.testing.assert_array_equal(got, np.trace(x, offset))
        assert got.dtype == np.trace(x, offset).dtype == np.int64
    assert kf.trace(np.eye(3)).shape == ()
    assert kf.trace(kf.placeholder("x", (3, 3, 5), "bool")).dtype == np.int64


def test_trace_gradient_is_the_identity():
    x = kf.Param(np.zeros((3, 4)))
    g = kf.grad(kf.diff(lambda: kf.trace(x, 1) * 2.0), x)
    np.testing.assert_array_equal(g, 2 * np.eye(3, 4, 1))


def test_dynamic_dims():
    x = kf.placeholder("x", (None, 3), "float64")
    assert kf.tril(x).shape == (None, 3)
    assert kf.diag(x).shape == (None,)
    assert kf.diag(kf.placeholder("v", (None,))).shape == (None, None)
    assert kf.trace(kf.placeholder("s", (None, None, 2))).shape == (2,)
    value = np.arange(12.0).reshape(4, 3)
    loss = kf.sum(kf.diag(x, 1)) + kf.trace(x) + kf.sum(kf.triu(x))
    got, gx = kf.compile(kf.backward(kf.Graph([loss], inputs=[x]), wrt=[x])).run({"x": value})
    assert got == pytest.approx(np.diag(value, 1).sum() + np.trace(value) + np.triu(value).sum())
    np.testing.assert_array_equal(gx, np.eye(4, 3, 1) + np.eye(4, 3) + np.triu(np.ones((4, 3))))


# ---- errors ----


def test_tril_triu_errors():
    with pytest.raises(kf.ShapeError, match=r"tril: needs an array of at least one dimension, "
                                            r"got \(\)"):
        kf.tril(np.float64(1.0))
    with pytest.raises(kf.ShapeError, match=r"triu: needs an array of at least one dimension"):
        kf.triu(kf.placeholder("s", ()))
    with pytest.raises(kf.ShapeError, match=r"tril: k must be an int, got 1.5"):
        kf.tril(np.eye(2), 1.5)
    with pytest.raises(kf.ShapeError, match=r"triu: k must be an int, got True"):
        kf.triu(np.eye(2), True)
    assert Tril.infer(kf.Spec((2, 3, 4), "float32")).shape == (2, 3, 4)


def test_diag_errors():
    with pytest.raises(kf.ShapeError, match=r"diag: needs a 1-D or 2-D input, got \(2, 2, 2\)"):
        kf.diag(np.ones((2, 2, 2)))
    with pytest.raises(kf.ShapeError, match=r"diag: needs a 1-D or 2-D input, got \(\) "
                                            r"\(at test_matrix.py:\d+\)"):
        kf.diag(kf.placeholder("s", ()))
    with pytest.raises(kf.ShapeError, match=r"diag: k must be an int, got '1'"):
        kf.diag(np.ones(2), "1")


def test_diag_scatter_errors():
    with pytest.raises(kf.ShapeError, match=r"diag_scatter: needs a vector and a matrix, got "
                                            r"\(3, 1\) and \(3, 3\)"):
        diag_scatter(np.ones((3, 1)), np.ones((3, 3)))
    with pytest.raises(kf.ShapeError, match=r"diag_scatter: diagonal 1 of \(3, 3\) has 2 "
                                            r"elements, not the 3 of \(3,\)"):
        diag_scatter(np.ones(3), np.ones((3, 3)), 1)
    spec = DiagScatter.infer(kf.Spec((None,), "float32"), kf.Spec((None, 3), "float64"), k=0)
    assert spec == kf.Spec((None, 3), "float32")


def test_trace_and_eye_like_errors():
    with pytest.raises(kf.ShapeError, match=r"trace: needs an array of at least two "
                                            r"dimensions, got \(3,\)"):
        kf.trace(np.ones(3))
    with pytest.raises(kf.ShapeError, match=r"trace: offset must be an int, got None"):
        kf.trace(np.ones((3, 3)), None)
    with pytest.raises(kf.ShapeError, match=r"eye_like: needs at least two dimensions, "
                                            r"got \(3,\)"):
        EyeLike.infer(kf.Spec((3,), "float32"))
