"""Channels carry values between device executors; `send`/`recv` nodes use them.

A channel holds one value per run. `recv` blocks until the value is there,
but gives up when the run is cancelled (another executor failed), so an error
on one device never leaves the others waiting forever.
"""

from __future__ import annotations

import threading

from knetflow.ops.base import Op, Spec, register


class Cancelled(Exception):
    """The run was cancelled because another executor failed."""


class RunState:
    """Shared by the executors of one run: the cancel flag."""

    def __init__(self):
        self.cancelled = threading.Event()


class Channel:
    """A one-value mailbox from one device to another, reused run after run."""

    def __init__(self, src: str, dst: str, nbytes: int):
        self.src, self.dst, self.nbytes = src, dst, nbytes
        self._ready = threading.Event()
        self._value = None
        self.run = RunState()

    def reset(self, run: RunState) -> None:
        """Start a new run: forget a value a cancelled run may have left."""
        self.run = run
        self._ready.clear()
        self._value = None

    def put(self, value) -> None:
        self._value = value
        self._ready.set()

    def get(self):
        while not self._ready.wait(0.05):
            if self.run.cancelled.is_set():
                raise Cancelled(f"transfer {self.src} -> {self.dst} cancelled")
        self._ready.clear()
        value, self._value = self._value, None
        return value


@register
class Send(Op):
    """Copy x to another device and post it on a channel (made by partitioning only)."""
    name, pure = "send", False

    def infer(x: Spec, channel=None, move=None) -> Spec:
        return Spec((), "bool")

    def forward(xp, x, channel=None, move=None):
        channel.put(move(x))
        return True


@register
class Recv(Op):
    """The value a `send` on another device posted (made by partitioning only)."""
    name, pure = "recv", False

    def infer(channel=None, spec=None) -> Spec:
        return spec

    def forward(xp, channel=None, spec=None):
        return channel.get()
