"""Derived backward graphs: `backward(graph, wrt)` returns a new Graph.

Reverse-mode differentiation over the graph's nodes in reverse topological
order, using each op's gradient rule. Rules are written in knetflow ops, so
the result is an ordinary graph: it can be optimized, compiled, saved, and
differentiated again. Rules may return gradients at the broadcast shape of
an op's output; this module sums them back to each input's shape, once.
Integer and bool values never receive gradients.
"""

from __future__ import annotations

from knetflow.errors import ShapeError
from knetflow.graph.build import const
from knetflow.graph.node import Graph, Node, toposort
from knetflow.graph.passes.project import fold_embedding_projections
from knetflow.graph.symbol import Symbol
from knetflow.ops import reduce
from knetflow.ops.base import Get, apply, get_op


def backward(graph, wrt=None) -> Graph:
    """Graph of the outputs followed by d(first output)/d(each of `wrt`).

    `wrt` is a list of param/input nodes, Symbols or names (default: every param
    not marked `trainable=False`).
    The first output must be a scalar. The outputs come as the graph computes them
    best for differentiating: a lookup in a small table that feeds an RNN layer is
    folded through its input matrix first (`fold_embedding_projections`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = kf.param("w", value=np.array([1., 2., 3.]))
        >>> g = kf.backward(kf.Graph([kf.sum(w * w)]))
        >>> kf.compile(g).run({})[1]
        array([2., 4., 6.], dtype=float32)
    """
    if not isinstance(graph, Graph):
        graph = Graph(graph)
    # rewrites that make the derived graph cheaper go first (same values, other rounding)
    graph = fold_embedding_projections(graph)
    loss = graph.outputs[0]
    if loss.spec.shape != ():
        raise ShapeError(
            f"backward: the first output must be a scalar, got shape {loss.spec.shape} "
            f"({loss.label()} at {loss.where}); reduce it first, e.g. with kf.sum")
    targets = _resolve(graph, wrt)
    grads = gradients(loss, targets)
    return Graph(list(graph.outputs) + grads, inputs=graph.inputs, updates=graph.updates)


def _resolve(graph, wrt) -> list:
    if wrt is None:
        return trainable_params(graph)
    out = []
    for w in wrt if isinstance(wrt, (list, tuple)) else [wrt]:
        if isinstance(w, str):
            try:
                w = graph.param(w)
            except KeyError:
                w = graph.input(w)
        out.append(w.node if isinstance(w, Symbol) else w)
    return out


def trainable_params(graph) -> list:
    """The params gradients are for: all but those marked `trainable=False` (running stats)."""
    return [p for p in graph.params if p.attrs.get("trainable", True)]


def gradients(loss: Node, targets: list) -> list:
    """Nodes for d loss / d target, one per target (zeros where unconnected)."""
    nodes = toposort([loss])
    target_ids = {t.id for t in targets}
    needed = _depends_on(nodes, target_ids)
    grads: dict = {loss.id: const(1, dtype=loss.spec.dtype).node}
    for node in reversed(nodes):
        if node.is_leaf:
            continue
        # a target's gradient stays for the result (a target may be an inner node)
        g = grads.get(node.id) if node.id in target_ids else grads.pop(node.id, None)
        if g is None or node.id not in needed:
            continue
        if node.op == "get":
            _collect(grads, node, g)
            continue
        op = get_op(node.op)
        rule = _rule(op, node, g)
        if rule is None:
            continue
        if len(rule) != len(node.inputs):
            raise RuntimeError(f"gradient rule of {node.op} returned {len(rule)} values "
                               f"for {len(node.inputs)} inputs")
        for k, (inp, gi) in enumerate(zip(node.inputs, rule)):
            if gi is None or k in op.nondiff or inp.id not in needed or not inp.spec.is_float:
                continue
            gi = _fit(_as_symbol(gi, inp), inp)
            prev = grads.get(inp.id)
            grads[inp.id] = gi.node if prev is None else (Symbol(prev) + gi).node
    return [_final(grads.get(t.id), t) for t in targets]


def _collect(grads, node, g):
    """A `get` passes its gradient to slot `index` of its multi-output parent."""
    parent, index = node.inputs[0], node.attrs["index"]
    slots = list(grads.get(parent.id) or (None,) * len(parent.spec))
    slots[index] = g if slots[index] is None else (Symbol(slots[index]) + Symbol(g)).node
    grads[parent.id] = tuple(slots)


def _rule(op, node, g):
    """The op's gradient rule applied at `node`, with output gradient(s) g."""
    ins = [Symbol(i) for i in node.inputs]
    if isinstance(g, tuple):  # a multi-output op: tuples of gradients and outputs
        gs = tuple(None if x is None else Symbol(x) for x in g)
        outs = tuple(_get(node, i) for i in range(len(g)))
        return op.grad(gs, outs, *ins, **node.attrs)
    return op.grad(Symbol(g), Symbol(node), *ins, **node.attrs)


def _get(node, i):
    return apply(Get, Symbol(node), index=i)


def _depends_on(nodes, target_ids) -> set:
    """Ids of nodes whose value depends on any target (the only ones worth differentiating)."""
    out = set(target_ids)
    for n in nodes:
        if any(i.id in out for i in n.inputs):
            out.add(n.id)
    return out


def _as_symbol(g, like: Node) -> Symbol:
    return g if isinstance(g, Symbol) else const(g, dtype=like.spec.dtype)


def _fit(g: Symbol, inp: Node) -> Symbol:
    """Sum a broadcast gradient back to the input's shape and cast to its dtype."""
    gs, xs = g.node.spec, inp.spec
    if _needs_sum(gs.shape, xs.shape):
        g = reduce.sum_to(g, Symbol(inp))
    if g.node.spec.dtype != xs.dtype:
        from knetflow.ops.elementwise import cast

        g = cast(g, xs.dtype)
    return g


def _needs_sum(gshape, xshape) -> bool:
    """Whether a gradient of gshape must be summed to xshape.

    Two dynamic dims in the same place are taken to be the same dim (the batch).
    """
    return len(gshape) != len(xshape) or any(a != b for a, b in zip(gshape, xshape))


def _final(g, target: Node) -> Node:
    if g is None:
        from knetflow.ops.reduce import broadcast_like

        zero = const(0, dtype=target.spec.dtype)
        return broadcast_like(zero, Symbol(target), keepdims=True).node
    return g


