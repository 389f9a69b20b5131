"""Copying arrays between devices, with the bytes moved, for every pair of kinds.

    host/cpu --put--> any device          any device --get--> host/cpu
    a kind's device --peer_copy--> another of that kind (the kind's rule:
                                   gpu: a CUDA peer copy; sim: a copy)
    two other kinds: through the host

CPU devices share host memory: a transfer between two of them copies by
default (the source's executor may reuse its buffers while the destination
still reads), or shares the array with `copy=False` (0 bytes moved).
`transfer` returns the array on the destination and the bytes that crossed,
for the scheduler's reports; `copy` returns just the array.

The rules come from the registry (`DeviceKind.host`, `DeviceKind.peer_copy`),
so this module knows no kind by name and imports none of the kind modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from knetflow.devices import registry
from knetflow.devices.registry import device_of  # noqa: F401  (where the floors above look)

if TYPE_CHECKING:
    from knetflow.devices.base import Device


@dataclass(frozen=True)
class Moved:
    """The result of a transfer: the array on `dst` and the bytes copied."""

    array: object
    nbytes: int
    src: str
    dst: str


def transfer(array, dst, src=None, copy: bool = True) -> Moved:
    """`array` copied to device `dst` (a Device or a name), with the bytes moved.

    `src` names where the array is, for host data (a CPU device, cpu:0 by
    default); for a device array it must agree with the array's own device.
    Example: `transfer(x, "sim:1").array` is x on sim:1.
    """
    dst = registry.device(dst)
    here = registry.device_of(array)
    if here is None:
        source = _host_device() if src is None else registry.device(src)
        if not _host(source):
            raise ValueError(f"transfer from {source.name}: the array is host (NumPy) data, "
                             f"not an array on {source.name}")
    else:
        source = here
        if src is not None and registry.device(src) != here:
            raise ValueError(f"transfer from {registry.device(src).name}: the array lives on "
                             f"{here.name}")
    return Moved(_move(array, source, dst, copy), _bytes(array, source, dst, copy),
                 source.name, dst.name)


def copy(array, dst, src=None):
    """`array` on device `dst` (see `transfer`)."""
    return transfer(array, dst, src).array


def to_host(value, copy: bool = False) -> np.ndarray:
    """`value` as a NumPy array: a device array (of any kind) copied to the host, anything
    else through np.asarray (a copy when `copy`): the one way knetflow brings values home.

    Example:
        >>> import numpy as np
        >>> a = np.arange(3)
        >>> to_host(a) is a, to_host(a, copy=True) is a
        (True, False)
    """
    if registry.is_device_array(value):
        return registry.device_of(value).get(value)
    return np.array(value) if copy else np.asarray(value)


def _host(device: Device) -> bool:
    return registry.kind(device.kind).host


def _host_device() -> Device:
    """Where host data is when the caller does not say: the host kind's first device (cpu:0)."""
    host = next(k for k in registry.kinds() if k.host)
    return registry.lookup(host.name, 0)


def _bytes(array, src: Device, dst: Device, copy: bool) -> int:
    if src == dst or (_host(src) and _host(dst) and not copy):
        return 0
    return int(array.nbytes)


def _move(array, src: Device, dst: Device, copy: bool):
    if src == dst:
        return array
    src_host, dst_host = _host(src), _host(dst)
    if src_host and dst_host:
        return np.array(array) if copy else np.asarray(array)
    if src_host:
        return dst.put(np.asarray(array))
    if dst_host:
        return src.get(array)
    if src.kind == dst.kind:
        return registry.kind(src.kind).peer_copy(array, src, dst)
    return dst.put(src.get(array))  # e.g. gpu <-> sim, through the host
