"""Losing a worker mid-training: detect it, call off the round, go on without it.

Detection: a replica's call fails with `PeerLost` or because its actor is
gone, or the client, having waited a while, finds a worker of the fit no
longer known to the scheduler. Recovery, in order:

1. abort every surviving replica's mailbox, so none waits for the lost one,
   and let their queued calls finish (they fail at once; calls to the lost
   workers are not waited for);
2. sync mode: the survivor with the most updates holds the last synchronized
   params (an update is only applied once every contribution arrived);
   survivors behind it copy its params and optimizer state, worker to worker;
   async mode: the parameter server holds them; if it was on the lost worker,
   a new one starts on a survivor from a replica's params and the optimizer
   state of the last epoch end;
3. the lost worker's blocks go to the survivors, read at the same steps, so
   the global batches stay the same: NumPy rows are sent again from the
   client's arrays, dask.array chunks are recomputed by Dask where they are
   needed, batches of a re-iterable are read again (those of a one-pass
   iterator are lost, with a warning). A block is split between the
   survivors, except with `shuffle`: each of its steps reads a permutation
   of all its rows, so it goes whole to one survivor, which permutes it as
   the lost worker would have;
4. the survivors form a new ring (a new generation, so stray messages of the
   old one are ignored) and training resumes at the step after the last
   synchronized one.

What holds after a recovery in sync mode: training resumes at the last
synchronized step (an update every replica applied, or none did), the steps
after it run once each, on the same global batches, and the outcome depends
on that step and the survivors only, never on timing: the same kill point
gives the same parameters, bit for bit. They equal the undisturbed run's up
to rounding (about 1e-15 relative), not bit for bit: a survivor computes
one gradient over its rows and the adopted ones where two replicas summed
two, and float addition is not associative (with more workers, the ring's
order of summing changes too). Async mode promises less by design: pushes
apply in arrival order, and a parameter server that is lost restarts from
a replica's params with the optimizer state of the last epoch end.

If the client itself dies, `fit(..., begin_epoch=k, checkpoint=prefix)`
resumes from the checkpoint written at the end of epoch k.
"""

from __future__ import annotations

import warnings

import numpy as np

from knetflow.distributed.data import Block, RemoteRows, moved
from knetflow.distributed.report import LOGGER
from knetflow.distributed.worker import PeerLost
from knetflow.scheduler.data_parallel import split_sizes

__all__ = ["is_loss", "lost_workers", "recover", "split_block"]


def is_loss(error: BaseException) -> bool:
    """Whether an error from a replica's call means a worker (not the user's code) failed."""
    if isinstance(error, (PeerLost, OSError)):
        return True
    return isinstance(error, RuntimeError) and "Actor was lost" in str(error)


def lost_workers(client, workers) -> set:
    """The workers of `workers` the scheduler no longer knows."""
    known = set(client.nthreads())  # the scheduler's cheapest list of its workers
    return {w for w in workers if w not in known}


def split_block(sizes, parts: int) -> list:
    """Split a block's rows step by step into `parts`: [(row positions, sizes)] per part.

    Example:
        >>> [(rows.tolist(), s) for rows, s in split_block((3, 1), 2)]
        [([0, 1], (2, 0)), ([2, 3], (1, 1))]
    """
    out = [([], []) for _ in range(parts)]
    start = 0
    for size in sizes:
        for k, n in enumerate(split_sizes(int(size), [1] * parts)):
            out[k][0].append(np.arange(start, start + n))
            out[k][1].append(n)
            start += n
    return [(np.concatenate(rows) if rows else np.zeros(0, np.int64), tuple(s))
            for rows, s in out]


def recover(fit, lost: set, reason: str) -> None:
    """Go on without the `lost` workers (see the module docstring); updates `fit.fleet`."""
    fleet = fit.fleet
    survivors = [w for w in fleet.workers if w not in lost]
    if not survivors:
        raise RuntimeError(f"every worker of the fit was lost ({sorted(lost)}): {reason}")
    message = (f"lost worker(s) {sorted(lost)} ({reason}); continuing on {len(survivors)} "
               "worker(s) from the last synchronized parameters")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    LOGGER.warning(message)
    fleet.abort(survivors, reason)
    fleet.drain(survivors)
    fleet.workers = survivors
    fleet.unlink_lost(lost)
    if fit.mode == "sync":
        _align_states(fleet, survivors)
    elif fleet.ps_worker in lost:
        _restart_ps(fit, survivors)
    _redistribute(fit, lost, survivors)
    fleet.configure()


def _align_states(fleet, survivors) -> None:
    status = fleet.call_all("status")
    source = max(survivors, key=lambda w: status[w]["updates"])
    behind = [w for w in survivors if status[w]["updates"] != status[source]["updates"]]
    calls = {w: fleet.actors[w].copy_state_from(fleet.actors[source]) for w in behind}
    fleet.wait(calls)


def _restart_ps(fit, survivors) -> None:
    fleet = fit.fleet
    got = fleet.wait({survivors[0]: fleet.actors[survivors[0]].get_state()})[survivors[0]]
    state = dict(got["state"])
    if fit.last_optimizer_state is not None:
        fit.optimizer.load_state_dict(fit.last_optimizer_state)
    message = ("the parameter server's worker was lost: a new server starts from a replica's "
               "parameters and the optimizer state of the last epoch end")
    LOGGER.warning(message)
    fleet.start_ps(survivors[0], state)


def _redistribute(fit, lost, survivors) -> None:
    data = fit.data
    copies: list = []  # blocks copied to their new workers; held until adopted
    orphans = [b for b in data.blocks if b.worker in lost]
    data.blocks = [b for b in data.blocks if b.worker not in lost]
    load = {w: sum(b.rows for b in data.on(w)) for w in survivors}
    adopted: dict = {w: ([], []) for w in survivors}
    for block in orphans:
        for worker, new, payload in _rehome(fit, block, survivors, load, copies):
            data.blocks.append(new)
            adopted[worker][0].append(new.spec())
            adopted[worker][1].append(payload)
            load[worker] += new.rows
    calls = {w: fit.fleet.actors[w].adopt(specs, arrays)
             for w, (specs, arrays) in adopted.items() if specs}
    fit.fleet.wait(calls)
    for copy in copies:  # the replicas hold the rows now
        copy.release()


def _rehome(fit, block, survivors, load, copies) -> list:
    """[(worker, new Block, arrays or a future)] taking over a lost block: its rows at
    the same steps, so the global batches stay those the lost worker would have read."""
    data, kind = fit.data, block.source[0] if block.source else None
    least = min(survivors, key=lambda w: load[w])
    if kind == "chunk":  # copied to the adopting worker (Dask recomputes it if it was lost)
        from distributed import wait

        copy = fit.client.submit(moved, block.future, workers=[least], pure=False)
        wait(copy, timeout=fit.timeout)
        copies.append(copy)
        return [(least, _replacing(block, block.sizes, least, block.future, block.source),
                 RemoteRows(copy.key))]
    if kind == "rows":
        x, y, index = data.x, data.y, block.source[1]
    elif kind in ("batches", "held"):
        rows = _reread(fit, block) if kind == "batches" else block.source[1:]
        if rows is None:
            return []
        x, y = rows
        index = np.arange(len(x))
    else:
        return []
    if fit.shuffle:
        # a shuffled block's steps read a permutation of all its rows: kept whole, with the
        # lost block's key, its adopter reads at each step exactly the rows it would have
        source = block.source if kind != "batches" else ("held", x, y)
        return [(least, _replacing(block, block.sizes, least, None, source),
                 (x[index], None if y is None else y[index]))]
    out = []
    for worker, (positions, sizes) in zip(survivors, split_block(block.sizes, len(survivors))):
        if not len(positions):
            continue
        rows = index[positions]
        arrays = (x[rows], None if y is None else y[rows])
        source = ("rows", rows) if kind == "rows" else ("held",) + arrays
        out.append((worker, Block(block.first, sizes, worker, None, source), arrays))
    return out


def _replacing(block, sizes, worker, future, source) -> Block:
    """A block taking over all of `block`'s rows (and its shuffle key) on `worker`."""
    return Block(block.first, sizes, worker, future, source, key=block.key)


def _reread(fit, block):
    """The rows of a lost block of an iterable, read again; None if it cannot be."""
    batches = fit.data.x
    if iter(batches) is batches:
        message = (f"the rows of steps {block.first}..{block.last - 1} held by a lost worker "
                   "came from a one-pass iterator and cannot be read again; they are dropped")
        warnings.warn(message, RuntimeWarning, stacklevel=5)
        return None
    _, first, sizes, share = block.source
    xs, ys = [], []
    for s, (bx, by) in enumerate(batches):
        if s >= first + len(sizes):
            break
        if s >= first:
            a, b = share(len(bx))
            xs.append(np.asarray(bx)[a:b])
            ys.append(np.asarray(by)[a:b])
    return np.concatenate(xs), np.concatenate(ys)
