"""Specialization: the same graph with dynamic dimensions made concrete.

Every node's shape rule runs again on the concrete input specs, so a feed that
does not fit fails here, naming the input or the op and the user's line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from knetflow.errors import FeedError, ShapeError
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.base import Spec, fmt, get_op

if TYPE_CHECKING:  # Graph.infer_shapes calls specialize: no import at run time
    from knetflow.graph.node import Graph


def check_feed(node, spec: Spec) -> Spec:
    """The spec an input takes from a fed value; FeedError when it does not fit."""
    want = node.spec
    name = node.attrs["name"]
    ok = len(spec.shape) == len(want.shape) and all(
        w is None or w == d for w, d in zip(want.shape, spec.shape))
    if not ok:
        raise FeedError(f"input {name!r} expects shape {fmt(want)}, got {fmt(spec)} "
                        f"(placeholder created at {node.where})")
    return Spec(spec.shape, want.dtype)


def specialize(graph: Graph, input_specs: dict) -> Graph:
    """A copy of `graph` with inputs given concrete specs (by input name)."""

    def visit(node, original):
        if node.op == "input":
            name = node.attrs["name"]
            if name not in input_specs:
                return node
            spec = check_feed(node, input_specs[name])
            return node if spec == node.spec else node.replace(spec=spec)
        if node is original:  # a leaf, or no input changed: its spec stands
            return node
        try:
            spec = get_op(node.op).infer(*[i.spec for i in node.inputs], **node.attrs)
        except ShapeError as e:
            raise ShapeError(f"{e} (node built at {node.where})") from None
        return node.replace(spec=spec)

    return rewrite(graph, visit, originals=True)
