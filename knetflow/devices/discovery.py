"""Finding devices: `kf.devices()`, `kf.cpu(i)`, `kf.gpu(i)`, `kf.device("gpu:1")`.

The device lists are made on first use and kept: CPU devices from
`KNETFLOW_CPU_DEVICES` (default 1) unless `set_cpu_devices(n)` says
otherwise, GPUs from CuPy (none when CuPy or CUDA is missing), and strict
simulated devices from `KNETFLOW_SIM_DEVICES` (default 0) or
`set_sim_devices(n)`. `kf.devices()` lists CPUs first, then GPUs, then sim
devices. Looking up a device that does not exist fails naming the ones that do.
"""

from __future__ import annotations

import os
import threading

from knetflow.devices import cpu as _cpu
from knetflow.devices import gpu as _gpu
from knetflow.devices.base import Device
from knetflow.devices.sim import SimDevice

__all__ = [
    "DeviceNotFoundError",
    "cpu",
    "device",
    "devices",
    "gpu",
    "rediscover",
    "set_cpu_devices",
    "set_sim_devices",
    "sim",
]

_lock = threading.RLock()
_found: dict = {"cpu": None, "gpu": None, "sim": None}


class DeviceNotFoundError(LookupError, ValueError):
    """No device of that name here; the message lists the devices there are."""


def _env_count(var: str, default: int, minimum: int) -> int:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        n = int(text)
    except ValueError:
        n = minimum - 1
    if n < minimum:
        raise ValueError(f"{var} must be a whole number >= {minimum}, got {text!r}")
    return n


def _list(kind: str) -> list:
    found = _found[kind]
    if found is not None:
        return found
    with _lock:
        if _found[kind] is None:
            if kind == "cpu":
                _found["cpu"] = _cpu.use(_cpu.make_cpu_devices(
                    _env_count("KNETFLOW_CPU_DEVICES", 1, 1)))
            elif kind == "gpu":
                _found["gpu"] = _gpu.discover()
            else:
                _found["sim"] = _make_sims(_env_count("KNETFLOW_SIM_DEVICES", 0, 0))
        return _found[kind]


def _make_sims(n: int, memory_budget: int | None = None) -> list:
    return [SimDevice(i, memory_budget=memory_budget) for i in range(n)]


def set_cpu_devices(n: int) -> list:
    """Expose `n` CPU devices cpu:0..n-1, each with an equal share of the cores for BLAS.

    Overrides `KNETFLOW_CPU_DEVICES`. Example: `kf.set_cpu_devices(2)`, then
    `kf.compile(..., devices=[kf.cpu(0), kf.cpu(1)])`.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"set_cpu_devices needs n >= 1, got {n}")
    with _lock:
        _found["cpu"] = _cpu.use(_cpu.make_cpu_devices(n))
        return list(_found["cpu"])


def set_sim_devices(n: int, memory_budget: int | None = None) -> list:
    """Expose `n` strict simulated devices sim:0..n-1 (for tests; see knetflow.devices.sim).

    `memory_budget` (bytes per device) makes allocations past it fail.
    Overrides `KNETFLOW_SIM_DEVICES`; `set_sim_devices(0)` removes them.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"set_sim_devices needs n >= 0, got {n}")
    with _lock:
        _found["sim"] = _make_sims(n, memory_budget)
        return list(_found["sim"])


def rediscover() -> list:
    """Forget the device lists: the environment and CuPy are looked at again on next use."""
    with _lock:
        for kind in _found:
            _found[kind] = None
    return devices()


def devices() -> list:
    """Every device knetflow can use: CPU devices first, then GPUs, then sim devices.

    Example: `[d.name for d in kf.devices()]` gives `['cpu:0']` on a machine without GPU.
    """
    return _list("cpu") + _list("gpu") + _list("sim")


def _lookup(kind: str, i) -> Device:
    found = _list(kind)
    try:
        i = int(i)
    except (TypeError, ValueError):
        raise DeviceNotFoundError(f"bad device index {i!r} for {kind}") from None
    if 0 <= i < len(found):
        return found[i]
    raise DeviceNotFoundError(f"no device {kind}:{i}{_why_none(kind)}; available devices: "
                              f"{', '.join(d.name for d in devices())}")


def _why_none(kind: str) -> str:
    if kind == "gpu" and not _list("gpu"):
        return f" (no GPU: {_gpu.unavailable_reason()})"
    if kind == "cpu":
        return " (set KNETFLOW_CPU_DEVICES or call kf.set_cpu_devices(n) for more)"
    if kind == "sim":
        return " (set KNETFLOW_SIM_DEVICES or call kf.set_sim_devices(n) for some)"
    return ""


def cpu(i: int = 0) -> Device:
    """The i-th CPU device (MXNet's `mx.cpu(i)`)."""
    return _lookup("cpu", i)


def gpu(i: int = 0) -> Device:
    """The i-th GPU (MXNet's `mx.gpu(i)`); fails, listing the devices there are, without one."""
    return _lookup("gpu", i)


def sim(i: int = 0) -> Device:
    """The i-th strict simulated device (see `set_sim_devices`)."""
    return _lookup("sim", i)


def device(name) -> Device:
    """The device named like "gpu:1" ("cpu" means "cpu:0"); a Device is returned as it is.

    Also a context manager annotating the symbols built inside it:
        >>> import knetflow as kf
        >>> with kf.device("cpu:0"):
        ...     y = kf.placeholder("x", (2,)) * 2
        >>> y.node.device
        'cpu:0'
    """
    if isinstance(name, Device):
        return name
    text = str(name).strip().lower()
    kind, _, index = text.partition(":")
    if kind in ("cpu", "gpu", "sim"):
        return _lookup(kind, index or 0)
    raise DeviceNotFoundError(f"unknown device {name!r}; available devices: "
                              f"{', '.join(d.name for d in devices())}")
