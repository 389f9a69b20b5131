"""The one mechanism every graph rebuild shares: visit the nodes in order, each with its
inputs already rebuilt, and collect what the visits return."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Graph.infer_shapes specializes through here: no import at run time
    from knetflow.graph.node import Graph


def rewrite_nodes(nodes, visit, originals: bool = False) -> dict:
    """Old node id -> the node `visit` gives for it, over `nodes` in topological order.

    `visit(node)` gets each node with its inputs replaced by their rebuilt nodes (a
    fresh node only where an input changed); with `originals=True`,
    `visit(node, original)` also gets the node as it was in the graph.
    """
    new = {}
    for node in nodes:
        inputs = tuple(new[i.id] for i in node.inputs)
        if any(a is not b for a, b in zip(inputs, node.inputs)):
            node_in = node.replace(inputs=inputs)
        else:
            node_in = node
        new[node.id] = visit(node_in, node) if originals else visit(node_in)
    return new


def rewrite(graph: Graph, visit, originals: bool = False) -> Graph:
    """Apply `visit` (as in `rewrite_nodes`) to every node of `graph`; the graph of the
    rebuilt outputs, inputs and updates, or `graph` itself when nothing changed."""
    new = rewrite_nodes(graph.nodes, visit, originals)
    if all(new[n.id] is n for n in graph.nodes):
        return graph
    return graph.remap(new)
