"""Tests of knetflow/devices/gpu_cudnn.py: finding CuPy's cuDNN modules, and the calls
made through them, against stand-ins for those modules that record each call
and read its host arguments (ints, scaling factors) through their pointers.
"""

import ctypes
import sys
import types

import numpy as np
import pytest

from knetflow.devices import gpu_cudnn

# NumPy under CuPy's name, for the few array calls the wrappers make themselves
NUMPY_AS_CUPY = types.ModuleType("cupy")
NUMPY_AS_CUPY.__getattr__ = lambda name: getattr(np, name)


# ---- finding cuDNN ----


def test_looking_for_cudnn_without_cupy_does_not_import_it(monkeypatch):
    if "cupy" in sys.modules or gpu_cudnn.load()[0] is not None:
        pytest.skip("CuPy is importable here: nothing to check")
    assert gpu_cudnn.load() == (None, "CuPy is not installed")
    assert "cupy" not in sys.modules


def _packages(monkeypatch, **modules):
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name.replace("_", "."), module)


def test_load_reports_a_cupy_without_cudnn(monkeypatch):
    cupy, cuda = types.ModuleType("cupy"), types.ModuleType("cupy.cuda")
    cupy.__path__, cuda.__path__ = [], []
    cupy.cuda = cuda
    _packages(monkeypatch, cupy=cupy, cupy_cuda=cuda)
    monkeypatch.delitem(sys.modules, "cupy.cuda.cudnn", raising=False)
    lib, reason = gpu_cudnn.load()
    assert lib is None
    assert reason == "CuPy has no cuDNN support (cupy.cuda.cudnn is missing; CuPy 14 removed it)"


@pytest.mark.parametrize("version, min_eps", [(8902, 0.0), (7401, 1e-5)])
def test_load_finds_cupys_cudnn_modules(monkeypatch, version, min_eps):
    cupy, cuda = types.ModuleType("cupy"), types.ModuleType("cupy.cuda")
    lib, wrappers = types.ModuleType("cupy.cuda.cudnn"), types.ModuleType("cupy.cudnn")
    cupy.__path__, cuda.__path__ = [], []
    cupy.cuda, cuda.cudnn, cupy.cudnn = cuda, lib, wrappers
    lib.getVersion = lambda: version
    _packages(monkeypatch, cupy=cupy, cupy_cuda=cuda, cupy_cuda_cudnn=lib, cupy_cudnn=wrappers)
    api, reason = gpu_cudnn.load()
    assert reason == "" and api.version == version and api.min_bn_epsilon == min_eps
    assert api.wrappers is wrappers and api.lib is lib


# ---- the calls ----


class DevArray(np.ndarray):
    """A NumPy array with CuPy's `.data.ptr` (here its host address)."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _dev(shape, dtype="float32"):
    return np.zeros(shape, dtype=dtype).view(DevArray)


class Recorder:
    """Records calls as (name, args, kwargs); CUDNN_* constants are their own names."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("CUDNN_"):
            return name

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return len(self.calls)
        return call


class FakeWrappers(Recorder):
    """cupy.cudnn: descriptors, the handle, and recorded convolution/batchnorm wrappers."""

    def Descriptor(self, value, destroy):
        self.calls.append(("Descriptor", (value,), {}))
        return types.SimpleNamespace(value=value)

    def get_handle(self):
        return 7

    def create_tensor_nd_descriptor(self, a):
        return types.SimpleNamespace(value=("tensor", a.shape))


class FakeLib(Recorder):
    """cupy.cuda.cudnn: pooling calls read their host arguments through the pointers."""

    scalar = ctypes.c_float

    def setPoolingNdDescriptor_v4(self, desc, mode, nan_opt, nd, *pointers):
        ints = [list((ctypes.c_int * nd).from_address(p)) for p in pointers]
        self.calls.append(("setPoolingNdDescriptor_v4", (desc, mode, nan_opt, nd, *ints), {}))

    def _scalar(self, pointer):
        return self.scalar.from_address(pointer).value

    def poolingForward(self, handle, desc, alpha, xd, x, beta, yd, y):
        self.calls.append(("poolingForward", (handle, desc, self._scalar(alpha), xd, x,
                                              self._scalar(beta), yd, y), {}))

    def poolingBackward(self, handle, desc, alpha, yd, y, dyd, dy, xd, x, beta, dxd, dx):
        self.calls.append(("poolingBackward", (handle, desc, self._scalar(alpha), yd, y, dyd, dy,
                                               xd, x, self._scalar(beta), dxd, dx), {}))


def _api(version=8902):
    return gpu_cudnn.CupyCudnn(NUMPY_AS_CUPY, FakeWrappers(), FakeLib(), version)


def test_cupys_cudnn_error_is_what_falls_back():
    assert _api().errors == ()

    class CuDNNError(RuntimeError):
        pass

    lib = FakeLib()
    lib.__dict__["CuDNNError"] = CuDNNError
    assert gpu_cudnn.CupyCudnn(NUMPY_AS_CUPY, FakeWrappers(), lib, 8902).errors == (CuDNNError,)


def test_convolutions_call_cupys_wrappers_with_cupys_signatures():
    api = _api()
    x, w, y = _dev((1, 2, 5, 5)), _dev((4, 1, 3, 3)), _dev((1, 4, 3, 3))
    geometry = ((0, 0), (1, 1), (1, 1), 2)
    api.convolution_forward(x, w, y, *geometry)
    api.convolution_backward_data(w, y, x, *geometry)
    api.convolution_backward_filter(x, y, w, *geometry)
    tune = {"auto_tune": False, "tensor_core": "auto"}
    assert api.wrappers.calls == [
        ("convolution_forward", (x, w, None, y) + geometry, tune),
        ("convolution_backward_data", (w, y, None, x) + geometry,
         {"deterministic": False, **tune}),
        ("convolution_backward_filter", (x, y, w) + geometry, {"deterministic": False, **tune})]


@pytest.mark.parametrize("dtype, scalar", [("float32", ctypes.c_float),
                                           ("float64", ctypes.c_double)])
def test_pooling_passes_its_descriptor_and_scalars_through_pointers(dtype, scalar):
    api = _api()
    api.lib.scalar = scalar
    x, y = _dev((1, 2, 4, 5), dtype), _dev((1, 2, 2, 3), dtype)
    args = ((2, 2), (0, 1), (2, 2), "CUDNN_POOLING_MAX", "CUDNN_PROPAGATE_NAN")
    api.pooling_forward(x, y, *args, 0.5)
    api.pooling_backward(x, y, y, x, *args, 1.0)
    xd, yd = ("tensor", x.shape), ("tensor", y.shape)
    assert api.lib.calls == [
        ("createPoolingDescriptor", (), {}),
        ("setPoolingNdDescriptor_v4", (1, "CUDNN_POOLING_MAX", "CUDNN_PROPAGATE_NAN", 2,
                                       [2, 2], [0, 1], [2, 2]), {}),
        ("poolingForward", (7, 1, 0.5, xd, x.ctypes.data, 0.0, yd, y.ctypes.data), {}),
        ("poolingBackward", (7, 1, 1.0, yd, y.ctypes.data, yd, y.ctypes.data, xd,
                             x.ctypes.data, 0.0, xd, x.ctypes.data), {})]
    assert api.wrappers.calls == [("Descriptor", (1,), {})], "one descriptor per geometry"


def test_batchnorm_leaves_cudnns_running_averages_alone():
    api = _api()
    x, gamma = _dev((4, 3, 5, 1)), np.ones(3, "float32")
    api.batchnorm_forward(x, gamma, gamma * 0, 1e-5)
    api.batchnorm_backward(x, gamma, x, gamma, gamma, 1e-5)
    (name, args, _), (name2, args2, _) = api.wrappers.calls
    assert name == "batch_normalization_forward_training"
    assert args[:3] == (x, gamma, args[2]) and args[5:] == (
        None, None, 1e-5, 1.0, True, "CUDNN_BATCHNORM_SPATIAL", False)
    np.testing.assert_array_equal(args[3], np.zeros(3))   # scratch running mean and var
    assert args[3] is not args[4]
    assert name2 == "batch_normalization_backward"
    assert args2 == (x, gamma, x, gamma, gamma, 1e-5, True, "CUDNN_BATCHNORM_SPATIAL", False)
