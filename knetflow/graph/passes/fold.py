"""Constant folding: evaluate pure ops whose inputs are all constants, at compile time.

An input an op reads only for its shape (`Op.shape_only`: broadcast_like's `like`,
count's x) counts as known when that shape is: so in a graph of known shapes the
count of a mean and the broadcast of a loss's seed gradient become constants, and
the arithmetic on them folds too.
"""

from __future__ import annotations

import numpy as np

from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.base import REGISTRY

_MAX_FOLD = 1 << 20  # never materialize big arrays into the graph
# a value made from shapes alone (a broadcast): smaller still, as reading it back costs
# memory traffic where the broadcast of a scalar costs none
_MAX_SHAPE_FOLD = 1 << 16


def fold_constants(graph: Graph) -> Graph:
    """Replace const-only pure subgraphs by their value."""

    def visit(node):
        if node.is_leaf or not node.inputs:
            return node
        op = REGISTRY[node.op]
        known = [i.op == "const" or (k in op.shape_only and i.spec.is_static)
                 for k, i in enumerate(node.inputs)]
        consts = all(i.op == "const" for i in node.inputs)
        limit = _MAX_FOLD if consts else _MAX_SHAPE_FOLD
        if not all(known) or not op.pure or (node.spec.size or limit + 1) > limit:
            return node
        if op.view and consts:  # a view of a constant: the node costs nothing to run
            return node
        # an input that gives only its shape is a zero-stride view of one element: a shape
        # read from a file must not size an allocation (a 333-byte model declared 128 GiB)
        args = [i.attrs["value"] if i.op == "const"
                else np.broadcast_to(np.zeros((), i.spec.dtype), i.spec.shape)
                for i in node.inputs]
        value = np.asarray(op.forward(np, *args, **node.attrs))
        # np.array, not np.ascontiguousarray: the latter turns 0-d results into shape (1,)
        value = np.array(value, dtype=node.spec.dtype, order="C")
        value.setflags(write=False)
        return node.replace(op="const", inputs=(), attrs={"value": value})

    return rewrite(graph, visit)
