"""The ONNX forms of knetflow's layers: convolution, pooling, recurrent networks,
softmax and losses, dropout (the converter protocol is in `table`).

Semantics that differ between the two, and how each is bridged:

- `conv4` mode 0 is a true convolution (Knet's default): the filter is
  flipped along its spatial axes (in the initializer when the filter is a
  param, else by a Slice with step -1) before ONNX's `Conv`, which
  cross-correlates (knetflow's mode 1). `deconv4` flips the same way before
  `ConvTranspose`. `alpha` scales the result.
- `pool`'s output size is Knet's 1 + (X + 2P - W) ÷ S with ÷ truncating, and
  a window longer than the padded input is cut to it. Where the window fits
  this is ONNX's floor rule; the cut window is passed as ONNX's kernel, so
  the one window of such an axis agrees too. Modes 0 and 3 are `MaxPool`
  (padding never wins, as in ONNX); mode 1 averages counting the padding
  (`AveragePool` count_include_pad=1), mode 2 over the real elements only
  (count_include_pad=0).
- `rnn_scan` is ONNX's `LSTM`, `GRU` (linear_before_reset=1: the reset gate
  multiplies the recurrent term with its bias, as in cuDNN and knetflow) or
  `RNN` (Relu or Tanh), one direction. knetflow keeps x @ wx with wx (X, G*H)
  and gate blocks lstm (i, f, n, o), gru (r, z, n); ONNX keeps W (1, G*H, X)
  with lstm (i, o, f, c) and gru (z, r, h) blocks, and B = [Wb; Rb]. The
  blocks are reordered and transposed with NumPy when the weights are params
  or constants (as `kf.RNN`'s are), with ONNX ops otherwise.
- `softmax`, `logsoftmax` over one axis are ONNX's ops of that name (nll's
  `nll_terms` is LogSoftmax, then pick_label's gather, negated; `nll_mean`
  sums those and divides by the count of labels kept); over
  several axes, or all of x (Knet's default axis=None), they are written
  out with the maximum subtracted, as knetflow computes them.
- `dropout` that drops only in training is removed; `batchnorm` in
  inference mode is already ordinary arithmetic on the running moments.
"""

from __future__ import annotations

import numpy as np

from knetflow.onnx.table import INT64_MIN, converts, out_dtype, reduce


def _scaled(ctx, y: str, alpha, dtype) -> str:
    if alpha == 1:
        return y
    return ctx.emit("Mul", [y, ctx.scalar(alpha, dtype)])


def _window_attrs(node, kernel) -> dict:
    a = node.attrs
    return {"kernel_shape": list(kernel), "pads": list(a["padding"]) * 2,
            "strides": list(a["stride"])}


# ---- convolution ----


def _filters(ctx, w, mode: int, dtype) -> str:
    """The filter bank as ONNX's Conv wants it: flipped along its spatial axes for mode 0."""
    if mode == 1:
        return ctx.arg(w, dtype)
    spatial = tuple(range(2, w.spec.ndim))
    value = ctx.value(w)
    if value is not None:
        return ctx.const(np.flip(value, axis=spatial), dtype=dtype)
    n = len(spatial)
    return ctx.emit("Slice", [ctx.arg(w, dtype), ctx.ints([-1] * n), ctx.ints([INT64_MIN] * n),
                              ctx.ints(spatial), ctx.ints([-1] * n)])


def _conv_attrs(w, attrs) -> dict:
    kernel = w.spec.shape[2:]
    return {"pads": list(attrs["padding"]) * 2, "strides": list(attrs["stride"]),
            "dilations": list(attrs["dilation"]), "group": int(attrs["group"]),
            "kernel_shape": list(kernel) if None not in kernel else None}


@converts("conv4", "deconv4")
def _conv(ctx, node):
    w, x = node.inputs
    dtype = out_dtype(node)
    op_type = "Conv" if node.op == "conv4" else "ConvTranspose"
    y = ctx.emit(op_type, [ctx.arg(x, dtype), _filters(ctx, w, node.attrs["mode"], dtype)],
                 **_conv_attrs(w, node.attrs))
    return _scaled(ctx, y, node.attrs.get("alpha", 1.0), dtype)


# ---- pooling ----


@converts("pool")
def _pool(ctx, node):
    from knetflow.ops.pool import MAX_MODES, fit_window

    x = node.inputs[0]
    a = node.attrs
    spatial = x.spec.shape[2:]
    # knetflow cuts a window longer than the padded input to it; with a dynamic spatial
    # size that cannot be known here, and the window is taken to fit
    kernel = fit_window(spatial, a["window"], a["padding"]) if None not in spatial \
        else a["window"]
    if a["mode"] in MAX_MODES:
        y = _max_pool(ctx, ctx.arg(x), x.spec.dtype, a.get("maxpoolingNanOpt", 1),
                      _window_attrs(node, kernel))
    else:
        y = ctx.emit("AveragePool", [ctx.arg(x)], count_include_pad=int(a["mode"] == 1),
                     **_window_attrs(node, kernel))
    return _scaled(ctx, y, a.get("alpha", 1.0), out_dtype(node))


def _max_pool(ctx, x, dtype, nanopt, window):
    """MaxPool with knetflow's NaN rule made explicit: ONNX leaves NaN in MaxPool
    undefined, and runtimes differ (onnxruntime propagates it in float64, not float32).
    With maxpoolingNanOpt 1 a window holding a NaN gives NaN; with 0 NaNs are passed
    over (a window of NaNs alone gives NaN)."""
    nan = ctx.scalar(np.nan, dtype)
    isnan = ctx.emit("IsNaN", [x])
    if nanopt:
        y, flagged = ctx.emit("MaxPool", [x], **window), isnan
    else:
        finite = ctx.emit("Where", [isnan, ctx.scalar(-np.inf, dtype), x])
        y, flagged = ctx.emit("MaxPool", [finite], **window), ctx.emit("Not", [isnan])
    # the windows holding a flagged element: a max pool of the flags as numbers
    hit = ctx.emit("MaxPool", [ctx.cast(flagged, np.bool_, dtype)], **window)
    some = ctx.emit("Greater", [hit, ctx.scalar(0, dtype)])
    return ctx.emit("Where", [some, nan, y] if nanopt else [some, y, nan])


# ---- recurrent networks ----

#: ONNX op, ONNX's gate blocks as indices of knetflow's, extra attributes
_RNN_FORMS = {
    "lstm": ("LSTM", (0, 3, 1, 2), {}),
    "gru": ("GRU", (1, 0, 2), {"linear_before_reset": 1}),
    "tanh": ("RNN", (0,), {"activations": ["Tanh"]}),
    "relu": ("RNN", (0,), {"activations": ["Relu"]}),
}


def _gates_np(m, order, hidden):
    """A knetflow weight (K, G*H) or bias (G*H,) as ONNX's (G*H, K) or (G*H,), reordered."""
    blocks = m.reshape(m.shape[:-1] + (len(order), hidden))[..., list(order), :]
    if m.ndim == 1:
        return blocks.reshape(-1)
    return blocks.reshape(m.shape[0], -1).T


def _gates_onnx(ctx, name, spec, order, hidden):
    """_gates_np with ONNX ops, for weights computed in the graph."""
    g = len(order)
    if spec.ndim == 1:
        blocks = ctx.emit("Reshape", [name, ctx.ints([g, hidden])])
        picked = ctx.emit("Gather", [blocks, ctx.ints(order)], axis=0)
        return ctx.emit("Reshape", [picked, ctx.ints([g * hidden])])
    rows = ctx.emit("Transpose", [name], perm=[1, 0])
    blocks = ctx.emit("Reshape", [rows, ctx.ints([g, hidden, -1])])
    picked = ctx.emit("Gather", [blocks, ctx.ints(order)], axis=0)
    return ctx.emit("Reshape", [picked, ctx.ints([g * hidden, -1])])


def _rnn_weights(ctx, wx, wh, bx, bh, order, hidden, dtype, terms=False) -> tuple:
    """ONNX's W (1, G*H, X), R (1, G*H, H) and B (1, 2*G*H) from knetflow's weights.

    Without wx, x holds the input terms: of every gate (skip_input), or with
    `terms` each gate's own (G*H wide)."""
    g = len(order)
    values = [ctx.value(v) if v is not None else None for v in (wx, wh, bx, bh)]
    if wx is None:   # skip_input: every gate reads x itself
        values[0] = np.eye(g * hidden, dtype=dtype) if terms else \
            np.tile(np.eye(hidden, dtype=dtype), (1, g))
    if all(v is not None for v in values):
        w, r, b1, b2 = (_gates_np(np.asarray(v, dtype=dtype), order, hidden) for v in values)
        return (ctx.const(w[None], dtype), ctx.const(r[None], dtype),
                ctx.const(np.concatenate([b1, b2])[None], dtype))
    parts = []
    for node_in, value in zip((wx, wh, bx, bh), values):
        if node_in is None:
            parts.append(ctx.const(_gates_np(value, order, hidden), dtype))
        else:
            parts.append(_gates_onnx(ctx, ctx.arg(node_in, dtype), node_in.spec, order, hidden))
    axis0 = ctx.ints([0])
    bias = ctx.emit("Concat", parts[2:], axis=0)
    return tuple(ctx.emit("Unsqueeze", [p, axis0]) for p in (parts[0], parts[1], bias))


@converts("rnn_scan")
def _rnn_scan(ctx, node):
    a = node.attrs
    if a.get("batch_sizes") is not None:
        ctx.fail("a packed batch (batch_sizes) has no ONNX form here; export the model on "
                 "(T, B, X) sequences")
    x, rest = node.inputs[0], list(node.inputs[1:])
    wx = None if a.get("skip_input") else rest.pop(0)
    wh, bx, bh, state = rest[0], rest[1], rest[2], rest[3:]
    hidden = wh.spec.shape[0]
    if hidden is None:
        ctx.fail("the hidden size must be static")
    dtype = node.spec[0].dtype
    op_type, order, extra = _RNN_FORMS[a["mode"]]
    lookup = a.get("lookup", False)
    if lookup:  # the input terms are rows of the table in wx, read through W = I
        x_name, wx = ctx.emit("Gather", [ctx.arg(wx, dtype), ctx.arg(x)], axis=0), None
    else:
        x_name = ctx.arg(x, dtype)
    w, r, b = _rnn_weights(ctx, wx, wh, bx, bh, order, hidden, dtype, terms=lookup)
    axis0 = ctx.ints([0])
    states = [ctx.emit("Unsqueeze", [ctx.arg(s, dtype), axis0]) for s in state]
    inputs = [x_name, w, r, b, ""] + states
    n_final = 2 if a["mode"] == "lstm" else 1
    outs = ctx.emit(op_type, inputs, outputs=1 + n_final, hidden_size=int(hidden),
                    direction="reverse" if a.get("reverse") else "forward", **extra)
    y = ctx.emit("Squeeze", [outs[0], ctx.ints([1])])       # (T, 1, B, H) -> (T, B, H)
    finals = [ctx.emit("Squeeze", [o, axis0]) for o in outs[1:]]
    saved = (None,) * (len(node.spec) - 1 - n_final)         # what only the backward reads
    return (y, *finals) + saved


@converts("get")
def _get(ctx, node):
    source, k = node.inputs[0], node.attrs.get("index", 0)
    names = ctx.name(source)
    if not isinstance(names, tuple) or names[k] is None:
        ctx.fail(f"output {k} of {source.op} (what its gradient reads) has no ONNX form")
    return names[k]


# ---- softmax and losses ----


def _shifted(ctx, x: str, axes, dtype) -> str:
    """x minus its maximum over axes (a maximum that is not finite counts as 0, as knetflow)."""
    m = reduce(ctx, "ReduceMax", x, axes, True)
    finite = ctx.emit("Where", [ctx.emit("IsInf", [m]), ctx.scalar(0, dtype), m])
    return ctx.emit("Sub", [x, finite]), finite


def _input_and_axes(ctx, node) -> tuple:
    """(x as the output's float dtype, that dtype, the axes reduced: all for None)."""
    x_node, dtype = node.inputs[0], out_dtype(node)
    axes = node.attrs.get("axis")
    axes = tuple(range(x_node.spec.ndim)) if axes is None else tuple(axes)
    return ctx.arg(x_node, dtype), dtype, axes


@converts("softmax", "logsoftmax")
def _softmax(ctx, node):
    x, dtype, axes = _input_and_axes(ctx, node)
    if len(axes) == 1:
        return ctx.emit("Softmax" if node.op == "softmax" else "LogSoftmax", [x], axis=axes[0])
    z, _ = _shifted(ctx, x, axes, dtype)
    if node.op == "softmax":
        e = ctx.emit("Exp", [z])
        return ctx.emit("Div", [e, reduce(ctx, "ReduceSum", e, axes, True)])
    total = reduce(ctx, "ReduceSum", ctx.emit("Exp", [z]), axes, True)
    return ctx.emit("Sub", [z, ctx.emit("Log", [total])])


@converts("logsumexp")
def _logsumexp(ctx, node):
    x, dtype, axes = _input_and_axes(ctx, node)
    keepdims = bool(node.attrs.get("keepdims"))
    z, m = _shifted(ctx, x, axes, dtype)
    total = reduce(ctx, "ReduceSum", ctx.emit("Exp", [z]), axes, keepdims)
    if not keepdims and axes:
        m = ctx.emit("Squeeze", [m, ctx.ints(axes)])
    return ctx.emit("Add", [ctx.emit("Log", [total]), m])


def _kept(ctx, labels: str, ignore_index: int) -> str:
    """Where labels differ from ignore_index (instances not skipped)."""
    return ctx.emit("Not", [ctx.emit("Equal", [labels, ctx.scalar(ignore_index, "int64")])])


@converts("pick_label")
def _pick_label(ctx, node):
    x, labels = node.inputs
    return _pick(ctx, ctx.arg(x), labels, node.attrs, out_dtype(node))


def _pick(ctx, x: str, labels, attrs, dtype) -> str:
    """x's entry at each label along attrs' axis, 0 where the label is ignore_index."""
    axis = attrs["axis"]
    labels = ctx.arg(labels, "int64")
    keep = _kept(ctx, labels, attrs.get("ignore_index", -1))
    index = ctx.emit("Where", [keep, labels, ctx.scalar(0, "int64")])
    index = ctx.emit("Unsqueeze", [index, ctx.ints([axis])])
    got = ctx.emit("GatherElements", [x, index], axis=axis)
    got = ctx.emit("Squeeze", [got, ctx.ints([axis])])
    return ctx.emit("Where", [keep, got, ctx.scalar(0, dtype)])


@converts("nll_terms")
def _nll_terms(ctx, node):
    """-LogSoftmax at each label (0 for skipped ones); the gradient output, which only a
    backward reads, has no ONNX form."""
    x, labels = node.inputs
    axis, dtype = node.attrs["axis"], node.spec[0].dtype
    logp = ctx.emit("LogSoftmax", [ctx.arg(x, dtype)], axis=axis)
    return ctx.emit("Neg", [_pick(ctx, logp, labels, node.attrs, dtype)]), None


@converts("nll_mean")
def _nll_mean(ctx, node):
    """nll_terms' terms summed and divided by the count of labels kept (0 / 0, NaN, when
    none is); the gradient output has no ONNX form."""
    terms, _ = _nll_terms(ctx, node)
    total = reduce(ctx, "ReduceSum", terms, None, False)
    kept = _kept(ctx, ctx.arg(node.inputs[1], "int64"), node.attrs.get("ignore_index", -1))
    count = reduce(ctx, "ReduceSum", ctx.cast(kept, "bool", node.spec[0].dtype), None, False)
    return ctx.emit("Div", [total, count]), None


@converts("correct_label")
def _correct_label(ctx, node):
    x, labels = node.inputs
    labels = ctx.arg(labels, "int64")
    # ArgMax picks the first maximum, as NumPy's argmax does
    best = ctx.emit("ArgMax", [ctx.arg(x)], axis=node.attrs["axis"], keepdims=0)
    hit = ctx.emit("And", [ctx.emit("Equal", [best, labels]),
                           _kept(ctx, labels, node.attrs.get("ignore_index", -1))])
    return ctx.cast(hit, "bool", out_dtype(node))


# ---- dropout and batchnorm ----


@converts("dropout_mask")
def _dropout_mask(ctx, node):
    from onnx import numpy_helper

    if not node.attrs.get("training_only", True):
        ctx.fail("dropout with drop=True drops at inference too, which an exported model "
                 "does not do; build the model with drop=None")
    shape = ctx.emit("Shape", [ctx.arg(node.inputs[0])])
    one = numpy_helper.from_array(np.ones(1, dtype=out_dtype(node)))
    return ctx.emit("ConstantOfShape", [shape], value=one)


@converts("batchnorm")
def _batchnorm(ctx, node):
    ctx.fail("batchnorm in training mode (batch statistics) has no inference form; export a "
             "graph built with training=False, which normalizes with the running moments")
