"""The Device interface: where arrays live and ops run.

A device has a `name` ("cpu:0", "gpu:1", "sim:0"), a `kind` ("cpu", "gpu",
"sim"), an `index`, and an array module `xp` that op forwards are written
against (numpy on a CPU, cupy on a GPU, a strict NumPy stand-in on a sim
device). `put` moves host data onto the device, `get` brings an array back
as NumPy, `synchronize` waits for queued work, `activate()` makes it current
for the calling thread (the CUDA device and stream on a GPU, the BLAS thread
budget on a CPU). `memory_info()` and `memory_budget` say how much memory
there is, where that is known; `threads` is a CPU device's BLAS share.

A Device is also a context manager: `with kf.device("cpu:1"): ...`
annotates the symbols built inside it with that device (see annotate.py).

Devices compare and hash by name, and compare equal to their name as a
string, so a placement table keyed by "cpu:1" finds `kf.cpu(1)` too. One
file per kind (cpu.py, gpu.py, sim.py) overrides a few hooks of Device and of
`registry.DeviceKind`, and registers the kind; only gpu.py (with gpu_cudnn.py)
imports CuPy, lazily. `is_device_array` is the registry's, named here too
because the other floors import it from here.
"""

from __future__ import annotations

import contextlib

import numpy as np

from knetflow.devices import annotate
from knetflow.devices.registry import is_device_array  # noqa: F401  (the registry answers)


class Device:
    """A place where arrays live and ops run (the interface every kind implements)."""

    kind = "?"
    #: BLAS threads this device may use (CPU devices); None where it does not apply
    threads: int | None = None

    def __init__(self, index: int = 0, memory_budget: int | None = None):
        self.index = int(index)
        self.name = f"{self.kind}:{self.index}"
        self._budget = memory_budget

    # -- the hooks each kind provides --
    @property
    def xp(self):
        """The array module op forwards use on this device."""
        raise NotImplementedError

    def put(self, array):
        """`array` on this device: host data is copied in; an array here is returned as is."""
        raise NotImplementedError

    def get(self, array) -> np.ndarray:
        """`array` as a NumPy array on the host."""
        raise NotImplementedError

    def owns(self, array) -> bool:
        """Whether `array` lives on this device."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until the work queued on this device has finished."""

    def activate(self):
        """A context making this device current for the calling thread (executors use it)."""
        return contextlib.nullcontext(self)

    def rng(self, seed=None):
        """A random Generator whose draws are arrays on this device."""
        return np.random.default_rng(seed)

    def memory_info(self) -> dict:
        """Memory of this device in bytes: at least "free" and "total" (None when unknown)."""
        return {"free": None, "total": None}

    # -- memory budget: what a plan may use here (the scheduler checks its peak against it) --
    @property
    def memory_budget(self) -> int | None:
        """Bytes a plan may use on this device; None when unlimited or unknown."""
        if self._budget is None:
            self._budget = self._default_budget()
        return self._budget

    @memory_budget.setter
    def memory_budget(self, nbytes: int | None) -> None:
        self._budget = None if nbytes is None else int(nbytes)

    def _default_budget(self) -> int | None:
        return None

    # -- annotation: `with device: ...` --
    def __enter__(self):
        annotate.push(self.name)
        return self

    def __exit__(self, *exc) -> None:
        annotate.pop(self.name)

    # -- identity --
    def __eq__(self, other) -> bool:
        if isinstance(other, Device):
            return other.name == self.name
        if isinstance(other, str):
            return other == self.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def describe(self) -> str:
        """One line for `knetflow devices`: name, kind, threads and memory where known."""
        parts = [f"{self.name} {self.kind}"]
        if self.threads is not None:
            parts.append(f"threads={self.threads}")
        info = self.memory_info()
        if info.get("total"):
            free = info.get("free")
            free_text = f"{_gib(free)} free of " if free is not None else ""
            parts.append(f"memory {free_text}{_gib(info['total'])}")
        budget = self.memory_budget
        if budget is not None:
            parts.append(f"budget {_gib(budget)}")
        return "  ".join(parts)


def _gib(nbytes: int) -> str:
    if nbytes >= 1 << 30:
        return f"{nbytes / (1 << 30):.1f} GiB"
    return f"{nbytes / (1 << 20):.1f} MiB"
