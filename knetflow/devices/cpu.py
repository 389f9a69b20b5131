"""CPU devices: NumPy arrays in host memory, a share of the machine's cores each.

`KNETFLOW_CPU_DEVICES=N` (or `kf.set_cpu_devices(N)`) makes N CPU devices
cpu:0..N-1. They share host memory, so a NumPy array is on all of them at
once; what they split is the cores. Each device's executor thread runs its
own ops (NumPy releases the GIL in BLAS and most ufuncs), and each device
gets `cores // N` BLAS threads (at least one), so two CPU devices on two
cores run one BLAS thread each instead of four threads fighting over two
cores. OpenBLAS and MKL size their thread pools per process, not per calling
thread, so the budget is applied process-wide through threadpoolctl (when it
is installed); all CPU devices have the same share, so that is each device's
share too.

The kind (`CpuKind`, registered at the end): host data, so NumPy arrays are
not device arrays and every CPU device reads them; `xp` is numpy, special
functions come from scipy.special, and devices come from
`KNETFLOW_CPU_DEVICES` (default 1) or `set_cpu_devices(n)`.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from knetflow.devices import registry, transfers
from knetflow.devices.base import Device, is_device_array


def machine_cores() -> int:
    """The number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_share(n_devices: int, cores: int | None = None) -> int:
    """BLAS threads for each of `n_devices` CPU devices: an equal share of the cores, at least 1."""
    cores = machine_cores() if cores is None else cores
    return max(1, cores // max(1, n_devices))


def host_memory() -> dict:
    """Available and total host memory in bytes (None when the system does not say)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kib = {k: int(v.split()[0]) * 1024 for k, v in fields.items()
               if k in ("MemAvailable", "MemTotal")}
        return {"free": kib.get("MemAvailable"), "total": kib.get("MemTotal")}
    except (OSError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return {"free": os.sysconf("SC_AVPHYS_PAGES") * page,
                "total": os.sysconf("SC_PHYS_PAGES") * page}
    except (AttributeError, ValueError, OSError):
        return {"free": None, "total": None}


class CpuDevice(Device):
    """A CPU device: `xp` is numpy; `threads` is its BLAS thread budget."""

    kind = "cpu"

    def __init__(self, index: int = 0, threads: int | None = None, n_devices: int = 1,
                 memory_budget: int | None = None):
        super().__init__(index, memory_budget)
        self.threads = thread_share(n_devices) if threads is None else int(threads)
        self._n_devices = max(1, n_devices)

    @property
    def xp(self):
        return np

    def put(self, array):
        """`array` as a NumPy array (no copy when it already is one: host memory is shared)."""
        if isinstance(array, np.ndarray):
            return array
        if is_device_array(array):
            return transfers.copy(array, self)
        return np.asarray(array)

    def get(self, array) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array
        if is_device_array(array):
            return transfers.copy(array, self)
        return np.asarray(array)

    def owns(self, array) -> bool:
        """NumPy arrays live in host memory, which every CPU device shares."""
        return isinstance(array, np.ndarray)

    def activate(self):
        """Applies the BLAS thread budget (process-wide; every CPU device has the same)."""
        blas.limit(self.threads if self._n_devices > 1 else None)
        return super().activate()

    def memory_info(self) -> dict:
        return host_memory()

    def _default_budget(self) -> int | None:
        total = host_memory()["total"]
        return None if total is None else total // self._n_devices

    def __repr__(self) -> str:
        return f"CpuDevice({self.name!r}, threads={self.threads})"


class _BlasBudget:
    """The process-wide BLAS thread limit, set through threadpoolctl when it is installed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # no kernel holds BLAS to one thread
        self._held = 0
        self._limiter = None
        self.threads: int | None = None   # the limit in force; None = the libraries' own

    @property
    def available(self) -> bool:
        try:
            import threadpoolctl  # noqa: F401
        except ImportError:
            return False
        return True

    def limit(self, threads: int | None) -> bool:
        """Limit BLAS to `threads` per call (None restores the original); False if impossible."""
        if threads == self.threads:
            return True
        with self._idle:
            # a kernel running work on BLAS's own threads holds BLAS to one thread; more
            # threads then would make those threads wait for themselves: wait until it ends
            self._idle.wait_for(lambda: not self._held)
            if threads == self.threads:
                return True
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                return False
            if self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None
            if threads is not None:
                self._limiter = threadpool_limits(limits=threads, user_api="blas")
            self.threads = threads
            return True

    def hold(self) -> None:
        """Say a kernel has set BLAS to one thread and runs work on BLAS's own threads
        (ops/cpu_threads.py): `limit` waits until every hold is released."""
        with self._idle:
            self._held += 1

    def release(self) -> None:
        with self._idle:
            self._held -= 1
            if not self._held:
                self._idle.notify_all()

    def _after_fork(self) -> None:
        """In a forked child: the parent's kernels' holds did not come along."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._held = 0

    def current(self) -> list:
        """(library, threads) of each BLAS library loaded in the process (needs threadpoolctl)."""
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return []
        return [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info()
                if i.get("user_api") == "blas"]


blas = _BlasBudget()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=blas._after_fork)

#: OpenBLAS kernels (its OPENBLAS_CORETYPE names) that use AVX-512
_AVX512_KERNELS = {"skylakex", "cooperlake", "sapphirerapids"}


def cpu_flags() -> set:
    """The instruction-set flags of this machine's CPU (Linux /proc/cpuinfo; else empty)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def blas_report(info=None, environ=None, flags=None) -> list:
    """Lines on NumPy's BLAS for `knetflow devices`: each library's version, kernel and
    threads, then a hint when OPENBLAS_CORETYPE pins OpenBLAS to kernels without the
    AVX-512 this CPU has (its GEMMs then run well below the machine's rate). The hint
    names the OpenBLAS version: the pin is unset safely only where that build's AVX-512
    kernels are sound (some older builds' gave wrong results).

    `info` (threadpoolctl's threadpool_info), `environ` and `flags` (cpu_flags()) default
    to this process's.

    Example:
        >>> blas_report([{"user_api": "blas", "internal_api": "openblas", "version": "0.3.30",
        ...               "architecture": "Haswell", "num_threads": 2}],
        ...             {"OPENBLAS_CORETYPE": "Haswell"}, {"avx2", "avx512f"})[1][:45]
        'hint: OPENBLAS_CORETYPE=Haswell pins OpenBLAS'
    """
    if info is None:
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return ["BLAS: unknown (threadpoolctl is not installed)"]
        info = threadpool_info()
    environ = os.environ if environ is None else environ
    libs = [i for i in info if i.get("user_api") == "blas"]
    lines = [f"BLAS: {i.get('internal_api')} {i.get('version')}, "
             f"{i.get('architecture') or 'unknown'} kernels, {i.get('num_threads')} threads"
             for i in libs]
    pinned = environ.get("OPENBLAS_CORETYPE")
    slow = [i for i in libs if i.get("internal_api") == "openblas"
            and str(i.get("architecture", "")).lower() not in _AVX512_KERNELS]
    flags = cpu_flags() if flags is None else flags
    if pinned and slow and "avx512f" in flags:
        versions = "/".join(sorted({str(i.get("version")) for i in slow}))
        lines.append(f"hint: OPENBLAS_CORETYPE={pinned} pins OpenBLAS to kernels without "
                     "the AVX-512 this CPU has, so matrix products run well below its rate. "
                     "Some machines set it because older OpenBLAS builds gave wrong results "
                     f"with AVX-512; if this one ({versions}) is not such a build, unset it "
                     "(and OPENBLAS_L2_SIZE) before Python starts")
    return lines


def make_cpu_devices(n: int, cores: int | None = None) -> list:
    """CPU devices cpu:0..n-1, each with an equal share of the cores (`use` them to apply it)."""
    if n < 1:
        raise ValueError(f"need at least one CPU device, got {n}")
    share = thread_share(n, cores)
    return [CpuDevice(i, threads=share, n_devices=n) for i in range(n)]


def use(cpu_devices: list) -> list:
    """Make these the process's CPU devices: BLAS limited to their share (none for one device)."""
    n = len(cpu_devices)
    blas.limit(cpu_devices[0].threads if n > 1 else None)
    return cpu_devices


def set_cpu_devices(n: int) -> list:
    """Expose `n` CPU devices cpu:0..n-1, each with an equal share of the cores for BLAS.

    Overrides `KNETFLOW_CPU_DEVICES`. Example: `kf.set_cpu_devices(2)`, then
    `kf.compile(..., devices=[kf.cpu(0), kf.cpu(1)])`.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"set_cpu_devices needs n >= 1, got {n}")
    return registry.set_found("cpu", use(make_cpu_devices(n)))


class CpuKind(registry.DeviceKind):
    """CPU devices as a kind: host memory, NumPy, scipy.special."""

    name = "cpu"
    order = 0
    host = True
    flops = 2e10

    def discover(self) -> list:
        return use(make_cpu_devices(registry.env_count("KNETFLOW_CPU_DEVICES", 1, 1)))

    def why_missing(self, found: list) -> str:
        return " (set KNETFLOW_CPU_DEVICES or call kf.set_cpu_devices(n) for more)"

    def array_types(self) -> tuple:
        return (np.ndarray,)

    def device_of(self, array):
        return None  # host memory: on every CPU device at once

    def owns_module(self, xp) -> bool:
        return xp is np

    def array_module(self, array):
        return np

    def special(self, xp):
        from scipy import special  # imported on first use: scipy is slow to import

        return special


registry.register(CpuKind())
