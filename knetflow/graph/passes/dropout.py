"""Inference graphs do not drop: replace dropout masks by 1."""

from __future__ import annotations

import numpy as np

from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.base import Spec


def strip_dropout(graph: Graph) -> Graph:
    """Turn every training-only `dropout_mask` node into the constant 1 (which broadcasts).

    Masks made with `dropout(x, p, drop=True)` (`training_only=False`) drop always and stay.
    """

    def visit(node):
        if node.op != "dropout_mask" or not node.attrs.get("training_only", True):
            return node
        one = np.ones((), dtype=node.spec.dtype)
        one.setflags(write=False)
        return node.replace(op="const", inputs=(), attrs={"value": one},
                            spec=Spec((), node.spec.dtype))

    return rewrite(graph, visit)
