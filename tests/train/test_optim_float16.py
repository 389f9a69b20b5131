"""Float16 weights are updated in float32 (train/optimizers.py): float32 state, the new
weight cast back. In float16 Adam's eps is 0 and a small g*g is 0, so a zero or small
gradient gave NaN or infinite weights."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.train import optim

GRADS = [np.array([0.0, 1e-3, -0.5, 2.0], "float16"), np.array([0.0, -2e-3, 0.25, 1.0], "float16")]


def _eager(cls, dtype, steps=3):
    w, opt = np.linspace(-1, 1, 4).astype(dtype), cls()
    for k in range(steps):
        kf.update(w, GRADS[k % 2].astype(dtype), opt)
    return w, opt


@pytest.mark.parametrize("cls", list(optim.OPTIMIZERS.values()), ids=lambda c: c.__name__)
def test_float16_weights_stay_finite_and_follow_the_float32_run(cls):
    w16, opt = _eager(cls, "float16")
    w32, _ = _eager(cls, "float32")
    assert w16.dtype == np.float16 and np.isfinite(w16).all()
    assert all(v.dtype == np.float32 for v in opt.state[""].values())
    # each step rounds the weight to float16 (spacing 2**-10 near 1): a few of those apart
    np.testing.assert_allclose(w16, w32, atol=4e-3)


@pytest.mark.parametrize("cls", [optim.Adam, optim.Rmsprop, optim.Momentum, optim.SGD],
                         ids=lambda c: c.__name__)
def test_a_compiled_float16_step_gives_the_eager_updates(cls):
    start = np.linspace(-1, 1, 4).astype("float16")
    w = kf.param("w", value=start.copy(), dtype="float16")
    g = kf.placeholder("g", (4,), "float16")
    plan = kf.compile(optim.step_graph(kf.Graph([kf.sum(w * g)]), cls()))
    eager, opt = start.copy(), cls()
    for k in range(3):
        plan.run({"g": GRADS[k % 2]})
        kf.update(eager, GRADS[k % 2], opt)  # d sum(w * g) / dw = g
    assert plan.params["w"].dtype == np.float16
    np.testing.assert_array_equal(plan.params["w"], eager)
    assert all(plan.params[f"w:{slot}"].dtype == np.float32 for slot in cls().all_slots())


def test_knets_adam_iterator_trains_float16_params():
    w = kf.Param(np.linspace(-1, 1, 4).astype("float16"))
    data = [(GRADS[k % 2],) for k in range(3)]
    eager, opt = w.value.copy(), optim.Adam()
    for (g,) in data:
        kf.update(eager, g, opt)
    for _ in kf.adam(lambda g: kf.sum(w * g), data):
        pass
    assert w.value.dtype == np.float16 and np.isfinite(w.value).all()
    np.testing.assert_array_equal(w.value, eager)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_float16_gradients_global_norm_is_taken_in_float32(compiled):
    """neon's gradient_clip_norm: 70000 gradients of 1 have norm 264.6, whose square
    passes float16's 65504: the scale was limit / inf = 0, and nothing was updated."""
    n, limit = 70000, 10.0
    start, g = np.zeros(n, "float16"), np.ones(n, "float16")
    opt = optim.SGD(lr=1.0, gradient_clip_norm=limit)
    if compiled:
        w = kf.param("w", value=start.copy(), dtype="float16")
        x = kf.placeholder("g", (n,), "float16")
        plan = kf.compile(optim.step_graph(kf.Graph([kf.sum(w * x)]), opt))
        plan.run({"g": g})
        got = plan.params["w"]
    else:
        got = start.copy()
        kf.update([got], [g], opt)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, -limit / np.sqrt(n), rtol=2e-3)


def test_float16_weights_on_a_device_keep_float32_state_there():
    kf.set_sim_devices(1)
    try:
        sim = kf.device("sim:0")
        host, opt_host = np.linspace(-1, 1, 4).astype("float16"), optim.Adam()
        dev, opt_dev = sim.put(host.copy()), optim.Adam()
        for k in range(3):
            kf.update(host, GRADS[k % 2], opt_host)
            kf.update(dev, sim.put(GRADS[k % 2]), opt_dev)
        assert sim.owns(dev) and dev.dtype == np.float16
        np.testing.assert_array_equal(sim.get(dev), host)
        assert all(sim.owns(v) and v.dtype == np.float32 for v in opt_dev.state[""].values())
    finally:
        kf.set_sim_devices(0)


@pytest.mark.parametrize("cls", list(optim.OPTIMIZERS.values()), ids=lambda c: c.__name__)
def test_a_float32_gradient_of_a_float16_weight_is_not_rounded_to_float16_first(cls):
    # 1e5 is inf in float16 and 1e-8 is 0: the gradient goes to the formula's float32 as
    # it is, and the new weight is the float32 weight's, cast back
    g = np.array([1e5, 1e-8, -3e-6], np.float32)
    w16, w32 = np.ones(3, np.float16), np.ones(3, np.float32)
    kf.update(w16, g, cls(lr=1e-4))
    kf.update(w32, g, cls(lr=1e-4))
    assert np.isfinite(w16).all()
    np.testing.assert_array_equal(w16, w32.astype(np.float16))


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam], ids=lambda c: c.__name__)
@pytest.mark.parametrize("low", ["float16", "float32"])
def test_a_gradient_norm_group_spanning_dtypes_keeps_each_params_dtype(cls, low):
    # the group's norm is float64 when a float64 param is in it; the scale it gives the
    # float16 or float32 param must not widen that param's update (a compiled step
    # refused the float64 update; eager updates must agree with it)
    values = {"a": np.array([1.0, 2.0], low), "b": np.array([3.0], "float64")}
    a = kf.param("a", value=values["a"].copy(), dtype=low)
    b = kf.param("b", value=values["b"].copy(), dtype="float64")
    plan = kf.compile(optim.step_graph(kf.Graph([kf.sum(a * a) + kf.sum(b * b)]),
                                       cls(lr=0.1, gradient_clip_norm=1.0)), training=True)
    plan.run({})
    wa, wb = kf.Param(values["a"].copy()), kf.Param(values["b"].copy())
    r = kf.diff(lambda: kf.sum(wa * wa) + kf.sum(wb * wb))
    kf.update([wa, wb], [kf.grad(r, wa), kf.grad(r, wb)], cls(lr=0.1, gradient_clip_norm=1.0))
    assert plan.params["a"].dtype == wa.value.dtype == np.dtype(low)
    assert plan.params["b"].dtype == wb.value.dtype == np.float64
    tol = 1e-3 if low == "float16" else 1e-6
    np.testing.assert_allclose(plan.params["a"], wa.value, rtol=tol)
    np.testing.assert_allclose(plan.params["b"], wb.value, rtol=1e-12)
    if cls is optim.SGD:  # by hand: g = 2w, one norm over both, scaled to 1
        g = 2 * np.concatenate([values["a"].astype(np.float64), values["b"]])
        want = np.concatenate([values["a"], values["b"]]) - 0.1 * g / np.linalg.norm(g)
        np.testing.assert_allclose(plan.params["a"], want[:2], rtol=tol)
        np.testing.assert_allclose(plan.params["b"], want[2:], rtol=1e-12)
