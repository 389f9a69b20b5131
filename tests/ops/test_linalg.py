"""Tests of knetflow/ops/linalg.py: matmul, bmm, and the compositions tensordot and outer."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.linalg import Bmm, Matmul, bmm, matmul
from tests.ops.harness import Arg, Case, check


def _swap(x):
    return np.swapaxes(x, -1, -2)


def _np_bmm(a, b, ta=False, tb=False):
    return np.matmul(_swap(a) if ta else a, _swap(b) if tb else b)


def _matmul_case(sa, sb, second=False):
    return Case(f"matmul{sa}@{sb}", matmul, np.matmul, [Arg(sa), Arg(sb)], second=second)


def _bmm_case(sa, sb, ta, tb, second=False):
    return Case(f"bmm{sa}x{sb}-tA{int(ta)}-tB{int(tb)}",
                lambda a, b: bmm(a, b, transA=ta, transB=tb),
                lambda a, b: _np_bmm(a, b, ta, tb), [Arg(sa), Arg(sb)], second=second)


CASES = [
    _matmul_case((3, 4), (4, 5), second=True),
    _matmul_case((1, 1), (1, 1)),
    _matmul_case((2, 3, 4), (2, 4, 5), second=True),
    _matmul_case((6, 3, 4), (4, 5)),
    _matmul_case((3, 4), (2, 4, 5)),
    _matmul_case((2, 1, 3, 4), (5, 4, 2), second=True),
    _matmul_case((4,), (4, 5), second=True),
    _matmul_case((3, 4), (4,), second=True),
    _matmul_case((4,), (4,), second=True),
    _matmul_case((4,), (2, 4, 5)),
    _matmul_case((2, 3, 4), (4,)),
    _bmm_case((3, 2, 4), (3, 4, 5), False, False, second=True),
    _bmm_case((3, 4, 2), (3, 4, 5), True, False, second=True),
    _bmm_case((3, 2, 4), (3, 5, 4), False, True, second=True),
    _bmm_case((3, 4, 2), (3, 5, 4), True, True, second=True),
    _bmm_case((2, 3, 2, 4), (2, 3, 4, 1), False, False),
    _bmm_case((2, 3), (3, 4), False, False),
]


def _tensordot_case(sa, sb, axes, second=False):
    return Case(f"tensordot{sa}x{sb}-{axes}", lambda a, b: kf.tensordot(a, b, axes),
                lambda a, b: np.tensordot(a, b, axes), [Arg(sa), Arg(sb)], second=second)


CASES += [
    _tensordot_case((2, 3, 4), (3, 4, 5), 2, second=True),
    _tensordot_case((2, 3), (3, 4), 1),
    _tensordot_case((2, 3), (4,), 0, second=True),
    _tensordot_case((3, 4), (3, 4), 2),
    _tensordot_case((2, 3, 4), (4, 3, 5), ([1, 2], [1, 0]), second=True),
    _tensordot_case((4, 2, 3), (3, 5, 4), ([0, -1], [-1, 0])),
    _tensordot_case((3, 2), (2, 3), (0, 1)),
    _tensordot_case((3,), (3,), 1),
    Case("outer", kf.outer, np.outer, [Arg((3,)), Arg((4,))], second=True),
    Case("outer_flattens", kf.outer, np.outer, [Arg((2, 2)), Arg((1, 3))]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- values (eager) ----


@pytest.mark.parametrize("sa,sb", [
    ((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (2, 4, 5)), ((2, 3, 4), (4,)), ((1, 4), (3, 1, 4, 2))])
def test_matmul_values(sa, sb):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    got = matmul(a, b)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-12)
    assert Matmul.infer(kf.Spec(sa, "float64"), kf.Spec(sb, "float64")).shape == got.shape


def test_matmul_dtypes():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    assert matmul(a, a.T).dtype == np.int32
    assert matmul(a, np.ones((3, 1), np.float32)).dtype == np.float64
    assert matmul(np.ones((2, 3), np.float32), np.ones(3, np.float32)).dtype == np.float32


def test_matmul_out():
    a, b = np.ones((2, 3, 4)), np.full((4, 5), 2.0)
    out = np.empty((2, 3, 5))
    assert Matmul.forward(np, a, b, out=out) is out
    np.testing.assert_allclose(out, 8.0)
    scalar = np.empty(())
    Matmul.forward(np, np.ones(3), np.ones(3), out=scalar)
    assert scalar == 3.0


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_bmm_matches_a_loop_over_the_batch(ta, tb):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 3, 2) if ta else (4, 2, 3))
    b = rng.standard_normal((4, 5, 3) if tb else (4, 3, 5))
    got = bmm(a, b, transA=ta, transB=tb)
    assert got.shape == (4, 2, 5)
    for i in range(4):
        ai = a[i].T if ta else a[i]
        bi = b[i].T if tb else b[i]
        np.testing.assert_allclose(got[i], ai @ bi, rtol=1e-12)


def test_bmm_out():
    out = np.empty((2, 3, 3))
    assert Bmm.forward(np, np.ones((2, 4, 3)), np.ones((2, 4, 3)), transA=True, out=out) is out
    np.testing.assert_allclose(out, 4.0)


def test_seed_bmm_example():
    # Knet: A is (m, n, b...), B is (n, k, b...), the output (m, k, b...); row-major
    # reverses the axes: (b..., m, n) x (b..., n, k) -> (b..., m, k)
    a = np.arange(2 * 3 * 2 * 4, dtype=np.float64).reshape(2, 3, 2, 4)
    b = np.ones((2, 3, 4, 5))
    assert bmm(a, b).shape == (2, 3, 2, 5)
    np.testing.assert_allclose(bmm(a, b)[1, 2], a[1, 2] @ b[1, 2])


# ---- symbolic shapes ----


def test_matmul_dynamic_dims():
    x = kf.placeholder("x", (None, 4))
    w = kf.param("w", (4, 5))
    assert matmul(x, w).shape == (None, 5)
    assert matmul(kf.placeholder("s", (None, 3, 4)), w).shape == (None, 3, 5)
    assert matmul(kf.placeholder("v", (None,)), kf.placeholder("m", (None, 2))).shape == (2,)
    assert bmm(kf.placeholder("a", (None, 2, 3)), kf.placeholder("b", (7, 3, 4))).shape \
        == (7, 2, 4)


def test_matmul_compiled_with_gradient():
    x = kf.placeholder("x", (None, 3), "float64")
    w = kf.param("w", value=np.arange(6.0).reshape(3, 2), dtype="float64")
    g = kf.backward(kf.Graph([kf.sum(matmul(x, w))]))
    xv = np.ones((4, 3))
    loss, gw = kf.compile(g).run({"x": xv})
    assert loss == pytest.approx(np.sum(xv @ np.arange(6.0).reshape(3, 2)))
    np.testing.assert_allclose(gw, np.full((3, 2), 4.0))


# ---- errors ----


def test_matmul_inner_mismatch_names_both_shapes():
    with pytest.raises(kf.ShapeError, match=r"matmul.*\(2, 3\) @ \(4, 5\)"):
        matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(kf.ShapeError, match=r"matmul.*\(3,\) @ \(2,\)"):
        matmul(np.ones(3), np.ones(2))


def test_matmul_error_at_build_time_names_the_line():
    x = kf.placeholder("x", (None, 3))
    with pytest.raises(kf.ShapeError, match=r"matmul.*\(\?, 3\) @ \(4, 2\).*test_linalg.py"):
        matmul(x, kf.param("w", (4, 2)))


def test_matmul_other_errors():
    with pytest.raises(kf.ShapeError, match=r"matmul.*scalar"):
        matmul(np.ones(()), np.ones(3))
    with pytest.raises(kf.ShapeError, match=r"matmul: batch.*\(2, 3, 4\) @ \(5, 4, 1\)"):
        matmul(np.ones((2, 3, 4)), np.ones((5, 4, 1)))


def test_bmm_errors():
    with pytest.raises(kf.ShapeError, match=r"bmm: batch.*\(2, 3, 4\) and \(5, 4, 1\)"):
        bmm(np.ones((2, 3, 4)), np.ones((5, 4, 1)))
    with pytest.raises(kf.ShapeError, match=r"bmm: inner.*\(2, 3, 4\) and \(2, 3, 1\)"):
        bmm(np.ones((2, 3, 4)), np.ones((2, 3, 1)))
    with pytest.raises(kf.ShapeError, match=r"bmm: .*same rank.*\(2, 3, 4\) and \(4, 1\)"):
        bmm(np.ones((2, 3, 4)), np.ones((4, 1)))
    with pytest.raises(kf.ShapeError, match=r"bmm: inner.*transB=True \(4 != 3\)"):
        bmm(np.ones((2, 3, 4)), np.ones((2, 4, 3)), transB=True)


# ---- properties ----

_dim = st.integers(1, 4)


@st.composite
def _matmul_shapes(draw):
    batch = draw(st.lists(_dim, max_size=3))
    # each batch dim of either operand may be 1 (broadcast) or dropped from the front
    a_batch = [d if draw(st.booleans()) else 1 for d in batch]
    b_batch = [d if draw(st.booleans()) else 1 for d in batch]
    a_batch = a_batch[draw(st.integers(0, len(a_batch))):]
    b_batch = b_batch[draw(st.integers(0, len(b_batch))):]
    m, n, k = draw(_dim), draw(_dim), draw(_dim)
    sa = tuple(a_batch) + (m, n) if draw(st.integers(0, 3)) else (n,)
    sb = tuple(b_batch) + (n, k) if draw(st.integers(0, 3)) else (n,)
    return sa, sb


@settings(max_examples=60, deadline=None)
@given(_matmul_shapes())
def test_matmul_matches_numpy(shapes):
    sa, sb = shapes
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    want = np.matmul(a, b)
    np.testing.assert_allclose(matmul(a, b), want, rtol=1e-10, atol=1e-12)
    spec = Matmul.infer(kf.Spec(sa, "float64"), kf.Spec(sb, "float64"))
    assert spec.shape == want.shape
    # with every dim dynamic, the rule still accepts the shapes and keeps the rank
    dyn = Matmul.infer(kf.Spec((None,) * len(sa), "float64"), kf.Spec(sb, "float64"))
    assert len(dyn.shape) == want.ndim


@settings(max_examples=30, deadline=None)
@given(st.lists(_dim, max_size=2), _dim, _dim, _dim, st.booleans(), st.booleans())
def test_bmm_matches_numpy(batch, m, n, k, ta, tb):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(tuple(batch) + ((n, m) if ta else (m, n)))
    b = rng.standard_normal(tuple(batch) + ((k, n) if tb else (n, k)))
    got = bmm(a, b, transA=ta, transB=tb)
    np.testing.assert_allclose(got, _np_bmm(a, b, ta, tb), rtol=1e-10, atol=1e-12)
    assert got.shape == tuple(batch) + (m, k)


# ---- tensordot and outer ----


def test_tensordot_and_outer_values_and_dtypes():
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    b = np.arange(12, dtype=np.int32).reshape(4, 3)
    got = kf.tensordot(a, b, ([1, 2], [1, 0]))
    np.testing.assert_array_equal(got, np.tensordot(a, b, ([1, 2], [1, 0])))
    assert got.dtype == np.int32
    assert kf.outer(np.array([True, False]), np.array([True])).dtype == np.bool_
    np.testing.assert_array_equal(kf.outer(np.arange(3), np.arange(2.0)),
                                  np.outer(np.arange(3), np.arange(2.0)))


def test_tensordot_needs_no_op_of_its_own():
    a, b = kf.placeholder("a", (2, 3, 4)), kf.placeholder("b", (4, 5))
    ops = {n.op for n in kf.Graph([kf.tensordot(a, b, 1)], inputs=[a, b]).nodes}
    assert ops <= {"input", "reshape", "transpose", "matmul"}


def test_tensordot_dynamic_dims():
    x, w = kf.placeholder("x", (None, 3, 4), "float64"), kf.placeholder("w", (3, 4, 5), "float64")
    y = kf.tensordot(x, w, 2)
    assert y.shape == (None, 5)
    assert kf.tensordot(w, kf.placeholder("v", (5, None)), 1).shape == (3, 4, None)
    assert kf.tensordot(kf.placeholder("p", (2, None)), kf.placeholder("q", (None, 3)),
                        1).shape == (2, 3)
    xv, wv = np.ones((6, 3, 4)), np.arange(60.0).reshape(3, 4, 5)
    np.testing.assert_allclose(kf.compile([y]).run({"x": xv, "w": wv})[0],
                               np.tensordot(xv, wv, 2))
    assert kf.outer(kf.placeholder("u", (None, 2)), w).shape == (None, 60)


def test_tensordot_errors():
    a, b = np.ones((2, 3)), np.ones((3, 4))
    with pytest.raises(kf.ShapeError, match=r"tensordot: shape-mismatch for sum: axis 0 of "
                                            r"\(2, 3\) has 2 elements, axis 0 of \(3, 4\) has 3"):
        kf.tensordot(a, b, ([0], [0]))
    with pytest.raises(kf.ShapeError, match=r"tensordot: axes=3 needs 0 <= axes <= the rank "
                                            r"of both \(2, 3\) and \(3, 4\)"):
        kf.tensordot(a, b, 3)
    with pytest.raises(kf.ShapeError, match=r"tensordot: axes=-1 needs 0 <= axes"):
        kf.tensordot(a, b, -1)
    with pytest.raises(kf.ShapeError, match=r"tensordot: shape-mismatch for sum: 2 axes of a "
                                            r"against 1 axes of b"):
        kf.tensordot(a, b, ([0, 1], [0]))
    with pytest.raises(kf.ShapeError, match=r"tensordot: axis 2 is out of range for \(2, 3\)"):
        kf.tensordot(a, b, ([2], [0]))
    with pytest.raises(kf.ShapeError, match=r"tensordot: repeated axis in \(1, -1\)"):
        kf.tensordot(a, np.ones((3, 3)), ([1, -1], [0, 1]))
    with pytest.raises(kf.ShapeError, match=r"tensordot: axes must be an int or a pair of "
                                            r"sequences of axes, got \[0, 1, 2\]"):
        kf.tensordot(a, b, [0, 1, 2])
    with pytest.raises(kf.ShapeError, match=r"tensordot: axes must hold ints, got 1.0"):
        kf.tensordot(a, b, ([1.0], [0]))
    with pytest.raises(kf.ShapeError, match=r"tensordot: \(\?, 3\) and \(3, \?\) have too many "
                                            r"dynamic dims"):
        kf.tensordot(kf.placeholder("p", (None, 3)), kf.placeholder("q", (3, None)), 1)
