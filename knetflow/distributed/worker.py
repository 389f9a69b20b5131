"""What runs on each worker: a `Replica`, a Dask actor living for one fit.

The replica is created once per fit on its worker and keeps there, in the
worker's memory, everything that should not move each step: the compiled
gradient and update plans (steps.py), its blocks of the data (data.py),
its copy of the metric, and a mailbox that peers drop gradient chunks into.
The client then only sends small calls: "run steps a..b of epoch e".

Sync mode, one step: local gradients of the replica's rows, added to a flat
buffer; every `sync_every` steps (and at the end of an epoch) the buffers
are summed between the replicas (reduce.py, worker to worker) and every
replica applies the same update. Async mode: the replica pushes its buffer
to the parameter server (async_ps.py) and takes back the current params.

`run_steps` calls are numbered by the client and run in that order, on a
thread of the replica's own (call_order.py: Dask may deliver two queued calls in
either order); the replica's other methods run on Dask's actor thread, and
none of them changes the replica while steps run.

Anything that shows a peer is gone (an aborted mailbox, a silent peer, a
failed send) is raised as `PeerLost`, which the client answers by
recovering (faults.py); any other error is the user's and is raised as is.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from knetflow.distributed.call_order import Turns
from knetflow.distributed.data import LocalData, fetch
from knetflow.distributed.reduce import ALGORITHMS, Aborted, Mailbox
from knetflow.distributed.report import counters
from knetflow.distributed.replica_step import ReplicaStep

__all__ = ["PeerLost", "Replica"]


class PeerLost(RuntimeError):
    """A peer of this replica (or the parameter server) is gone; the client recovers."""


def _future(call):
    """An actor call's result as something with `result(timeout)`: Dask hands a call to
    a coroutine method of an actor on the same worker back as a bare coroutine."""
    if inspect.iscoroutine(call):
        from distributed import get_worker

        return asyncio.run_coroutine_threadsafe(call, get_worker().loop.asyncio_loop)
    return call


class _Sent:
    """An actor call carrying data to a peer; `wait()` returns once the peer holds it."""

    def __init__(self, future, mailbox, timeout):
        self.future, self.mailbox, self.timeout = _future(future), mailbox, timeout

    def wait(self):
        deadline = time.monotonic() + self.timeout
        while True:
            self.mailbox.check()
            try:
                return self.future.result(timeout=0.05)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a peer took over {self.timeout}s to take a message")


def _exclusive(method):
    """A method that never runs while the replica's steps do (and vice versa)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._busy:
            return method(self, *args, **kwargs)

    return run


class ActorTransport:
    """reduce.py's transport over Dask actors: `send` calls the peer's `receive`."""

    def __init__(self, peers, rank, mailbox, timeout):
        self.peers, self.rank, self.size = peers, rank, len(peers)
        self.mailbox, self.timeout = mailbox, timeout

    def send(self, dest, tag, array):
        return _Sent(self.peers[dest].receive(tag, array), self.mailbox, self.timeout)

    def recv(self, tag):
        return self.mailbox.get(tag, self.timeout)


class Replica:
    """One worker's replica of the training step (a Dask actor; see the module docstring).

    `model` is the loss graph with its initial params as `kf.dumps` bytes;
    `config` holds the optimizer, metric, mode and options; `specs` and
    `eval_specs` describe the training and evaluation blocks whose `(x, y)`
    arrays follow, resolved on this worker by Dask.
    """

    def __init__(self, model: bytes, config: dict, specs: list, eval_specs: list, *arrays):
        from knetflow import rng
        from knetflow.serialize import loads

        self.config = config
        if config.get("seed") is not None:  # dropout masks differ between replicas
            rng.seed(int(config["seed"]) + config["rank"])
        graph = loads(model).graph
        self.step = ReplicaStep(graph, config["optimizer"], config["inputs"],
                                 config["loss_reduction"], config["pred_output"],
                                 update=config["mode"] == "sync")
        self.optimizer = config["optimizer"]
        self.metric = config.get("metric")
        self.data, self.eval_data = LocalData(), LocalData()
        for spec, (x, y) in zip(specs, arrays):
            self.data.add(spec, x, y)
        for spec, (x, y) in zip(eval_specs, arrays[len(specs):]):
            self.eval_data.add(spec, x, y)
        self.mailbox = Mailbox()
        self.buffer = self.step.new_buffer()
        self._fresh = True     # the buffer holds nothing of the current round yet
        self.recent: dict = {}  # (epoch, step) -> results of the last steps run
        self.synced = (0, 0)   # (epoch, step) the params stand at: the next step to run
        self.updates = 0       # updates applied so far
        self.generation, self.transport, self.ps = 0, None, None
        self.group = self._segment = None  # shared-memory ring (shm.py), when on one host
        self.timeout = float(config.get("timeout", 120))
        self.turns = Turns()  # the order of run_steps calls (call_order.py)
        self._busy = threading.Lock()  # held while steps run, and by methods changing state
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="knetflow-replica")

    # -- set-up --
    @_exclusive
    def prepare_shm(self):
        """A new shared-memory segment for the next ring; its name (None if unavailable)."""
        from knetflow.distributed.shm import create_segment

        self._drop_segment()
        try:
            self._segment = create_segment(len(self.buffer), self.buffer.dtype)
        except OSError:
            return None
        return self._segment.name

    @_exclusive
    def configure(self, peers: list, rank: int, generation: int, ps=None,
                  shm_names=None) -> bool:
        """Join the ring `peers` as `rank` (a new generation after a recovery); through
        shared memory when `shm_names` (one segment per rank) are given. False if this
        replica cannot map them (the client then configures again without)."""
        from knetflow.distributed.shm import SharedGroup

        self.generation, self.ps = generation, ps
        self.turns.reset(generation)
        self.transport = ActorTransport(peers, rank, self.mailbox, self.timeout)
        self.mailbox.reopen()
        self._fresh = True  # what an aborted round left in the buffer is dropped
        self._close_group()
        if shm_names is None:
            self._drop_segment()
            self.step.set_parts(1)
            return True
        try:
            self.group = SharedGroup(self._segment, shm_names, rank, len(self.buffer),
                                     self.buffer.dtype, self.mailbox, self.timeout)
        except (OSError, ValueError, ImportError):
            return False
        self.buffer = self.group.buffer()
        self.step.set_parts(len(shm_names) if self.group.fused else 1)
        return True

    def _close_group(self) -> None:
        if self.group is not None:
            self.buffer = self.step.new_buffer()  # no view into the segments may remain
            self.group.close(unlink=False)
            self.group = None

    def _drop_segment(self) -> None:
        self._close_group()
        if self._segment is not None:
            self._segment.close()
            self._segment.unlink()
            self._segment = None

    def close(self) -> bool:
        """Release the shared memory and the thread of this replica (the end of a fit):
        steps still running or waiting are called off first."""
        self.mailbox.abort("the fit is over")
        with self._busy:
            self._drop_segment()
        self._pool.shutdown(wait=False)
        return True

    def unlink_segments(self, names: list) -> bool:
        """Remove lost peers' shared-memory segments (their owners cannot any more)."""
        from knetflow.distributed.shm import unlink

        for name in names:
            unlink(name)
        return True

    async def receive(self, tag, array) -> None:
        """Called by peers: a message for this replica's mailbox."""
        if tag[0][0] >= self.generation:  # drop leftovers of an aborted generation
            self.mailbox.put(tag, array)

    async def abort(self, reason: str) -> bool:
        """Called by the client when a worker is lost: stop waiting for peers."""
        self.mailbox.abort(reason)
        self.turns.wake()
        return True

    @_exclusive
    def adopt(self, specs: list, arrays: list) -> int:
        """Take over blocks of a lost worker: (x, y) arrays, or RemoteRows fetched here."""
        arrays = fetch(arrays)
        for spec, (x, y) in zip(specs, arrays):
            self.data.add(spec, x, y)
        return sum(len(x) for x, _ in arrays)

    # -- training --
    async def run_steps(self, generation: int, ticket: int, epoch: int, start: int, stop: int,
                        sync_at: list) -> list:
        """Run steps start..stop-1 of `epoch`; sync (or push) after the steps in `sync_at`.
        This is call `ticket` of ring `generation`: it runs after call ticket-1 ended.

        Returns per step: rows, loss sum, metric counters, compute and sync seconds.
        """
        try:
            await self.turns.wait(generation, ticket, self.mailbox.check, self.timeout)
        except (Aborted, TimeoutError) as e:
            raise PeerLost(f"steps {start}..{stop - 1} of epoch {epoch}: "
                           f"{type(e).__name__}: {e}") from None
        try:
            # on the replica's thread, with this call's context (Dask's get_worker works there)
            run = functools.partial(self._run_steps, epoch, start, stop, sync_at)
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, contextvars.copy_context().run, run)
        finally:
            self.turns.done(generation, ticket)

    def _run_steps(self, epoch, start, stop, sync_at) -> list:
        with self._busy:
            return self._steps(epoch, start, stop, sync_at)

    def _steps(self, epoch, start, stop, sync_at) -> list:
        out = []
        try:
            for s in range(start, stop):
                out.append(self._one_step(epoch, s, s in sync_at))
        except (Aborted, TimeoutError, OSError) as e:
            raise PeerLost(f"step {s} of epoch {epoch}: {type(e).__name__}: {e}") from None
        except RuntimeError as e:
            if "Actor was lost" in str(e):
                raise PeerLost(f"step {s} of epoch {epoch}: {e}") from None
            raise
        return out

    def _one_step(self, epoch, s, sync) -> dict:
        self.mailbox.check()
        t0 = time.perf_counter()
        x, y, rows = self.data.batch(s, self._order(epoch))
        loss_sum, metric = 0.0, None
        if rows:
            loss, pred, grads = self.step.gradients(*self._feed(x, y))
            self.step.accumulate(self.buffer, grads, rows, fresh=self._fresh)
            self._fresh = False
            loss_sum = loss * rows if self.step.mean else loss
            metric = self._metric(y, pred)
        t1 = time.perf_counter()
        waited = 0.0
        if sync:
            self._sync(epoch, s)
            self.synced = (epoch, s + 1)
            waited = self.group.waited if self.group is not None else 0.0
        result = {"step": s, "rows": rows, "loss": loss_sum, "metric": metric,
                  "compute": t1 - t0, "sync": time.perf_counter() - t1, "wait": waited}
        self.recent[(epoch, s)] = result
        if len(self.recent) > 256:
            del self.recent[next(iter(self.recent))]
        return result

    def _sync(self, epoch, s) -> None:
        if self._fresh:  # nothing accumulated since the last sync: contribute zeros
            self.buffer[...] = 0
        if self.group is not None:
            if self.group.fused:
                self.step.apply(*self.group.gather())
            else:
                self.step.apply(self.group.allreduce())
            self.buffer = self.group.buffer()
        elif self.config["mode"] == "sync":
            reduce = ALGORITHMS[self.config["reduce"]]
            reduce(self.buffer, self.transport, (self.generation, epoch, s))
            self.step.apply(self.buffer)
        else:
            flat = _Sent(self.ps.push(self.buffer), self.mailbox, self.timeout).wait()
            self.step.set_flat_params(flat)
        self._fresh = True
        self.updates += 1

    def _feed(self, x, y) -> tuple:
        if len(self.step.inputs) == 1:
            return (x,)
        return x, _fit_label(y, self.config.get("label_shape"))

    def _order(self, epoch):
        if not self.config.get("shuffle"):
            return None
        seed = int(self.config.get("seed") or 0)

        def order(key, rows):  # key: the block's place in the data (data.py Block.key)
            return np.random.default_rng([seed, epoch, key]).permutation(rows)

        return order

    def _metric(self, labels, pred):
        if self.metric is None or pred is None or labels is None:
            return None
        labels = np.asarray(labels)
        if labels.shape != pred.shape and labels.size == pred.size:  # (N,) against (N, 1)
            labels = labels.reshape(pred.shape)
        self.metric.reset()
        self.metric.update([labels], [pred])
        return counters(self.metric)

    @_exclusive
    def evaluate(self, steps: int) -> dict:
        """Loss sum, rows and metric counters over this replica's evaluation blocks."""
        total, rows, parts = 0.0, 0, []
        for s in range(steps):
            x, y, n = self.eval_data.batch(s)
            if not n:
                continue
            loss, pred = self.step.evaluate(*self._feed(x, y))
            total += loss * n if self.step.mean else loss
            rows += n
            parts.append(self._metric(y, pred))
        return {"loss": total, "rows": rows, "metric": parts}

    # -- state, for checkpoints and recovery --
    async def status(self) -> dict:
        return {"synced": self.synced, "updates": self.updates}

    async def results(self, epoch: int, start: int, stop: int) -> dict:
        """Results of this replica's recent steps start..stop-1 of `epoch`, by step (for
        steps whose call failed after they ran, before a recovery)."""
        return {s: self.recent[(epoch, s)] for s in range(start, stop)
                if (epoch, s) in self.recent}

    async def get_state(self) -> dict:
        """Params and optimizer slots, and where they stand (epoch, step, updates)."""
        return {"state": self.step.state(), "synced": self.synced, "updates": self.updates}

    @_exclusive
    def copy_state_from(self, source) -> bool:
        """Take the state of the replica `source` (worker to worker)."""
        got = _future(source.get_state()).result(timeout=self.timeout)
        self._load(got)
        return True

    @_exclusive
    def set_state(self, got: dict) -> bool:
        return self._load(got)

    def _load(self, got: dict) -> bool:
        self.step.load_state(got["state"])
        self.synced, self.updates = tuple(got["synced"]), got["updates"]
        self._fresh = True
        return True

    @_exclusive
    def pull_params(self) -> bool:
        """Async mode: start from the parameter server's current params."""
        self.step.set_flat_params(_future(self.ps.pull()).result(timeout=self.timeout))
        return True

    @_exclusive
    def snapshot(self) -> dict:
        """Params, and the optimizer's state_dict (sync mode), for the client."""
        state = self.step.optimizer_state(self.optimizer) if self.step.update_plan else None
        return {"params": self.step.params(), "optimizer": state, "synced": self.synced}


def _fit_label(y, shape):
    """Labels reshaped to the label input's `shape` (batch dim free) when each row holds
    as many values, as FeedForward feeds them."""
    if shape is None or y is None:
        return y
    rest = tuple(shape[1:])
    if y.shape[1:] != rest and y.size == len(y) * int(np.prod(rest, dtype=np.int64)):
        return y.reshape((len(y),) + rest)
    return y
