"""GpuDevice against the fake CuPy: discovery, streams, put/get, peer copies and their order.

tests/devices/test_gpu.py runs on a real GPU; these run everywhere, with
tests/devices/fake_cupy in place of cupy. Its log says which stream every
copy and kernel ran on, and it records any access CUDA would not order
(`rt.races`), which every test here expects to stay empty unless it says so.
"""

import sys
import threading

import numpy as np
import pytest

import knetflow as kf
from knetflow.devices import discovery, transfers
from knetflow.devices.gpu import GpuDevice, discover, peer_copy, unavailable_reason
from tests.devices import test_gpu
from tests.devices.fake_cupy import CUDADriverError, CUDARuntimeError, happens_before, install


@pytest.fixture
def rt(monkeypatch):
    fake = install(monkeypatch, 2)
    yield fake
    assert fake.races == []


def produce(device, host):
    """An array computed on `device` (a kernel on its stream), as an executor would."""
    with device.activate():
        return device.put(host) * 2


# ---- discovery ----


def test_discovery_finds_every_fake_gpu(monkeypatch):
    rt = install(monkeypatch, 3)
    found = kf.devices()
    assert [d.name for d in found] == ["cpu:0", "gpu:0", "gpu:1", "gpu:2"]
    assert unavailable_reason() == ""
    g = kf.gpu(2)
    assert isinstance(g, GpuDevice) and g.index == 2 and g.xp is rt.cupy
    assert kf.device("gpu:2") is g
    assert g.model == "Fake GPU 2"
    assert g.describe() == "gpu:2 gpu  memory 1.0 GiB free of 1.0 GiB  budget 1.0 GiB  Fake GPU 2"


class _Refuse:
    """A meta path finder: importing cupy raises `error`."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "cupy":
            raise self.error


@pytest.mark.parametrize("error, reason", [
    (ImportError("libcublas.so.12: cannot open shared object file"),
     "CuPy failed to import: libcublas.so.12: cannot open shared object file"),
    (OSError("libcuda.so.1: cannot open shared object file"),
     "CuPy failed to load a CUDA library: libcuda.so.1: cannot open shared object file"),
])
def test_no_gpu_when_cupy_fails_to_import(monkeypatch, error, reason):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Refuse(error)] + sys.meta_path)
    discovery.rediscover()
    assert [d.kind for d in kf.devices()] == ["cpu"]
    assert unavailable_reason() == reason
    with pytest.raises(discovery.DeviceNotFoundError,
                       match=r"no device gpu:0 \(no GPU: CuPy failed .*\); available devices: "
                             r"cpu:0"):
        kf.gpu(0)


@pytest.mark.parametrize("error", [
    CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected"),
    CUDADriverError("CUDA_ERROR_NOT_INITIALIZED: initialization error"),
])
def test_no_gpu_when_cuda_fails(monkeypatch, error):
    install(monkeypatch, 0, count_error=error)
    assert discover() == []
    assert unavailable_reason() == f"CUDA reports no usable device: {error}"


def test_no_gpu_when_cuda_sees_none(monkeypatch):
    install(monkeypatch, 0)
    assert [d.name for d in kf.devices()] == ["cpu:0"]
    assert unavailable_reason() == "CuPy sees no GPU"
    with pytest.raises(LookupError, match=r"no device gpu:1 \(no GPU: CuPy sees no GPU\)"):
        kf.device("gpu:1")


# ---- streams and activation ----


def test_each_gpu_has_its_own_non_blocking_stream_on_its_device(rt):
    g0, g1 = kf.gpu(0), kf.gpu(1)
    s0, s1 = g0.stream, g1.stream
    assert s0 is g0.stream  # made once
    assert s0.ptr != s1.ptr and 0 not in (s0.ptr, s1.ptr)
    assert (s0.device_id, s1.device_id) == (0, 1)
    assert s0.is_non_blocking and s1.is_non_blocking


def test_activate_makes_device_and_stream_current_for_this_thread_only(rt):
    cuda = rt.cupy.cuda
    g1 = kf.gpu(1)
    seen = []
    with g1.activate() as active:
        assert active is g1
        assert cuda.runtime.getDevice() == 1 and cuda.get_current_stream() == g1.stream
        t = threading.Thread(target=lambda: seen.append(cuda.runtime.getDevice()))
        t.start()
        t.join()
        with kf.gpu(0).activate():  # nested, as peer_copy does
            assert cuda.get_current_stream() == kf.gpu(0).stream
        assert cuda.runtime.getDevice() == 1 and cuda.get_current_stream() == g1.stream
    assert seen == [0]
    assert cuda.runtime.getDevice() == 0 and cuda.get_current_stream().ptr == 0


def test_ops_inside_activate_run_on_the_devices_stream(rt):
    g1 = kf.gpu(1)
    with g1.activate():
        y = g1.xp.exp(g1.put(np.zeros(3, "float32"))) + 1
    assert g1.owns(y) and not kf.gpu(0).owns(y) and not g1.owns(np.zeros(3))
    assert [(e.name, e.stream) for e in rt.entries("kernel")] == [("exp", g1.stream.ptr),
                                                                   ("add", g1.stream.ptr)]
    np.testing.assert_array_equal(g1.get(y), [2.0, 2.0, 2.0])


def test_ops_of_one_gpu_fail_while_another_is_current(rt):
    g0, g1 = kf.gpu(0), kf.gpu(1)
    x = g1.put(np.ones(3))
    with g0.activate(), pytest.raises(ValueError, match=r"resides \(1\) is different from the "
                                                        r"current device \(0\)"):
        g0.xp.exp(x)


# ---- put and get ----


@pytest.mark.parametrize("host", [
    np.arange(12, dtype="float32").reshape(3, 4),
    np.arange(12, dtype="int64").reshape(3, 4).T,   # not contiguous
    np.array(2.5),                                   # 0-d
    np.zeros((0, 3), "float64"),                     # empty
])
def test_put_get_round_trip(rt, host):
    g = kf.gpu(1)
    x = g.put(host)
    assert isinstance(x, rt.cupy.ndarray) and x.device.id == 1 and g.owns(x)
    assert x.shape == host.shape and x.dtype == host.dtype
    back = g.get(x)
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, host)
    assert g.put(x) is x


def test_put_and_get_copy_on_the_devices_stream_from_any_thread(rt):
    g = kf.gpu(1)
    out = {}

    def executor_thread():  # e.g. a CPU executor sending to the GPU
        out["x"] = g.put(np.ones(4))

    t = threading.Thread(target=executor_thread, name="sender")
    t.start()
    t.join()
    np.testing.assert_array_equal(g.get(out["x"]), np.ones(4))
    h2d, d2h = rt.entries("h2d"), rt.entries("d2h")
    assert [(e.stream, e.device, e.thread) for e in h2d] == [(g.stream.ptr, 1, "sender")]
    assert [(e.stream, e.device) for e in d2h] == [(g.stream.ptr, 1)]
    assert rt.entries("sync", stream=g.stream.ptr)  # the host waited for the copy


def test_get_of_another_gpus_array_reads_after_that_gpus_work(rt):
    # the device asking is not the owner (plan.run reads every output through its
    # first device): the copy must still wait for the owner's stream
    g0, g1 = kf.gpu(0), kf.gpu(1)
    y = produce(g1, np.arange(4.0))
    np.testing.assert_array_equal(g0.get(y), [0.0, 2.0, 4.0, 6.0])
    (d2h,) = rt.entries("d2h")
    assert d2h.stream == g1.stream.ptr
    assert happens_before(rt.entries("kernel", name="multiply")[0], d2h)


def test_get_of_host_and_sim_arrays(rt):
    (s0,) = kf.set_sim_devices(1)
    np.testing.assert_array_equal(kf.gpu(0).get([1, 2]), [1, 2])
    np.testing.assert_array_equal(kf.gpu(0).get(s0.put(np.ones(2))), [1.0, 1.0])


def test_synchronize_waits_for_the_devices_stream(rt):
    g = kf.gpu(1)
    y = produce(g, np.ones(3))
    g.synchronize()
    assert rt.entries("sync", stream=g.stream.ptr)
    with rt.cupy.cuda.Device(1):  # the legacy stream, after a host-side wait: ordered
        y[...] = 0


def test_put_and_get_are_ordered_with_eager_work_outside_activate(rt):
    # outside activate() ops run on the legacy default stream, which never waits for a
    # non-blocking stream by itself: put and get order the two with events
    g = kf.gpu(1)
    x = g.put(np.ones(3))
    with rt.cupy.cuda.Device(1):
        y = x + 1
    np.testing.assert_array_equal(g.get(y), [2.0, 2.0, 2.0])
    legacy = [e.stream for e in rt.entries("kernel")]
    assert legacy == [0]
    z = transfers.copy(kf.gpu(0).put(np.ones(2)), g)
    with rt.cupy.cuda.Device(1):
        z * 2


# ---- peer copies ----


def test_peer_copy_is_ordered_after_the_producer_and_before_the_sources_reuse(rt):
    g0, g1 = kf.gpu(0), kf.gpu(1)
    x = produce(g0, np.arange(6.0))
    before = len(rt.log)
    y = peer_copy(x, g1, g0)
    np.testing.assert_array_equal(g1.get(y), np.arange(6.0) * 2)
    s0, s1 = g0.stream.ptr, g1.stream.ptr
    mine = [e for e in rt.log[before:] if e.stream in (s0, s1)]
    steps = [(e.kind, e.stream) for e in mine[1:6]]
    assert steps == [("record", s0), ("wait", s1), ("peer", s1), ("record", s1), ("wait", s0)]
    produced, waited, copied, recorded, released = mine[1:6]
    assert waited.event == produced.event and released.event == recorded.event
    producer = rt.entries("kernel", name="multiply")[0]
    assert happens_before(producer, copied) and copied.nbytes == 48
    with g0.activate():  # the source's next work comes after the copy
        x[...] = 0
    assert happens_before(copied, rt.log[-1])


def test_peer_copy_is_ordered_with_the_callers_streams(rt):
    # called outside activate(): after the caller's work on the source's legacy stream,
    # and the caller's legacy stream on the destination waits for the copy
    g0, g1 = kf.gpu(0), kf.gpu(1)
    x = g0.put(np.ones(4))
    with rt.cupy.cuda.Device(0):
        x += 1
    y = peer_copy(x, g1, g0)
    with rt.cupy.cuda.Device(1):
        y *= 2
    np.testing.assert_array_equal(g1.get(y), [4.0] * 4)
    (copied,) = rt.entries("peer")
    eager_add, eager_mul = rt.entries("kernel")
    assert (eager_add.stream, eager_mul.stream) == (0, 0)
    assert happens_before(eager_add, copied) and happens_before(copied, eager_mul)


def test_peer_copy_of_a_view_copies_a_contiguous_temporary_on_the_source(rt):
    g0, g1 = kf.gpu(0), kf.gpu(1)
    x = produce(g0, np.arange(12.0).reshape(3, 4))
    y = transfers.copy(x.T, g1)  # a view: made contiguous on gpu:0 first
    np.testing.assert_array_equal(g1.get(y), (np.arange(12.0).reshape(3, 4) * 2).T)
    (made,) = rt.entries("kernel", name="ascontiguousarray")
    assert made.stream == g0.stream.ptr
    del x
    with g0.activate():  # the temporary's memory may now be reused on gpu:0's stream
        g0.xp.zeros(12)


def test_peer_copy_keeps_a_0d_arrays_shape(rt):
    y = transfers.copy(kf.gpu(0).put(np.array(3.0)), "gpu:1")
    assert y.shape == () and kf.gpu(1).get(y) == 3.0


def test_peer_access_is_enabled_once_per_pair(rt):
    g0, g1 = kf.gpu(0), kf.gpu(1)
    for _ in range(2):
        transfers.copy(g0.put(np.ones(2)), g1)
        transfers.copy(g1.put(np.ones(2)), g0)
    assert rt.peers_enabled == {(1, 0), (0, 1)}


def test_peer_access_enabled_elsewhere_is_not_an_error(rt):
    rt.peers_enabled.add((1, 0))  # e.g. by another library in this process
    y = transfers.copy(kf.gpu(0).put(np.ones(2)), kf.gpu(1))
    np.testing.assert_array_equal(kf.gpu(1).get(y), [1.0, 1.0])


def test_peer_copy_without_peer_access_still_copies(monkeypatch):
    rt = install(monkeypatch, 2, peer_access=False)
    g0, g1 = kf.gpu(0), kf.gpu(1)
    y = transfers.copy(produce(g0, np.ones(3)), g1)
    np.testing.assert_array_equal(g1.get(y), [2.0, 2.0, 2.0])
    assert rt.peers_enabled == set() and len(rt.entries("peer")) == 1 and rt.races == []


def test_a_failing_peer_copy_raises_the_cuda_error(rt):
    rt.inject("memcpyPeerAsync", CUDARuntimeError("cudaErrorLaunchFailure: unspecified "
                                                  "launch failure"))
    with pytest.raises(CUDARuntimeError, match="cudaErrorLaunchFailure"):
        transfers.copy(kf.gpu(0).put(np.ones(2)), kf.gpu(1))
    assert rt.cupy.cuda.runtime.getDevice() == 0  # the devices made current were restored
    assert rt.cupy.cuda.get_current_stream().ptr == 0


# ---- transfers between kinds ----


def test_transfers_between_host_gpus_and_sim_devices_count_bytes(rt):
    (s0,) = kf.set_sim_devices(1)
    g0, g1 = kf.gpu(0), kf.gpu(1)
    host = np.arange(16, dtype="float64").reshape(4, 4)
    up = transfers.transfer(host, g0)
    assert up.nbytes == 128 and g0.owns(up.array) and (up.src, up.dst) == ("cpu:0", "gpu:0")
    across = transfers.transfer(up.array, "gpu:1")
    assert across.nbytes == 128 and g1.owns(across.array) and across.src == "gpu:0"
    down = transfers.transfer(across.array, "cpu:0")
    np.testing.assert_array_equal(down.array, host)
    on_sim = transfers.transfer(across.array, s0)
    assert on_sim.nbytes == 128 and s0.owns(on_sim.array)
    back = transfers.copy(on_sim.array, g0)
    assert g0.owns(back) and g0.put(on_sim.array).shape == (4, 4)
    assert transfers.transfer(up.array, g0).nbytes == 0  # already there
    assert transfers.device_of(across.array) is g1
    assert [e.kind for e in rt.log if e.kind in ("h2d", "d2h", "peer")] == [
        "h2d", "peer", "d2h", "d2h", "h2d", "h2d"]


def test_a_gpu_array_transferred_from_the_wrong_device_is_refused(rt):
    x = kf.gpu(1).put(np.ones(2))
    with pytest.raises(ValueError, match="transfer from gpu:0: the array lives on gpu:1"):
        transfers.transfer(x, "cpu:0", src="gpu:0")


# ---- memory and random numbers ----


def test_memory_info_budget_and_pool(rt):
    g = kf.gpu(1)
    x = g.put(np.zeros(1000, "float32"))  # 4000 bytes, 4096 in the pool
    info = g.memory_info()
    assert info == {"free": (1 << 30) - 4096, "total": 1 << 30, "pool_used": 4096,
                    "pool_held": 4096}
    assert kf.gpu(0).memory_info()["pool_used"] == 0  # per device
    assert g.memory_budget == 1 << 30
    del x
    assert g.memory_info()["pool_held"] == 4096
    g.free_pool()
    assert g.memory_info()["pool_held"] == 0


def test_random_draws_land_on_the_device_and_its_stream(rt):
    g = kf.gpu(1)
    gen = g.rng(np.random.SeedSequence(3))
    with g.activate():
        u = gen.random((2, 2), dtype=np.float32)
    assert g.owns(u) and u.dtype == np.float32
    assert rt.log[-1].name == "random.random" and rt.log[-1].stream == g.stream.ptr


# ---- the real-GPU tests, run on the fake ----


@pytest.mark.parametrize("name", [n for n in vars(test_gpu) if n.startswith("test_")])
def test_the_real_gpu_tests_pass_on_the_fake(rt, name):
    getattr(test_gpu, name)([d for d in kf.devices() if d.kind == "gpu"])
