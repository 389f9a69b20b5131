"""The tracing context: while a Python function is traced, objects that know
how (`__knetflow_trace__`) turn into graph nodes when an op touches them.
graph/trace_python.py runs a function in it.

The Knet-style front end (`kf.Param`, `kf.diff`) lives in the training layer;
it implements `__knetflow_trace__(tracer)` on `Param` so that parameters found
in the computation, passed or captured, become `param` nodes of the trace.

A tracer also keeps the state attributes of Python objects the trace reads or
sets (an RNN's `h`, a batchnorm's running moments) as `Slot`s; graph/state.py
explains the protocol. When the trace ends, each attribute gets back its value
from before the trace, and `finals` says what the trace left in it.
"""

from __future__ import annotations

import threading

_state = threading.local()

#: (class, attribute) pairs that hold state (graph/state.py): fed through slots,
#: so the trace cache keys their arrays by shape, not identity (graph/capture.py)
STATE_ATTRS: set = set()


class Slot:
    """One state attribute `owner.attr` a trace reads or sets (see graph/state.py)."""

    __slots__ = ("attr", "before", "input", "label", "local", "owner", "store", "token")

    def __init__(self, owner, attr: str, label: str):
        self.owner, self.attr, self.label = owner, attr, label
        self.before = getattr(owner, attr)  # restored when the trace ends
        self.token = None   # kind of the value read before the trace set it (None: not read)
        self.input = None   # leaf symbol fed from the attribute at each call, for arrays
        self.local = False  # set inside the trace: later reads see the trace's own value
        self.store = None   # store(owner, attr, value) writing a new value back; None: setattr

    def value(self):
        """The attribute's current value."""
        return getattr(self.owner, self.attr)

    def read(self, owner):
        """This attribute of `owner` (the slot's owner or another object of its kind)."""
        return getattr(owner, self.attr)

    def write(self, owner, value) -> None:
        """Store a computed value into this attribute of `owner`."""
        (self.store or setattr)(owner, self.attr, value)

    def __repr__(self) -> str:
        return f"<Slot {self.label}>"


class ItemSlot:
    """An item `owner[key]` of a list or dict that a traced function replaced: its new
    value is carried out of each call as a state attribute's is (see trace_python)."""

    __slots__ = ("owner", "key", "label")

    def __init__(self, owner, key, label: str):
        self.owner, self.key, self.label = owner, key, label

    def read(self, owner):
        return owner[self.key]

    def write(self, owner, value) -> None:
        owner[self.key] = value

    def __repr__(self) -> str:
        return f"<ItemSlot {self.label}>"


class Tracer:
    """Collects the leaves of one trace (objects seen -> their leaf symbol) and its state slots.

    A tracer with a `parent` traces a function called inside another trace
    (`kf.diff` or `kf.grad` in a function being differentiated): it shares the
    parent's leaves and state slots, so everything lands in the one outer graph,
    and gives each Param a fresh symbol of its own (`wrap(leaf symbol)`), so the
    inner gradient is taken with respect to this inner use of the Param only.
    """

    def __init__(self, parent=None, wrap=None):
        self.parent = parent
        self.wrap = wrap
        self.leaves: dict = parent.leaves if parent else {}  # id(obj) / ("state", ..) -> (obj, Symbol)
        self.slots: dict = parent.slots if parent else {}    # (id(owner), attr) -> Slot
        self.finals: list = []  # (slot, its last value in the trace), once the trace ended
        self.targets: dict = {}  # with a parent: id(Param) -> (Param, its fresh symbol)
        self.items: list = []    # (ItemSlot, new value): list and dict items the trace replaced
        # id(symbol) -> the captured value it stands in for while the trace runs
        self.substituted: dict = parent.substituted if parent else {}

    def original(self, value):
        """A captured value as the user holds it (`value` itself unless a symbol stands in)."""
        return self.substituted.get(id(value), value)

    def leaf(self, obj, make):
        """The symbol standing for `obj` in this trace, made once by `make()`."""
        if self.parent is not None:
            sym = self.parent.leaf(obj, make)
            if not hasattr(obj, "__knetflow_trace__"):
                return sym
            if id(obj) not in self.targets:
                self.targets[id(obj)] = (obj, self.wrap(sym))
            return self.targets[id(obj)][1]
        key = id(obj)
        if key not in self.leaves:
            self.leaves[key] = (obj, make())
        return self.leaves[key][1]

    def state_leaf(self, slot: Slot, value, make):
        """The symbol fed from `slot`'s attribute; `value` is what it holds while tracing."""
        if self.parent is not None:
            return self.parent.state_leaf(slot, value, make)
        key = ("state", id(slot))
        if key not in self.leaves:
            self.leaves[key] = (value, make())
            slot.input = self.leaves[key][1]
        return self.leaves[key][1]

    def slot(self, owner, attr: str, label: str) -> Slot:
        """The Slot of `owner.attr` in this trace, made at first use."""
        key = (id(owner), attr)
        if key not in self.slots:
            slot = self.slots[key] = Slot(owner, attr, label)
            slot.before = self.original(slot.before)
        return self.slots[key]

    def finish(self) -> None:
        """Note the last value of each slot the trace set, then restore every slot.

        A nested tracer leaves this to the outermost one, which owns the slots.
        """
        if self.parent is not None:
            return
        for slot in self.slots.values():
            if slot.local:
                self.finals.append((slot, slot.value()))
            setattr(slot.owner, slot.attr, slot.before)


def current():
    """The innermost active Tracer, or None."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


class tracing:
    """Context manager activating a Tracer on this thread; restores state slots at the end."""

    def __init__(self, tracer: Tracer):
        self.tracer = tracer

    def __enter__(self) -> Tracer:
        if not hasattr(_state, "stack"):
            _state.stack = []
        _state.stack.append(self.tracer)
        return self.tracer

    def __exit__(self, *exc):
        _state.stack.pop()
        self.tracer.finish()
        return False

