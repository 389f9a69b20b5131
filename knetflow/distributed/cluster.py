"""Finding a Dask cluster to train on: connect to one, or start a local one.

`connect(None)` starts an in-process `LocalCluster` of worker processes
(one thread each) listening on 127.0.0.1 only, and closing the returned
`Connection` shuts it down. `connect("tcp://host:8786")` or
`connect(client)` uses an existing cluster, which it never closes (nor a
user's client; the client it made for an address, it does close). A user's
`distributed.Security` (TLS) is passed to the cluster and the client as is.

Before a fit, `check_workers` asks every worker to import knetflow, so a
worker set up without it fails with a message naming that worker, not with
an unpickling error deep inside Dask.
"""

from __future__ import annotations

import importlib

from knetflow.version import __version__

__all__ = ["ClusterError", "Connection", "WorkerSetupError", "check_workers", "connect"]


class ClusterError(ConnectionError):
    """The Dask scheduler cannot be reached (the message names its address)."""


class WorkerSetupError(RuntimeError):
    """A worker cannot run knetflow (it is missing or cannot be imported there)."""


class Connection:
    """A Dask client and, when knetflow started it, the LocalCluster behind it.
    `own_client`: knetflow made the client (for an address), so it closes it too."""

    _CLOSE_SECONDS = 30  # a cluster that does not stop within this raises, never hangs

    def __init__(self, client, cluster=None, own_client=False):
        self.client, self.cluster = client, cluster
        self.own_client = own_client or cluster is not None

    @property
    def owned(self) -> bool:
        """Whether knetflow started the cluster (and closes it)."""
        return self.cluster is not None

    def workers(self, wait: float = 60.0) -> list:
        """Addresses of the workers, sorted (the order of ranks).

        A cluster whose workers are (re)starting has none for a moment: wait up to
        `wait` seconds for one before answering none."""
        found = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if found or wait <= 0:
            return found
        try:
            self.client.wait_for_workers(1, timeout=wait)
        except TimeoutError:
            return []
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def dashboard(self):
        """The dashboard's address, or None when the scheduler serves none."""
        services = self.client.scheduler_info(n_workers=0).get("services", {})
        if "dashboard" not in services:
            return None
        try:  # the HTTP server always runs; without bokeh it serves no dashboard
            has_bokeh = self.client.run_on_scheduler(_make_bokeh_probe())
        except Exception:  # noqa: BLE001 - a scheduler refusing to run code: say nothing
            return None
        return self.client.dashboard_link if has_bokeh else None

    def close(self) -> None:
        """Close what knetflow opened: its client and LocalCluster (not a user's); the
        cluster even when closing the client fails."""
        client, cluster = self.client if self.own_client else None, self.cluster
        self.own_client, self.cluster = False, None
        try:
            if client is not None:
                client.close(timeout=self._CLOSE_SECONDS)
        finally:
            if cluster is not None:
                cluster.close(timeout=self._CLOSE_SECONDS)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def connect(client_or_address=None, n_workers=2, threads_per_worker=1, security=None,
            timeout=10.0, **cluster_kwargs) -> Connection:
    """A Connection to a cluster: a `distributed.Client`, a scheduler address, a
    cluster object, or None to start a local one of `n_workers` processes on 127.0.0.1.

    Example (starts two worker processes; close it when done):
        >>> import knetflow as kf
        >>> with kf.distributed.connect(n_workers=2) as conn:   # doctest: +SKIP
        ...     conn.workers()
        ['tcp://127.0.0.1:40123', 'tcp://127.0.0.1:40567']
    """
    from distributed import Client

    if isinstance(client_or_address, Client):
        return Connection(client_or_address)
    if client_or_address is None:
        return _start_local(n_workers, threads_per_worker, security, cluster_kwargs)
    if not isinstance(client_or_address, str):  # a cluster object (LocalCluster, ...)
        return Connection(Client(client_or_address, security=security), own_client=True)
    try:
        client = Client(client_or_address, security=security, timeout=timeout)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {client_or_address!r} within "
                           f"{timeout:g} s ({type(e).__name__}: {e}); is it running, and is "
                           "the address (and TLS security, if any) right?") from None
    return Connection(client, own_client=True)


# Dask starts its workers with MALLOC_TRIM_THRESHOLD_=64 KiB, which also pins glibc's mmap
# threshold at 128 KiB: every large array a training step allocates is then fresh memory,
# page-faulted in again each step (measured: +8% on a step's gradients, 3x on its update).
# Training reuses arrays of the same sizes every step, so the workers knetflow starts keep
# freed memory for reuse instead.
_WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


def _start_local(n_workers, threads_per_worker, security, cluster_kwargs) -> Connection:
    import dask
    from distributed import Client, LocalCluster

    # the scheduler's HTTP server (the dashboard, when bokeh is installed) on loopback too:
    # ":0" would listen on every interface, None on a fixed port
    options = {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
               "processes": True, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    if security is not None:
        options["security"] = security
    options.update(cluster_kwargs)
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **_WORKER_MALLOC}
    # and no statistical profiler sampling the workers' stacks every 10 ms under the GIL,
    # nor host-wide CPU, network and disk counters read every 0.5 s: time the steps use
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                          "distributed.worker.profile.enabled": False,
                          "distributed.admin.system-monitor.interval": "5s"}):
        cluster = LocalCluster(**options)
    try:
        client = Client(cluster, security=security)
    except BaseException:
        cluster.close()
        raise
    return Connection(client, cluster)


def _make_bokeh_probe():
    def probe():  # pickled by value, like _make_probe's
        import importlib.util

        return importlib.util.find_spec("bokeh") is not None

    return probe


def _make_probe():
    # defined inside a function so Dask pickles it by value: it must load on a
    # worker where importing knetflow fails
    def probe():
        try:  # the whole package, as the worker's tasks will import it
            knetflow = importlib.import_module("knetflow")
        except BaseException as e:  # noqa: BLE001 - reported to the client
            return {"error": f"{type(e).__name__}: {e}"}
        return {"version": getattr(knetflow, "__version__", "?")}

    return probe


def check_workers(client, workers=None) -> dict:
    """Version of knetflow on each worker; WorkerSetupError naming those that lack it."""
    found = client.run(_make_probe(), workers=workers)
    broken = {w: r["error"] for w, r in found.items() if "error" in r}
    if broken:
        lines = "; ".join(f"{w}: {e}" for w, e in sorted(broken.items()))
        raise WorkerSetupError(f"knetflow cannot be imported on {len(broken)} worker(s): "
                               f"{lines}. Install knetflow {__version__} in the "
                               "workers' Python environment.")
    return {w: r["version"] for w, r in found.items()}
