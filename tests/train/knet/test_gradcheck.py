"""kf.gradcheck (Knet gcheck)."""

import numpy as np

import knetflow as kf
from knetflow.ops.base import Op, Spec, apply, register


def test_gradcheck_accepts_correct_gradients():
    w = kf.Param(np.array([[0.5, -1.0], [2.0, 0.3]]))
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert kf.gradcheck(lambda x: kf.sum(kf.tanh(x @ w) ** 2), x)


def test_gradcheck_sums_a_non_scalar_output():
    w = kf.Param(np.array([0.5, -1.0, 2.0]))
    assert kf.gradcheck(lambda: kf.exp(w))


class _WrongSquare(Op):
    """x*x with a deliberately wrong gradient (test only; registered only during its test)."""
    name = "test_wrong_square"
    ufunc = "square"

    def infer(x: Spec) -> Spec:
        return x

    def grad(g, out, x):
        return (g * x,)  # should be 2*g*x


def test_gradcheck_catches_a_wrong_rule(capsys):
    w = kf.Param(np.array([0.5, -1.0, 2.0]))
    register(_WrongSquare)
    try:
        assert not kf.gradcheck(lambda: kf.sum(apply(_WrongSquare, w)), verbose=True)
        assert "analytic" in capsys.readouterr().out
    finally:
        del kf.REGISTRY["test_wrong_square"]
