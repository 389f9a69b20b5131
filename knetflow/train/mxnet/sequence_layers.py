"""Sequence layers of `kf.sym`: Embedding and RNN (see `knetflow.train.mxnet.layers`).

    Embedding   weight (input_dim, output_dim)
    RNN         parameters: one flat vector in kf.RNN's layout (see knetflow.layers.rnn)
"""

from __future__ import annotations

import numpy as np

from knetflow.layers.rnn import RNN as LayerRNN
from knetflow.ops import cast, embedding, transpose
from knetflow.train.mxnet.layer_symbol import LayerSymbol
from knetflow.train.mxnet.layers import layer, rule, static_dims

__all__ = ["RNN", "Embedding"]


def Embedding(data, input_dim, output_dim, dtype="float32", name=None) -> LayerSymbol:
    """Rows of weight (input_dim, output_dim) at the integer ids in data (MXNet `Embedding`);
    float ids are cast to integers."""
    return layer("Embedding", (data,), name, {"input_dim": int(input_dim),
                                                "output_dim": int(output_dim), "dtype": dtype})


@rule("Embedding")
class _Embedding:
    def params(attrs):
        return [("weight", False)]

    def build(b, node, inputs):
        ids, a = inputs[0], node.attrs
        if ids.dtype.kind == "f":
            ids = cast(ids, "int64")
        w = b.param(node, "weight", (a["input_dim"], a["output_dim"]), a["dtype"])
        return embedding(w, ids)


_RNN_MODES = {"rnn_relu": "relu", "rnn_tanh": "tanh", "relu": "relu", "tanh": "tanh",
              "gru": "gru", "lstm": "lstm"}


def RNN(data, state_size, num_layers=1, mode="lstm", bidirectional=False, p=0.0,
        layout="TNC", name=None) -> LayerSymbol:
    """A multi-layer recurrent layer (MXNet `RNN`): mode 'rnn_relu', 'rnn_tanh', 'gru' or
    'lstm', zero initial states, output (T, N, state_size * directions).

    data is (T, N, C) (`layout='TNC'`, MXNet's) or (N, T, C) (`layout='NTC'`, batch
    first, as FeedForward splits batches); the output has the same layout. All
    weights are one param `<name>_parameters` in kf.RNN's flat layout; `p` is
    the dropout on each layer's input in training.
    """
    if mode not in _RNN_MODES:
        raise ValueError(f"RNN: unknown mode {mode!r}; known: {sorted(_RNN_MODES)}")
    if layout not in ("TNC", "NTC"):
        raise ValueError(f"RNN: layout must be 'TNC' or 'NTC', got {layout!r}")
    return layer("RNN", (data,), name, {
        "state_size": int(state_size), "num_layers": int(num_layers), "mode": mode,
        "bidirectional": bool(bidirectional), "p": float(p), "layout": layout})


@rule("RNN")
class _RecurrentLayer:
    def params(attrs):
        return [("parameters", False)]

    def build(b, node, inputs):
        x, a = inputs[0], node.attrs
        if x.ndim != 3:
            raise ValueError(f"RNN {node.name!r}: needs ({', '.join(a['layout'])}) data, "
                             f"got shape {x.shape}")
        (width,) = static_dims(node, x, [2], "the feature dim")
        dtype = b.float_dtype(x)
        if a["layout"] == "NTC":
            x = transpose(x, (1, 0, 2))
        zeros = _zeros_init(dtype)  # shapes only: the values come from the param
        r = LayerRNN(width, a["state_size"], rnn_type=_RNN_MODES[a["mode"]],
                 num_layers=a["num_layers"], bidirectional=a["bidirectional"],
                 dropout=a["p"] if b.training else 0.0, winit=zeros, binit=zeros, finit=zeros,
                 dtype=dtype)
        r.w = b.param(node, "parameters", r.w.value.shape, dtype)
        y = r(x)
        return transpose(y, (1, 0, 2)) if a["layout"] == "NTC" else y


def _zeros_init(dtype):
    return lambda *dims: np.zeros(dims, dtype=dtype)
