"""The device annotation stack behind `with kf.device("cpu:1"): ...`.

Symbols built inside such a block carry `node.device`; the graph layer reads
`current()` when it makes a node. The stack lives here, in the devices layer,
so that graph building depends on devices and not the other way round. It is
per thread: a block in one thread does not annotate nodes built by another.
"""

from __future__ import annotations

import threading

_local = threading.local()


def _stack() -> list:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def current() -> str | None:
    """The device name of the innermost annotation block of this thread, or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def push(name: str) -> None:
    """Enter an annotation block for device `name`."""
    _stack().append(str(name))


def pop(name: str | None = None) -> None:
    """Leave the innermost annotation block (the one for `name`, when given)."""
    stack = _stack()
    if not stack:
        raise RuntimeError("device annotation stack is empty: more exits than entries")
    if name is not None and stack[-1] != name:
        raise RuntimeError(f"leaving a device block for {name!r} while the innermost block "
                           f"is {stack[-1]!r}: blocks must nest")
    stack.pop()
