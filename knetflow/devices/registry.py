"""The registry of device kinds: each kind of device is one plug-in.

A device kind (cpu, gpu, sim, or one you add) is a file in knetflow/devices/
that subclasses `DeviceKind` and calls `register` with it at import time;
discovery.py imports the kind files, one line each. `kf.devices()` lists the
kinds by their `order` (cpu, gpu, sim, then added kinds by registration).
Everything else in knetflow asks the registry, never a kind's module, and
never looks at module names:

    question                            asked as                    a kind answers with
    is this array a device array?       is_device_array(a)          array_types(), owns(a)
    which device holds it?              device_of(a)                device_of(a)
    which array module runs ops on it?  array_module(arrays)        array_module(a)
    which kind's array module is xp?    module_kind(xp)             owns_module(xp)
    special functions for xp            special(xp)                 special(xp)
    out[where] += update, repeats kept  scatter_add(xp, ...)        scatter_add(xp, ...)
    a copy between two of its devices   (devices/transfers.py)      peer_copy(a, src, dst)
    how fast it computes                flops()                     flops
    its devices                         found(name), device(name)   discover(), why_missing()
    a faster kernel for an op           fast_kernel(op, xp, attrs)  (registered from above)

Kinds are asked in that order and the first that claims an array or an
array module answers, so a kind can be narrower than its array type (two
kinds may share an array class and tell their arrays apart by device).

Fast kernels (cuDNN's for the GPU) are written against op semantics, which
live in knetflow/ops, a floor above this one. So the ops floor registers them
for a kind by name (`set_fast_kernels("gpu", pick)`), and `ops/base.kernel`
asks `fast_kernel` here: devices never import ops, and a kind needs no
change to gain or lose fast kernels.

The registry imports nothing of knetflow: the kinds import it. It also keeps
the devices each kind found (`found`), so kinds and transfers look devices up
here without importing discovery.py, which sits above the kinds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

__all__ = [
    "DeviceKind", "DeviceNotFoundError", "array_module", "device", "device_of", "devices",
    "env_count", "fast_kernel", "flops", "forget", "found", "is_device_array",
    "is_device_array_type", "kind", "kind_of", "kinds", "lookup", "module_kind", "register",
    "scatter_add", "set_fast_kernels", "set_found", "special", "unregister",
]


class DeviceNotFoundError(LookupError, ValueError):
    """No device of that name here; the message lists the devices there are."""


class DeviceKind:
    """One kind of device, as the rest of knetflow sees it: subclass it and override the hooks.

    `name` is the prefix of its devices' names ("gpu" in "gpu:1"); `order` says
    where `kf.devices()` lists them (lower first; equal orders by registration).
    `host` says its arrays are host data that every device of the kind reads
    (the CPU's NumPy arrays): such arrays are not device arrays, and transfers
    between two devices of a host kind copy or share memory. `flops` is its
    compute rate in flop/s, for the scheduler's cost model.
    """

    name = "?"
    order = 100
    host = False
    flops = 2e10

    # -- its devices --
    def discover(self) -> list:
        """The devices of this kind, in index order ([] when there are none, never an error)."""
        return []

    def why_missing(self, found: list) -> str:
        """A note for a lookup that missed among `found`, e.g. " (set KNETFLOW_..._DEVICES)"."""
        return ""

    # -- its arrays --
    def array_types(self) -> tuple:
        """The classes of this kind's arrays (never imports a library to find them)."""
        return ()

    def owns(self, array) -> bool:
        """Whether `array` is an array of this kind."""
        types = self.array_types()
        return bool(types) and isinstance(array, types)

    def device_of(self, array):
        """The device of this kind holding `array` (one this kind owns)."""
        raise NotImplementedError(f"{self.name} devices do not say where their arrays are")

    # -- its array module --
    def owns_module(self, xp) -> bool:
        """Whether `xp` is the array module of this kind's devices."""
        return False

    def array_module(self, array):
        """The array module that runs ops on `array`, one of this kind's (its device's `xp`)."""
        return self.device_of(array).xp

    def special(self, xp):
        """The special-functions module (scipy.special's counterpart) for arrays of `xp`."""
        raise NotImplementedError(f"{self.name} devices have no special functions")

    def scatter_add(self, xp, out, where, update) -> None:
        """out[where] += update, every repeat of an index counted (NumPy's add.at)."""
        xp.add.at(out, where, update)

    # -- its transfers --
    def peer_copy(self, array, src, dst):
        """`array` (on `src`) copied to `dst`, another device of this kind; through the host
        unless the kind has a direct path."""
        return dst.put(src.get(array))

    def __repr__(self) -> str:
        return f"<device kind {self.name!r}>"


_kinds: list = []                 # by order, then registration: how kf.devices() lists them
_by_name: dict = {}
_found: dict = {}                 # kind name -> its devices, once discovered
_fast: dict = {}                  # kind name -> pick(op name, xp, attrs) -> kernel or None
_lock = threading.RLock()


# ---- the kinds ----


def register(new: DeviceKind) -> DeviceKind:
    """Add a device kind (each kind's file calls this once, at import); returns it."""
    with _lock:
        if new.name in _by_name:
            raise ValueError(f"a device kind named {new.name!r} is registered already")
        if not new.name or ":" in new.name or new.name != new.name.strip().lower():
            raise ValueError(f"a device kind needs a lowercase name without ':', got "
                             f"{new.name!r}")
        _kinds.append(new)
        _kinds.sort(key=lambda k: k.order)  # stable: registration order among equals
        _by_name[new.name] = new
        _found.pop(new.name, None)
    return new


def unregister(name: str) -> None:
    """Remove the kind `name` and forget its devices (tests add and remove kinds)."""
    with _lock:
        gone = _by_name.pop(name)
        _kinds.remove(gone)
        _found.pop(name, None)


def kinds() -> list:
    """The registered device kinds, in the order kf.devices() lists them."""
    return list(_kinds)


def kind(name: str) -> DeviceKind:
    """The device kind called `name`."""
    try:
        return _by_name[name]
    except KeyError:
        raise DeviceNotFoundError(f"no device kind {name!r}; the kinds are "
                                  f"{', '.join(_by_name)}") from None


# ---- arrays and array modules ----


def kind_of(array) -> DeviceKind | None:
    """The kind that owns `array` (the first to claim it); None for what no kind owns
    (Python scalars, lists, other libraries' arrays)."""
    for k in _kinds:
        if k.owns(array):
            return k
    return None


def is_device_array(array) -> bool:
    """Whether `array` lives on a device (a GPU's or a sim device's), not in host memory."""
    if type(array) is np.ndarray:  # the common case, without asking every kind
        return False
    k = kind_of(array)
    return k is not None and not k.host


def is_device_array_type(t: type) -> bool:
    """Whether arrays of class `t` live on a device (by type, for caches keyed by type)."""
    for k in _kinds:
        types = k.array_types()
        if types and issubclass(t, types):
            return not k.host
    return False


def device_of(array):
    """The device holding `array`; None for host data (which every CPU device can read)."""
    k = kind_of(array)
    if k is None or k.host:
        return None
    return k.device_of(array)


def array_module(arrays):
    """The array module that runs an op on `arrays`: the first device array's kind says;
    NumPy when they are all host data."""
    for a in arrays:
        k = kind_of(a)
        if k is not None and not k.host:
            return k.array_module(a)
    return np


def module_kind(xp) -> DeviceKind | None:
    """The kind whose devices compute with array module `xp`; None for other modules."""
    for k in _kinds:
        if k.owns_module(xp):
            return k
    return None


def _kind_of_module(xp) -> DeviceKind:
    k = module_kind(xp)
    if k is None:
        raise LookupError(f"{xp!r} is the array module of no device kind (kinds: "
                          f"{', '.join(_by_name)})")
    return k


def special(xp):
    """The special-functions module for arrays of `xp`: scipy.special, cupyx.scipy.special..."""
    return _kind_of_module(xp).special(xp)


def scatter_add(xp, out, where, update) -> None:
    """out[where] += update for arrays of `xp`, every repeat of an index counted."""
    _kind_of_module(xp).scatter_add(xp, out, where, update)


def flops() -> dict:
    """Compute rates by kind name (flop/s), for the scheduler's cost model."""
    return {k.name: k.flops for k in _kinds}


# ---- fast kernels, registered by the floor that knows the ops ----


def set_fast_kernels(name: str, pick: Callable | None) -> None:
    """Install pick(op name, xp, attrs) -> kernel or None for the arrays of kind `name`
    (None removes it). ops/cudnn.py registers cuDNN's for "gpu"."""
    with _lock:
        if pick is None:
            _fast.pop(name, None)
        else:
            _fast[name] = pick


def fast_kernel(opname: str, xp, attrs: dict) -> Callable | None:
    """A faster kernel than the op's xp forward for `opname` on `xp`'s kind, or None."""
    k = module_kind(xp)
    pick = None if k is None else _fast.get(k.name)
    return None if pick is None else pick(opname, xp, attrs)


# ---- the devices of each kind: discovered on first use, then kept ----


def found(name: str) -> list:
    """The devices of kind `name`, discovered on first use and kept (see `forget`)."""
    devices_ = _found.get(name)
    if devices_ is not None:
        return devices_
    with _lock:
        if _found.get(name) is None:
            _found[name] = list(kind(name).discover())
        return _found[name]


def set_found(name: str, devices_: list) -> list:
    """Make `devices_` the devices of kind `name` (`kf.set_cpu_devices` and the like)."""
    with _lock:
        kind(name)
        _found[name] = list(devices_)
        return list(devices_)


def forget(name: str | None = None) -> None:
    """Forget the devices of kind `name` (of every kind when None): found anew on next use."""
    with _lock:
        if name is None:
            _found.clear()
        else:
            _found.pop(name, None)


def devices() -> list:
    """Every device of every kind, kinds in order, each by index."""
    return [d for k in kinds() for d in found(k.name)]


def lookup(name: str, index) -> object:
    """Device `index` of kind `name`; an error naming the devices there are when missing."""
    try:
        i = int(index)
    except (TypeError, ValueError):
        raise DeviceNotFoundError(f"bad device index {index!r} for {name}") from None
    k = kind(name)
    listed = found(name)
    if 0 <= i < len(listed):
        return listed[i]
    raise DeviceNotFoundError(f"no device {name}:{i}{k.why_missing(listed)}; available devices: "
                              f"{_names()}")


def device(name):
    """The device named like "gpu:1" ("cpu" means "cpu:0"); a device is returned as it is."""
    if not isinstance(name, str) and hasattr(name, "kind") and hasattr(name, "index"):
        return name
    text = str(name).strip().lower()
    prefix, _, index = text.partition(":")
    if prefix not in _by_name:
        raise DeviceNotFoundError(f"unknown device {name!r}; available devices: {_names()}")
    return lookup(prefix, index or 0)


def _names() -> str:
    return ", ".join(d.name for d in devices())


def env_count(var: str, default: int, minimum: int) -> int:
    """A device count from environment variable `var` (`default` when unset)."""
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
