"""The GPU device's cuDNN calls, made through CuPy (12 and 13), for `knetflow.ops.cudnn`.

Part of the GPU kind (gpu.py): with it, the only module that imports CuPy.
It knows cuDNN and CuPy, not ops: `knetflow.ops.cudnn` translates the ops
into these calls and registers the result as the GPU kind's fast kernels.

`load()` imports CuPy's cuDNN modules, only when a plan is compiled for a
GPU: `cupy.cudnn` (the wrappers that describe arrays and choose algorithms)
and `cupy.cuda.cudnn` (the library's functions). CuPy 14 removed both, and
CuPy 13 needs the cuDNN library installed beside it (e.g. the
nvidia-cudnn-cu12 wheel); without them `load()` gives the reason instead.

`CupyCudnn` offers the calls `knetflow.ops.cudnn` makes, on C-contiguous
NCHW/NCDHW arrays of one float dtype, writing into a given output:

- convolutions through CuPy's wrappers, which always cross-correlate:
  `convolution_forward(x, w, y, ...)`, `convolution_backward_data(w, dy, dx, ...)`,
  `convolution_backward_filter(x, dy, dw, ...)`;
- pooling through the library's functions with a pooling descriptor of our
  own, because CuPy's `pooling_forward` fixes NaN propagation off and has no
  alpha: `pooling_forward(x, y, ...)`, `pooling_backward(x, y, dy, dx, ...)`;
- batch normalization through CuPy's wrappers, with the running averages
  left alone (knetflow updates its moments itself).

Calls run on the current CUDA stream (the executor's), with the handle of
the current device.
"""

from __future__ import annotations

import numpy as np

#: passed to CuPy's convolution wrappers: auto_tune benchmarks algorithms at the first call
#: of each shape; tensor_core is "auto", "always" or "never"; deterministic applies to the
#: data and filter gradients (set them through `knetflow.ops.cudnn.OPTIONS`, the same dict)
OPTIONS = {"auto_tune": False, "tensor_core": "auto", "deterministic": False}


def load() -> tuple:
    """(CupyCudnn, "") when CuPy's cuDNN support imports and the library loads, else
    (None, the reason)."""
    try:
        import cupy
        import cupy.cuda.cudnn as lib
        import cupy.cudnn as wrappers

        version = int(lib.getVersion())
    except ModuleNotFoundError as e:
        if e.name == "cupy":
            return None, "CuPy is not installed"
        return None, f"CuPy has no cuDNN support ({e.name} is missing; CuPy 14 removed it)"
    except (ImportError, OSError, AttributeError, RuntimeError) as e:
        return None, f"cuDNN failed to load through CuPy: {e}"
    return CupyCudnn(cupy, wrappers, lib, version), ""


class CupyCudnn:
    """cuDNN through CuPy: the calls of `knetflow.ops.cudnn` (see the module docstring)."""

    def __init__(self, cupy, wrappers, lib, version: int):
        self.cupy, self.wrappers, self.lib, self.version = cupy, wrappers, lib, version
        # CUDNN_BN_MIN_EPSILON: 1e-5 before cuDNN 7.5, 0 since
        self.min_bn_epsilon = 1e-5 if version < 7500 else 0.0
        # what cuDNN raises for a case it does not support (knetflow then runs the xp kernel)
        error = getattr(lib, "CuDNNError", None)
        self.errors = (error,) if isinstance(error, type) else ()
        self._pool_descriptors: dict = {}

    # ---- convolution: y, dx, dw are written ----

    def convolution_forward(self, x, w, y, pad, stride, dilation, groups):
        self.wrappers.convolution_forward(
            x, w, None, y, pad, stride, dilation, groups, auto_tune=OPTIONS["auto_tune"],
            tensor_core=OPTIONS["tensor_core"])

    def convolution_backward_data(self, w, dy, dx, pad, stride, dilation, groups):
        self.wrappers.convolution_backward_data(
            w, dy, None, dx, pad, stride, dilation, groups,
            deterministic=OPTIONS["deterministic"], auto_tune=OPTIONS["auto_tune"],
            tensor_core=OPTIONS["tensor_core"])

    def convolution_backward_filter(self, x, dy, dw, pad, stride, dilation, groups):
        self.wrappers.convolution_backward_filter(
            x, dy, dw, pad, stride, dilation, groups, deterministic=OPTIONS["deterministic"],
            auto_tune=OPTIONS["auto_tune"], tensor_core=OPTIONS["tensor_core"])

    # ---- pooling: y = alpha * pool(x); dx = alpha * (its adjoint at x) dy ----

    def pooling_forward(self, x, y, window, padding, stride, mode, nan_opt, alpha):
        desc = self._pooling_descriptor(window, padding, stride, mode, nan_opt)
        one, zero = self._scalars(x.dtype, alpha)
        self.lib.poolingForward(
            self.wrappers.get_handle(), desc.value, one.ctypes.data, self._describe(x),
            x.data.ptr, zero.ctypes.data, self._describe(y), y.data.ptr)

    def pooling_backward(self, x, y, dy, dx, window, padding, stride, mode, nan_opt, alpha):
        desc = self._pooling_descriptor(window, padding, stride, mode, nan_opt)
        one, zero = self._scalars(x.dtype, alpha)
        y_desc, x_desc = self._describe(y), self._describe(x)
        self.lib.poolingBackward(
            self.wrappers.get_handle(), desc.value, one.ctypes.data, y_desc, y.data.ptr,
            y_desc, dy.data.ptr, x_desc, x.data.ptr, zero.ctypes.data, x_desc, dx.data.ptr)

    def _pooling_descriptor(self, window, padding, stride, mode, nan_opt):
        """A cached descriptor (destroyed with its Descriptor object) per pooling geometry."""
        key = (window, padding, stride, mode, nan_opt)
        desc = self._pool_descriptors.get(key)
        if desc is None:
            lib = self.lib
            desc = self.wrappers.Descriptor(lib.createPoolingDescriptor(),
                                            lib.destroyPoolingDescriptor)
            ints = [np.array(v, dtype=np.int32) for v in (window, padding, stride)]
            lib.setPoolingNdDescriptor_v4(
                desc.value, getattr(lib, mode), getattr(lib, nan_opt), len(window),
                *(a.ctypes.data for a in ints))
            self._pool_descriptors[key] = desc
        return desc

    def _describe(self, a) -> int:
        """A tensor descriptor of a C-contiguous array (CuPy caches them by shape and dtype)."""
        return self.wrappers.create_tensor_nd_descriptor(a).value

    @staticmethod
    def _scalars(dtype, alpha):
        """cuDNN's host scaling factors (alpha, beta=0): double for double data, else float."""
        kind = np.float64 if np.dtype(dtype) == np.float64 else np.float32
        return np.array([alpha], dtype=kind), np.zeros(1, dtype=kind)

    # ---- batch normalization, spatial mode on (N, C, S, 1) ----

    def batchnorm_forward(self, x, gamma, beta, eps):
        """(y, batch mean, 1/sqrt(batch var + eps)); the last two in gamma's dtype."""
        scratch = self.cupy.zeros(gamma.shape, dtype=gamma.dtype)
        # decay 1: cuDNN's running averages keep their values; knetflow keeps its own
        return self.wrappers.batch_normalization_forward_training(
            x, gamma, beta, scratch, scratch.copy(), None, None, eps, 1.0, True,
            self.lib.CUDNN_BATCHNORM_SPATIAL, False)

    def batchnorm_backward(self, x, gamma, gy, mean, inv_std, eps):
        """(dx, dgamma, dbeta) given the batch mean and 1/sqrt(var + eps)."""
        return self.wrappers.batch_normalization_backward(
            x, gamma, gy, mean, inv_std, eps, True, self.lib.CUDNN_BATCHNORM_SPATIAL, False)
