"""Algebraic simplification: a power with a constant exponent of 1 or 2.

Gradients of `x ** 2` come out as `2 * x ** 1`, and a squared error is a `pow` whose
result other nodes read: `x ** 1` is x itself, and `x ** 2` is `x * x` (NumPy's power
squares a float the same way), an op the fusion pass can join to its neighbours.

Example:
    >>> import knetflow as kf
    >>> x = kf.placeholder("x", (3,))
    >>> [n.op for n in simplify_powers(kf.Graph([x ** 2])).nodes]
    ['input', 'mul']
"""

from __future__ import annotations

import numpy as np

from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite


def simplify_powers(graph: Graph) -> Graph:
    """pow(x, c) with c a constant 1 or 2 of one value: x, or mul(x, x), where the result
    has x's shape and dtype (otherwise the node stays)."""

    def visit(node):
        if node.op != "pow" or node.inputs[1].op != "const":
            return node
        x, c = node.inputs
        value = np.asarray(c.attrs["value"])
        if node.spec != x.spec or value.size != 1 or x.spec.dtype != node.spec.dtype:
            return node
        exponent = value.item()
        if exponent == 1:
            return x
        if exponent == 2:
            return node.replace(op="mul", inputs=(x, x), attrs={})
        return node

    return rewrite(graph, visit)
