"""`kf.sym`: MXNet-named layer symbols for building networks that FeedForward trains.

    data = kf.sym.Variable("data")
    net = kf.sym.FullyConnected(data, num_hidden=128, name="fc1")
    net = kf.sym.Activation(net, act_type="relu", name="relu1")
    net = kf.sym.FullyConnected(net, num_hidden=10, name="fc2")
    net = kf.sym.SoftmaxOutput(net, name="softmax")
    net.list_arguments()      # ['data', 'fc1_weight', 'fc1_bias', ..., 'softmax_label']
    graph = net.to_graph(data=(None, 784))   # the knetflow Graph (inference)

Each call returns a `LayerSymbol` (`kf.sym.Symbol`, as MXNet names it).
Parameters get MXNet's names and layouts (see `knetflow.train.mxnet.layers`) and
their shapes from the data shape when the graph is built.
"""

from knetflow.train.mxnet.layer_symbol import LayerSymbol, Variable, load_json, reset_names
from knetflow.train.mxnet.layers import (
    Activation,
    BatchNorm,
    Convolution,
    Deconvolution,
    Dropout,
    Flatten,
    FullyConnected,
    Pooling,
    Reshape,
)
from knetflow.train.mxnet.outputs import LinearRegressionOutput, SoftmaxOutput
from knetflow.train.mxnet.sequence_layers import RNN, Embedding

#: MXNet's name for the layer-symbol class (`mx.sym.Symbol`), kept for MXNet users:
#: the same class as `LayerSymbol`, not `kf.Symbol` (a symbolic value of a built Graph)
Symbol = LayerSymbol

__all__ = [
    "RNN",
    "Activation",
    "BatchNorm",
    "Convolution",
    "Deconvolution",
    "Dropout",
    "Embedding",
    "Flatten",
    "FullyConnected",
    "LayerSymbol",
    "LinearRegressionOutput",
    "Pooling",
    "Reshape",
    "SoftmaxOutput",
    "Symbol",
    "Variable",
    "load_json",
    "reset_names",
]
