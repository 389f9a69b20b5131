"""Finding devices: `kf.devices()`, `kf.cpu(i)`, `kf.gpu(i)`, `kf.device("gpu:1")`.

The device kinds are the modules imported below, one line each; importing a
kind's module registers it (registry.py), and `kf.devices()` lists CPUs
first, then GPUs, then sim devices (the kinds' `order`). Each kind finds its
devices on first use and they are kept: CPU devices from
`KNETFLOW_CPU_DEVICES` (default 1) unless `set_cpu_devices(n)` says
otherwise, GPUs from CuPy (none when CuPy or CUDA is missing), and strict
simulated devices from `KNETFLOW_SIM_DEVICES` (default 0) or
`set_sim_devices(n)`. Looking up a device that does not exist fails naming
the ones that do.

Nothing in knetflow/devices imports this module: the kinds and transfers look
devices up in the registry.
"""

from __future__ import annotations

# _cpu, _gpu and _sim: the device kinds, one line each (importing a kind registers it)
from knetflow.devices import cpu as _cpu
from knetflow.devices import gpu as _gpu  # noqa: F401
from knetflow.devices import registry
from knetflow.devices import sim as _sim
from knetflow.devices.base import Device
from knetflow.devices.registry import DeviceNotFoundError  # (named here too)

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

set_cpu_devices = _cpu.set_cpu_devices
set_sim_devices = _sim.set_sim_devices


def rediscover() -> list:
    """Forget the device lists: the environment and CuPy are looked at again on next use."""
    registry.forget()
    return devices()


def devices() -> list:
    """Every device knetflow can use: CPU devices first, then GPUs, then sim devices.

    Example: `[d.name for d in kf.devices()]` gives `['cpu:0']` on a machine without GPU.
    """
    return registry.devices()


def cpu(i: int = 0) -> Device:
    """The i-th CPU device (MXNet's `mx.cpu(i)`)."""
    return registry.lookup("cpu", i)


def gpu(i: int = 0) -> Device:
    """The i-th GPU (MXNet's `mx.gpu(i)`); fails, listing the devices there are, without one."""
    return registry.lookup("gpu", i)


def sim(i: int = 0) -> Device:
    """The i-th strict simulated device (see `set_sim_devices`)."""
    return registry.lookup("sim", i)


def device(name) -> Device:
    """The device named like "gpu:1" ("cpu" means "cpu:0"); a Device is returned as it is.

    Any registered kind's devices are found by name. Also a context manager
    annotating the symbols built inside it:
        >>> import knetflow as kf
        >>> with kf.device("cpu:0"):
        ...     y = kf.placeholder("x", (2,)) * 2
        >>> y.node.device
        'cpu:0'
    """
    if isinstance(name, Device):
        return name
    return registry.device(name)
