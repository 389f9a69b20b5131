"""The replicas of one fit as the client sees them: actors by worker, in rank order.

`Fleet` starts the Replica actors (and the parameter server in async mode),
forms the ring, sends calls and waits for them. Each replica's `run_steps`
calls are numbered from 0 in every ring generation, and the replica runs
them in that order, whatever order they arrive in (call_order.py). Actor calls
are turned into `concurrent.futures` futures, so the client can wait on
many at once with a timeout, and look at the scheduler for lost workers
while it waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time

from knetflow.distributed.async_ps import ParameterServer
from knetflow.distributed.report import LOGGER
from knetflow.distributed.worker import Replica

__all__ = ["Fleet"]


class Fleet:
    """Replica actors of the live workers, the parameter server, and calls in flight."""

    def __init__(self, client, timeout: float):
        self.client, self.timeout = client, float(timeout)
        self.workers: list = []
        self.actors: dict = {}
        self._holds: list = []      # the actors' Dask futures: they live while these do
        self.ps = self.ps_worker = None
        self.generation = 0
        self.shared_memory = False  # whether the ring runs through shared memory (shm.py)
        self.segments: dict = {}    # worker -> name of its shared-memory segment
        self.in_flight: list = []   # (worker, concurrent future) of calls not yet seen done
        self.tickets: dict = {}     # worker -> number of its next run_steps call

    # -- starting --
    def start(self, workers, model: bytes, config, data, eval_data=None) -> None:
        """One Replica per worker, holding that worker's blocks; then the ring. `model`:
        the loss graph and initial params (`kf.dumps`), sent once to every worker."""
        self.model, self.config = model, config
        shared = self.client.scatter(model, broadcast=True, hash=False)
        futures = {}
        for rank, worker in enumerate(workers):
            train = data.on(worker)
            evals = eval_data.on(worker) if eval_data is not None else []
            futures[worker] = self.client.submit(
                Replica, shared, dict(config, rank=rank), [b.spec() for b in train],
                [b.spec() for b in evals], *[b.future for b in train + evals],
                workers=[worker], actor=True, pure=False)
        self._holds.extend(futures.values())
        try:
            self.actors = {w: self._started(f, w) for w, f in futures.items()}
        finally:
            shared.release()
        self.workers = list(workers)
        if config["mode"] == "async":
            self.start_ps(workers[0])
        self.configure()

    def start_ps(self, worker, state=None) -> None:
        """The parameter server on `worker`, from the fit's initial params or `state`."""
        # the model is sent again: Dask keeps one copy of broadcast data once no task needs
        # more (its active memory manager), and that copy may have been on a lost worker
        model = self.client.scatter(self.model, workers=[worker], hash=False)
        try:
            future = self.client.submit(ParameterServer, model, self.config, workers=[worker],
                                        actor=True, pure=False)
            self._holds.append(future)
            self.ps, self.ps_worker = self._started(future, worker), worker
        finally:
            model.release()
        if state is not None:
            self.wait({worker: self.ps.set_state(state)})

    def _started(self, future, worker):
        """The actor of `future` once created on `worker` (a TimeoutError naming it if not)."""
        try:
            return future.result(timeout=self.timeout)
        except TimeoutError:
            raise TimeoutError(f"{future.key} was not created on {worker} within "
                               f"{self.timeout:g} s (its data could not reach it?)") from None

    def configure(self) -> None:
        """Every live replica joins a new ring (a new generation): through shared
        memory when they all share a host and can map each other's segments."""
        self.generation += 1
        self.tickets = {w: 0 for w in self.workers}
        peers = [self.actors[w] for w in self.workers]
        names = self._shm_names()
        for attempt in (names, None) if names else (None,):
            ok = self.wait({w: self.actors[w].configure(peers, rank, self.generation, self.ps,
                                                        attempt)
                            for rank, w in enumerate(self.workers)})
            if all(ok.values()):
                break
        self.shared_memory = bool(names) and attempt is not None
        if self.ps is not None:
            self.wait({w: self.actors[w].pull_params() for w in self.workers})

    def _shm_names(self):
        transport = self.config.get("transport", "auto")
        hosts = {_host(w) for w in self.workers}
        if (transport == "tcp" or self.config["mode"] != "sync" or len(self.workers) < 2
                or (len(hosts) > 1 and transport == "auto")):
            return None
        names = self.call_all("prepare_shm")
        self.segments.update((w, n) for w, n in names.items() if n)
        return [names[w] for w in self.workers] if all(names.values()) else None

    def unlink_lost(self, lost) -> None:
        """Have a survivor remove the shared-memory segments of lost workers."""
        names = [self.segments.pop(w) for w in lost if w in self.segments]
        if names and self.workers:
            first = self.workers[0]
            self.wait({first: self.actors[first].unlink_segments(names)})

    # -- calls --
    def run_steps(self, worker, epoch: int, start: int, stop: int, sync_at: list) -> cf.Future:
        """Queue steps start..stop-1 of `epoch` on `worker`'s replica (after those queued
        before); a concurrent future of their results."""
        ticket = self.tickets[worker]
        self.tickets[worker] += 1
        call = self.actors[worker].run_steps(self.generation, ticket, epoch, start, stop,
                                             sync_at)
        return self.watch(worker, call)

    def watch(self, worker, actor_future) -> cf.Future:
        """A concurrent future for an actor call (registered as in flight)."""
        async def result():
            return await actor_future

        future = asyncio.run_coroutine_threadsafe(result(), self.client.loop.asyncio_loop)
        self.in_flight.append((worker, future))
        return future

    def wait(self, calls: dict, timeout=None) -> dict:
        """Results of actor calls by worker; the first error is raised."""
        watched = {w: self.watch(w, f) for w, f in calls.items()}
        _, pending = cf.wait(list(watched.values()), timeout=timeout or self.timeout)
        if pending:
            raise TimeoutError(f"workers {[w for w, f in watched.items() if f in pending]} did "
                               f"not answer within {timeout or self.timeout:g} s")
        out = {w: f.result() for w, f in watched.items()}
        self.forget(watched.values())
        return out

    def call_all(self, method: str, *args) -> dict:
        """`method(*args)` on every live replica; results by worker."""
        return self.wait({w: getattr(self.actors[w], method)(*args) for w in self.workers})

    def forget(self, futures) -> None:
        gone = set(map(id, futures))
        self.in_flight = [(w, f) for w, f in self.in_flight if id(f) not in gone]

    def abort(self, workers, reason: str) -> None:
        """Stop the replicas on `workers` from waiting for peers (best effort)."""
        calls = [self.watch(w, self.actors[w].abort(reason)) for w in workers]
        cf.wait(calls, timeout=min(self.timeout, 30))
        self.forget(calls)

    def drain(self, workers) -> None:
        """Wait until the calls in flight to `workers` have ended (their errors ignored);
        forget the others: those of a lost worker may take Dask's connect timeout (30 s)
        to fail, and change nothing the survivors hold."""
        mine = [f for w, f in self.in_flight if w in workers]
        deadline = time.monotonic() + self.timeout
        cf.wait(mine, timeout=max(0.0, deadline - time.monotonic()))
        self.in_flight = []

    def close(self) -> None:
        """Release the actors (Dask frees them with their futures) and their shared memory.
        Never raises: it runs while a failed fit unwinds, and its workers may be gone."""
        try:
            closing = [self.actors[w].close() for w in self.workers]
            if self.ps is not None:
                closing.append(self.ps.close())
            for call in closing:
                try:
                    call.result(timeout=5)
                except Exception as e:  # noqa: BLE001 - its worker may be gone
                    LOGGER.debug("closing a replica: %s", e)
        except Exception as e:  # noqa: BLE001 - e.g. an actor whose worker was lost
            LOGGER.debug("closing the replicas: %s", e)
        finally:
            for future in self._holds:
                future.release()
            self._holds, self.actors, self.ps = [], {}, None
            self.in_flight = []


def _host(address: str) -> str:
    """The host of a worker address such as tcp://10.0.0.5:40123."""
    return address.split("://")[-1].rsplit(":", 1)[0]
