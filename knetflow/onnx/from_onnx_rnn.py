"""ONNX recurrent layers as knetflow ops: LSTM, GRU and RNN, each direction one
`rnn_scan`.

ONNX stacks the gate blocks of W (dirs, G*H, X), R (dirs, G*H, H) and B
(dirs, 2*G*H: Wb then Rb) in its own order; knetflow's `rnn_scan` takes wx
(X, G*H) and wh (H, G*H) with Knet's blocks as columns, and bx, bh (G*H,).
So each initializer is split per direction, its blocks reordered and
transposed once, at import, into params named after it (`_forward` and
`_reverse` when bidirectional; `_wb` and `_rb` for the two halves of B):

    LSTM  ONNX (i, o, f, c)  -> knetflow (i, f, n, o)
    GRU   ONNX (z, r, h)     -> knetflow (r, z, n)   only linear_before_reset=1,
                                                     which is Knet's (cuDNN's) GRU
    RNN   one block; activation Tanh or Relu

Refused, as knetflow computes something else: other activations or their
alpha/beta, clip, LSTM peepholes and input_forget, GRU with
linear_before_reset=0, and sequence_lens (sequences of one length only).
An initial state that is absent or a ConstantOfShape of zeros (what PyTorch's
exporter writes) starts the scan from zeros.
"""

from __future__ import annotations

import numpy as np

from knetflow import ops
from knetflow.onnx.import_context import Filled, converter

_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}

# ONNX's block index for each of knetflow's blocks, and the default activations
_ORDER = {"lstm": (0, 2, 3, 1), "gru": (1, 0, 2), "tanh": (0,), "relu": (0,)}
_ACTIVATIONS = {"lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"],
                "tanh": ["tanh"], "relu": ["relu"]}


def _knet_blocks(m, mode):
    """Rows of m in ONNX's gate order -> knetflow's gate order."""
    blocks = np.split(m, len(_ORDER[mode]), axis=0)
    return np.concatenate([blocks[k] for k in _ORDER[mode]], axis=0)


def _refusals(ctx, mode, dirs):
    for name in ("clip", "activation_alpha", "activation_beta"):
        if name in ctx.attrs:
            ctx.fail(f"attribute {name!r} is not supported")
        ctx.attrs.ignore(name)
    acts = ctx.attrs.strings("activations")
    if acts is not None and [a.lower() for a in acts] != _ACTIVATIONS[mode] * dirs:
        ctx.fail(f"activations {list(acts)} are not supported; knetflow's {ctx.op} uses "
                 f"{_ACTIVATIONS[mode]} per direction")
    if ctx.has(4):
        ctx.fail("input sequence_lens is not supported (sequences of one length only)")


def _weights(ctx, mode, d, dirs, hidden, x_size):
    """(wx, wh, bx, bh) of direction d, as params in knetflow's layout."""
    gates = len(_ORDER[mode])
    w, r = ctx.const(1, "W"), ctx.const(2, "R")
    if w.ndim != 3 or w.shape[:2] != (dirs, gates * hidden) or x_size not in (None, w.shape[2]):
        ctx.fail(f"W {w.shape} must be ({dirs}, {gates * hidden}, {x_size})")
    if r.shape != (dirs, gates * hidden, hidden):
        ctx.fail(f"R {r.shape} must be ({dirs}, {gates * hidden}, {hidden})")
    tail = "" if dirs == 1 else ("_forward", "_reverse")[d]
    wx = ctx.param(1, "W", tail, lambda a: _knet_blocks(a[d], mode).T)
    wh = ctx.param(2, "R", tail, lambda a: _knet_blocks(a[d], mode).T)
    width = gates * hidden
    if not ctx.has(3):
        zeros = np.zeros(width, dtype=w.dtype)
        return wx, wh, zeros, zeros
    b = ctx.const(3, "B")
    if b.shape != (dirs, 2 * width):
        ctx.fail(f"B {b.shape} must be ({dirs}, {2 * width})")
    bx = ctx.param(3, "B", "_wb" + tail, lambda a: _knet_blocks(a[d, :width], mode))
    bh = ctx.param(3, "B", "_rb" + tail, lambda a: _knet_blocks(a[d, width:], mode))
    return wx, wh, bx, bh


def _initial_state(ctx, i, what, d, layout):
    """Direction d's initial state (B, H), or None for zeros (absent, or ConstantOfShape 0)."""
    if not ctx.has(i):
        return None
    value = ctx.raw(i, what)
    if isinstance(value, Filled) and not np.any(value.value):
        return None
    state = ctx.data(i, what)
    return state[d] if layout == 0 else state[:, d]


def _recurrent(ctx, mode):
    """The outputs (Y, Y_h[, Y_c]) of an LSTM, GRU or RNN node."""
    x = ctx.data(0, "X")
    hidden = ctx.attrs.int("hidden_size")
    direction = ctx.attrs.string("direction", "forward")
    layout = ctx.attrs.int("layout", 0)
    if hidden is None or hidden < 1:
        ctx.fail(f"attribute 'hidden_size' must be a positive int, got {hidden}")
    if direction not in _DIRECTIONS or layout not in (0, 1) or len(x.shape) != 3:
        ctx.fail(f"direction {direction!r}, layout {layout} or X {tuple(x.shape)} is invalid")
    reverses = _DIRECTIONS[direction]
    _refusals(ctx, mode, len(reverses))
    if layout == 1:  # (batch, seq, input) -> (seq, batch, input)
        x = ops.transpose(x, (1, 0, 2))
    parts = []
    for d, reverse in enumerate(reverses):
        weights = _weights(ctx, mode, d, len(reverses), hidden, x.shape[2])
        h0 = _initial_state(ctx, 5, "initial_h", d, layout)
        c0 = _initial_state(ctx, 6, "initial_c", d, layout) if mode == "lstm" else None
        parts.append(ops.rnn_scan(x, *weights, h0=h0, c0=c0, mode=mode, reverse=reverse))
    return _outputs(list(zip(*parts)), layout)


def _outputs(per_output, layout):
    """Y (T, dirs, B, H), then the final states (dirs, B, H); batch first for layout 1."""
    def join(parts, axis):
        return ops.expand_dims(parts[0], axis) if len(parts) == 1 else ops.stack(parts, axis)
    y = join(per_output[0], 1)
    states = [join(parts, 0) for parts in per_output[1:]]
    if layout == 1:
        y = ops.transpose(y, (2, 0, 1, 3))
        states = [ops.transpose(s, (1, 0, 2)) for s in states]
    return (y, *states)


@converter("LSTM", 7, 14, 22)
def convert_lstm(ctx):
    """LSTM, forward, reverse or bidirectional: (Y, Y_h, Y_c)."""
    ctx.require(3, 4, 5, 6, 7, 8)
    if ctx.attrs.int("input_forget", 0):
        ctx.fail("input_forget=1 (coupled input and forget gates) is not supported")
    if ctx.has(7):
        peep = ctx.known(7)
        if peep is None or np.any(peep):
            ctx.fail("peephole connections (input P) are not supported")
    return _recurrent(ctx, "lstm")


@converter("GRU", 7, 14, 22)
def convert_gru(ctx):
    """GRU with the reset gate applied after the recurrent product: (Y, Y_h)."""
    ctx.require(3, 4, 5, 6)
    if ctx.attrs.int("linear_before_reset", 0) != 1:
        ctx.fail("linear_before_reset=0 is not supported; knetflow's GRU (Knet's, cuDNN's) "
                 "is linear_before_reset=1, as PyTorch exports it")
    return _recurrent(ctx, "gru")


@converter("RNN", 7, 14, 22)
def convert_rnn(ctx):
    """Simple RNN with tanh (the default) or relu: (Y, Y_h)."""
    ctx.require(3, 4, 5, 6)
    acts = ctx.attrs.strings("activations")
    mode = "relu" if acts and acts[0].lower() == "relu" else "tanh"
    return _recurrent(ctx, mode)
