"""The MXNet layer symbols of `kf.sym`, each a function and the rule that builds it.

Every function returns a `LayerSymbol` (see `knetflow.train.mxnet.layer_symbol`); its
rule creates the parameters, with MXNet's names and layouts, once the input's
shape is known, and the ops that compute the layer:

    FullyConnected  weight (num_hidden, in), bias (num_hidden,): y = x @ weight.T + bias
    Convolution     weight (num_filter, C/num_group, *kernel), bias (num_filter,):
                    cross-correlation (conv4 mode=1), as MXNet
    Deconvolution   weight (C, num_filter/num_group, *kernel), bias: deconv4 mode=1
    BatchNorm       gamma, beta (C,); aux moving_mean, moving_var (C,)

Images are NCHW. Parameters take the float dtype of the layer's input
(float32 for integer inputs).
"""

from __future__ import annotations

import math

from knetflow.layers import batchnorm as _batchnorm
from knetflow.layers import bnmoments, bnupdates, dropout
from knetflow.ops import cast, mat, relu, reshape, sigm, tanh
from knetflow.ops.loss import log1pexp
from knetflow.train.mxnet.layer_symbol import LAYERS, LayerSymbol, auto_name

__all__ = [
    "Activation",
    "BatchNorm",
    "Convolution",
    "Deconvolution",
    "Dropout",
    "Flatten",
    "FullyConnected",
    "Pooling",
    "Reshape",
]


def layer(kind, inputs, name, attrs) -> LayerSymbol:
    return LayerSymbol(kind, auto_name(kind) if name is None else name, inputs, attrs)


def _ints(value, n=None) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),) * (n or 1)


def static_dims(node, x, axes, what):
    dims = [x.shape[a] for a in axes]
    if any(d is None for d in dims):
        raise ValueError(f"{node.kind} {node.name!r}: {what} of its input {x.shape} must be "
                         "known to create its parameters")
    return dims


def rule(kind):
    """Register a rule class; its plain functions are called on the class, never bound."""
    def register(cls):
        LAYERS[kind] = cls
        return cls
    return register


def _bias_params(attrs):
    return [("weight", False)] + ([] if attrs.get("no_bias") else [("bias", False)])


# ---- dense and activations ----


def FullyConnected(data, num_hidden, no_bias=False, flatten=True, name=None) -> LayerSymbol:
    """A dense layer y = x @ weight.T + bias (MXNet `FullyConnected`); weight is
    (num_hidden, in). With `flatten` an (N, ...) input becomes (N, in) first."""
    return layer("FullyConnected", (data,), name, {"num_hidden": int(num_hidden),
                                                     "no_bias": bool(no_bias),
                                                     "flatten": bool(flatten)})


@rule("FullyConnected")
class _FullyConnected:
    params = staticmethod(_bias_params)

    def build(b, node, inputs):
        x, a = inputs[0], node.attrs
        if a["flatten"] and x.ndim != 2:
            static_dims(node, x, range(1, x.ndim), "the non-batch dims")
            x = mat(x)
        (width,) = static_dims(node, x, [-1], "the last dim")
        dtype = b.float_dtype(x)
        if x.dtype != dtype:
            x = cast(x, dtype)
        y = x @ b.param(node, "weight", (a["num_hidden"], width), dtype).T
        if not a["no_bias"]:
            y = y + b.param(node, "bias", (a["num_hidden"],), dtype)
        return y


_ACTIVATIONS = {"relu": relu, "sigmoid": sigm, "tanh": tanh, "softrelu": log1pexp}


def Activation(data, act_type="relu", name=None) -> LayerSymbol:
    """An elementwise activation (MXNet `Activation`): 'relu', 'sigmoid', 'tanh' or
    'softrelu' (log(1 + exp(x)))."""
    if act_type not in _ACTIVATIONS:
        raise ValueError(f"Activation: unknown act_type {act_type!r}; known: "
                         f"{sorted(_ACTIVATIONS)}")
    return layer("Activation", (data,), name, {"act_type": act_type})


@rule("Activation")
class _Activation:
    def params(attrs):
        return []

    def build(b, node, inputs):
        return _ACTIVATIONS[node.attrs["act_type"]](inputs[0])


def Flatten(data, name=None) -> LayerSymbol:
    """(N, ...) -> (N, prod(...)) (MXNet `Flatten`, Knet `mat`)."""
    return layer("Flatten", (data,), name, {})


@rule("Flatten")
class _Flatten:
    def params(attrs):
        return []

    def build(b, node, inputs):
        return mat(inputs[0])


def Reshape(data, shape, name=None) -> LayerSymbol:
    """x reshaped (MXNet `Reshape`): in `shape`, 0 copies the input's dim, -1 is inferred."""
    return layer("Reshape", (data,), name, {"shape": _ints(shape)})


@rule("Reshape")
class _Reshape:
    def params(attrs):
        return []

    def build(b, node, inputs):
        # kf.reshape keeps the input's dim where the new shape has None: MXNet's 0
        return reshape(inputs[0], tuple(None if d == 0 else d for d in node.attrs["shape"]))


def Dropout(data, p=0.5, mode="training", name=None) -> LayerSymbol:
    """Zero each element with probability p and scale the rest by 1/(1-p) (MXNet
    `Dropout`): in training graphs only, or always with mode='always'."""
    if mode not in ("training", "always"):
        raise ValueError(f"Dropout: mode must be 'training' or 'always', got {mode!r}")
    return layer("Dropout", (data,), name, {"p": float(p), "mode": mode})


@rule("Dropout")
class _Dropout:
    def params(attrs):
        return []

    def build(b, node, inputs):
        if node.attrs["mode"] == "always":
            return dropout(inputs[0], node.attrs["p"], drop=True)
        return dropout(inputs[0], node.attrs["p"]) if b.training else inputs[0]


# ---- convolution and pooling ----


def _conv_attrs(kernel, num_filter, stride, pad, dilate, num_group, no_bias) -> dict:
    kernel = _ints(kernel)
    nd = len(kernel)
    return {"kernel": kernel, "num_filter": int(num_filter), "stride": _ints(stride, nd),
            "pad": _ints(pad, nd), "dilate": _ints(dilate, nd), "num_group": int(num_group),
            "no_bias": bool(no_bias)}


def Convolution(data, kernel, num_filter, stride=1, pad=0, dilate=1, num_group=1,
                no_bias=False, name=None) -> LayerSymbol:
    """Convolution over NCHW (or NCW, NCDHW) data (MXNet `Convolution`): cross-correlation
    with weight (num_filter, C/num_group, *kernel) plus bias (num_filter,)."""
    return layer("Convolution", (data,), name,
                  _conv_attrs(kernel, num_filter, stride, pad, dilate, num_group, no_bias))


def Deconvolution(data, kernel, num_filter, stride=1, pad=0, dilate=1, adj=0, num_group=1,
                  no_bias=True, name=None) -> LayerSymbol:
    """Transposed convolution (MXNet `Deconvolution`), the adjoint of Convolution with
    weight (C, num_filter/num_group, *kernel); no bias by default, as MXNet.
    Output size (X - 1)*stride - 2*pad + dilate*(K - 1) + 1; `adj` must be 0."""
    if any(_ints(adj)):
        raise ValueError(f"Deconvolution: adj={adj} is not supported (only 0)")
    return layer("Deconvolution", (data,), name,
                  _conv_attrs(kernel, num_filter, stride, pad, dilate, num_group, no_bias))


def _conv_input(node, x, what):
    a = node.attrs
    nd = len(a["kernel"])
    if x.ndim != nd + 2:
        raise ValueError(f"{node.kind} {node.name!r}: a {nd}-d kernel {a['kernel']} needs "
                         f"(N, C, {nd} spatial dims) data, got shape {x.shape}")
    (channels,) = static_dims(node, x, [1], "the channel dim")
    group = a["num_group"]
    if channels % group or a["num_filter"] % group:
        raise ValueError(f"{node.kind} {node.name!r}: num_group={group} must divide the "
                         f"{channels} input channels and num_filter={a['num_filter']}")
    return channels, nd


def _conv_bias(b, node, y, nd, dtype):
    if node.attrs["no_bias"]:
        return y
    bias = b.param(node, "bias", (node.attrs["num_filter"],), dtype)
    return y + reshape(bias, (1, node.attrs["num_filter"]) + (1,) * nd)


def _conv_kw(a) -> dict:
    return {"padding": a["pad"], "stride": a["stride"], "dilation": a["dilate"], "mode": 1,
            "group": a["num_group"]}


@rule("Convolution")
class _Convolution:
    params = staticmethod(_bias_params)

    def build(b, node, inputs):
        x, a = inputs[0], node.attrs
        channels, nd = _conv_input(node, x, "Convolution")
        dtype = b.float_dtype(x)
        w = b.param(node, "weight", (a["num_filter"], channels // a["num_group"]) + a["kernel"],
                    dtype)
        from knetflow.ops import conv4

        return _conv_bias(b, node, conv4(w, x, **_conv_kw(a)), nd, dtype)


@rule("Deconvolution")
class _Deconvolution:
    params = staticmethod(_bias_params)

    def build(b, node, inputs):
        x, a = inputs[0], node.attrs
        channels, nd = _conv_input(node, x, "Deconvolution")
        dtype = b.float_dtype(x)
        w = b.param(node, "weight", (channels, a["num_filter"] // a["num_group"]) + a["kernel"],
                    dtype)
        from knetflow.ops import deconv4

        return _conv_bias(b, node, deconv4(w, x, **_conv_kw(a)), nd, dtype)


def Pooling(data, kernel=(), pool_type="max", stride=None, pad=0, global_pool=False,
            pooling_convention="valid", name=None) -> LayerSymbol:
    """Max, average or sum pooling over NCHW data (MXNet `Pooling`).

    As MXNet: `stride` defaults to 1 in each dim, average pooling counts the
    padding, `global_pool` pools each whole feature map (kernel ignored). Only
    pooling_convention='valid' (floor) is supported.
    """
    if pool_type not in ("max", "avg", "sum"):
        raise ValueError(f"Pooling: pool_type must be 'max', 'avg' or 'sum', got {pool_type!r}")
    if pooling_convention != "valid":
        raise ValueError(f"Pooling: pooling_convention={pooling_convention!r} is not supported "
                         "(only 'valid')")
    kernel = _ints(kernel)
    if not kernel and not global_pool:
        raise ValueError("Pooling: give a kernel, or global_pool=True")
    nd = len(kernel)
    return layer("Pooling", (data,), name, {
        "kernel": kernel, "pool_type": pool_type, "global_pool": bool(global_pool),
        "stride": None if stride is None else _ints(stride, nd), "pad": _ints(pad, max(nd, 1))})


@rule("Pooling")
class _Pooling:
    def params(attrs):
        return []

    def build(b, node, inputs):
        x, a = inputs[0], node.attrs
        nd = x.ndim - 2
        if a["global_pool"]:
            kernel = tuple(static_dims(node, x, range(2, x.ndim), "the spatial dims"))
            stride, pad = (1,) * nd, (0,) * nd
        else:
            kernel = a["kernel"]
            stride = a["stride"] or (1,) * nd
            pad = a["pad"] * nd if len(a["pad"]) == 1 else a["pad"]
        if len(kernel) != nd:
            raise ValueError(f"Pooling {node.name!r}: kernel {kernel} does not match the "
                             f"{nd} spatial dims of its input {x.shape}")
        for size, k, p in zip(x.shape[2:], kernel, pad):
            # MXNet refuses a kernel longer than the padded input (Knet's pool cuts it)
            if size is not None and k > size + 2 * p:
                raise ValueError(f"Pooling {node.name!r}: kernel {kernel} is larger than the "
                                 f"padded input {x.shape[2:]} (pad {pad})")
        from knetflow.ops import pool

        mode = 0 if a["pool_type"] == "max" else 1
        alpha = math.prod(kernel) if a["pool_type"] == "sum" else 1
        return pool(x, window=kernel, padding=pad, stride=stride, mode=mode, alpha=alpha)


# ---- normalization ----


def BatchNorm(data, eps=1e-3, momentum=0.9, fix_gamma=True, use_global_stats=False,
              name=None) -> LayerSymbol:
    """Batch normalization over axis 1 (MXNet `BatchNorm`).

    Params gamma and beta (C,); auxiliary moving_mean and moving_var updated in
    training as moving = momentum * moving + (1 - momentum) * batch (MXNet's
    momentum; Knet's is 1 - it). `fix_gamma` keeps gamma at its value (1) by
    not training it; `use_global_stats` normalizes with the moving statistics
    in training too.
    """
    return layer("BatchNorm", (data,), name, {
        "eps": float(eps), "momentum": float(momentum), "fix_gamma": bool(fix_gamma),
        "use_global_stats": bool(use_global_stats)})


@rule("BatchNorm")
class _BatchNorm:
    def params(attrs):
        return [("gamma", False), ("beta", False), ("moving_mean", True), ("moving_var", True)]

    def build(b, node, inputs):
        x, a = inputs[0], node.attrs
        if x.ndim < 2:
            raise ValueError(f"BatchNorm {node.name!r}: needs (N, C, ...) data, got {x.shape}")
        (channels,) = static_dims(node, x, [1], "the channel dim")
        dtype = b.float_dtype(x)
        gamma = b.param(node, "gamma", (channels,), dtype, trainable=not a["fix_gamma"])
        beta = b.param(node, "beta", (channels,), dtype)
        mean = b.param(node, "moving_mean", (channels,), dtype, aux=True)
        var = b.param(node, "moving_var", (channels,), dtype, aux=True)
        moments = bnmoments(momentum=1.0 - a["momentum"], mean=mean, var=var, name=node.name)
        training = b.training and not a["use_global_stats"]
        y = _batchnorm(x, moments, params=(gamma, beta), eps=a["eps"], training=training)
        if training:
            b.updates.update(bnupdates(moments))
        return y
