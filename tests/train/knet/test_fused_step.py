"""One compiled plan per training step (train/knet/fused_step.py): the same weights and
optimizer state as kf.diff followed by kf.update, and the cases that fall back."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.train.knet import fused_step

RS = np.random.RandomState(3)
X, Y = RS.randn(20, 5), RS.randn(20, 1)


def loss(w, x, y):
    return kf.mean((kf.tanh(x @ w[0]) + w[1] - y) ** 2)


def _weights():
    rs = np.random.RandomState(1)
    return [kf.Param(0.1 * rs.randn(5, 1)), kf.Param(np.zeros((1, 1)))]


OPTIMIZERS = [
    (kf.optim.SGD, {}), (kf.optim.Momentum, {"wdecay": 0.01}), (kf.optim.Nesterov, {}),
    (kf.optim.Adagrad, {}), (kf.optim.Rmsprop, {"gradient_clip_norm": 0.1}),
    (kf.optim.Adadelta, {"gradient_clip_value": 0.05}), (kf.optim.Adam, {"gclip": 0.5}),
]


@pytest.mark.parametrize("opt_class, options", OPTIMIZERS,
                         ids=[c.__name__ for c, _ in OPTIMIZERS])
def test_a_fused_step_equals_diff_then_update(opt_class, options):
    opt = opt_class(**options)
    unfused, fused = _weights(), _weights()
    for p in unfused:
        p.opt = opt.for_param(p.name)
    losses = []
    for _ in range(4):
        r = kf.diff(loss, unfused, X, Y)
        losses.append(r.value)
        kf.update(unfused, [kf.grad(r, p) for p in unfused])
    fused_losses = [fused_step.step(loss, (fused, X, Y), optimizer=opt) for _ in range(4)]
    # float64 all the way, the same formulas in the same order: equal to rounding
    np.testing.assert_allclose(fused_losses, losses, rtol=1e-13)
    for a, b in zip(unfused, fused):
        np.testing.assert_allclose(b.value, a.value, rtol=1e-13, atol=1e-15)
        for slot in a.opt.state[""]:
            np.testing.assert_allclose(b.opt.state[""][slot], a.opt.state[""][slot],
                                       rtol=1e-13, atol=1e-15)


def test_arrays_are_updated_in_place_and_params_limit_the_update():
    w = _weights()
    arrays = [p.value for p in w]
    before = w[1].value.copy()
    fused_step.step(loss, (w, X, Y), params=[w[0]], optimizer=kf.optim.SGD(lr=0.5))
    assert all(p.value is a for p, a in zip(w, arrays))  # the same arrays, changed in place
    np.testing.assert_array_equal(w[1].value, before)   # not among params: left alone
    assert w[1].opt is None


def test_steps_that_cannot_be_fused_say_so():
    w = kf.Param(np.ones(2), opt="not an optimizer")
    assert fused_step.step(lambda: kf.sum(w * w), ()) is None
    x = kf.placeholder("x", (2,), "float64")
    assert fused_step.step(lambda x: kf.sum(x * x), (x,)) is None
