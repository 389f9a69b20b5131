"""Knet-style training on a device: Params whose values live on a (sim) device."""

import numpy as np
import pytest

import knetflow as kf


@pytest.fixture
def sim():
    kf.set_sim_devices(2)
    yield kf.device("sim:0")
    kf.set_sim_devices(0)


def _data():
    rs = np.random.RandomState(0)
    return rs.randn(16, 3), rs.randn(16), np.array([1.0, -2.0, 0.5])


def _train(w, x, y, opt, steps=4):
    losses = []
    for _ in range(steps):
        r = kf.diff(lambda x, y: kf.mean((x @ w - y) ** 2), x, y)
        kf.update(w, kf.grad(r, w), opt)
        losses.append(r.value)
    return losses


@pytest.mark.parametrize("make_opt", [lambda: kf.optim.SGD(lr=0.1, gclip=0.5),
                                      lambda: kf.optim.Adam(lr=0.05)])
def test_a_param_on_a_device_trains_there_like_on_the_host(sim, make_opt):
    x, y, w0 = _data()
    host = kf.Param(w0.copy())
    want = _train(host, x, y, make_opt())
    dev = kf.Param(sim.put(w0))
    got = _train(dev, sim.put(x), sim.put(y), make_opt())
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert sim.owns(dev.value)  # updated in place, where it lives
    np.testing.assert_allclose(sim.get(dev.value), host.value, rtol=1e-12)


def test_gradients_stay_on_the_device_and_one_trace_serves_every_call(sim):
    from knetflow.train.knet import trace_cache

    x, y, w0 = _data()
    w = kf.Param(sim.put(w0))

    def loss(x, y):
        return kf.sum(x @ w - y)

    before = {k: len(v) for k, v in trace_cache._cache.items()}
    for _ in range(3):
        r = kf.diff(loss, sim.put(x), sim.put(y))
        assert isinstance(r.value, float) and sim.owns(kf.grad(r, w))
    np.testing.assert_allclose(sim.get(kf.grad(r, w)), x.sum(axis=0))
    new = [v for k, v in trace_cache._cache.items() if before.get(k) != len(v)]
    assert len(new) == 1 and len(new[0]) == 1 and new[0][0].plan.device is sim


def test_arrays_on_two_devices_are_refused_naming_them(sim):
    x, y, w0 = _data()
    w = kf.Param(kf.device("sim:1").put(w0))
    with pytest.raises(kf.TracingError, match=r"arrays on several devices \['sim:0', 'sim:1'\]"):
        kf.diff(lambda x: kf.sum(x @ w), sim.put(x))
