"""The fake CuPy itself: its arrays, devices, streams and ordering model follow CuPy and CUDA.

The GPU tests trust the fake to fail where CuPy would and to see unordered
work, so each rule it enforces is checked here on small literal cases.
"""

import contextlib
import gc
import threading

import numpy as np
import pytest

from knetflow.devices.simarray import DeviceMismatchError
from tests.devices.fake_cupy import CUDARuntimeError, OutOfMemoryError, happens_before, make


@pytest.fixture
def rt():
    return make(2)


def streams(rt):
    cp = rt.cupy
    made = []
    for d in range(rt.n):
        with cp.cuda.Device(d):
            made.append(cp.cuda.Stream(non_blocking=True))
    return made


@contextlib.contextmanager
def on(rt, device, stream=None):
    """`device` current, and `stream` on it."""
    with rt.cupy.cuda.Device(device), (stream or contextlib.nullcontext()):
        yield


# ---- arrays ----


def test_arrays_live_on_the_current_device_and_compute_like_numpy(rt):
    cp = rt.cupy
    with cp.cuda.Device(1):
        x = cp.asarray(np.arange(6.0).reshape(2, 3))
        y = cp.exp(x) @ x.T + 1
        s = y.sum(axis=0)
    assert isinstance(x, cp.ndarray) and type(x).__module__ == "cupy"
    assert x.device.id == 1 and y.device == cp.cuda.Device(1) and s.shape == (2,)
    host = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(y.get(), np.exp(host) @ host.T + 1)
    with cp.cuda.Device(1):
        total = cp.sum(x)
    assert total.shape == () and isinstance(total, cp.ndarray)  # 0-d arrays, not scalars
    assert float(total) == 15.0 and x.nbytes == 48


def test_arrays_of_another_device_are_refused(rt):
    cp = rt.cupy
    with cp.cuda.Device(0):
        a = cp.ones(3)
    with cp.cuda.Device(1):
        b = cp.ones(3)
        with pytest.raises(DeviceMismatchError, match=r"add: the device where the array "
                                                      r"resides \(0\) is different from the "
                                                      r"current device \(1\)"):
            a + b
        with pytest.raises(ValueError, match="resides"):
            cp.multiply(b, 2, out=a)
    with pytest.raises(DeviceMismatchError, match="resides"):  # device 0 is current by default
        b * 2


def test_host_arrays_are_refused_except_by_creation_functions(rt):
    cp = rt.cupy
    x = cp.zeros(3)
    with pytest.raises(TypeError, match=r"add: Unsupported type <class 'numpy.ndarray'>"):
        x + np.ones(3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    y = x + np.float64(2.0) + np.array(1.0) + 3  # scalars and 0-d arrays mix freely
    np.testing.assert_array_equal(cp.asarray(np.ones(3)).get(), np.ones(3))
    np.testing.assert_array_equal(y.get(), [6.0, 6.0, 6.0])
    with pytest.raises(AttributeError, match="no attribute 'tobytes'"):
        x.tobytes()


def test_views_share_their_block_and_launch_nothing(rt):
    cp = rt.cupy
    x = cp.arange(12.0)
    before = len(rt.log)
    v = x.reshape(3, 4).T[1:]
    assert len(rt.log) == before  # no kernel for a view
    assert v.data.ptr == x.data.ptr + 8 and v._block is x._block
    w = v.copy()
    assert len(rt.log) == before + 1 and w.data.ptr not in (0, x.data.ptr)
    x[0] = 5.0  # setitem writes the block
    assert rt.log[-1].name == "setitem" and v.get()[0, 0] == 1.0


def test_set_and_get_check_what_cupy_checks(rt):
    cp = rt.cupy
    x = cp.empty((2, 2), dtype="float32")
    with pytest.raises(TypeError, match="float64 array cannot be set to float32 array"):
        x.set(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"Shape mismatch. Old shape: \(2, 2\), new shape"):
        x.set(np.zeros(4, "float32"))
    with pytest.raises(TypeError, match="Only numpy.ndarray"):
        x.set([[1, 2], [3, 4]])
    x.set(np.eye(2, dtype="float32"))
    np.testing.assert_array_equal(x.get(), np.eye(2))
    assert [e.kind for e in rt.log] == ["h2d", "d2h"]


def test_random_draws_need_the_generators_device(rt):
    cp = rt.cupy
    with cp.cuda.Device(1):
        g = cp.random.default_rng(0)
        u = g.random((2, 3), dtype=np.float32)
    assert u.device.id == 1 and u.dtype == np.float32
    with pytest.raises(DeviceMismatchError, match=r"random.random: the generator's state is "
                                                  r"on device 1, the current device is 0"):
        g.random(3)


def test_special_functions_come_from_cupyx(rt):
    x = rt.cupy.asarray(np.array([0.0, 1.0]))
    np.testing.assert_allclose(rt.cupyx.scipy.special.erf(x).get(), [0.0, 0.8427007929])


# ---- devices and streams ----


def test_current_device_and_stream_are_per_thread(rt):
    cp = rt.cupy
    _, s1 = streams(rt)
    seen = {}

    def other():
        seen["device"] = cp.cuda.runtime.getDevice()
        seen["stream"] = cp.cuda.get_current_stream()

    with on(rt, 1, s1):
        assert cp.cuda.runtime.getDevice() == 1 and cp.cuda.get_current_stream() == s1
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == {"device": 0, "stream": cp.cuda.Stream.null}
    assert cp.cuda.runtime.getDevice() == 0 and cp.cuda.get_current_stream().ptr == 0


def test_a_stream_is_entered_on_its_own_device_only(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    assert (s0.device_id, s1.device_id) == (0, 1) and s0.ptr != s1.ptr != 0
    with pytest.raises(RuntimeError, match=r"stream is created on \(1\) does not match with "
                                           r"the current device \(0\)"), s1:
        pass
    with pytest.raises(CUDARuntimeError, match="cudaErrorInvalidDevice"), cp.cuda.Device(2):
        pass


def test_events_are_recorded_on_a_stream_of_their_device(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    with cp.cuda.Device(0):
        e = s0.record()
    with pytest.raises(CUDARuntimeError, match="cudaErrorInvalidResourceHandle"), \
            cp.cuda.Device(0):
        s1.record()
    s1.wait_event(e)  # waits may cross devices
    assert [x.kind for x in rt.log] == ["record", "wait"]


def test_kernels_run_on_the_current_stream_and_are_logged(rt):
    cp = rt.cupy
    _, s1 = streams(rt)
    with on(rt, 1, s1):
        x = cp.ones(4)
        y = cp.tanh(x)
    with cp.cuda.Device(1):
        z = y + 1  # the legacy default stream
    kernels = rt.entries("kernel")
    assert [(e.name, e.stream, e.device) for e in kernels] == [
        ("ones", s1.ptr, 1), ("tanh", s1.ptr, 1), ("add", 0, 1)]
    assert kernels[0].thread == threading.current_thread().name
    assert z.device.id == 1


# ---- the ordering model ----


def test_work_on_one_stream_is_ordered_and_across_streams_only_by_events(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    with on(rt, 0, s0):
        x = cp.ones(4)
        e = s0.record()
        x * 2
    with on(rt, 1, s1):
        a = cp.empty(4)
        before = rt.enqueue(rt.queue_of(s1), "kernel", "probe")
        s1.wait_event(e)
        after = rt.enqueue(rt.queue_of(s1), "kernel", "probe")
    made_x, made_y = rt.entries("kernel", name="ones")[0], rt.entries("kernel", name="multiply")[0]
    assert happens_before(made_x, made_y)
    assert not happens_before(made_x, before)
    assert happens_before(made_x, after) and not happens_before(made_y, after)
    assert a.device.id == 1


def test_a_copy_not_ordered_after_the_producer_is_a_race(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    with on(rt, 0, s0):
        x = cp.ones(1000) * 3
    with on(rt, 1, s1):
        out = cp.empty(1000)
        cp.cuda.runtime.memcpyPeerAsync(out.data.ptr, 1, x.data.ptr, 0, x.nbytes, s1.ptr)
    assert len(rt.races) == 1
    assert "peer 0->1" in rt.races[0] and "reads memory written by" in rt.races[0] \
        and "kernel multiply" in rt.races[0]


def test_a_host_synchronization_orders_later_work(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    with on(rt, 0, s0):
        x = cp.ones(10) * 3
    s0.synchronize()
    with on(rt, 1, s1):
        out = cp.empty(10)
        cp.cuda.runtime.memcpyPeerAsync(out.data.ptr, 1, x.data.ptr, 0, x.nbytes, s1.ptr)
    np.testing.assert_array_equal(out.get(stream=s1), np.full(10, 3.0))
    assert rt.races == []


def test_another_threads_synchronization_orders_nothing(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    with on(rt, 0, s0):
        x = cp.ones(10) * 3
    t = threading.Thread(target=s0.synchronize)
    t.start()
    t.join()
    with on(rt, 1, s1):
        out = cp.empty(10)
        cp.cuda.runtime.memcpyPeerAsync(out.data.ptr, 1, x.data.ptr, 0, x.nbytes, s1.ptr)
    assert len(rt.races) == 1


def test_the_legacy_stream_does_not_wait_for_non_blocking_streams(rt):
    cp = rt.cupy
    s0, _ = streams(rt)
    with cp.cuda.Device(0):
        blocking = cp.cuda.Stream()
    with on(rt, 0, s0):
        x = cp.ones(3)
    with on(rt, 0, blocking):
        y = cp.ones(3)
    with cp.cuda.Device(0):
        y + 1   # after the blocking stream's work: fine
        x + 1   # not after the non-blocking stream's: a race
    assert len(rt.races) == 1 and "kernel add on stream 0" in rt.races[0]


def test_a_write_must_wait_for_earlier_reads(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    with on(rt, 0, s0):
        x = cp.ones(8)
    s0.synchronize()
    with on(rt, 1, s1):
        out = cp.empty(8)
        cp.cuda.runtime.memcpyPeerAsync(out.data.ptr, 1, x.data.ptr, 0, x.nbytes, s1.ptr)
    with on(rt, 0, s0):
        x[...] = 2.0  # overwrites what the copy may still be reading
    assert len(rt.races) == 1 and "writes memory" in rt.races[0] and "peer" in rt.races[0]


def test_freed_memory_reused_before_a_pending_copy_is_a_race(rt):
    cp = rt.cupy
    s0, s1 = streams(rt)
    with on(rt, 0, s0):
        x = cp.ones(8)
        e = s0.record()
    with on(rt, 1, s1):
        out = cp.empty(8)
        s1.wait_event(e)
        cp.cuda.runtime.memcpyPeerAsync(out.data.ptr, 1, x.data.ptr, 0, x.nbytes, s1.ptr)
    del x
    gc.collect()
    assert rt.races == []
    with on(rt, 0, s0):
        cp.zeros(8)  # may take x's block while the copy on s1 reads it
    assert len(rt.races) == 1 and "may be reused" in rt.races[0]


def test_peer_copies_check_addresses(rt):
    cp = rt.cupy
    with cp.cuda.Device(0):
        x = cp.ones(4)
    with cp.cuda.Device(1):
        out = cp.empty(4)
    runtime = cp.cuda.runtime
    with pytest.raises(CUDARuntimeError, match="cudaErrorInvalidValue"):
        runtime.memcpyPeerAsync(out.data.ptr, 1, x.data.ptr, 0, x.nbytes + 8, 0)
    with pytest.raises(CUDARuntimeError, match="cudaErrorInvalidValue"):
        runtime.memcpyPeerAsync(out.data.ptr, 0, x.data.ptr, 0, x.nbytes, 0)  # wrong device
    with pytest.raises(CUDARuntimeError, match="cudaErrorInvalidResourceHandle"):
        runtime.memcpyPeerAsync(out.data.ptr, 1, x.data.ptr, 0, x.nbytes, 12345)


def test_peer_access_is_enabled_once_where_the_hardware_allows(rt):
    runtime = rt.cupy.cuda.runtime
    assert runtime.deviceCanAccessPeer(0, 1) == 1 and runtime.deviceCanAccessPeer(1, 1) == 0
    runtime.deviceEnablePeerAccess(1)
    with pytest.raises(CUDARuntimeError, match="cudaErrorPeerAccessAlreadyEnabled"):
        runtime.deviceEnablePeerAccess(1)
    assert rt.peers_enabled == {(0, 1)}
    closed = make(2, peer_access=False).cupy.cuda.runtime
    with pytest.raises(CUDARuntimeError, match="cudaErrorPeerAccessUnsupported"):
        closed.deviceEnablePeerAccess(1)


def test_memory_pool_and_device_memory(rt):
    cp = make(1, memory=1 << 20).cupy
    pool = cp.get_default_memory_pool()
    x = cp.empty(1000, dtype="float32")  # 4000 bytes, 4096 in the pool
    assert pool.used_bytes() == 4096 and cp.cuda.runtime.memGetInfo() == ((1 << 20) - 4096,
                                                                            1 << 20)
    del x
    gc.collect()
    assert pool.used_bytes() == 0 and pool.total_bytes() == 4096
    pool.free_all_blocks()
    assert pool.total_bytes() == 0
    with pytest.raises(OutOfMemoryError, match="Out of memory allocating 2,097,152 bytes"):
        cp.empty(1 << 21, dtype="uint8")


def test_device_count_errors_and_injected_faults():
    failing = make(0, count_error=CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device"))
    with pytest.raises(CUDARuntimeError, match="cudaErrorNoDevice"):
        failing.cupy.cuda.runtime.getDeviceCount()
    rt = make(1)
    rt.inject("exp", FloatingPointError("injected"))
    x = rt.cupy.zeros(2)
    with pytest.raises(FloatingPointError, match="injected"):
        rt.cupy.exp(x)
    np.testing.assert_array_equal(rt.cupy.exp(x).get(), [1.0, 1.0])  # once only
