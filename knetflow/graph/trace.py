"""The tracing context: while a Python function is traced, objects that know
how (`__knetflow_trace__`) turn into graph nodes when an op touches them.

The Knet-style front end (`kf.Param`, `kf.diff`) lives in the training layer;
it implements `__knetflow_trace__(tracer)` on `Param` so that parameters found
in the computation, passed or captured, become `param` nodes of the trace.
"""

from __future__ import annotations

import threading

_state = threading.local()


class Tracer:
    """Collects the leaves of one trace: objects seen -> their leaf symbol."""

    def __init__(self):
        self.leaves: dict = {}  # id(obj) -> (obj, Symbol)

    def leaf(self, obj, make):
        """The symbol standing for `obj` in this trace, made once by `make()`."""
        key = id(obj)
        if key not in self.leaves:
            self.leaves[key] = (obj, make())
        return self.leaves[key][1]


def current():
    """The innermost active Tracer, or None."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


class tracing:
    """Context manager activating a Tracer on this thread."""

    def __init__(self, tracer: Tracer):
        self.tracer = tracer

    def __enter__(self) -> Tracer:
        if not hasattr(_state, "stack"):
            _state.stack = []
        _state.stack.append(self.tracer)
        return self.tracer

    def __exit__(self, *exc):
        _state.stack.pop()
        return False
