"""cuDNN kernels for the heavy ops on a GPU, through CuPy's cuDNN wrappers.

These are the GPU kind's fast kernels. They translate op semantics (Knet's
convolution modes, pool's window rule, batchnorm's moments) and fall back on
the op's own forward, so they live here, on the ops floor, and register
themselves for the "gpu" device kind (`registry.set_fast_kernels`): the
devices floor below never imports ops, and the GPU kind needs no change to
have them. The cuDNN library calls made through CuPy are the GPU device's
(`knetflow.devices.gpu_cudnn`), so no module here imports CuPy.

When a plan is compiled for a GPU device, `base.kernel` asks the registry,
and so `pick`, for each op; for the ops below it binds the function here
instead of the op's `xp` forward, once, at compile time:

    conv4, conv4_data, conv4_filter, deconv4   cudnnConvolutionForward / BackwardData / Filter
    pool, pool_grad, pool_select (average)     cudnnPoolingForward / Backward
    batchnorm, batchnorm_grad                  cudnnBatchNormalizationForwardTraining / Backward

Each function takes the op forward's arguments, `(xp, *arrays, **attrs)` and
`out=` where the op has it, and gives the forward's result. Whatever cuDNN
cannot do runs the op's own `xp` forward instead: at compile time by
attributes (each kernel's `supports`), at run time by arrays (NotImplemented
for mixed or non-float dtypes, empty arrays, more than 2**31 - 1 elements, a
batchnorm eps below cuDNN's minimum), and, with a RuntimeWarning, when cuDNN
raises (a configuration the installed cuDNN does not support).

The translation, done here and tested on the CPU against a NumPy model of cuDNN:
- 1-D convolutions and pools run as 2-D ones with a unit first spatial dimension;
- CuPy's wrappers always cross-correlate, so `mode=0` (Knet's true convolution)
  flips the filter, and the filter gradient is flipped back;
- conv's `alpha` scales the result afterwards; pool's is cuDNN's own alpha;
- pool modes 0-3 are cuDNN's pooling modes of the same numbers, and
  `maxpoolingNanOpt` is cuDNN's NaN propagation (1 propagates); a pooling
  window longer than the padded input is cut to it first (`pool.fit_window`),
  so cuDNN sees only windows that fit and computes pool's shapes;
- batchnorm views x as (N, C, prod(spatial), 1) in cuDNN's spatial mode; cuDNN
  gives 1/sqrt(var + eps), from which the batch variance is recovered.
The calls themselves are in `knetflow.devices.gpu_cudnn`.

Results equal the xp path's up to rounding (cuDNN may pick Winograd or FFT
algorithms in float32/16, and accumulates float16 in float32), except that
among tied maxima of a pooling window cuDNN chooses which one gets the
gradient, and mode 0 (CUDNN_POOLING_MAX) and the convolution gradients may
sum in a nondeterministic order (OPTIONS["deterministic"] asks for
deterministic convolution gradients; pool mode 3 is deterministic).

Availability (CuPy <= 13 with the cuDNN library; CuPy 14 removed cuDNN) is
decided at the first GPU compile and cached; `unavailable_reason()` says why
it is missing. Importing knetflow never imports CuPy. To turn the cuDNN path
off, set KNETFLOW_CUDNN=0 in the environment or call `set_enabled(False)`
(`set_enabled(None)` returns to the environment's choice); either applies to
plans compiled afterwards and to ops run eagerly on CuPy arrays, which use these
kernels as plans do.

Example:
    >>> from knetflow.ops import cudnn
    >>> cudnn.set_enabled(False)     # plans compiled from now on use the xp kernels
    >>> cudnn.enabled()
    False
    >>> cudnn.set_enabled(None)      # back to KNETFLOW_CUDNN (on unless "0")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

from knetflow.devices import gpu_cudnn, registry
from knetflow.ops.base import FLOAT_DTYPES, get_op
from knetflow.ops.conv import conv_size, deconv_size
from knetflow.ops.pool import MAX_MODES, fit_window, pool_size

__all__ = ["KERNELS", "OPTIONS", "enabled", "library", "pick", "set_enabled",
           "unavailable_reason"]

#: options of CuPy's convolution wrappers (see gpu_cudnn.OPTIONS, the same dict)
OPTIONS = gpu_cudnn.OPTIONS

#: cuDNN's pooling modes by Knet's numbers, and its NaN propagation by maxpoolingNanOpt
POOL_MODES = {0: "CUDNN_POOLING_MAX", 1: "CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING",
              2: "CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING",
              3: "CUDNN_POOLING_MAX_DETERMINISTIC"}
NAN_OPTS = {0: "CUDNN_NOT_PROPAGATE_NAN", 1: "CUDNN_PROPAGATE_NAN"}

#: the device kind these kernels are for
GPU_KIND = "gpu"

#: op name -> (supports(attrs) -> bool, kernel with the op forward's signature)
KERNELS: dict[str, tuple[Callable, Callable]] = {}

_MAX_ELEMENTS = 2**31 - 1   # cuDNN describes tensors with 32-bit ints
_UNSET = object()
_library = _UNSET
_reason = "cuDNN not looked for yet"
_override: bool | None = None


# ---- switching and availability ----


def set_enabled(flag: bool | None) -> None:
    """Use cuDNN in plans compiled from now on (True), never (False), or as
    KNETFLOW_CUDNN says (None, the default: on unless it is "0")."""
    global _override
    _override = None if flag is None else bool(flag)


def enabled() -> bool:
    """Whether plans compiled now may use cuDNN (see `set_enabled`)."""
    if _override is not None:
        return _override
    return os.environ.get("KNETFLOW_CUDNN", "1").strip().lower() not in ("0", "false", "off", "no")


def library():
    """The cuDNN calls (a `gpu_cudnn.CupyCudnn`), or None; looked for once, then cached."""
    global _library, _reason
    if _library is _UNSET:
        _library, _reason = gpu_cudnn.load()
    return _library


def unavailable_reason() -> str:
    """Why `library()` found no cuDNN ("" when it did, or a note that it has not looked)."""
    return "" if _library not in (_UNSET, None) else _reason


def pick(opname: str, xp, attrs: dict) -> Callable | None:
    """The cuDNN kernel of op `opname` with `attrs` on array module `xp`, or None.

    None unless xp is the GPU kind's array module (CuPy), cuDNN is enabled and
    available, and the kernel supports the attributes; the caller then uses the
    op's xp forward.
    """
    entry = KERNELS.get(opname)
    if entry is None or not _on_gpu(xp) or not enabled():
        return None
    supports, run = entry
    if not supports(attrs) or library() is None:
        return None
    return run


def _on_gpu(xp) -> bool:
    kind = registry.module_kind(xp)
    return kind is not None and kind.name == GPU_KIND


def _kernel(opname: str, supports: Callable = lambda attrs: True):
    """Register `impl(lib, xp, *arrays, **attrs)` as op `opname`'s kernel; NotImplemented
    from it, or an error of the library (`lib.errors`), runs the op's xp forward."""
    def register(impl):
        def run(xp, *arrays, **attrs):
            lib = library()
            try:
                result = impl(lib, xp, *arrays, **attrs)
            except lib.errors as e:   # a case this cuDNN does not support: say so, carry on
                warnings.warn(f"cuDNN failed in {opname} ({e}); running its xp kernel instead",
                              RuntimeWarning, stacklevel=2)
                result = NotImplemented
            if result is NotImplemented:
                return get_op(opname).forward(xp, *arrays, **attrs)
            return result

        run.__name__ = run.__qualname__ = opname
        run.__doc__ = impl.__doc__
        KERNELS[opname] = (supports, run)
        return run
    return register


# ---- translation (pure functions of shapes and arrays) ----


def usable(*arrays) -> bool:
    """cuDNN can take these arrays: one float dtype, non-empty, 32-bit sized."""
    dtype = arrays[0].dtype
    return str(dtype) in FLOAT_DTYPES and all(
        a.dtype == dtype and 0 < a.size <= _MAX_ELEMENTS for a in arrays)


def _usable_out(out, *arrays) -> bool:
    return usable(*arrays) and (out is None or out.dtype == arrays[0].dtype)


def spatial(values, fill: int) -> tuple:
    """Per-dimension attributes as cuDNN takes them: 1-D ones get a leading `fill`."""
    values = tuple(int(v) for v in values)
    return (fill,) + values if len(values) == 1 else values


def lift(xp, a):
    """a (N, C, X...) C-contiguous, with a unit dimension before X when it is 1-D."""
    a = xp.ascontiguousarray(a)
    return a.reshape(a.shape[:2] + (1,) + a.shape[2:]) if a.ndim == 3 else a


def lifted(out):
    """The C-contiguous output `out` as cuDNN writes it: a view, lifted like `lift`."""
    return out.reshape(out.shape[:2] + (1,) + out.shape[2:]) if out.ndim == 3 else out


def flip(xp, w, mode: int):
    """The filter cuDNN cross-correlates with: w itself (mode 1) or w flipped (mode 0)."""
    if mode == 1:
        return w
    return xp.ascontiguousarray(w[(slice(None), slice(None)) + (slice(None, None, -1),)
                                  * (w.ndim - 2)])


def _target(xp, out, shape, dtype):
    """Where cuDNN writes: `out` when it is C-contiguous, else a new array."""
    if out is not None and out.flags.c_contiguous:
        return out
    return xp.empty(shape, dtype=dtype)


def _deliver(result, out, alpha=1.0):
    """result times alpha, in out when given (the plan's buffer)."""
    if alpha != 1:
        result *= alpha
    if out is None or result is out:
        return result
    out[...] = result
    return out


def _geometry(padding, stride, dilation) -> tuple:
    return spatial(padding, 0), spatial(stride, 1), spatial(dilation, 1)


def conv_shape(w_shape, x_shape, padding, stride, dilation) -> tuple:
    """Shape of conv4(w, x)."""
    ys = (conv_size(*a) for a in zip(x_shape[2:], w_shape[2:], padding, stride, dilation))
    return (x_shape[0], w_shape[0]) + tuple(ys)


def deconv_shape(w_shape, x_shape, padding, stride, dilation, group) -> tuple:
    """Shape of deconv4(w, x)."""
    ys = (deconv_size(*a) for a in zip(x_shape[2:], w_shape[2:], padding, stride, dilation))
    return (x_shape[0], w_shape[1] * group) + tuple(ys)


# ---- convolution ----


def _conv_ok(attrs) -> bool:
    return len(attrs.get("padding", ())) in (1, 2, 3) and attrs.get("mode", 0) in (0, 1)


@_kernel("conv4", _conv_ok)
def conv4(lib, xp, w, x, padding=(), stride=(), dilation=(), mode=0, alpha=1.0, group=1,
          out=None):
    """conv4 by cudnnConvolutionForward."""
    if not _usable_out(out, w, x):
        return NotImplemented
    y = _target(xp, out, conv_shape(w.shape, x.shape, padding, stride, dilation), x.dtype)
    lib.convolution_forward(lift(xp, x), lift(xp, flip(xp, w, mode)), lifted(y),
                            *_geometry(padding, stride, dilation), group)
    return _deliver(y, out, alpha)


@_kernel("conv4_data", _conv_ok)
def conv4_data(lib, xp, w, dy, x, padding=(), stride=(), dilation=(), mode=0, alpha=1.0,
               group=1, out=None):
    """conv4's x-gradient by cudnnConvolutionBackwardData."""
    if not (_usable_out(out, w, dy) and 0 < x.size):
        return NotImplemented
    dx = _target(xp, out, x.shape, w.dtype)
    lib.convolution_backward_data(lift(xp, flip(xp, w, mode)), lift(xp, dy), lifted(dx),
                                  *_geometry(padding, stride, dilation), group)
    return _deliver(dx, out, alpha)


@_kernel("conv4_filter", _conv_ok)
def conv4_filter(lib, xp, x, dy, w, padding=(), stride=(), dilation=(), mode=0, alpha=1.0,
                 group=1, out=None):
    """conv4's w-gradient by cudnnConvolutionBackwardFilter (flipped back for mode 0)."""
    if not (_usable_out(out, x, dy) and 0 < w.size):
        return NotImplemented
    dw = _target(xp, out if mode == 1 else None, w.shape, x.dtype)
    lib.convolution_backward_filter(lift(xp, x), lift(xp, dy), lifted(dw),
                                    *_geometry(padding, stride, dilation), group)
    return _deliver(flip(xp, dw, mode), out, alpha)


@_kernel("deconv4", _conv_ok)
def deconv4(lib, xp, w, x, padding=(), stride=(), dilation=(), mode=0, alpha=1.0, group=1,
            out=None):
    """deconv4 by cudnnConvolutionBackwardData (deconv4 is conv4's x-gradient)."""
    if not _usable_out(out, w, x):
        return NotImplemented
    shape = deconv_shape(w.shape, x.shape, padding, stride, dilation, group)
    y = _target(xp, out, shape, x.dtype)
    lib.convolution_backward_data(lift(xp, flip(xp, w, mode)), lift(xp, x), lifted(y),
                                  *_geometry(padding, stride, dilation), group)
    return _deliver(y, out, alpha)


# ---- pooling ----


def _pool_ok(attrs) -> bool:
    return (len(attrs.get("window", ())) in (1, 2, 3) and attrs.get("mode", 0) in POOL_MODES
            and attrs.get("maxpoolingNanOpt", 1) in NAN_OPTS)


def _pool_grad_ok(attrs) -> bool:
    # pool_grad's y is alpha * max: cuDNN may compare it with x, so only alpha 1 for max modes
    return _pool_ok(attrs) and (attrs.get("mode", 0) not in MAX_MODES
                                or attrs.get("alpha", 1.0) == 1)


def _pool_select_ok(attrs) -> bool:
    return _pool_ok(attrs) and attrs.get("mode", 0) not in MAX_MODES   # average: pool(g)


def pool_args(window, padding, stride, mode, nanopt) -> tuple:
    """cuDNN's (window, padding, stride, pooling mode, NaN option) for pool's attributes."""
    return (spatial(window, 1), spatial(padding, 0), spatial(stride, 1), POOL_MODES[mode],
            NAN_OPTS[nanopt])


def pool_shape(x_shape, window, padding, stride) -> tuple:
    """Shape of pool(x)."""
    return tuple(x_shape[:2]) + tuple(pool_size(*a) for a in zip(x_shape[2:], window, padding,
                                                                 stride))


@_kernel("pool", _pool_ok)
def pool(lib, xp, x, window=(), padding=(), stride=(), mode=0, maxpoolingNanOpt=1, alpha=1.0,
         out=None):
    """pool by cudnnPoolingForward."""
    if not _usable_out(out, x):
        return NotImplemented
    window = fit_window(x.shape[2:], window, padding)   # cuDNN's window fits the padded x
    y = _target(xp, out, pool_shape(x.shape, window, padding, stride), x.dtype)
    lib.pooling_forward(lift(xp, x), lifted(y), *pool_args(window, padding, stride, mode,
                                                             maxpoolingNanOpt), alpha)
    return _deliver(y, out)


@_kernel("pool_grad", _pool_grad_ok)
def pool_grad(lib, xp, x, y, dy, window=(), padding=(), stride=(), mode=0, maxpoolingNanOpt=1,
              alpha=1.0, out=None):
    """pool's gradient by cudnnPoolingBackward."""
    if not _usable_out(out, x, y, dy):
        return NotImplemented
    window = fit_window(x.shape[2:], window, padding)
    dx = _target(xp, out, x.shape, dy.dtype)
    lib.pooling_backward(lift(xp, x), lift(xp, y), lift(xp, dy), lifted(dx),
                         *pool_args(window, padding, stride, mode, maxpoolingNanOpt), alpha)
    return _deliver(dx, out)


@_kernel("pool_select", _pool_select_ok)
def pool_select(lib, xp, x, y, g, window=(), padding=(), stride=(), mode=1, maxpoolingNanOpt=1,
                alpha=1.0, out=None):
    """pool_select of the average modes (pool(g)) by cudnnPoolingForward."""
    if not _usable_out(out, g):
        return NotImplemented
    return pool(xp, g, window=window, padding=padding, stride=stride, mode=mode,
                maxpoolingNanOpt=maxpoolingNanOpt, alpha=alpha, out=out)


# ---- batch normalization ----


def bn_view(xp, x):
    """x (N, C, ...) as the (N, C, S, 1) tensor cuDNN's spatial mode normalizes per channel."""
    x = xp.ascontiguousarray(x)
    return x.reshape(x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1]), 1)


def bn_param_dtype(dtype) -> str:
    """The dtype cuDNN keeps per-channel values in: float32 for float16 data."""
    name = str(np.dtype(dtype))
    return "float32" if name == "float16" else name


def bn_variance(xp, inv_std, eps):
    """The batch variance from cuDNN's saved 1/sqrt(var + eps), never below 0."""
    return xp.maximum(inv_std ** -2 - eps, 0)


def _bn_ok(lib, eps, data: tuple, per_channel: tuple) -> bool:
    """cuDNN can normalize: data (x, and gy) of 2 to 5 dims, float per-channel vectors."""
    return (2 <= data[0].ndim <= 5 and usable(*data) and eps >= lib.min_bn_epsilon
            and all(str(v.dtype) in FLOAT_DTYPES for v in per_channel))


def _channel_vector(xp, v, channels, dtype, fill):
    if v is None:
        return xp.full(channels, fill, dtype=dtype)
    return xp.ascontiguousarray(v.astype(dtype, copy=False))


@_kernel("batchnorm")
def batchnorm(lib, xp, x, *affine, eps=1e-5):
    """Training batchnorm, (y, batch mean, batch var), by cudnnBatchNormalizationForwardTraining."""
    if not _bn_ok(lib, eps, (x,), affine):
        return NotImplemented
    c, pdt = x.shape[1], bn_param_dtype(x.dtype)
    gamma, beta = affine if affine else (None, None)
    y, mean, inv_std = lib.batchnorm_forward(
        bn_view(xp, x), _channel_vector(xp, gamma, c, pdt, 1), _channel_vector(xp, beta, c, pdt, 0),
        float(eps))
    var = bn_variance(xp, inv_std, eps)
    return y.reshape(x.shape), mean.astype(x.dtype, copy=False), var.astype(x.dtype, copy=False)


@_kernel("batchnorm_grad")
def batchnorm_grad(lib, xp, gy, x, mean, var, *gamma, eps=1e-5):
    """batchnorm's backward, (dx, dgamma, dbeta), by cudnnBatchNormalizationBackward."""
    if not _bn_ok(lib, eps, (x, gy), (mean, var) + gamma):
        return NotImplemented
    c, pdt = x.shape[1], bn_param_dtype(x.dtype)
    inv_std = 1 / xp.sqrt(var.astype(pdt) + eps)
    dx, dgamma, dbeta = lib.batchnorm_backward(
        bn_view(xp, x), _channel_vector(xp, gamma[0] if gamma else None, c, pdt, 1),
        bn_view(xp, gy), _channel_vector(xp, mean, c, pdt, 0), inv_std, float(eps))
    return (dx.reshape(x.shape), dgamma.astype(x.dtype, copy=False),
            dbeta.astype(x.dtype, copy=False))


registry.set_fast_kernels(GPU_KIND, pick)  # base.kernel asks the registry, which asks here
