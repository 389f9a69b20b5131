"""GPU devices through CuPy: run only where CuPy sees a GPU."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.devices import transfers
from knetflow.devices.gpu import unavailable_reason


def _gpus():
    return [d for d in kf.devices() if d.kind == "gpu"]


@pytest.fixture
def gpus():
    found = _gpus()
    if not found:
        pytest.skip(f"no GPU: {unavailable_reason()}")
    return found


def test_put_get_round_trip_on_the_device_stream(gpus):
    g = gpus[0]
    host = np.arange(12, dtype="float32").reshape(3, 4)
    x = g.put(host)
    assert isinstance(x, g.xp.ndarray) and g.owns(x) and x.device.id == g.index
    np.testing.assert_array_equal(g.get(x), host)
    assert g.put(x) is x
    g.synchronize()


def test_ops_run_with_cupy_inside_activate(gpus):
    g = gpus[0]
    with g.activate():
        y = g.xp.exp(g.put(np.zeros(3, "float32")))
    np.testing.assert_array_equal(g.get(y), np.ones(3, "float32"))


def test_each_gpu_has_its_own_non_blocking_stream(gpus):
    streams = [g.stream for g in gpus]
    assert len({s.ptr for s in streams}) == len(streams)
    assert all(s.ptr != 0 for s in streams)  # not the legacy default stream


def test_memory_info_reports_the_device_and_the_pool(gpus):
    info = gpus[0].memory_info()
    assert 0 < info["free"] <= info["total"]
    assert info["pool_used"] >= 0 and info["pool_held"] >= info["pool_used"]
    assert gpus[0].memory_budget == info["total"]
    assert "gpu" in gpus[0].describe()


def test_host_and_sim_transfers_count_bytes(gpus):
    (s0,) = kf.set_sim_devices(1)
    host = np.ones((4, 4), "float64")
    to_gpu = transfers.transfer(host, gpus[0])
    assert to_gpu.nbytes == 128 and gpus[0].owns(to_gpu.array)
    back = transfers.transfer(to_gpu.array, "cpu:0")
    np.testing.assert_array_equal(back.array, host)
    on_sim = transfers.transfer(to_gpu.array, s0)
    assert on_sim.nbytes == 128 and s0.owns(on_sim.array)
    assert gpus[0].owns(transfers.copy(on_sim.array, gpus[0]))


def test_peer_to_peer_copy(gpus):
    if len(gpus) < 2:
        pytest.skip("needs two GPUs")
    a, b = gpus[:2]
    host = np.arange(1000, dtype="float32")
    with a.activate():
        x = a.put(host) * 2
    moved = transfers.transfer(x, b)
    assert moved.nbytes == host.nbytes and b.owns(moved.array)
    np.testing.assert_array_equal(b.get(moved.array), host * 2)


def test_random_draws_on_the_device(gpus):
    u = gpus[0].rng(1).random(3)
    assert isinstance(u, gpus[0].xp.ndarray)
