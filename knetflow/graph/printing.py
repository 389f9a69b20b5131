"""Views of a graph for people: a flat equation list, a summary table, dot."""

from __future__ import annotations

from knetflow.ops.base import fmt


def _ref(node) -> str:
    return node.label() if node.op in ("input", "param") else f"%{node.id}"


def _attrs(node) -> str:
    items = [f"{k}={v!r}" for k, v in node.attrs.items() if k not in ("value", "init", "name")]
    return ("[" + ", ".join(items) + "]") if items else ""


def format_graph(graph) -> str:
    """One line per node: `%12 = exp(%11)  float32(?, 3)  model.py:14`."""
    lines = []
    for n in graph.inputs:
        lines.append(f"input {n.label()}: {n.spec!r}")
    for n in graph.params:
        lines.append(f"param {n.label()}: {n.spec!r}")
    for n in graph.nodes:
        if n.op in ("input", "param"):
            continue
        if n.op == "const":
            rhs = f"const {n.attrs['value'].dtype}{n.attrs['value'].shape}"
        else:
            rhs = f"{n.op}{_attrs(n)}(" + ", ".join(_ref(i) for i in n.inputs) + ")"
        lines.append(f"%{n.id} = {rhs}  {n.spec!r}  {n.where}")
    lines.append("return " + ", ".join(_ref(o) for o in graph.outputs))
    return "\n".join(lines)


def summary(graph) -> str:
    """Table of ops with output shapes and the parameter count; printed and returned."""
    rows = [("node", "op", "shape", "dtype", "where")]
    for n in graph.nodes:
        if n.op == "const":
            continue
        rows.append((n.label(), n.op, fmt(n.spec), n.spec.dtype, n.where))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    nparams = sum(n.spec.size or 0 for n in graph.params)
    text.append(f"{len(graph.nodes)} nodes, {len(graph.params)} params, {nparams} parameter values")
    out = "\n".join(text)
    print(out)
    return out


def to_dot(graph) -> str:
    """Graphviz source: one box per node, edges labelled with shapes."""
    lines = ["digraph knetflow {", "  rankdir=TB;"]
    for n in graph.nodes:
        shape = "ellipse" if n.is_leaf else "box"
        lines.append(f'  n{n.id} [label="{n.label()}\\n{n.spec!r}", shape={shape}];')
        for i in n.inputs:
            lines.append(f'  n{i.id} -> n{n.id} [label="{fmt(i.spec)}"];')
    lines.append("}")
    return "\n".join(lines)
