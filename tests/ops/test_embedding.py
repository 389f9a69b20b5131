"""embedding: harness cases, repeated ids accumulating gradients, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.embedding import embedding
from tests.ops.harness import Arg, Case, check

REPEATED = np.array([[1, 1, 3], [3, 1, 0]])

CASES = [
    Case("embedding_1d_ids", embedding, lambda w, i: w[i],
         [Arg((5, 3)), Arg((4,), "label", high=5)], second=True),
    Case("embedding_2d_ids", embedding, lambda w, i: w[i],
         [Arg((6, 2)), Arg((2, 3), "label", high=6)]),
    Case("embedding_scalar_id", embedding, lambda w, i: w[i],
         [Arg((4, 3)), Arg((), "label", high=4)]),
    Case("embedding_repeated_ids", embedding, lambda w, i: w[i],
         [Arg((4, 2)), Arg(value=REPEATED)], second=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


def test_repeated_ids_accumulate_gradient():
    w = kf.Param(np.arange(8.0).reshape(4, 2))
    ids = np.array([[1, 1, 3], [3, 1, 0]])
    g = kf.grad(kf.diff(lambda: kf.sum(embedding(w, ids))), w)
    np.testing.assert_array_equal(g, [[1, 1], [3, 3], [0, 0], [2, 2]])
    weights = np.arange(12.0).reshape(2, 3, 2)
    g = kf.grad(kf.diff(lambda: kf.sum(embedding(w, ids) * weights)), w)
    want = np.zeros((4, 2))
    np.add.at(want, ids, weights)
    np.testing.assert_array_equal(g, want)


def test_symbolic_shape_with_dynamic_batch():
    w = kf.param("emb", (10, 4))
    ids = kf.placeholder("ids", (None, 7), "int64")
    y = embedding(w, ids)
    assert y.shape == (None, 7, 4) and y.dtype == np.float32
    out = kf.compile(y).run({"ids": np.zeros((3, 7), "int64")})[0]
    assert out.shape == (3, 7, 4)


@settings(max_examples=15, deadline=None)
@given(ids_shape=st.lists(st.integers(0, 3), max_size=3), vocab=st.integers(1, 5),
       dim=st.integers(1, 3), seed=st.integers(0, 100))
def test_eager_matches_numpy_for_any_ids_shape(ids_shape, vocab, dim, seed):
    rs = np.random.RandomState(seed)
    w = rs.randn(vocab, dim)
    ids = rs.randint(0, vocab, ids_shape)
    out = embedding(w, ids)
    assert out.shape == tuple(ids_shape) + (dim,)
    np.testing.assert_array_equal(out, w[ids])


def test_errors():
    with pytest.raises(kf.ShapeError, match=r"embedding: ids must be integers, got float32 \(3,\)"):
        embedding(np.ones((4, 2)), np.zeros(3, "float32"))
    with pytest.raises(kf.ShapeError, match=r"the table must be a \(V, E\) matrix, got "
                                            r"float64\(4,\)"):
        embedding(np.ones(4), np.zeros(3, "int64"))
    with pytest.raises(kf.ShapeError, match=r"embedding: ids must be integers"):
        embedding(kf.placeholder("w", (4, 2)), kf.placeholder("i", (None,)))
