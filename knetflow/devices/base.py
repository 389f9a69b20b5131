"""The Device interface and the CPU device.

A device has a `name` ("cpu:0"), a `kind` ("cpu", "gpu", "sim"), an array
module `xp`, `put`/`get` to move arrays to and from the host, and
`synchronize()`. The multi-device scheduler builds on this.
"""

from __future__ import annotations

import numpy as np


class Device:
    """A place where arrays live and ops run."""

    kind = "cpu"

    def __init__(self, index: int = 0):
        self.index = index
        self.xp = np

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.index}"

    def put(self, array):
        """The array on this device."""
        return np.asarray(array)

    def get(self, array) -> np.ndarray:
        """The array on the host."""
        return np.asarray(array)

    def synchronize(self) -> None:
        """Wait for work queued on this device (nothing to wait for on a CPU)."""

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


_CPU = [Device(0)]


def cpu(i: int = 0) -> Device:
    """The i-th CPU device."""
    if not 0 <= i < len(_CPU):
        raise ValueError(f"no device cpu:{i}; there are {len(_CPU)} CPU devices")
    return _CPU[i]


def devices() -> list:
    """Every device knetflow can use."""
    return list(_CPU)


def device(name) -> Device:
    """The device named like "cpu:0" (a Device is returned as it is)."""
    if isinstance(name, Device):
        return name
    kind, _, idx = str(name).partition(":")
    if kind == "cpu":
        return cpu(int(idx or 0))
    raise ValueError(f"unknown device {name!r}; available: {', '.join(d.name for d in devices())}")
