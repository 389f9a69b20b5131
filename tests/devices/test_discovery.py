"""Discovery: `kf.devices()`, lookups by name, and GPUs that are not there.

CuPy is replaced by fakes in sys.modules, so every way of having no GPU
(no CuPy, CuPy failing to import, CUDA failing at getDeviceCount, zero
devices) is tested on a machine without one.
"""

import sys
import time
import types

import pytest

import knetflow as kf
from knetflow.devices import discovery, registry
from knetflow.devices.gpu import GpuDevice, discover, unavailable_reason


class FakeCudaError(RuntimeError):
    """Stands for cupy.cuda.runtime.CUDARuntimeError."""


def fake_cupy(count=0, error=None):
    """A module with just what discovery touches: cupy.cuda.runtime.getDeviceCount."""
    calls = []

    def get_device_count():
        calls.append(1)
        if error is not None:
            raise error
        return count

    module = types.ModuleType("cupy")
    runtime = types.SimpleNamespace(getDeviceCount=get_device_count,
                                    CUDARuntimeError=FakeCudaError)
    module.cuda = types.SimpleNamespace(runtime=runtime, driver=types.SimpleNamespace())
    module.calls = calls
    return module


class RefuseCupy:
    """A meta path finder: importing cupy fails as it does when CUDA libraries are missing."""

    def find_spec(self, name, path=None, target=None):
        if name == "cupy":
            raise ImportError("CuPy failed to load libcudart.so.12: cannot open shared object")


def names(devices):
    return [d.name for d in devices]


def test_default_is_one_cpu_device_first():
    found = kf.devices()
    assert found[0] == kf.cpu() == kf.cpu(0) == kf.device("cpu:0") == kf.device("cpu")
    assert [d.kind for d in found if d.kind == "cpu"] == ["cpu"]
    kinds = [d.kind for d in found]
    assert kinds == sorted(kinds, key=["cpu", "gpu", "sim"].index)


def test_no_cupy_means_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    start = time.perf_counter()
    assert discover() == []
    assert time.perf_counter() - start < 1.0
    assert unavailable_reason() == "CuPy is not installed"
    discovery.rediscover()
    assert names(kf.devices()) == ["cpu:0"]


def test_cupy_failing_at_import_means_no_gpu(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [RefuseCupy()] + sys.meta_path)
    assert discover() == []
    assert "libcudart" in unavailable_reason()


def test_cuda_error_at_device_count_means_no_gpu(monkeypatch):
    fake = fake_cupy(error=FakeCudaError("cudaErrorInsufficientDriver: CUDA driver version is "
                                         "insufficient for CUDA runtime version"))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    discovery.rediscover()
    assert names(kf.devices()) == ["cpu:0"]
    assert fake.calls == [1]
    assert "cudaErrorInsufficientDriver" in unavailable_reason()
    with pytest.raises(discovery.DeviceNotFoundError, match=r"no device gpu:0 .*Insufficient"
                                                            r".*available devices: cpu:0"):
        kf.gpu(0)


def test_zero_devices_means_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=0))
    assert discover() == []
    assert unavailable_reason() == "CuPy sees no GPU"


def test_unexpected_errors_are_not_swallowed(monkeypatch):
    # only CuPy's CUDA errors mean "no GPU"; anything else is a bug to see
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(error=ZeroDivisionError("bug")))
    with pytest.raises(ZeroDivisionError):
        discover()


def test_gpus_are_listed_after_cpus_without_touching_cuda_further(monkeypatch):
    fake = fake_cupy(count=2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    kf.set_sim_devices(1)
    registry.forget("gpu")
    assert names(kf.devices()) == ["cpu:0", "gpu:0", "gpu:1", "sim:0"]
    g = kf.gpu(1)
    assert isinstance(g, GpuDevice) and g.kind == "gpu" and g.index == 1
    assert kf.device("gpu:1") is g and kf.device(" GPU:1 ") is g
    assert g.xp is fake
    assert fake.calls == [1]  # looked up once, then kept


def test_discovery_is_lazy_and_cached(monkeypatch):
    fake = fake_cupy(count=1)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    discovery.rediscover()
    fake.calls.clear()
    kf.devices()
    kf.devices()
    kf.cpu(0)
    assert fake.calls == []


def test_lookup_errors_list_the_devices_there_are():
    with pytest.raises(discovery.DeviceNotFoundError, match=r"no device cpu:3 .*kf.set_cpu_"
                                                            r"devices.*available devices: cpu:0"):
        kf.cpu(3)
    with pytest.raises(ValueError, match="unknown device 'tpu:0'; available devices: cpu:0"):
        kf.device("tpu:0")
    with pytest.raises(LookupError, match="no device sim:0"):
        kf.device("sim:0")
    with pytest.raises(ValueError, match="bad device index"):
        kf.device("cpu:x")


def test_device_returns_a_device_as_it_is():
    d = kf.cpu(0)
    assert kf.device(d) is d


def test_devices_compare_by_name_and_with_their_name():
    a, b = kf.set_sim_devices(2)
    assert a == "sim:0" and a != b and a != "sim:1"
    assert {a: 1}["sim:0"] == 1 and {"sim:1": 2}[b] == 2
    assert str(a) == "sim:0" and repr(a) == "SimDevice('sim:0')"
    assert len({a, kf.device("sim:0"), b}) == 2


def test_sim_devices_from_the_environment(monkeypatch):
    monkeypatch.setenv("KNETFLOW_SIM_DEVICES", "3")
    discovery.rediscover()
    assert names(kf.devices())[-3:] == ["sim:0", "sim:1", "sim:2"]
    kf.set_sim_devices(0)
    assert all(d.kind != "sim" for d in kf.devices())


def test_bad_environment_values_fail_clearly(monkeypatch):
    monkeypatch.setenv("KNETFLOW_SIM_DEVICES", "-1")
    with pytest.raises(ValueError, match="KNETFLOW_SIM_DEVICES must be a whole number >= 0"):
        discovery.rediscover()


def test_cli_shows_kind_threads_memory_and_why_no_gpu(capsys):
    from knetflow import cli

    kf.set_sim_devices(1)
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cpu:0 cpu  threads=" in out and "memory" in out and "sim:0 sim" in out
    if not any(d.kind == "gpu" for d in kf.devices()):
        assert "no GPU: " in out
