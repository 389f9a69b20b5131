"""ONNX layer ops as knetflow ops: Conv, pooling, BatchNormalization (recurrent
layers are in `from_onnx_rnn.py`).

Exact correspondences, and what is refused because it would not be exact:

- Conv is cross-correlation: knetflow `conv4(..., mode=1)` (mode 0 would
  flip the filters). Filters are (M, C/group, k...) in both. Pads must be the
  same at both ends of each axis (`conv4` pads symmetrically), so asymmetric
  pads (and SAME auto_pad needing an odd total) are refused.
- MaxPool and AveragePool are knetflow `pool` (modes 0; 1 when
  count_include_pad=1, else 2). knetflow's output size is Knet's
  1 + (X + 2P - W) / S rounded toward zero; ONNX's with ceil_mode=0 is the
  same wherever the window fits the padded input, which is checked for static
  dims. ceil_mode=1 is taken only where it gives the same size (static dims
  with (X + 2P - W) divisible by S). Pooling dilations other than 1 and
  MaxPool's Indices output are refused.
- BatchNormalization in inference mode: y = (x - mean) / sqrt(var + eps) *
  scale + B per channel; scale and B become trainable params, the running
  mean and variance params with `trainable=False`.
"""

from __future__ import annotations

import math

from knetflow import ops
from knetflow.onnx.import_context import converter

# ---- padding, strides ----


def _per_dim(ctx, name, nd, default):
    values = ctx.attrs.ints(name)
    if values is None:
        return (default,) * nd
    if len(values) != nd:
        ctx.fail(f"attribute {name!r} {list(values)} must have one value per spatial axis ({nd})")
    return values


def _pads(ctx, spatial, kernel, strides, dilations) -> tuple:
    """Symmetric padding per spatial axis from pads / auto_pad; asymmetric ones refused."""
    nd = len(kernel)
    auto = ctx.attrs.string("auto_pad", "NOTSET")
    pads = ctx.attrs.ints("pads")
    if auto != "NOTSET" and pads is not None:
        ctx.fail(f"auto_pad={auto} and pads cannot both be given")
    if auto == "NOTSET":
        pads = (0,) * (2 * nd) if pads is None else pads
        if len(pads) != 2 * nd:
            ctx.fail(f"attribute 'pads' {list(pads)} must have 2 values per spatial axis ({nd})")
    elif auto == "VALID":
        pads = (0,) * (2 * nd)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(ctx, auto, spatial, kernel, strides, dilations)
    else:
        ctx.fail(f"auto_pad={auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    begin, end = tuple(pads[:nd]), tuple(pads[nd:])
    if any(p < 0 for p in pads):
        ctx.fail(f"pads {list(pads)} must not be negative")
    if begin != end:
        ctx.fail(f"asymmetric pads {list(pads)} (begin {list(begin)}, end {list(end)}) are not "
                 "supported: knetflow pads both ends of an axis equally")
    return begin


def _same_pads(ctx, auto, spatial, kernel, strides, dilations) -> tuple:
    begin, end = [], []
    for x, k, s, d in zip(spatial, kernel, strides, dilations):
        if x is None:
            ctx.fail(f"auto_pad={auto} needs static spatial dims, got {tuple(spatial)}")
        total = max((math.ceil(x / s) - 1) * s + (k - 1) * d + 1 - x, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return tuple(begin + end)


def _spatial_input(ctx, what="X"):
    x = ctx.data(0, what)
    nd = len(x.shape) - 2
    if nd not in (1, 2, 3):
        ctx.fail(f"input {what} {tuple(x.shape)} must be (N, C, spatial...) with 1 to 3 "
                 "spatial axes")
    return x, nd


# ---- convolution ----


@converter("Conv", 1, 11, 22)
def convert_conv(ctx):
    """Cross-correlation with optional bias: conv4(W, X, mode=1) + B."""
    ctx.require(2, 3)
    x, nd = _spatial_input(ctx)
    w = ctx.data(1, "W")
    if len(w.shape) != nd + 2:
        ctx.fail(f"W {tuple(w.shape)} must have {nd + 2} dims for X {tuple(x.shape)}")
    kernel = tuple(w.shape[2:])
    declared = ctx.attrs.ints("kernel_shape")
    if declared is not None and tuple(declared) != kernel:
        ctx.fail(f"kernel_shape {list(declared)} does not match W {tuple(w.shape)}")
    strides = _per_dim(ctx, "strides", nd, 1)
    dilations = _per_dim(ctx, "dilations", nd, 1)
    pads = _pads(ctx, x.shape[2:], kernel, strides, dilations)
    group = ctx.attrs.int("group", 1)
    y = ops.conv4(w, x, padding=pads, stride=strides, dilation=dilations, mode=1, group=group)
    if ctx.has(2):
        b = ctx.data(2, "B")
        y = y + ops.reshape(b, (-1,) + (1,) * nd)
    return y


# ---- pooling ----


def _pool_attrs(ctx, x, nd):
    kernel = ctx.attrs.ints("kernel_shape")
    if kernel is None or len(kernel) != nd:
        ctx.fail(f"attribute 'kernel_shape' must give {nd} sizes, got {kernel}")
    strides = _per_dim(ctx, "strides", nd, 1)
    dilations = _per_dim(ctx, "dilations", nd, 1)
    if any(d != 1 for d in dilations):
        ctx.fail(f"pooling dilations {list(dilations)} are not supported")
    pads = _pads(ctx, x.shape[2:], kernel, strides, dilations)
    ceil_mode = ctx.attrs.int("ceil_mode", 0)
    for n, k, p, s in zip(x.shape[2:], kernel, pads, strides):
        if n is not None and n + 2 * p < k:
            ctx.fail(f"window {list(kernel)} is larger than the padded input "
                     f"{tuple(x.shape)} with pads {list(pads)}")
        if ceil_mode and (n is None or (n + 2 * p - k) % s):
            ctx.fail(f"ceil_mode=1 is supported only where it gives the same output size as "
                     f"rounding down, which it does not for input {tuple(x.shape)}, window "
                     f"{list(kernel)}, pads {list(pads)}, strides {list(strides)}")
    return tuple(kernel), pads, tuple(strides)


@converter("MaxPool", 1, 8, 10, 11, 12, 22)
def convert_maxpool(ctx):
    """knetflow pool mode 0 (padding never wins a max, as in ONNX)."""
    ctx.require(1)
    x, nd = _spatial_input(ctx)
    if ctx.wants(1):
        ctx.fail("the Indices output is not supported")
    ctx.attrs.ignore("storage_order")  # the layout of Indices only
    window, pads, strides = _pool_attrs(ctx, x, nd)
    return ops.pool(x, window=window, padding=pads, stride=strides, mode=0)


@converter("AveragePool", 1, 7, 10, 11, 19, 22)
def convert_averagepool(ctx):
    """knetflow pool mode 1 (count_include_pad=1: divide by the window's size) or
    2 (count_include_pad=0, the default: divide by the real elements in the window)."""
    ctx.require(1)
    x, nd = _spatial_input(ctx)
    window, pads, strides = _pool_attrs(ctx, x, nd)
    mode = 1 if ctx.attrs.int("count_include_pad", 0) else 2
    return ops.pool(x, window=window, padding=pads, stride=strides, mode=mode)


@converter("GlobalAveragePool", 1, 22)
def convert_globalaveragepool(ctx):
    ctx.require(1)
    x, nd = _spatial_input(ctx)
    return ops.mean(x, axis=tuple(range(2, nd + 2)), keepdims=True)


@converter("GlobalMaxPool", 1, 22)
def convert_globalmaxpool(ctx):
    ctx.require(1)
    x, nd = _spatial_input(ctx)
    return ops.max(x, axis=tuple(range(2, nd + 2)), keepdims=True)


# ---- batch normalization ----


def _channel_vector(ctx, i, what, trainable):
    """Input i: a param (trainable or not) if it is an initializer, else the value as data."""
    if ctx.is_initializer(i):
        return ctx.param(i, what, trainable=trainable)
    return ctx.data(i, what)


@converter("BatchNormalization", 7, 9, 14, 15)
def convert_batchnormalization(ctx):
    """Inference-mode batch normalization with the running moments."""
    ctx.require(5)
    x = ctx.data(0, "X")
    if not 2 <= len(x.shape) <= 5:
        ctx.fail(f"X {tuple(x.shape)} must be (N, C) or (N, C, spatial...)")
    if ctx.version < 9 and ctx.attrs.int("spatial", 1) != 1:
        ctx.fail("spatial=0 (statistics per element) is not supported")
    if ctx.attrs.int("training_mode", 0):
        ctx.fail("training_mode=1 is not supported; import inference graphs")
    if any(ctx.wants(k) for k in range(1, 5)):
        ctx.fail("only the output Y is supported (the others are training outputs)")
    ctx.attrs.ignore("momentum")  # updates running moments in training only
    eps = ctx.attrs.float("epsilon", 1e-5)
    gamma = _channel_vector(ctx, 1, "scale", True)
    beta = _channel_vector(ctx, 2, "B", True)
    mean = _channel_vector(ctx, 3, "input_mean", False)
    var = _channel_vector(ctx, 4, "input_var", False)
    channels = x.shape[1]
    for what, v in (("scale", gamma), ("B", beta), ("input_mean", mean), ("input_var", var)):
        if tuple(v.shape) not in ((channels,), (None,)) and channels is not None:
            ctx.fail(f"{what} {tuple(v.shape)} does not match the {channels} channels of X")
    factor = gamma * (var + eps) ** -0.5
    shift = beta - mean * factor
    per_channel = (-1,) + (1,) * (len(x.shape) - 2)
    return x * ops.reshape(factor, per_channel) + ops.reshape(shift, per_channel)
