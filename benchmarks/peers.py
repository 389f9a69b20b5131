"""What the benchmark scripts share: thread settings per peer, optional peers, timing.

Thread counts are set explicitly for every peer before it runs anything:

- knetflow (NumPy's BLAS): threadpoolctl's `threadpool_limits(n)`;
- PyTorch: `torch.set_num_threads(n)`;
- JAX (XLA's CPU client): the `PJRT_NPROC` environment variable, which sizes XLA's
  thread pools when its CPU backend starts (jaxlib 0.10 ignores
  `--xla_cpu_multi_thread_eigen=false` and `intra_op_parallelism_threads` for
  this; both are set too for older jaxlibs). It must be set before the backend
  starts, so a script comparing thread counts runs one process per count.

With n threads, the process is also kept on n cores (`pin_cores`, on a machine with
more), so a peer that runs helper threads beside its n gets no extra core.

`threads_used(fn)` checks what a peer actually did: the threads of this process
that ran for at least a tenth of fn's wall time (Linux: /proc/self/task), and the
cores they kept busy (their CPU seconds over the wall time).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time


def set_jax_threads(n: int) -> None:
    """Size XLA's CPU thread pools to n (before jax starts its backend)."""
    os.environ["PJRT_NPROC"] = str(n)
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith(("--xla_cpu_multi_thread_eigen", "intra_op_parallelism"))]
    if n == 1:
        flags += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    os.environ["XLA_FLAGS"] = " ".join(flags)


def pin_cores(n: int) -> str:
    """Keep this process, every thread it has and every thread it starts later, on n
    of the cores it may use (Linux; elsewhere nothing is done); says what was done.

    A peer told to use n threads may still run more: JAX at `PJRT_NPROC=1` keeps a
    second thread 30-40% busy. On n cores every peer gets the same n cores' time.
    """
    if not hasattr(os, "sched_setaffinity"):
        return "cores not pinned (no sched_setaffinity here)"
    allowed = sorted(os.sched_getaffinity(0))
    if n >= len(allowed):
        return f"all {len(allowed)} core(s)"
    cores = set(allowed[:n])
    for tid in os.listdir("/proc/self/task"):  # threads inherit their creator's cores
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:  # a thread that ended meanwhile
            pass
    return f"pinned to core(s) {','.join(map(str, sorted(cores)))} of {len(allowed)}"


def set_blas_threads(n: int) -> str:
    """Limit NumPy's BLAS (and OpenMP) to n threads and the process to n cores
    (`pin_cores`); says what was done, and which OpenBLAS kernels run.

    This environment may set OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) for older
    OpenBLAS builds' sake; `make bench` unsets both, so NumPy's OpenBLAS picks its
    kernels for this CPU, as PyTorch's and XLA's libraries do.
    """
    cores = pin_cores(n)
    try:
        import threadpoolctl
    except ImportError:
        return f"threadpoolctl not installed: NumPy's BLAS at its default thread count; {cores}"
    threadpoolctl.threadpool_limits(n)
    kernels = sorted({str(i.get("architecture")) for i in threadpoolctl.threadpool_info()
                      if i.get("internal_api") == "openblas"})
    pinned = [f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
              if os.environ.get(k)]
    how = f" ({', '.join(pinned)})" if pinned else " (OpenBLAS's own choice)"
    return (f"NumPy BLAS {n} thread(s), {'/'.join(kernels) or 'non-OpenBLAS'} kernels{how}; "
            f"{cores}")


def import_torch(n: int):
    """torch with n threads, or None after a skip line."""
    try:
        import torch
    except ImportError:
        print("skip PyTorch: not installed (pip install torch==2.13.0, or the bench extra)")
        return None
    torch.set_num_threads(n)
    return torch


def import_jax(n: int):
    """jax with XLA's CPU pools sized to n threads, or None after a skip line."""
    set_jax_threads(n)
    try:
        import jax
    except ImportError:
        print("skip JAX: not installed (pip install jax, or the bench extra)")
        return None
    jax.config.update("jax_platforms", "cpu")
    return jax


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _thread_ticks() -> dict:
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[tid] = int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks


def threads_used(fn) -> str:
    """"k threads, c cores": the threads of this process that ran >= 10% of fn()'s wall
    time, and the CPU seconds of all of them over that wall time ("-" off Linux)."""
    try:
        before = _thread_ticks()
    except OSError:
        return "-"
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    after = _thread_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    seconds = [(after[k] - before.get(k, 0)) / hz for k in after]
    busy = sum(s >= 0.1 * wall for s in seconds)
    return f"{busy} thread{'s' * (busy != 1)}, {sum(seconds) / wall:.2f} cores"


def interleaved(peers: dict, repeat: int, warmup: bool = True) -> dict:
    """name -> list of seconds of `repeat` calls of each peer's fn, the peers alternating
    call by call (so a change of machine load hits all of them alike)."""
    if warmup:
        for fn in peers.values():
            fn()
    times = {name: [] for name in peers}
    for _ in range(repeat):
        for name, fn in peers.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_ratio(value: float, width: int) -> str:
    """value right-aligned with 2 decimals, or "-" when it is nan (a peer is missing)."""
    return f"{value:>{width}.2f}" if value == value else f"{'-':>{width}}"


def paired_ratio(a: list, b: list) -> float:
    """The median of a[k] / b[k]: each pair was timed back to back, so a change of machine
    load between rounds cancels out (nan when either list is empty)."""
    pairs = [x / y for x, y in zip(a, b) if y > 0]
    return statistics.median(pairs) if pairs else float("nan")


def per_thread_count(script: str, counts: list, argv) -> None:
    """Run `script` once per thread count in a fresh process (XLA fixes its thread pools
    when its backend starts), passing argv (less its own --threads) and `--threads n`."""
    argv = list(argv if argv is not None else sys.argv[1:])
    if "--threads" in argv:
        k = argv.index("--threads")
        del argv[k:k + 2]
    argv = [a for a in argv if not a.startswith("--threads=")]
    for n in counts:
        print(f"==== {n} thread(s): a fresh process ====", flush=True)
        subprocess.run([sys.executable, script, *argv, "--threads", str(n)], check=True)


def knet_modules():
    """(autograd, trace_cache): the Knet-style front end's modules, in knetflow/train/knet/
    or, in older checkouts, knetflow/train/ (so the scripts run on either side by side)."""
    import importlib

    for package in ("knetflow.train.knet", "knetflow.train"):
        try:
            return (importlib.import_module(package + ".autograd"),
                    importlib.import_module(package + ".trace_cache"))
        except ImportError:
            continue
    raise ImportError("knetflow's autograd and trace_cache modules are in neither "
                      "knetflow/train/knet/ nor knetflow/train/")


def knetflow_entry(f, args):
    """(the cached trace of kf.diff(f, *args), its feed) from knetflow's trace cache, or
    None (with a line saying so) when those internals have moved."""
    try:
        from knetflow.graph.capture import capture

        _, trace_cache = knet_modules()
        cap = capture(f, args, {})
        entry, _ = trace_cache.lookup(f, args, {}, cap)
        return entry, dict(zip(entry.plan.input_names, entry.inputs(cap.leaves, cap)))
    except (ImportError, AttributeError, TypeError) as e:
        print(f"(knetflow's trace cache has moved: {type(e).__name__}: {e}; skipped)")
        return None
