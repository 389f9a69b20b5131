"""State of Python objects in traces: an RNN's hidden state, batchnorm's running moments.

Some objects keep values between calls that are not parameters: `r.h`/`r.c`
of an `RNN`, `m.mean`/`m.var` of `BNMoments`. Eagerly, ops change them at
once. A traced function (`kf.diff`) runs once per signature while its plan
runs at every call, on whatever device, so state must flow through the plan
as data. Ops read and set state through three functions:

- `read(owner, attr, label)`: the value for an op to use. Outside a trace, the
  attribute as it is. Inside, an array becomes an input *fed from the attribute
  at each call* (not the array seen while tracing); None, numbers and Params
  are used as they are; a value the trace itself set is returned as it is. What
  was read is recorded (`Slot.token`), so a call where the attribute holds
  another kind of value (None, 0, an array, another Param) traces again.
- `write(owner, attr, value, label, store)`: a new value. Outside a trace,
  `store(owner, attr, value)` (or setattr) at once. Inside, the attribute holds
  the symbol until the trace ends, so later reads in the same function continue
  from it.
- `assign(owner, attr, value, label)`: a user's assignment (the owner's property
  setter). Inside a trace it makes the value the trace's own, so a function
  that sets `r.h = 0` itself is not keyed on what `r.h` held before the call.

When the trace ends every touched attribute is restored (graph/trace.py) and
`Tracer.finals` lists what the trace left in each attribute it set. The front
end (train/knet/trace_cache.py) makes the symbols among them extra outputs of the plan
and stores the values it computes, after every call, with each slot's `store`.
"""

from __future__ import annotations

from knetflow.errors import TracingError
from knetflow.graph import trace
from knetflow.graph.build import placeholder
from knetflow.graph.symbol import Symbol

__all__ = ["assign", "kind", "read", "write"]


def kind(value) -> tuple:
    """What a trace assumes of a state value it read: ('array',) values are fed."""
    if value is None:
        return ("none",)
    if isinstance(value, (bool, int, float)):
        return ("value", type(value), value)
    if hasattr(value, "__knetflow_trace__"):  # a Param: traced as itself (differentiable)
        return ("object", id(value))
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return ("array",)
    return ("object", id(value))


def read(owner, attr: str, label: str):
    """`owner.attr` for an op: inside a trace, arrays are fed from the attribute at each call.

    Example (inside a traced function, `r.h` an array):
        h0 = read(r, "_h", "RNN.h")   # a placeholder symbol, fed from r._h at each call
    """
    value = getattr(owner, attr)
    trace.STATE_ATTRS.add((type(owner), attr))
    tracer = trace.current()
    if tracer is None:
        return value
    slot = tracer.slot(owner, attr, label)
    if slot.local:
        return value
    value = tracer.original(value)  # a captured array a symbol stands in for
    if isinstance(value, Symbol):
        raise TracingError(
            f"{label} holds a symbol of a graph built outside this kf.diff/kf.grad call "
            f"({value.node.label()} built at {value.node.where}); set it to None, 0 or an "
            f"array before differentiating")
    if slot.token is None:
        slot.token = kind(value)
    if slot.token != ("array",):
        return value
    return tracer.state_leaf(slot, value, lambda: placeholder(
        f"t{len(tracer.leaves)}", value.shape, value.dtype))


def write(owner, attr: str, value, label: str, store=None) -> None:
    """Set `owner.attr` to a new state value (a symbol inside a trace, stored after each call).

    `store(owner, attr, value)` writes a computed value (default: setattr), for
    example into the existing array to keep its identity.
    """
    trace.STATE_ATTRS.add((type(owner), attr))
    tracer = trace.current()
    if tracer is None:
        (store or setattr)(owner, attr, value)
        return
    slot = tracer.slot(owner, attr, label)
    slot.local = True
    if store is not None:
        slot.store = store
    setattr(owner, attr, value)


def assign(owner, attr: str, value, label: str) -> None:
    """A user's assignment of a state attribute; inside a trace it is part of the trace."""
    tracer = trace.current()
    if tracer is not None:
        tracer.slot(owner, attr, label).local = True
    setattr(owner, attr, value)
