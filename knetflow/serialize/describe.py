"""The text `knetflow inspect FILE` prints: what a file holds, without running it."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from knetflow.ops.base import fmt
from knetflow.serialize.saving import load

MAX_LINES = 40


def _params_table(params: dict) -> list:
    if not params:
        return ["params: none"]
    count = sum(a.size for a in params.values())
    nbytes = sum(a.nbytes for a in params.values())
    rows = [(name, str(a.dtype), str(a.shape), f"{a.nbytes:,}") for name, a in params.items()]
    rows.insert(0, ("name", "dtype", "shape", "bytes"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"params: {len(params)} arrays, {count:,} values, {nbytes:,} bytes"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.dtype}{list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."


def _outline(value, path: str, lines: list) -> None:
    """One line per leaf of a state tree (arrays shown by dtype and shape)."""
    if len(lines) >= MAX_LINES:
        return
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _outline(item, f"{path}[{key!r}]", lines)
    elif isinstance(value, (list, tuple)) and value and not all(
            isinstance(v, (int, float, str)) for v in value):
        for k, item in enumerate(value):
            _outline(item, f"{path}[{k}]", lines)
    else:
        lines.append(f"  {path or '(root)'}: {_short(value)}")
        if len(lines) == MAX_LINES:
            lines.append("  ...")


def _graph_lines(graph) -> list:
    ops = Counter(n.op for n in graph.nodes if not n.is_leaf)
    inputs = ", ".join(f"{n.attrs['name']} {n.spec.dtype}{fmt(n.spec)}" for n in graph.inputs)
    outputs = ", ".join(f"{n.label()} {n.spec!r}" for n in graph.outputs)
    lines = [f"graph: {len(graph.nodes)} nodes, {len(graph.params)} params",
             f"  inputs: {inputs or 'none'}", f"  outputs: {outputs}",
             "  ops: " + ", ".join(f"{op} x{k}" if k > 1 else op
                                   for op, k in sorted(ops.items()))]
    if graph.updates:
        lines.append(f"  updates: {', '.join(graph.updates)}")
    return lines


def describe(path) -> str:
    """A summary of a knetflow file: kind, versions, graph, params, metadata and state."""
    loaded = load(path)
    first = (f"{os.fspath(path)}: knetflow {loaded.kind} file, format version "
             f"{loaded.format_version}, written by knetflow {loaded.knetflow_version}, "
             f"{loaded.size:,} bytes")
    lines = [first]
    if loaded.graph is not None:
        lines += _graph_lines(loaded.graph)
    if loaded.kind == "params":
        lines.append(f"epoch: {loaded.state['epoch']}")
        lines += _params_table(loaded.state["arg_params"])
        if loaded.state["aux_params"]:
            lines += ["aux " + line for line in _params_table(loaded.state["aux_params"])[:1]]
            lines += _params_table(loaded.state["aux_params"])[1:]
        if loaded.state["optimizer_state"] is not None:
            lines.append("optimizer state:")
            _outline(loaded.state["optimizer_state"], "", lines)
    elif loaded.kind != "state":
        lines += _params_table(loaded.params)
    else:
        lines.append("state:")
        _outline(loaded.state, "", lines)
    lines.append("metadata:" + ("" if loaded.metadata else " none"))
    for key, value in loaded.metadata.items():
        lines.append(f"  {key}: {_short(value)}")
    return "\n".join(lines)
