"""The one mechanism passes share: rebuild a graph node by node."""

from __future__ import annotations

from knetflow.graph.node import Graph


def rewrite(graph: Graph, visit) -> Graph:
    """Apply `visit(node) -> node` in topological order, inputs already rewritten.

    `visit` gets each node with its inputs replaced by their rewritten nodes
    (a fresh node only where an input changed) and returns the node to use.
    Returns `graph` itself when nothing changed.
    """
    new = {}
    changed = False
    for node in graph.nodes:
        inputs = tuple(new[i.id] for i in node.inputs)
        if any(a is not b for a, b in zip(inputs, node.inputs)):
            node_in = node.replace(inputs=inputs)
        else:
            node_in = node
        out = visit(node_in)
        changed = changed or out is not node
        new[node.id] = out
    if not changed:
        return graph
    return graph.remap(new)
