"""Output layers of `kf.sym`: a prediction for inference and a loss for training.

Each takes (data, label); the label Variable `<name>_label` is made when not
given, and its shape follows from the data's when the graph is built.
"""

from __future__ import annotations

import math

from knetflow.ops import nll, softmax
from knetflow.train.mxnet.layer_symbol import LayerSymbol, Variable, auto_name
from knetflow.train.mxnet.layers import layer, rule, static_dims

__all__ = ["LinearRegressionOutput", "SoftmaxOutput"]

def SoftmaxOutput(data, label=None, grad_scale=1.0, ignore_label=-1, use_ignore=False,
                  name="softmax") -> LayerSymbol:
    """Softmax over the last axis, trained with cross-entropy (MXNet `SoftmaxOutput`).

    The forward result (predict) is the class probabilities; the training loss
    is `grad_scale * nll(data, label)`, averaged over the instances, with
    integer class labels from the Variable `<name>_label` (made when `label`
    is None). With `use_ignore`, instances labelled `ignore_label` are skipped.
    """
    label = Variable(f"{name}_label") if label is None else label
    return layer("SoftmaxOutput", (data, label), name, {
        "grad_scale": float(grad_scale), "ignore_label": int(ignore_label),
        "use_ignore": bool(use_ignore)})


@rule("SoftmaxOutput")
class _SoftmaxOutput:
    def params(attrs):
        return []

    def label(data, attrs):
        return tuple(data.shape[:-1]), "int64"

    def build(b, node, inputs):
        return softmax(inputs[0], axis=-1)

    def loss(b, node, inputs):
        a = node.attrs
        ignore = a["ignore_label"] if a["use_ignore"] else -1
        loss = nll(inputs[0], inputs[1], axis=-1, ignore_index=ignore)
        return loss * a["grad_scale"] if a["grad_scale"] != 1.0 else loss


def LinearRegressionOutput(data, label=None, grad_scale=1.0, name=None) -> LayerSymbol:
    """Identity forward, trained with the squared error (MXNet `LinearRegressionOutput`).

    The loss is `grad_scale * 0.5 * sum((data - label)**2) / N` over a batch of N, so
    its gradient is MXNet's (data - label) per instance, averaged over the batch.
    The label Variable `<name>_label` has the data's shape.
    """
    name = auto_name("LinearRegressionOutput") if name is None else name
    label = Variable(f"{name}_label") if label is None else label
    return layer("LinearRegressionOutput", (data, label), name,
                  {"grad_scale": float(grad_scale)})


@rule("LinearRegressionOutput")
class _LinearRegressionOutput:
    def params(attrs):
        return []

    def label(data, attrs):
        return tuple(data.shape), str(data.dtype)

    def build(b, node, inputs):
        return inputs[0]

    def loss(b, node, inputs):
        x, label = inputs
        per_row = math.prod(static_dims(node, x, range(1, x.ndim), "the non-batch dims"))
        diff = x - label
        return (0.5 * per_row * node.attrs["grad_scale"]) * (diff * diff).mean()
