"""Batch normalization as a layer: `kf.batchnorm` with running moments (Knet
`batchnorm`, `bnmoments`).

The arithmetic is in ops (knetflow/ops/norm.py: the fused training op and its
gradient); the running moments are state (knetflow/layers/bn_moments.py).

Running moments (`BNMoments`) are auxiliary state, updated in training as
new = (1 - momentum) * old + momentum * batch:
- eager calls on arrays: the object's `mean`/`var` arrays change in place (Knet);
- inside `kf.diff`/`kf.grad`: state that flows through the traced plan
  (knetflow/graph/state.py), so it works on any device. The running moments are
  inputs fed from `m.mean`/`m.var` at each call, and the new ones extra outputs
  of the plan; after every call, traced or cached, they are written into the
  arrays `m.mean`/`m.var` hold (identity kept: `m.mean[...] = saved` and
  `m.mean = saved` both load saved moments). While the function is traced,
  `m.mean`/`m.var` hold the symbols of the updated moments, so a second
  batchnorm with the same moments in one function continues from them, as eagerly;
- symbolic graphs: `param` nodes `<name>_moving_mean`/`<name>_moving_var` with
  attribute `trainable=False` (optimizers skip them); a training call records
  their new values and `bnupdates(m)` gives the `Graph(..., updates=...)` entries.

`training=None` is True inside `kf.diff` and False elsewhere (eager calls and
symbolic graphs, like dropout's eager default): build training graphs with
`training=True`.
"""

from __future__ import annotations

import numpy as np

from knetflow.graph import trace
from knetflow.graph.build import placeholder
from knetflow.graph.symbol import Symbol
from knetflow.layers.bn_moments import moments_for, record_updates, to_dtype, update_moments
from knetflow.ops.base import Spec, fail
from knetflow.ops.index import getitem
from knetflow.ops.norm import per_channel, check_input, batchnorm_train

__all__ = ["batchnorm"]


def _traced(v, tracer):
    """Inside a trace, a captured array as a fed input (not a constant frozen into the trace)."""
    if tracer is None or not isinstance(v, np.ndarray) or not v.ndim:
        return v
    return tracer.leaf(v, lambda: placeholder(f"t{len(tracer.leaves)}", v.shape, v.dtype))


def _affine(params, channels, x):
    """(gamma, beta) from a [gamma; beta] vector of length 2C, a pair, or None."""
    if params is None or isinstance(params, (tuple, list)):
        gamma, beta = params or (None, None)
        return gamma, beta
    shape = tuple(params.shape)
    if len(shape) != 1 or (channels is not None and shape[0] not in (None, 2 * channels)):
        fail("batchnorm", f"params {shape} must be [gamma; beta] of length 2C = "
                          f"{None if channels is None else 2 * channels} for x {tuple(x.shape)}")
    return getitem(params, slice(0, channels)), getitem(params, slice(channels, None))


def _inference(x, mean, var, gamma, beta, eps):
    """Normalize with given moments: x * scale + shift, per channel."""
    nd = len(x.shape)
    scale = (var + eps) ** -0.5
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    return x * per_channel(scale, nd) + per_channel(shift, nd)


def batchnorm(x, moments=None, params=None, eps=1e-5, training=None):
    """Batch normalization of x per channel, axis 1 (Knet `batchnorm`).

    x is (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W). `moments` (from
    `bnmoments`) holds the running mean and variance: updated in training,
    used in inference (where it is required). `params` is [gamma; beta] of
    length 2C (`bnparams(C)`) or a pair (gamma, beta). `training=None` means
    True inside `kf.diff`/`kf.grad` and False elsewhere (see module docstring).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
        >>> kf.batchnorm(x, training=True, eps=0.0)
        array([[-1., -1.],
               [ 1.,  1.]])
    """
    tracer, symbol = trace.current(), Symbol
    training = tracer is not None if training is None else training
    x, params = _traced(x, tracer), _traced(params, tracer)
    channels = check_input("batchnorm", Spec(tuple(x.shape), str(x.dtype))).shape[0]
    dtype = np.dtype(x.dtype)
    gamma, beta = (to_dtype(v, dtype) for v in _affine(params, channels, x))
    extra = () if moments is None else (moments.mean, moments.var)
    symbolic = tracer is None and any(isinstance(v, symbol) for v in (x, gamma, beta) + extra)
    if moments is None and not training:
        fail("batchnorm", "inference mode (training=False) needs moments with the running "
                          "mean and variance")
    mean, var = (None, None) if moments is None else moments_for(
        moments, x, channels, symbolic)
    if not training:
        return _inference(x, to_dtype(mean, dtype), to_dtype(var, dtype), gamma, beta,
                          float(eps))
    y, bmean, bvar = batchnorm_train(x, gamma, beta, eps)
    if moments is None:
        return y
    if symbolic:
        record_updates(moments, mean, var, bmean, bvar)
        return y
    update_moments(moments, mean, var, bmean, bvar)
    return y
