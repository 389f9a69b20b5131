"""Constant folding: evaluate pure ops whose inputs are all constants, at compile time."""

from __future__ import annotations

import numpy as np

from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.base import REGISTRY

_MAX_FOLD = 1 << 20  # never materialize big arrays into the graph


def fold_constants(graph: Graph) -> Graph:
    """Replace const-only pure subgraphs by their value."""

    def visit(node):
        if node.is_leaf or not node.inputs or any(i.op != "const" for i in node.inputs):
            return node
        op = REGISTRY[node.op]
        if not op.pure or op.view or (node.spec.size or _MAX_FOLD + 1) > _MAX_FOLD:
            return node
        value = np.asarray(op.forward(np, *[i.attrs["value"] for i in node.inputs], **node.attrs))
        # np.array, not np.ascontiguousarray: the latter turns 0-d results into shape (1,)
        value = np.array(value, dtype=node.spec.dtype, order="C")
        value.setflags(write=False)
        return node.replace(op="const", inputs=(), attrs={"value": value})

    return rewrite(graph, visit)
