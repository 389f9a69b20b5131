"""Copying arrays between devices, with the bytes moved, for every pair of kinds.

    host/cpu --put--> gpu, sim          gpu, sim --get--> host/cpu
    gpu --peer_copy--> gpu              sim --copy--> sim
    gpu <-> sim: through the host

CPU devices share host memory: a transfer between two of them copies by
default (the source's executor may reuse its buffers while the destination
still reads), or shares the array with `copy=False` (0 bytes moved).
`transfer` returns the array on the destination and the bytes that crossed,
for the scheduler's reports; `copy` returns just the array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knetflow.devices import discovery
from knetflow.devices.base import Device
from knetflow.devices.simarray import SimArray


@dataclass(frozen=True)
class Moved:
    """The result of a transfer: the array on `dst` and the bytes copied."""

    array: object
    nbytes: int
    src: str
    dst: str


def device_of(array) -> Device | None:
    """The device holding `array`; None for host data (which every CPU device can read)."""
    if type(array) is SimArray:
        return array.device
    if type(array).__module__.startswith("cupy") and hasattr(array, "device"):
        return discovery.gpu(array.device.id)
    return None


def transfer(array, dst, src=None, copy: bool = True) -> Moved:
    """`array` copied to device `dst` (a Device or a name), with the bytes moved.

    `src` names where the array is, for host data (a CPU device, cpu:0 by
    default); for a device array it must agree with the array's own device.
    Example: `transfer(x, "sim:1").array` is x on sim:1.
    """
    dst = discovery.device(dst)
    here = device_of(array)
    if here is None:
        source = discovery.cpu(0) if src is None else discovery.device(src)
        if source.kind != "cpu":
            raise ValueError(f"transfer from {source.name}: the array is host (NumPy) data, "
                             f"not an array on {source.name}")
    else:
        source = here
        if src is not None and discovery.device(src) != here:
            raise ValueError(f"transfer from {discovery.device(src).name}: the array lives on "
                             f"{here.name}")
    return Moved(_move(array, source, dst, copy), _bytes(array, source, dst, copy),
                 source.name, dst.name)


def copy(array, dst, src=None):
    """`array` on device `dst` (see `transfer`)."""
    return transfer(array, dst, src).array


def _bytes(array, src: Device, dst: Device, copy: bool) -> int:
    if src == dst or (src.kind == dst.kind == "cpu" and not copy):
        return 0
    return int(array.nbytes)


def _move(array, src: Device, dst: Device, copy: bool):
    if src == dst:
        return array
    kinds = (src.kind, dst.kind)
    if kinds == ("cpu", "cpu"):
        return np.array(array) if copy else np.asarray(array)
    if src.kind == "cpu":
        return dst.put(np.asarray(array))
    if dst.kind == "cpu":
        return src.get(array)
    if kinds == ("sim", "sim"):
        return SimArray._make(array._data.copy(), dst)
    if kinds == ("gpu", "gpu"):
        from knetflow.devices.gpu import peer_copy

        return peer_copy(array, dst, src)
    return dst.put(src.get(array))  # gpu <-> sim, through the host
