"""Tests of knetflow/ops/linalg_solve.py: solve, inv, det and slogdet."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.ops.linalg_solve import Slogdet, Solve
from tests.ops.harness import Arg, Case, check

F = Arg


def _shifted(a, by):
    """a + by * I on the last two axes: random entries in [-2, 2] made well conditioned."""
    return a + by * np.eye(a.shape[-1])


def _case(name, fn, ref, args, by=4.0, second=True, **kw):
    """A case whose first input is made diagonally dominant (by * I added) in fn and ref."""
    return Case(name, lambda a, *rest: fn(a + by * np.eye(args[0].shape[-1]), *rest),
                lambda a, *rest: ref(_shifted(a, by), *rest), args, second=second, **kw)


CASES = [
    _case("inv", kf.inv, np.linalg.inv, [F((3, 3))]),
    _case("inv_batched", kf.inv, np.linalg.inv, [F((2, 3, 3))]),
    _case("inv_1x1", kf.inv, np.linalg.inv, [F((1, 1))], second=False),
    _case("det", kf.det, np.linalg.det, [F((3, 3))]),
    _case("det_negative", kf.det, np.linalg.det, [F((2, 2, 2))], by=-4.0),
    _case("slogdet", kf.slogdet, np.linalg.slogdet, [F((3, 3))]),
    _case("slogdet_negative", kf.slogdet, np.linalg.slogdet, [F((2, 3, 3))], by=-4.0),
    _case("slogdet_logabsdet", lambda a: kf.slogdet(a)[1],
          lambda a: np.linalg.slogdet(a)[1], [F((3, 3))], second=False),
    _case("solve_vector", kf.solve, np.linalg.solve, [F((3, 3)), F((3,))]),
    _case("solve_matrix", kf.solve, np.linalg.solve, [F((3, 3)), F((3, 2))]),
    _case("solve_batched", kf.solve, np.linalg.solve, [F((2, 3, 3)), F((2, 3, 2))]),
    _case("solve_broadcast_b", kf.solve, np.linalg.solve, [F((2, 3, 3)), F((3, 4))]),
    _case("solve_broadcast_a", kf.solve, np.linalg.solve, [F((3, 3)), F((2, 1, 3, 2))]),
    _case("solve_batched_vector", kf.solve, np.linalg.solve, [F((2, 3, 3)), F((3,))]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- values and identities ----


def test_inverse_and_solution_identities():
    rs = np.random.RandomState(0)
    a = _shifted(rs.randn(4, 3, 3), 3.0)
    b = rs.randn(4, 3, 2)
    np.testing.assert_allclose(kf.matmul(a, kf.inv(a)), np.broadcast_to(np.eye(3), a.shape),
                               atol=1e-12)
    np.testing.assert_allclose(kf.matmul(a, kf.solve(a, b)), b, atol=1e-12)
    sign, logabsdet = kf.slogdet(a)
    np.testing.assert_allclose(sign * np.exp(logabsdet), kf.det(a))


def test_integer_inputs_compute_in_float64():
    a = np.array([[2, 1], [1, 3]], dtype=np.int32)
    assert kf.inv(a).dtype == np.float64
    assert kf.det(a).dtype == np.float64 and kf.det(a) == pytest.approx(5.0)
    assert kf.solve(a, np.array([1, 2])).dtype == np.float64
    assert kf.solve(a.astype(np.float32), np.ones(2, np.float32)).dtype == np.float32
    assert kf.solve(a.astype(np.float32), np.ones(2)).dtype == np.float64
    assert [s.dtype for s in kf.slogdet(a)] == [np.float64, np.float64]


def test_shapes_follow_numpy_2():
    spec = kf.Spec
    assert Solve.infer(spec((5, 3, 3), "float32"), spec((3,), "float32")).shape == (5, 3)
    # a 2-D b is a stack of one matrix, not a batch of vectors (NumPy 2's rule)
    assert Solve.infer(spec((3, 3, 3), "float32"), spec((3, 2), "float32")).shape == (3, 3, 2)
    assert Solve.infer(spec((None, 3, 3), "float32"), spec((4, 1, 3, 2), "float32")).shape \
        == (4, None, 3, 2)
    assert Slogdet.infer(spec((2, 4, 4), "float64"))[1].shape == (2,)
    assert kf.det(kf.placeholder("a", (None, 2, 2))).shape == (None,)
    assert kf.inv(kf.placeholder("a", (2, None, None))).shape == (2, None, None)


def test_slogdet_of_symbols_gives_two_symbols_and_sign_has_no_gradient():
    a = kf.placeholder("a", (2, 2), "float64")
    sign, logabsdet = kf.slogdet(a)
    assert (sign.shape, logabsdet.shape) == ((), ())
    graph = kf.backward(kf.Graph([sign * 1.0], inputs=[a]), wrt=[a])
    got = kf.compile(graph).run({"a": np.array([[0.0, 2.0], [3.0, 1.0]])})
    assert got[0] == -1.0
    np.testing.assert_array_equal(got[1], np.zeros((2, 2)))


def test_slogdet_does_not_overflow():
    a = np.eye(200) * 1e3
    sign, logabsdet = kf.slogdet(a)
    assert sign == 1.0 and logabsdet == pytest.approx(200 * np.log(1e3))
    with np.errstate(over="ignore"):
        assert np.isinf(kf.det(a))


def test_gradients_have_their_closed_forms():
    a_value = np.array([[3.0, 1.0], [0.5, 2.0]])
    a = kf.Param(a_value)
    inv_t = np.linalg.inv(a_value).T
    g_det = kf.grad(kf.diff(lambda: kf.det(a)), a)
    np.testing.assert_allclose(g_det, np.linalg.det(a_value) * inv_t)
    g_log = kf.grad(kf.diff(lambda: kf.slogdet(a)[1]), a)
    np.testing.assert_allclose(g_log, inv_t)
    g_inv = kf.grad(kf.diff(lambda: kf.sum(kf.inv(a))), a)
    np.testing.assert_allclose(g_inv, -inv_t @ np.ones((2, 2)) @ inv_t)


def test_singular_matrices_fail_like_numpy():
    with pytest.raises(np.linalg.LinAlgError):
        kf.inv(np.ones((2, 2)))
    with pytest.raises(np.linalg.LinAlgError):
        kf.solve(np.zeros((2, 2)), np.ones(2))
    assert kf.det(np.ones((2, 2))) == 0.0
    assert kf.slogdet(np.ones((2, 2)))[0] == 0.0


# ---- errors ----


@pytest.mark.parametrize("fn", [kf.inv, kf.det, kf.slogdet])
def test_square_matrix_errors(fn):
    name = fn.__name__
    with pytest.raises(kf.ShapeError, match=rf"{name}: the last two axes must be square, "
                                            r"got \(2, 3\)"):
        fn(np.ones((2, 3)))
    with pytest.raises(kf.ShapeError, match=rf"{name}: needs a matrix or a stack of matrices, "
                                            r"got \(3,\)"):
        fn(np.ones(3))
    with pytest.raises(kf.ShapeError, match=rf"{name}: float16 is not supported by linear "
                                            r"algebra \(as in NumPy\); cast to float32 first"):
        fn(kf.placeholder("h", (2, 2), "float16"))
    with pytest.raises(kf.ShapeError, match=rf"{name}: .*\(at test_linalg_solve.py:\d+\)"):
        fn(kf.placeholder("r", (2, 3, 4)))


def test_solve_errors():
    a = np.eye(3)
    with pytest.raises(kf.ShapeError, match=r"solve: \(3, 3\) and \(2,\) do not match: "
                                            r"b needs 3 rows"):
        kf.solve(a, np.ones(2))
    with pytest.raises(kf.ShapeError, match=r"solve: \(3, 3\) and \(2, 3\) do not match: "
                                            r"b needs 3 rows"):
        kf.solve(a, np.ones((2, 3)))
    with pytest.raises(kf.ShapeError, match=r"solve: batch dimensions of \(2, 3, 3\) and "
                                            r"\(4, 3, 1\) do not broadcast"):
        kf.solve(np.ones((2, 3, 3)), np.ones((4, 3, 1)))
    with pytest.raises(kf.ShapeError, match=r"solve: b must be a vector or a stack of "
                                            r"matrices, got \(\)"):
        kf.solve(a, np.float64(1.0))
    with pytest.raises(kf.ShapeError, match=r"solve: the last two axes must be square"):
        kf.solve(np.ones((3, 2)), np.ones(3))
    with pytest.raises(kf.ShapeError, match=r"solve: float16 is not supported"):
        kf.solve(kf.placeholder("h", (3, 3), "float16"), kf.placeholder("v", (3,), "float16"))
