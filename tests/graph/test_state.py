"""State attributes in traces (graph/state.py, the slots of graph/trace.py)."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph import state, trace


class Holder:
    """A stateful object as RNN and BNMoments are: raw attribute, property setter."""

    def __init__(self, value):
        self._s = value

    @property
    def s(self):
        return self._s

    @s.setter
    def s(self, value):
        state.assign(self, "_s", value, "Holder.s")


def _traced(fn):
    """Run fn(tracer) inside a trace; the tracer after it ended."""
    tracer = trace.Tracer()
    with trace.tracing(tracer):
        fn(tracer)
    return tracer


def test_outside_a_trace_values_are_read_and_set_at_once():
    h = Holder(np.ones(2))
    assert state.read(h, "_s", "Holder.s") is h.s
    stored = []
    state.write(h, "_s", np.zeros(2), "Holder.s", store=lambda *a: stored.append(a))
    assert stored[0][:2] == (h, "_s") and stored[0][2].tolist() == [0.0, 0.0]
    state.write(h, "_s", 5, "Holder.s")
    h.s = 7
    assert h.s == 7


def test_an_array_read_in_a_trace_is_one_fed_leaf():
    value = np.ones((2, 3), "float32")
    h = Holder(value)
    seen = {}

    def body(tracer):
        seen["a"] = state.read(h, "_s", "Holder.s")
        seen["b"] = state.read(h, "_s", "Holder.s")

    tracer = _traced(body)
    a = seen["a"]
    assert isinstance(a, kf.Symbol) and a is seen["b"]
    assert a.node.op == "input" and a.shape == (2, 3) and a.dtype == np.float32
    slot = tracer.slots[(id(h), "_s")]
    assert slot.input is a and slot.token == ("array",)
    assert tracer.leaves[("state", id(slot))] == (value, a)
    assert tracer.finals == [] and h.s is value  # only read: nothing to write back


def test_a_write_holds_the_symbol_until_the_trace_ends_then_is_restored():
    value = np.ones(3)
    h = Holder(value)
    seen = {}

    def body(tracer):
        new = state.read(h, "_s", "Holder.s") * 2.0
        state.write(h, "_s", new, "Holder.s", store="a store")
        seen["during"] = h.s
        seen["again"] = state.read(h, "_s", "Holder.s")  # continues from the new value
        seen["new"] = new

    tracer = _traced(body)
    assert seen["during"] is seen["new"] and seen["again"] is seen["new"]
    assert h.s is value  # restored: the same object
    slot = tracer.slots[(id(h), "_s")]
    assert tracer.finals == [(slot, seen["new"])] and slot.store == "a store"


def test_state_is_restored_when_the_traced_function_fails():
    h = Holder(0)
    tracer = trace.Tracer()
    with pytest.raises(RuntimeError, match="boom"), trace.tracing(tracer):
        state.write(h, "_s", kf.placeholder("p", (2,)), "Holder.s")
        raise RuntimeError("boom")
    assert h.s == 0 and trace.current() is None


def test_an_assignment_in_a_trace_belongs_to_the_trace():
    h = Holder(np.ones(2))
    seen = {}

    def body(tracer):
        h.s = 0
        seen["read"] = state.read(h, "_s", "Holder.s")

    tracer = _traced(body)
    slot = tracer.slots[(id(h), "_s")]
    assert seen["read"] == 0 and slot.token is None and slot.input is None  # not a guard
    assert tracer.finals == [(slot, 0)]
    assert isinstance(h.s, np.ndarray)


def test_kinds_of_state_values():
    p = kf.Param([1.0])
    assert state.kind(None) == ("none",)
    assert state.kind(0) == ("value", int, 0) != state.kind(0.0)
    assert state.kind(np.zeros(3)) == state.kind(np.ones((2, 2), "float32")) == ("array",)
    assert state.kind(p) == ("object", id(p))
    other = object()
    assert state.kind(other) == ("object", id(other))


def test_reading_a_symbol_of_another_graph_names_the_attribute():
    h = Holder(kf.placeholder("x", (2,)) * 3.0)
    with pytest.raises(kf.TracingError, match=r"Holder.s holds a symbol of a graph built "
                                              r"outside this kf.diff/kf.grad call \(mul#\d+ built "
                                              r"at test_state.py:\d+\); set it to None, 0 or an "
                                              r"array before differentiating"):
        _traced(lambda tracer: state.read(h, "_s", "Holder.s"))
