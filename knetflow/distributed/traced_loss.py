"""Knet-style losses for DaskTrainer: a function of `kf.Param`s traced into a graph.

Knet trains `loss(x, y)` functions that read Params, passed or captured.
`trace_loss` traces such a function once on symbolic batches, as `kf.diff`
does, and turns each Param it touched into a `param` node holding the
Param's value, so the result is an ordinary loss graph a DaskTrainer can
ship to its workers. `DaskTrainer.from_loss` writes the trained values back
into the Params' arrays, in place, as `kf.update` would.

State the loss reads and updates (batchnorm's running moments, an RNN's
carried `r.h` when it holds an array) becomes a non-trainable param with a
graph update, which Dask training averages over the workers by rows like any
auxiliary param; after `fit` the values are stored back into the objects.
State a call sets from scratch (`r.h = 0`, or None) is not carried between
steps, as in one `kf.diff` call after another with the state reset.
"""

from __future__ import annotations

import numpy as np

from knetflow.errors import TracingError
from knetflow.graph.build import const, param, placeholder
from knetflow.graph.capture import is_param
from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.graph.symbol import Symbol
from knetflow.graph.trace_python import trace_function

__all__ = ["store_back", "trace_loss"]


def _batch_spec(a, name) -> Symbol:
    a = np.asarray(a) if not hasattr(a, "shape") else a
    dtype = np.dtype(a.dtype)
    if dtype.kind in "iub" and name == "x":
        dtype = np.dtype("float64")
    return placeholder(name, (None,) + tuple(a.shape[1:]), str(dtype))


def trace_loss(f, x, y=None) -> tuple:
    """(Graph of f's loss over batches shaped like x and y, {param name: Param or state}).

    A state entry is the `graph/trace.py` Slot of an attribute the loss updates
    (see the module docstring); `store_back` writes trained values into both kinds.

    `x`, `y`: arrays (or a first batch) giving the row shape and dtype; the
    graph's inputs are "x" and "y" with a free batch dimension.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = kf.Param(np.zeros(3), name="w")
        >>> graph, params = trace_loss(lambda x, y: kf.mean((x @ w - y) ** 2),
        ...                            np.ones((4, 3)), np.ones(4))
        >>> [p.attrs["name"] for p in graph.params], params["w"] is w
        (['w'], True)
    """
    inputs = [_batch_spec(x, "x")] + ([] if y is None else [_batch_spec(y, "y")])
    out, tracer = trace_function(f, inputs)
    if not isinstance(out, Symbol) or out.shape != ():
        raise TracingError(f"{getattr(f, '__name__', f)!r} must return a scalar loss computed "
                           f"from its inputs, got {type(out).__name__}"
                           f"{'' if not isinstance(out, Symbol) else f' of shape {out.shape}'}")
    new, params = {}, {}
    carried = {slot.input.node.id: (slot, final) for slot, final in tracer.finals
               if slot.input is not None and isinstance(final, Symbol)}
    updates, states = {}, {}
    for obj, sym in tracer.leaves.values():
        if sym.node.id in carried:  # state fed in and updated: an auxiliary param
            slot, final = carried[sym.node.id]
            name = f"{slot.label}#{len(states)}"
            value = np.array(slot.value())
            node = param(name, value=value, dtype=str(value.dtype)).node
            new[sym.node.id] = node.replace(attrs={**node.attrs, "trainable": False})
            updates[name], states[name] = final, slot
        elif is_param(obj):
            name = obj.name or f"p{len(params)}"
            if name in params:
                raise TracingError(f"two Params named {name!r}; give them distinct names")
            params[name] = obj
            new[sym.node.id] = param(name, value=obj.value, dtype=str(obj.value.dtype)).node
        else:  # a captured array: a constant of the graph
            new[sym.node.id] = const(np.asarray(obj)).node
    # the trace's leaves become params and constants; the batch placeholders stay the inputs
    traced = rewrite(Graph([out], updates=updates), lambda node: new.get(node.id, node))
    graph = Graph(traced.outputs, inputs=[i.node for i in inputs], updates=traced.updates)
    return graph, {**params, **states}


def store_back(targets: dict, values: dict) -> None:
    """Write trained `values` (name -> array) into trace_loss's Params and state attributes."""
    for name, target in targets.items():
        if is_param(target):
            target.value[...] = values[name]
        else:  # a state Slot: into its object, keeping the array where the owner wants
            (target.store or setattr)(target.owner, target.attr, np.array(values[name]))
