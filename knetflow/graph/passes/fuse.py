"""Elementwise fusion: chains of ufunc ops of one shape become one `fused` node.

A producer joins its consumer's chain when it is a plain ufunc op (no
attributes), has that consumer as its only user, is not a graph output, and
has the consumer's shape and dtype, so every step can write into one buffer,
and carries the same device annotation (a chain runs on one device).
"""

from __future__ import annotations

from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.base import REGISTRY


def _fusable(node) -> bool:
    """A plain ufunc node whose inputs already have its dtype (no hidden casts)."""
    return (not node.is_leaf and REGISTRY[node.op].ufunc is not None and not node.attrs
            and all(i.spec.dtype == node.spec.dtype for i in node.inputs))


def _chain_links(graph: Graph) -> dict:
    """consumer id -> the one producer node fused into it."""
    users = graph.users()
    outputs = {o.id for o in graph.results}
    prev = {}
    for node in graph.nodes:
        if not _fusable(node):
            continue
        for inp in node.inputs:
            if (_fusable(inp) and inp.id not in outputs and len(users[inp.id]) == 1
                    and inp.spec == node.spec and node.inputs.count(inp) == 1
                    and inp.device == node.device):
                prev[node.id] = inp
                break
    return prev


def _program(chain, new):
    """Steps and external inputs of a chain (first to last)."""
    externals, steps = [], []
    inside = {n.id for n in chain}
    for k, node in enumerate(chain):
        refs = []
        for inp in node.inputs:
            if k > 0 and inp.id == chain[k - 1].id:
                refs.append(-1)
                continue
            assert inp.id not in inside
            ext = new[inp.id]
            if ext not in externals:
                externals.append(ext)
            refs.append(externals.index(ext))
        steps.append((node.op, tuple(refs)))
    return tuple(steps), externals


def fuse_elementwise(graph: Graph) -> Graph:
    """Fuse chains of two or more elementwise ufunc nodes into `fused` nodes."""
    prev = _chain_links(graph)
    if not prev:
        return graph
    absorbed = {p.id for p in prev.values()}
    new = {}

    def visit(node, original):
        if original.id in prev and original.id not in absorbed:
            chain = [original]
            while chain[-1].id in prev:
                chain.append(prev[chain[-1].id])
            chain.reverse()
            program, externals = _program(chain, new)
            node = original.replace(op="fused", inputs=tuple(externals),
                                    attrs={"program": program, "dtype": original.spec.dtype,
                                           "wheres": tuple(n.where for n in chain)})
        new[original.id] = node  # _program reads the chain's inputs as rebuilt so far
        return node

    return rewrite(graph, visit, originals=True)
