"""The MXNet-style front end: networks of layer symbols trained by FeedForward.

Modules, one job each:
    sym.py              the `kf.sym` namespace (MXNet's `mx.sym`)
    layer_symbol.py     `LayerSymbol` (`kf.sym.Symbol`): a layer call, its names
                        and JSON, built into a graph once shapes are known
    layers.py           FullyConnected, Convolution, Pooling, BatchNorm, ...
    sequence_layers.py  Embedding and RNN
    outputs.py          SoftmaxOutput and LinearRegressionOutput: prediction and loss
    feedforward.py      `kf.FeedForward`: fit, predict, score, checkpoints
    batches.py          FeedForward's data cut into batches, shuffled per epoch
    local_fit.py        `LocalFit`: the fit loop's session in this process

The optimizers, initializers, metrics, callbacks, the training step and the
fit loop are shared with the Knet-style front end and live one level up, in
`knetflow.train`.
"""
