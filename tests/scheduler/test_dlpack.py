"""Arrays in and out of plans through DLPack (scheduler/plan.py: _as_input, from_dlpack)."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.scheduler.plan import _as_input, from_dlpack


class OnlyDLPack:
    """An array that offers nothing but the DLPack protocol (no __array__)."""

    def __init__(self, array, device=(1, 0)):
        self._array, self._device = array, device

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device


def _plan():
    x = kf.placeholder("x", (None, 3))
    return kf.compile([kf.relu(x) * 2.0])


def test_a_dlpack_only_array_is_fed_without_a_copy():
    a = np.array([[-1.0, 2.0, 3.0]], dtype="float32")
    fed = _as_input(OnlyDLPack(a), "float32")
    assert np.shares_memory(fed, a)
    np.testing.assert_array_equal(_plan().run({"x": OnlyDLPack(a)})[0], [[0.0, 4.0, 6.0]])


def test_pytorch_tensors_in_and_out():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    t = torch.tensor([[-1.0, 2.0, 3.0]])
    assert np.shares_memory(_as_input(t, "float32"), t.numpy())  # fed as it is
    (out,) = _plan().run({"x": t})
    back = torch.from_dlpack(out)  # handed back without a copy
    assert back.data_ptr() == out.ctypes.data
    assert torch.equal(back, torch.tensor([[0.0, 4.0, 6.0]]))


def test_another_dtype_is_converted_once():
    a = np.array([[1, 2, 3]], dtype="int64")
    fed = _as_input(OnlyDLPack(a), "float32")
    assert fed.dtype == np.float32 and not np.shares_memory(fed, a)


def test_devices_knetflow_cannot_use_are_refused_by_name():
    a = np.zeros(3)
    with pytest.raises(kf.FeedError, match=r"a CUDA array \(DLPack device 7\) was fed, but "
                                           r"knetflow cannot use gpu:7"):
        from_dlpack(OnlyDLPack(a, device=(2, 7)))
    with pytest.raises(kf.FeedError, match=r"on DLPack device type 14 was fed; knetflow takes "
                                           r"host \(CPU\) and CUDA arrays"):
        from_dlpack(OnlyDLPack(a, device=(14, 0)))


def test_a_cuda_tensor_feeds_a_gpu_plan_in_place():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not any(d.kind == "gpu" for d in kf.devices()) or not torch.cuda.is_available():
        pytest.skip("needs a GPU that both CuPy and PyTorch see")
    gpu = kf.gpu(0)
    x = kf.placeholder("x", (None, 3))
    plan = kf.compile([kf.relu(x) * 2.0], devices=[gpu])
    t = torch.tensor([[-1.0, 2.0, 3.0]], device="cuda:0")
    (out,) = plan.run({"x": t}, keep_on_device=True)
    back = torch.from_dlpack(out)
    assert back.device.type == "cuda"
    assert torch.equal(back.cpu(), torch.tensor([[0.0, 4.0, 6.0]]))
