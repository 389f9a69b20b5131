"""CPU devices: how many, their BLAS thread shares, memory."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.devices import cpu as cpu_module
from knetflow.devices import discovery
from knetflow.devices.cpu import CpuDevice, machine_cores, make_cpu_devices, thread_share


def test_environment_variable_sets_the_number_of_cpu_devices(monkeypatch):
    monkeypatch.setenv("KNETFLOW_CPU_DEVICES", "3")
    discovery.rediscover()
    cpus = [d for d in kf.devices() if d.kind == "cpu"]
    assert [d.name for d in cpus] == ["cpu:0", "cpu:1", "cpu:2"]
    assert kf.cpu(2).index == 2


@pytest.mark.parametrize("value", ["0", "two", "-2"])
def test_bad_cpu_device_counts_fail_clearly(monkeypatch, value):
    monkeypatch.setenv("KNETFLOW_CPU_DEVICES", value)
    with pytest.raises(ValueError, match=f"KNETFLOW_CPU_DEVICES must be a whole number >= 1, "
                                         f"got '{value}'"):
        discovery.rediscover()


def test_set_cpu_devices_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("KNETFLOW_CPU_DEVICES", "3")
    made = kf.set_cpu_devices(2)
    assert [d.name for d in made] == ["cpu:0", "cpu:1"]
    assert [d.name for d in kf.devices() if d.kind == "cpu"] == ["cpu:0", "cpu:1"]
    with pytest.raises(ValueError, match="n >= 1"):
        kf.set_cpu_devices(0)


@pytest.mark.parametrize("n, cores, share", [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 8, 4),
                                             (3, 8, 2), (4, 1, 1)])
def test_thread_share_splits_the_cores_evenly(n, cores, share):
    assert thread_share(n, cores) == share
    assert [d.threads for d in make_cpu_devices(n, cores=cores)] == [share] * n


def test_two_cpu_devices_do_not_oversubscribe_the_cores():
    cores = machine_cores()
    one, two = kf.set_cpu_devices(2)
    assert one.threads == two.threads == max(1, cores // 2)
    assert one.threads + two.threads <= max(cores, 2)


def test_the_blas_budget_is_applied_and_restored():
    pytest.importorskip("threadpoolctl")
    np.ones((4, 4)) @ np.ones((4, 4))  # BLAS loaded
    original = dict(cpu_module.blas.current())
    if not original:
        pytest.skip("threadpoolctl sees no BLAS library")
    share = kf.set_cpu_devices(2)[0].threads
    assert cpu_module.blas.threads == share
    assert all(n <= share for _, n in cpu_module.blas.current())
    kf.set_cpu_devices(1)
    assert cpu_module.blas.threads is None
    assert dict(cpu_module.blas.current()) == original


def test_activate_keeps_the_budget_in_force():
    pytest.importorskip("threadpoolctl")
    d = kf.set_cpu_devices(2)[1]
    cpu_module.blas.limit(None)  # something else lifted it
    with d.activate() as active:
        assert active is d
        assert cpu_module.blas.threads == d.threads


def test_cpu_devices_hold_numpy_arrays_in_shared_memory():
    a, b = kf.set_cpu_devices(2)
    x = np.arange(3.0)
    assert a.put(x) is x and b.get(x) is x
    assert a.owns(x) and b.owns(x) and not a.owns([1, 2])
    assert isinstance(a.put([1, 2]), np.ndarray)
    assert a.xp is np
    a.synchronize()


def test_memory_info_and_budget_split_host_memory():
    a, b = kf.set_cpu_devices(2)
    info = a.memory_info()
    assert info["total"] > 0 and 0 <= info["free"] <= info["total"]
    assert a.memory_budget == info["total"] // 2
    b.memory_budget = 1 << 20
    assert b.memory_budget == 1 << 20 and a.memory_budget == info["total"] // 2
    assert "budget 1.0 MiB" in b.describe()


def test_a_cpu_device_repr_names_its_threads():
    assert repr(CpuDevice(1, threads=3)) == "CpuDevice('cpu:1', threads=3)"


def test_rng_draws_numpy_arrays():
    draws = kf.cpu(0).rng(5).random(3)
    assert isinstance(draws, np.ndarray)
    np.testing.assert_array_equal(draws, np.random.default_rng(5).random(3))


OPENBLAS = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.30",
            "architecture": "Haswell", "num_threads": 2}


def test_blas_report_names_each_librarys_kernel_and_threads():
    from knetflow.devices.cpu import blas_report

    lines = blas_report([OPENBLAS, {"user_api": "openmp", "internal_api": "openmp"}], {}, set())
    assert lines == ["BLAS: openblas 0.3.30, Haswell kernels, 2 threads"]


@pytest.mark.parametrize("environ, flags, kernel, hint", [
    ({"OPENBLAS_CORETYPE": "Haswell"}, {"avx2", "avx512f"}, "Haswell", True),
    ({}, {"avx2", "avx512f"}, "Haswell", False),                        # OpenBLAS's own choice
    ({"OPENBLAS_CORETYPE": "Haswell"}, {"avx2"}, "Haswell", False),     # no AVX-512 to use
    ({"OPENBLAS_CORETYPE": "SkylakeX"}, {"avx2", "avx512f"}, "SkylakeX", False),
])
def test_blas_report_hints_only_at_a_pinned_kernel_without_the_cpus_avx512(
        environ, flags, kernel, hint):
    from knetflow.devices.cpu import blas_report

    lines = blas_report([dict(OPENBLAS, architecture=kernel)], environ, flags)
    assert len(lines) == 1 + hint
    if hint:
        assert lines[1].startswith("hint: OPENBLAS_CORETYPE=Haswell pins OpenBLAS to kernels "
                                   "without the AVX-512 this CPU has")
        # unpinning is safe only on a sound build: the hint names the version to check
        assert "older OpenBLAS builds gave wrong results" in lines[1]
        assert "if this one (0.3.30) is not such a build, unset it" in lines[1]


def test_the_blas_limit_waits_while_a_kernel_holds_blas_to_one_thread():
    # ops/cpu_threads.py runs work on BLAS's own threads with BLAS at one thread: raising the
    # limit meanwhile would make those threads wait for themselves
    import threading

    from knetflow.devices.cpu import _BlasBudget

    budget = _BlasBudget()
    budget.hold()
    done = threading.Event()
    setter = threading.Thread(target=lambda: (budget.limit(None if budget.threads else 1),
                                              done.set()))
    budget.threads = 3  # anything but what the setter asks for: it has to wait
    setter.start()
    assert not done.wait(0.2)
    budget.release()
    assert done.wait(10)
    setter.join()
