"""The IR: an immutable Node per op application, and a Graph of them.

A Node is `(op, inputs, attrs)` plus its inferred Spec, an optional name and
device annotation, and the user's `file:line` that built it. Nodes compare by
identity. A Graph is data: inputs, params, outputs and the nodes in
topological order; every later stage (autodiff, passes, planning,
serialization) is a function of it.

Leaves are nodes whose op is `input` (a placeholder, fed at run time), `param`
(a trainable parameter held by the plan) or `const` (a value in the graph).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable

from knetflow.ops.base import REGISTRY, Spec, TupleSpec, fmt

LEAF_OPS = ("input", "param", "const")

_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class Node:
    """One op application. Immutable; equality is identity."""

    op: str
    inputs: tuple
    attrs: dict
    spec: Spec
    name: str | None = None
    device: str | None = None
    where: str = "?"
    id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self):
        # a placeholder's or param's name is its user name (kept in attrs for the format)
        if self.name is None and self.op in ("input", "param"):
            object.__setattr__(self, "name", self.attrs.get("name"))

    @property
    def is_leaf(self) -> bool:
        return self.op in LEAF_OPS

    def replace(self, **changes) -> "Node":
        """A new node like this one with some fields changed (and a fresh id)."""
        fields = dict(op=self.op, inputs=self.inputs, attrs=self.attrs, spec=self.spec,
                      name=self.name, device=self.device, where=self.where)
        fields.update(changes)
        return Node(**fields)

    def label(self) -> str:
        """Short name for messages: `exp#12` or the user's name."""
        if self.op in ("input", "param"):
            return self.attrs["name"]
        return self.name or f"{self.op}#{self.id}"

    def __repr__(self) -> str:
        return f"<Node {self.label()} {self.spec!r}>"


def toposort(outputs: Iterable, key=None) -> tuple:
    """Nodes reachable from outputs, each after its inputs (iterative DFS).

    Works on anything with `.inputs`; `key(node)` identifies a node (default: its
    `.id`; kf.sym's layer symbols pass `key=id`).
    """
    key = key or _node_id
    order, seen = [], set()
    for root in outputs:
        if key(root) in seen:
            continue
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if key(node) in seen:
                continue
            seen.add(key(node))
            stack.append((node, True))
            for inp in reversed(node.inputs):
                if key(inp) not in seen:
                    stack.append((inp, False))
    return tuple(order)


def _node_id(node) -> int:
    return node.id


class Graph:
    """A dataflow graph: `Graph(outputs)` collects everything the outputs need.

    Example:
        >>> import knetflow as kf
        >>> x = kf.placeholder("x", (None, 3))
        >>> g = kf.Graph([kf.relu(x).sum()])
        >>> [n.attrs["name"] for n in g.inputs]
        ['x']
    """

    def __init__(self, outputs, inputs=None, updates=None):
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        self.outputs = tuple(_as_node(o) for o in outputs)
        #: param name -> node computing its new value; a plan stores it after each run
        self.updates = {name: _as_node(v) for name, v in (updates or {}).items()}
        extra = tuple(_as_node(i) for i in (inputs or ()))
        self.nodes = toposort(self.results + extra)
        leaves = [n for n in self.nodes if n.op == "input"]
        # declared inputs keep their order; unused ones stay so feeds still validate
        ordered = {n.attrs["name"]: n for n in sorted(leaves, key=lambda n: n.id)}
        if inputs is not None:
            ordered = {n.attrs["name"]: n for n in extra} | ordered
        self.inputs = tuple(ordered.values())
        self.params = tuple(sorted((n for n in self.nodes if n.op == "param"), key=lambda n: n.id))

    @property
    def results(self) -> tuple:
        """Everything a run produces: the outputs, then the update values."""
        return self.outputs + tuple(self.updates.values())

    def remap(self, new: dict) -> "Graph":
        """The same graph over replacement nodes (`new`: old node id -> node)."""
        return Graph([new[o.id] for o in self.outputs], inputs=[new[i.id] for i in self.inputs],
                     updates={k: new[v.id] for k, v in self.updates.items()})

    # -- lookups --
    def input(self, name: str) -> Node:
        for n in self.inputs:
            if n.attrs["name"] == name:
                return n
        raise KeyError(f"graph has no input named {name!r}")

    def param(self, name: str) -> Node:
        for n in self.params:
            if n.attrs["name"] == name:
                return n
        raise KeyError(f"graph has no param named {name!r}")

    def users(self) -> dict:
        """Map node id -> list of nodes that read it."""
        out: dict = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i.id].append(n)
        return out

    # -- checks and views --
    def verify(self) -> "Graph":
        """Check the graph's invariants; raise AssertionError naming the bad node."""
        position = {n.id: k for k, n in enumerate(self.nodes)}
        leaves: dict = {}  # name -> op: inputs and params share names, as a feed names either
        for k, n in enumerate(self.nodes):
            assert n.op in LEAF_OPS or n.op in REGISTRY, f"{n!r}: unknown op {n.op!r}"
            assert isinstance(n.spec, (Spec, TupleSpec)), f"{n!r}: spec is not a Spec"
            for i in n.inputs:
                assert i.id in position, f"{n!r}: input {i!r} is not in the graph"
                assert position[i.id] < k, f"{n!r}: input {i!r} comes after it"
            if n.op in ("input", "param"):
                name = n.attrs["name"]
                kinds = f"two {n.op} nodes" if leaves.get(name) == n.op else "an input and a param"
                assert name not in leaves, f"{kinds} named {name!r}"
                leaves[name] = n.op
        for o in self.outputs:
            assert o.id in position, f"output {o!r} is not in the graph"
        params = {n.attrs["name"]: n for n in self.params}
        for name, v in self.updates.items():
            assert name in params, f"update of {name!r}, which is not a param of the graph"
            assert v.spec == params[name].spec, (
                f"update of {name!r} is {v.spec!r}, the param is {params[name].spec!r}")
        return self

    def infer_shapes(self, **shapes) -> dict:
        """Concrete shapes of inputs, params and outputs given input shapes by name.

        Example: `g.infer_shapes(x=(100, 784))["outputs"]` -> `[(100, 10)]`.
        """
        from knetflow.graph.specialize import specialize

        specs = {name: Spec(tuple(s), self.input(name).spec.dtype) for name, s in shapes.items()}
        g = specialize(self, specs)
        return {
            "inputs": {n.attrs["name"]: n.spec.shape for n in g.inputs},
            "params": {n.attrs["name"]: n.spec.shape for n in g.params},
            "outputs": [n.spec.shape for n in g.outputs],
        }

    def __str__(self) -> str:
        from knetflow.graph.printing import format_graph

        return format_graph(self)

    def summary(self) -> str:
        """A table of ops, shapes and parameter counts (and print it)."""
        from knetflow.graph.printing import summary

        return summary(self)

    def to_dot(self) -> str:
        """The graph in Graphviz dot syntax."""
        from knetflow.graph.printing import to_dot

        return to_dot(self)

    def __repr__(self) -> str:
        outs = ", ".join(f"{o.label()}{fmt(o.spec)}" for o in self.outputs)
        return f"<Graph {len(self.nodes)} nodes -> {outs}>"


def _as_node(x) -> Node:
    if isinstance(x, Node):
        return x
    node = getattr(x, "node", None)
    if isinstance(node, Node):
        return node
    raise TypeError(f"expected a Symbol or Node, got {type(x).__name__}")
