"""State attributes of layer objects: an RNN's `h`/`c`, batchnorm's running moments.

Their values live in `_<name>`; reads and writes inside traces go through
`knetflow.graph.state`.
"""

from __future__ import annotations

from knetflow.graph import state


class StateAttribute:
    """A property over `_<name>` whose assignments a trace records (graph/state.py).

    Example:
        >>> class Counter:
        ...     n = StateAttribute("How many so far.")
        ...     def __init__(self):
        ...         self._n = 0
        >>> c = Counter(); c.n = 3; (c.n, c._n, Counter.n.label)
        (3, 3, 'Counter.n')
    """

    def __init__(self, doc: str):
        self.__doc__ = doc

    def __set_name__(self, owner, name):
        self.private, self.label = "_" + name, f"{owner.__name__}.{name}"

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.private)

    def __set__(self, obj, value):
        state.assign(obj, self.private, value, self.label)
