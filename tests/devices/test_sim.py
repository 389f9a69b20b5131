"""Strict simulated devices: arrays that remember their device and refuse to mix."""

import gc

import numpy as np
import pytest

import knetflow as kf
from knetflow.devices.sim import DeviceMismatchError, SimArray, SimOutOfMemoryError
from knetflow.graph.node import Graph
from knetflow.scheduler.codegen import generate


@pytest.fixture
def sims():
    return kf.set_sim_devices(2)


def test_same_device_ops_work_and_stay_on_the_device(sims):
    s0, _ = sims
    a = s0.put(np.arange(6.0).reshape(2, 3))
    b = s0.put(np.ones((2, 3)))
    results = [a + b, a * 2.0, -a, a @ b.T, np.exp(a), np.maximum(a, 1.0), a.reshape(3, 2),
               a.T, a[0], a[:, 1:], np.concatenate([a, b]), s0.xp.where(a > 2, a, b),
               a.sum(axis=0), a.astype("float32"), np.float32(2) * a]
    for r in results:
        assert type(r) is SimArray and r.device == s0
    np.testing.assert_array_equal(s0.get(a @ b.T), np.arange(6.0).reshape(2, 3) @ np.ones((3, 2)))


def test_reductions_give_0d_device_arrays_as_cupy_does(sims):
    s0, _ = sims
    total = s0.put(np.arange(4.0)).sum()
    assert type(total) is SimArray and total.shape == () and float(total) == 6.0
    assert bool(s0.put(np.array([1, 0])).any())


def test_arrays_of_two_devices_refuse_to_mix(sims):
    s0, s1 = sims
    a, b = s0.put(np.ones(3)), s1.put(np.ones(3))
    message = "array device = sim:1 while current = sim:0; .*explicit transfer"
    for op in (lambda: a + b, lambda: np.exp(a, out=b), lambda: s0.xp.exp(b),
               lambda: np.concatenate([a, b]), lambda: a.dot(b), lambda: a[b > 0]):
        with pytest.raises(DeviceMismatchError, match=message):
            op()
    with pytest.raises(ValueError):  # CuPy raises ValueError here; so can be caught as such
        a + b


def test_host_arrays_are_refused_where_a_device_array_is_expected(sims):
    s0, _ = sims
    a = s0.put(np.ones(3))
    message = r"Unsupported type <class 'numpy.ndarray'>: a host \(NumPy\) array of shape \(3,\)"
    for op in (lambda: a + np.ones(3), lambda: np.ones(3) * a, lambda: s0.xp.exp(np.ones(3)),
               lambda: s0.xp.add.reduce(np.ones(3)), lambda: s0.xp.stack([a, np.ones(3)])):
        with pytest.raises(DeviceMismatchError, match=message):
            op()
    with pytest.raises(TypeError):  # CuPy raises TypeError here
        a - np.ones(3)


def test_implicit_conversion_to_numpy_is_refused(sims):
    a = sims[0].put(np.ones(2))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(AttributeError, match="host memory"):
        a.tobytes()
    np.testing.assert_array_equal(a.get(), np.ones(2))


def test_scalars_mix_freely(sims):
    a = sims[0].put(np.arange(3.0))
    for r in (a + 1, 2.5 * a, a / np.float64(2), a - np.array(1.0)):
        assert type(r) is SimArray


def test_creation_functions_make_arrays_on_the_device_and_copy_host_data(sims):
    s0, _ = sims
    host = np.zeros(3)
    x = s0.xp.asarray(host)
    host[0] = 5
    assert type(x) is SimArray and x.device == s0 and float(x[0]) == 0.0
    assert s0.xp.asarray(x) is x
    for made in (s0.xp.empty((2, 2)), s0.xp.zeros(3), s0.xp.arange(4), s0.xp.full(2, 7.0)):
        assert type(made) is SimArray and made.device == s0
    assert isinstance(x, s0.xp.ndarray)
    assert s0.xp.float32 is np.float32 and s0.xp.pi == np.pi


def test_in_place_ops_out_and_setitem(sims):
    s0, _ = sims
    a = s0.put(np.zeros(3))
    buf = s0.xp.empty(3)
    assert s0.xp.add(a, 1.0, out=buf) is buf
    a += 2.0
    a[1] = 5.0
    a[np.array([0])] = np.array([7.0])  # host index arrays and values are copied in, as in CuPy
    s0.xp.add.at(a, s0.put(np.array([2])), 1.0)
    np.testing.assert_array_equal(s0.get(a), [7.0, 5.0, 3.0])
    np.testing.assert_array_equal(s0.get(buf), [1.0, 1.0, 1.0])


def test_random_draws_land_on_the_device(sims):
    s0, _ = sims
    for rng in (s0.rng(3), s0.xp.random.default_rng(3)):
        u = rng.random((2, 2))
        assert type(u) is SimArray and u.device == s0
        np.testing.assert_array_equal(s0.get(u), np.random.default_rng(3).random((2, 2)))


def test_special_functions_through_the_device_module(sims):
    s0, _ = sims
    x = s0.put(np.array([1.0, 2.0]))
    got = s0.xp.special.polygamma(1, x)
    assert type(got) is SimArray
    np.testing.assert_allclose(s0.get(got)[0], np.pi ** 2 / 6)


def test_memory_in_use_and_peak_are_counted(sims):
    s0, _ = sims
    gc.collect()
    base = s0.memory_info()["used"]
    a = s0.put(np.zeros(1000))            # 8000 bytes
    view = a.reshape(10, 100)             # a view: no new memory
    assert s0.memory_info()["used"] == base + 8000
    s0.reset_peak()
    b = a + 1.0
    assert s0.memory_info()["peak"] == base + 16000
    del a, view, b
    gc.collect()
    assert s0.memory_info()["used"] == base


def test_a_memory_budget_fails_allocations_past_it():
    (s0,) = kf.set_sim_devices(1, memory_budget=10_000)
    a = s0.put(np.zeros(1000))
    assert s0.memory_info()["free"] == 2000
    with pytest.raises(SimOutOfMemoryError, match="out of memory on sim:0: allocating 8,000 "
                                                  "bytes with 8,000 in use, budget 10,000"):
        a * 2.0
    assert s0.memory_info()["used"] == 8000


def _program(device):
    x = kf.placeholder("x", (2, 3))
    w = kf.param("w", value=np.arange(6.0, dtype="float32").reshape(3, 2))
    graph = Graph([kf.sum(kf.relu(x @ w) * 2.0, axis=0)])
    return generate(graph, device.xp), [device.put(np.arange(6.0, dtype="float32")
                                                   .reshape(3, 2))]


def test_a_compiled_program_runs_on_a_sim_device():
    (s0,) = kf.set_sim_devices(1)
    program, params = _program(s0)
    x = np.ones((2, 3), "float32")
    out = program.fn([s0.put(x)], params)[0]
    assert type(out) is SimArray and out.device == s0
    np.testing.assert_allclose(s0.get(out), 2 * 2 * np.maximum(x @ np.arange(6.0).reshape(3, 2),
                                                                0)[0])


def test_a_missing_transfer_is_caught_on_a_cpu_only_machine():
    s0, s1 = kf.set_sim_devices(2)
    program, params = _program(s0)
    with pytest.raises(DeviceMismatchError, match="host"):
        program.fn([np.ones((2, 3), "float32")], params)          # feed never put on sim:0
    with pytest.raises(DeviceMismatchError, match="array device = sim:1"):
        program.fn([s1.put(np.ones((2, 3), "float32"))], params)  # fed on the wrong device
