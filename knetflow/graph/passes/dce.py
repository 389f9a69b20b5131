"""Dead-code elimination: keep only what the outputs need (inputs stay declared)."""

from __future__ import annotations

from knetflow.graph.node import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes no output depends on. Graph's constructor already walks from
    the outputs, so rebuilding is the whole pass."""
    rebuilt = Graph(graph.outputs, inputs=graph.inputs, updates=graph.updates)
    return graph if len(rebuilt.nodes) == len(graph.nodes) else rebuilt
