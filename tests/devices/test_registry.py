"""The device-kind registry: what each kind answers, and a kind added from a test.

The toy kind below is the plug-in contract in full: a `DeviceKind` subclass
and one `registry.register` call, and then names, transfers, eager ops, fast
kernels, compiled plans (on it alone and beside a CPU device), `kf.grad` and
the cost model take its devices, with no change anywhere in knetflow. It
reuses the sim devices' strict arrays (a second kind of sim): its arrays are
SimArrays of toy devices, which the sim kind does not claim.
"""

import sys
import types

import numpy as np
import pytest
import scipy.special as sp

import knetflow as kf
from knetflow.devices import base, registry, transfers
from knetflow.devices.sim import DeviceMismatchError, SimArray, SimDevice
from knetflow.graph.node import Graph
from knetflow.ops.base import get_op, kernel
from knetflow.scheduler.costs import CostModel


class ToyDevice(SimDevice):
    """A toy device: a sim device under another kind's name."""

    kind = "toy"


class ToyKind(registry.DeviceKind):
    name = "toy"
    flops = 5e9

    def __init__(self):
        self.peer_copies = 0

    def discover(self):
        return [ToyDevice(0), ToyDevice(1)]

    def why_missing(self, found):
        return " (the toy kind has two)"

    def array_types(self):
        return (SimArray,)

    def owns(self, array):
        return type(array) is SimArray and array.device.kind == self.name

    def device_of(self, array):
        return array.device

    def owns_module(self, xp):
        return any(xp is d.xp for d in registry.found(self.name))

    def special(self, xp):
        return xp.special

    def peer_copy(self, array, src, dst):
        self.peer_copies += 1
        return dst.put(src.get(array))


@pytest.fixture
def toy():
    kind = registry.register(ToyKind())
    yield kind
    registry.set_fast_kernels("toy", None)
    registry.unregister("toy")


def host(*shape):
    return np.arange(float(np.prod(shape))).reshape(shape) / 7 - 0.5


# ---- a kind added from a test, end to end ----


def test_a_registered_kind_is_found_and_named(toy):
    assert [d.name for d in kf.devices()][-2:] == ["toy:0", "toy:1"]
    t1 = kf.device("toy:1")
    assert isinstance(t1, ToyDevice) and kf.device(" TOY:1 ") is t1 and t1.index == 1
    assert registry.kinds()[-1] is toy and registry.kind("toy") is toy
    with pytest.raises(registry.DeviceNotFoundError,
                       match=r"no device toy:5 \(the toy kind has two\); available devices: "
                             r"cpu:0, toy:0, toy:1"):
        kf.device("toy:5")


def test_its_arrays_are_device_arrays_of_its_devices(toy):
    t0 = kf.device("toy:0")
    x = t0.put(host(2, 3))
    assert registry.kind_of(x) is toy and registry.is_device_array(x)
    assert base.is_device_array(x) and registry.is_device_array_type(SimArray)
    assert transfers.device_of(x) is t0 and registry.device_of(x) is t0
    assert registry.array_module([1.0, x]) is t0.xp and registry.module_kind(t0.xp) is toy
    (s0,) = kf.set_sim_devices(1)
    assert registry.kind_of(s0.put(host(2))).name == "sim"  # the sim kind keeps its own


def test_transfers_to_and_from_cpu_and_between_its_devices(toy):
    a = host(3, 4)
    on_toy = transfers.transfer(a, "toy:0")
    assert (on_toy.src, on_toy.dst, on_toy.nbytes) == ("cpu:0", "toy:0", a.nbytes)
    assert kf.device("toy:0").owns(on_toy.array)
    back = transfers.transfer(on_toy.array, "cpu:0")
    assert type(back.array) is np.ndarray and back.nbytes == a.nbytes
    np.testing.assert_array_equal(back.array, a)
    peer = transfers.transfer(on_toy.array, "toy:1")
    assert peer.array.device == "toy:1" and toy.peer_copies == 1
    (s0,) = kf.set_sim_devices(1)
    across = transfers.copy(on_toy.array, s0)  # to another kind: through the host
    assert across.device is s0 and toy.peer_copies == 1
    np.testing.assert_array_equal(s0.get(across), a)
    assert type(kf.cpu(0).get(on_toy.array)) is np.ndarray


def test_ops_run_on_it_eagerly_with_its_module_and_special_functions(toy):
    t0 = kf.device("toy:0")
    x = t0.put(host(2, 3))
    for got, want in ((kf.exp(x), np.exp(host(2, 3))), (kf.erf(x), sp.erf(host(2, 3))),
                      (kf.sum(x * x, axis=1), np.sum(host(2, 3) ** 2, axis=1))):
        assert type(got) is SimArray and got.device is t0
        np.testing.assert_allclose(t0.get(got), want)
    other = kf.device("toy:1").put(host(2, 3))
    with pytest.raises(DeviceMismatchError):
        kf.exp(x) + other  # its arrays refuse to mix, as a real device's do


def test_fast_kernels_registered_for_it_are_used(toy):
    calls = []

    def fast_relu(xp, x):
        calls.append(x.device.name)
        return xp.maximum(x, 0)

    registry.set_fast_kernels("toy", lambda name, xp, attrs: fast_relu if name == "relu"
                              else None)
    t0 = kf.device("toy:0")
    relu = get_op("relu")
    assert kernel(relu, t0.xp, {"a": 1})[0] is fast_relu
    assert kernel(relu, np, {"a": 1})[0] is relu.forward  # only for the toy kind's module
    np.testing.assert_array_equal(t0.get(kf.relu(t0.put(host(4)))), np.maximum(host(4), 0))
    assert calls == ["toy:0"]


def _loss_graph():
    x = kf.placeholder("x", (4, 3), "float64")
    w = kf.param("w", value=host(3, 2))
    return kf.backward(Graph([kf.sum(kf.tanh(x @ w) ** 2)])), {"x": host(4, 3)}


def test_plans_run_on_it_alone_and_beside_a_cpu_device(toy):
    graph, feed = _loss_graph()
    want = kf.compile(graph).run(feed)
    for devices in (["toy:0"], ["cpu:0", "toy:1"]):
        plan = kf.compile(graph, devices=devices, placement={"w": devices[-1]})
        for g, w in zip(plan.run(feed), want):
            np.testing.assert_allclose(g, w, rtol=1e-12)
        assert f"{devices[-1]}: " in plan.explain()  # the toy device runs ops


def test_grad_follows_params_living_on_it(toy):
    t1 = kf.device("toy:1")
    w = kf.Param(t1.put(host(3)))
    g = kf.grad(lambda w: kf.sum(w * w))(w)
    assert transfers.device_of(g) is t1
    np.testing.assert_allclose(t1.get(g), 2 * host(3))


def test_the_cost_model_reads_its_rate(toy):
    assert CostModel().flops["toy"] == 5e9
    assert CostModel().flops["gpu"] == 1e13 and registry.flops()["cpu"] == 2e10


def test_kinds_have_one_name_each(toy):
    with pytest.raises(ValueError, match="'toy' is registered already"):
        registry.register(ToyKind())
    bad = ToyKind()
    bad.name = "Toy:2"
    with pytest.raises(ValueError, match="lowercase name without ':'"):
        registry.register(bad)


# ---- what the built-in kinds answer ----


def test_numpy_is_host_data_of_the_cpu_kind():
    a = np.ones(3)
    assert registry.kind_of(a).name == "cpu" and not registry.is_device_array(a)
    assert registry.device_of(a) is None and not registry.is_device_array_type(np.ndarray)
    assert registry.array_module([a, 2.0]) is np and registry.module_kind(np).name == "cpu"
    assert registry.special(np) is sp
    assert registry.kind_of([1, 2]) is None and registry.kind_of(3.0) is None


def test_sim_kind_answers_with_the_devices_own_module():
    s0, s1 = kf.set_sim_devices(2)
    x = s1.put(np.array([0.5, 1.5]))
    assert registry.array_module([x]) is s1.xp and registry.module_kind(s0.xp).name == "sim"
    assert registry.special(s1.xp) is s1.xp.special
    out = s1.put(np.zeros(3))
    registry.scatter_add(s1.xp, out, (s1.put(np.array([1, 1, 2])),), s1.put(np.ones(3)))
    np.testing.assert_array_equal(s1.get(out), [0.0, 2.0, 1.0])


def test_an_unknown_array_module_is_named():
    with pytest.raises(LookupError, match="is the array module of no device kind"):
        registry.special(types.SimpleNamespace())


def test_cupy_is_recognized_without_importing_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    gpu = registry.kind("gpu")
    assert gpu.array_types() == () and not gpu.owns_module(None)
    assert "cupy" not in sys.modules


# ---- the GPU kind's special functions and scatter-adds (moved from tests/ops) ----


def _cupy_stand_in(monkeypatch):
    """A module that is what `import cupy` gives, so the GPU kind takes it for CuPy."""
    cupy = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return cupy


def test_special_module(monkeypatch):
    # CuPy arrays get cupyx.scipy.special, imported only then (a stand-in here)
    fake = types.ModuleType("cupyx.scipy.special")
    scipy_pkg = types.ModuleType("cupyx.scipy")
    scipy_pkg.special = fake
    monkeypatch.setitem(sys.modules, "cupyx", types.ModuleType("cupyx"))
    monkeypatch.setitem(sys.modules, "cupyx.scipy", scipy_pkg)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", fake)
    assert registry.special(_cupy_stand_in(monkeypatch)) is fake


def test_index_add_uses_cupyx_scatter_add_where_add_has_no_at(monkeypatch):
    calls = []
    fake_cupyx = types.ModuleType("cupyx")
    fake_cupyx.scatter_add = lambda a, where, v: calls.append(1) or np.add.at(a, where, v)
    monkeypatch.setitem(sys.modules, "cupyx", fake_cupyx)
    xp = _cupy_stand_in(monkeypatch)
    xp.add = types.SimpleNamespace()  # an `add` without `.at`
    out = np.zeros(4)
    registry.scatter_add(xp, out, (np.array([1, 1, 3]),), np.array([1.0, 2.0, 5.0]))
    assert calls == [1] and out.tolist() == [0.0, 3.0, 0.0, 5.0]
