"""NumPy products, norms, einsum and the functions that map onto knetflow's matrix and
rearranging ops (graph/numpy_linalg.py, numpy_einsum.py, numpy_arrange.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.graph import numpy_linalg
from tests.graph.numpy_harness import F, case, check

V = F((4,))
M = F((3, 4))
X = F((2, 3, 4))


def _spd(n):
    """A well-conditioned matrix value: solve/inv/det have tame derivatives there."""
    rs = np.random.RandomState(n)
    a = rs.uniform(-0.5, 0.5, (n, n))
    return F((n, n), value=a + n * np.eye(n))


PRODUCTS = [
    case("np.dot", np.dot, V, F((4,))),
    case("np.dot[matrix, vector]", np.dot, M, V),
    case("np.dot[matrices]", np.dot, M, F((4, 2))),
    case("np.dot[vector, 3-D]", np.dot, F((3,)), F((2, 3, 4))),
    case("np.dot[N-D rule]", np.dot, X, F((5, 4, 2))),
    case("np.dot[scalar]", lambda s, x: np.dot(s, x), F(()), M),
    case("np.vdot", np.vdot, M, F((2, 6))),
    case("np.inner", np.inner, M, F((2, 4))),
    case("np.inner[vectors]", np.inner, V, V),
    case("np.inner[3-D]", np.inner, X, F((2, 5, 4))),
    case("np.outer", np.outer, F((3,)), V),
    case("np.outer[flattens]", np.outer, F((2, 2)), F((3, 1))),
    case("np.linalg.outer", np.linalg.outer, F((3,)), V),
    case("np.linalg.matmul", np.linalg.matmul, X, F((4, 2))),
    case("np.linalg.vecdot", np.linalg.vecdot, M, V),
    case("np.tensordot", np.tensordot, X, F((3, 4, 2))),
    case("np.tensordot[axes=1]", lambda a, b: np.tensordot(a, b, 1), X, F((4, 2))),
    case("np.tensordot[axes pairs]", lambda a, b: np.tensordot(a, b, axes=([0, 2], [2, 0])),
         X, F((4, 5, 2))),
    case("np.tensordot[axes=0]", lambda a, b: np.tensordot(a, b, axes=0), F((2,)), F((3,))),
    case("np.linalg.tensordot", lambda a, b: np.linalg.tensordot(a, b, axes=1), M, F((4, 2))),
    case("np.trace", np.trace, M),
    case("np.trace[offset]", lambda x: np.trace(x, offset=-1), F((4, 3))),
    case("np.trace[3-D, axes]", lambda x: np.trace(x, 1, axis1=2, axis2=1), X),
    case("np.trace[of ints]", lambda x, i: np.trace(i) * x, F(()),
         F((3, 3), value=np.arange(9, dtype=np.int16).reshape(3, 3))),
    case("np.linalg.trace", lambda x: np.linalg.trace(x, offset=1), X),
]

NORMS = [
    case("np.linalg.norm", np.linalg.norm, X),
    case("np.linalg.norm[vector ords]", lambda x: [np.linalg.norm(x, o) for o in
                                                   (None, 1, 2, np.inf, -np.inf, 3, 0.5, 0)],
         V),
    case("np.linalg.norm[axis]", lambda x: np.linalg.norm(x, axis=1), X),
    case("np.linalg.norm[axis, ord=1, keepdims]",
         lambda x: np.linalg.norm(x, ord=1, axis=-1, keepdims=True), X),
    case("np.linalg.norm[matrix ords]",
         lambda x: [np.linalg.norm(x, o) for o in ("fro", 1, -1, np.inf, -np.inf)], M),
    case("np.linalg.norm[matrix axes, keepdims]",
         lambda x: np.linalg.norm(x, ord=np.inf, axis=(2, 0), keepdims=True), X),
    case("np.linalg.norm[keepdims, no axis]", lambda x: np.linalg.norm(x, keepdims=True), M),
    case("np.linalg.norm[of ints]", lambda x, i: np.linalg.norm(i) * x, F(()),
         F((3,), value=np.array([3, 4, 12], dtype=np.int32))),
    case("np.linalg.vector_norm", lambda x: np.linalg.vector_norm(x, axis=(0, 2), ord=3), X),
    case("np.linalg.vector_norm[all axes]", np.linalg.vector_norm, X),
    case("np.linalg.matrix_norm", np.linalg.matrix_norm, X),
    case("np.linalg.matrix_norm[ord=1, keepdims]",
         lambda x: np.linalg.matrix_norm(x, ord=1, keepdims=True), X),
]

EINSUM = [
    case(f"np.einsum[{s}]", lambda *xs, s=s: np.einsum(s, *xs), *args) for s, args in [
        ("ij,jk->ik", (M, F((4, 2)))),
        ("ij,jk", (M, F((4, 2)))),
        ("ij->ji", (M,)),
        ("ij", (M,)),
        ("ji", (M,)),
        ("ii", (F((3, 3)),)),
        ("ii->i", (F((3, 3)),)),
        ("iij->j", (F((3, 3, 2)),)),
        ("ij->", (M,)),
        ("ij->j", (M,)),
        ("i,j->ij", (F((3,)), V)),
        ("i,i->", (V, V)),
        ("i,i", (V, V)),
        ("ij,ij->ij", (M, M)),
        ("bij,bjk->bik", (X, F((2, 4, 5)))),
        ("...ij,...jk->...ik", (X, F((4, 5)))),
        ("...ij,...jk", (F((1, 3, 4)), F((2, 4, 5)))),
        ("bi,bj->bij", (F((2, 3)), F((2, 4)))),
        ("ijk,kj->i", (X, F((4, 3)))),
        ("ij,jk,kl->il", (F((2, 3)), F((3, 4)), F((4, 2)))),
        ("i,i,i->", (V, V, V)),
        ("...i->...", (X,)),
        ("i...->...", (X,)),
        ("ab,cd->abcd", (F((2, 2)), F((2, 3)))),
        ("i,j", (F((2,)), F((1,)))),
        ("i,i->i", (F((1,)), F((3,)))),
        ("ba,ac->cb", (F((2, 3)), F((3, 4)))),
        (" ij , jk -> ik ", (M, F((4, 2)))),
    ]
] + [
    case("np.einsum[interleaved]", lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]),
         M, F((4, 2))),
    case("np.einsum[interleaved, ellipsis, implicit]",
         lambda a, b: np.einsum(a, [Ellipsis, 0, 1], b, [1, 2]), X, F((4, 2))),
    case("np.einsum[dtype, optimize]",
         lambda a, b: np.einsum("ij,jk->ik", a, b, dtype=np.float64, optimize=True),
         M, F((4, 2))),
    case("np.einsum[scalar operand]", lambda x: np.einsum("...,...", x, 2.0), M),
]

ARRANGED = [
    case("np.cumsum", np.cumsum, M),
    case("np.cumsum[axis]", lambda x: np.cumsum(x, axis=1), X),
    case("np.cumsum[ints widen]", lambda x, i: np.cumsum(i, axis=0) * x, F((3,)),
         F((2, 3), value=np.arange(6, dtype=np.int8).reshape(2, 3))),
    case("np.repeat", lambda x: np.repeat(x, 2), M),
    case("np.repeat[axis, counts]", lambda x: np.repeat(x, [1, 0, 2], axis=0), M),
    case("np.roll", lambda x: np.roll(x, 3), M),
    case("np.roll[axes]", lambda x: np.roll(x, (1, -2), axis=(0, 2)), X),
    case("np.split", lambda x: np.split(x, 2, axis=1), M),
    case("np.split[indices]", lambda x: np.split(x, [1, 3]), V),
    case("np.array_split", lambda x: np.array_split(x, 3, axis=1), M),
    case("np.array_split[indices]", lambda x: np.array_split(x, [2], axis=0), M),
    case("np.hsplit", lambda x: np.hsplit(x, 2), M),
    case("np.vsplit", lambda x: np.vsplit(x, [1]), M),
    case("np.dsplit", lambda x: np.dsplit(x, 2), X),
    case("np.tril", np.tril, M),
    case("np.tril[k, 3-D]", lambda x: np.tril(x, k=-1), X),
    case("np.triu", lambda x: np.triu(x, 1), M),
    case("np.triu[vector: rows]", lambda x: np.triu(x, -1), V),
    case("np.diag", np.diag, M),
    case("np.diag[vector, k]", lambda x: np.diag(x, k=-1), V),
    case("np.linalg.solve", np.linalg.solve, _spd(3), F((3,))),
    case("np.linalg.solve[matrix right side]", np.linalg.solve, _spd(3), F((3, 2))),
    case("np.linalg.inv", np.linalg.inv, _spd(3)),
    case("np.linalg.det", np.linalg.det, _spd(3)),
    case("np.linalg.slogdet", lambda a: tuple(np.linalg.slogdet(a)), _spd(4)),
]

CASES = PRODUCTS + NORMS + EINSUM + ARRANGED

@pytest.mark.parametrize("c", CASES, ids=str)
def test_linalg(c):
    check(c)


def test_dot_is_not_matmul_for_nd():
    # the N-D rule: dot(a, b)[i,j,k,m] = sum(a[i,j,:] * b[k,:,m]); matmul would batch
    a = kf.placeholder("a", (2, 3, 4))
    b = kf.placeholder("b", (5, 4, 6))
    assert np.dot(a, b).shape == (2, 3, 5, 6)
    assert np.inner(a, kf.placeholder("c", (7, 4))).shape == (2, 3, 7)


def test_contraction_matches_numpy():
    # the transpose/reshape/matmul contraction the N-D dot and inner use, in every pairing
    rs = np.random.RandomState(0)
    a, b = rs.randn(2, 3, 4), rs.randn(4, 2, 3)
    sa, sb = kf.placeholder("a", a.shape, "float64"), kf.placeholder("b", b.shape, "float64")
    for axes in [((2,), (0,)), ((0, 1), (1, 2)), ((1, 0), (2, 1)), ((), ())]:
        got = kf.compile([numpy_linalg.contract("t", sa, sb, *axes)]).run({"a": a, "b": b})[0]
        np.testing.assert_allclose(got, np.tensordot(a, b, axes), rtol=1e-12)


def test_slogdet_has_numpys_fields():
    a = kf.placeholder("a", (3, 3), "float64")
    result = np.linalg.slogdet(a)
    sign, logabsdet = result
    assert result.sign is sign and result.logabsdet is logabsdet


def test_einsum_batch_dims_may_be_dynamic():
    a = kf.placeholder("a", (None, 3, 4), "float64")
    b = kf.placeholder("b", (None, 4, 2), "float64")
    y = np.einsum("bij,bjk->bik", a, b)
    assert y.shape == (None, 3, 2)
    va, vb = np.ones((5, 3, 4)), np.ones((5, 4, 2))
    np.testing.assert_allclose(kf.compile([y]).run({"a": va, "b": vb})[0],
                               np.einsum("bij,bjk->bik", va, vb))


@pytest.mark.parametrize("call, error, match", [
    (lambda x: np.linalg.norm(x, "nuc"), kf.TracingError, r"np\.linalg\.norm: ord='nuc'"),
    (lambda x: np.linalg.norm(x, 2), kf.TracingError, r"ord=2 \(it needs singular values\)"),
    (lambda x: np.linalg.norm(x[0], "fro"), ValueError, r"Invalid norm order 'fro' for vectors"),
    (lambda x: np.linalg.norm(kf.reshape(x, (3, 2, 2))), None, None),
    (lambda x: np.linalg.norm(kf.reshape(x, (3, 2, 2)), 1), ValueError, "Improper number"),
    (lambda x: np.einsum("ij,jk->ik", x), ValueError, "2 subscript terms for 1 operands"),
    (lambda x: np.einsum("ijk", x), ValueError, "has 2 dimensions but subscripts 'ijk'"),
    (lambda x: np.einsum("ij->ii", x), ValueError, "repeats a label"),
    (lambda x: np.einsum("ij->k", x), ValueError, "output label 'k' is in no input"),
    (lambda x: np.einsum("i1", x), ValueError, "invalid subscript '1'"),
    (lambda x: np.einsum("ij", x, out=np.empty((3, 4))), kf.TracingError,
     r"np\.einsum: the argument out="),
    (lambda x: np.dot(x, x.T, out=np.empty((3, 3))), kf.TracingError,
     r"np\.dot: the argument out="),
    (lambda x: np.linalg.svd(x), kf.TracingError, r"^np\.linalg\.svd is not supported"),
    (lambda x: np.linalg.eigh(x), kf.TracingError, r"^np\.linalg\.eigh is not supported"),
    (lambda x: np.linalg.pinv(x), kf.TracingError, r"^np\.linalg\.pinv is not supported"),
    (lambda x: np.kron(x, x), kf.TracingError, r"^np\.kron is not supported"),
    (lambda x: np.cross(x, x), kf.TracingError, r"^np\.cross is not supported"),
])
def test_linalg_errors(call, error, match):
    x = kf.placeholder("x", (3, 4), "float64")
    if error is None:
        assert call(x).shape == ()
        return
    with pytest.raises(error, match=match):
        call(x)


@st.composite
def _einsum_case(draw):
    """A random einsum over 1-3 operands drawing labels from 'abcd' with fixed sizes."""
    sizes = {"a": 2, "b": 3, "c": 1, "d": 2}
    terms = draw(st.lists(st.lists(st.sampled_from("abcd"), min_size=0, max_size=3),
                          min_size=1, max_size=3))
    used = sorted({label for t in terms for label in t})
    out = draw(st.permutations(used).flatmap(
        lambda p: st.integers(0, len(p)).map(lambda n: p[:n])))
    subscripts = ",".join("".join(t) for t in terms) + "->" + "".join(out)
    shapes = [tuple(sizes[label] for label in t) for t in terms]
    return subscripts, shapes


@settings(max_examples=40, deadline=None)
@given(_einsum_case())
def test_einsum_over_random_subscripts(spec):
    subscripts, shapes = spec
    c = case(f"np.einsum[{subscripts}]", lambda *xs: np.einsum(subscripts, *xs),
             *[F(s) for s in shapes])
    check(c)
