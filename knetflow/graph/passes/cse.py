"""Common-subexpression elimination: one node per (op, inputs, attrs) of pure ops."""

from __future__ import annotations

import numpy as np

from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.base import REGISTRY

_SMALL_CONST = 256  # larger constants are not compared byte by byte


def _freeze(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _key(node):
    if node.op == "const":
        value = node.attrs["value"]
        if value.size > _SMALL_CONST:
            return None
        return ("const", _freeze(value))
    if node.is_leaf or not REGISTRY[node.op].pure:
        return None
    try:
        attrs = _freeze(node.attrs)
        hash(attrs)
    except TypeError:
        return None
    return (node.op, tuple(i.id for i in node.inputs), attrs, node.device)


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Replace each repeated pure computation by its first occurrence."""
    seen: dict = {}
    outputs = {o.id for o in graph.results}

    def visit(node):
        key = _key(node)
        if key is None or node.id in outputs:
            return node
        return seen.setdefault(key, node)

    return rewrite(graph, visit)
