"""Training data on the workers: blocks of rows and the steps that read them.

The data of a fit is cut into blocks, each resident on one worker. A block
says which steps read it: `first` (the first step) and `sizes` (rows read at
steps first, first+1, ...), so a replica's local batch at step s is the
rows of step s of every block it holds, and the global batch of step s is
the union over workers. The client keeps only these descriptions; the rows
stay on the workers.

- NumPy arrays are scattered once: worker w gets, for every global batch
  `x[s*B:(s+1)*B]`, its share of the rows (by `work_load_list`), so the global
  batches are exactly those of single-process training on the same data.
- A dask.array trains where its chunks are: each row chunk becomes a block on
  a worker that holds it (computed there, never gathered to the client),
  read evenly over the epoch's steps.
- An iterable of `(x, y)` batches is read once; each batch is split between
  the workers and sent to them in blocks of a few megabytes.

Every replica runs every step, reading zero rows where it has none, so
uneven shards never leave a replica waiting for a step another never joins.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from knetflow.scheduler.data_parallel import split_sizes

__all__ = ["Block", "Dataset", "LocalData", "RemoteRows", "fetch", "moved", "numpy_layout",
           "prepare", "spread"]

_BLOCK_BYTES = 32 << 20  # iterables: rows sent to a worker in blocks of about this size
_ids = itertools.count()


@dataclass
class Block:
    """Rows resident on one worker and the steps that read them (client side)."""

    first: int
    sizes: tuple
    worker: str | None = None
    future: object = None   # Dask future of (x, y) on `worker`
    source: tuple = ()      # how to rebuild it if its worker is lost (see faults.py)
    id: int = field(default_factory=lambda: next(_ids))
    key: int = None         # what seeds its shuffle (with the epoch): its place in the data,
                            # or that of the lost block it replaces; by default its id

    def __post_init__(self):
        if self.key is None:
            self.key = self.id

    @property
    def rows(self) -> int:
        return int(sum(self.sizes))

    @property
    def last(self) -> int:
        """One past the last step reading this block."""
        return self.first + len(self.sizes)

    def spec(self) -> tuple:
        """What a replica needs besides the arrays: (id, first, sizes, shuffle key)."""
        return self.id, self.first, tuple(int(s) for s in self.sizes), self.key


@dataclass
class Dataset:
    """The blocks of one fit's data and the number of steps of an epoch."""

    steps: int
    blocks: list
    rows: int
    kind: str
    x: object = None   # what faults.py rebuilds lost blocks from (NumPy arrays, iterable)
    y: object = None

    def on(self, worker) -> list:
        return [b for b in self.blocks if b.worker == worker]


def spread(rows: int, steps: int) -> tuple:
    """Rows read per step when a block of `rows` is read evenly over `steps` steps."""
    return tuple(split_sizes(rows, [1] * steps))


def numpy_layout(n: int, batch_size: int, n_workers: int, work_load_list=None,
                 partial=False) -> tuple:
    """(steps, [(row indices, sizes per step)] per worker) for NumPy data of n rows.

    Global batch s is rows [s*B, (s+1)*B); worker w gets its `work_load_list`
    share of each, in order. The last partial batch is kept when `partial`.

    Example:
        >>> steps, parts = numpy_layout(5, 2, 2, partial=True)
        >>> steps, [p[0].tolist() for p in parts], [p[1] for p in parts]
        (3, [[0, 2], [1, 3, 4]], [(1, 1, 0), (1, 1, 1)])
    """
    work = list(work_load_list or [1] * n_workers)
    if len(work) != n_workers:
        raise ValueError(f"work_load_list has {len(work)} entries for {n_workers} workers")
    steps = (math.ceil if partial else math.floor)(n / batch_size)
    if steps < 1:
        raise ValueError(f"{n} rows make no batch of {batch_size}; pass partial=True or a "
                         "smaller batch size")
    indices = [[] for _ in range(n_workers)]
    sizes = [[] for _ in range(n_workers)]
    for s in range(steps):
        start = s * batch_size
        count = min(batch_size, n - start)
        for w, size in enumerate(split_sizes(count, work)):
            indices[w].append(np.arange(start, start + size))
            sizes[w].append(size)
            start += size
    return steps, [(np.concatenate(ix), tuple(sz)) for ix, sz in zip(indices, sizes)]


def _rows(a) -> int:
    return int(a.shape[0])


def _check_lengths(x, y) -> None:
    if y is not None and _rows(y) != _rows(x):
        raise ValueError(f"X has {_rows(x)} rows (shape {tuple(x.shape)}) but y has "
                         f"{_rows(y)} (shape {tuple(y.shape)})")


def is_dask_array(a) -> bool:
    return type(a).__module__.startswith("dask.array") and hasattr(a, "chunks")


def prepare(client, x, y, workers: list, batch_size: int, work_load_list=None,
            partial=False) -> Dataset:
    """Put the data of a fit on `workers`: NumPy arrays, a dask.array, or (x, y) batches."""
    if is_dask_array(x):
        data = _from_dask(client, x, y, workers, batch_size, partial)
    elif hasattr(x, "shape") and hasattr(x, "__getitem__"):
        data = _from_numpy(client, np.asarray(x), None if y is None else np.asarray(y),
                           workers, batch_size, work_load_list, partial)
    elif y is not None:
        raise TypeError("y is given with an iterable of batches; the batches carry the labels")
    else:
        data = _from_batches(client, x, workers, work_load_list)
    for k, block in enumerate(data.blocks):  # shuffles depend on the seed and the data only
        block.key = k
    return data


def _from_numpy(client, x, y, workers, batch_size, work_load_list, partial) -> Dataset:
    _check_lengths(x, y)
    steps, parts = numpy_layout(_rows(x), batch_size, len(workers), work_load_list, partial)
    blocks = []
    for worker, (index, sizes) in zip(workers, parts):
        data = (x[index], None if y is None else y[index])
        future = client.scatter(data, workers=[worker], direct=True, hash=False)
        blocks.append(Block(0, sizes, worker, future, ("rows", index)))
    return Dataset(steps, blocks, _rows(x), "numpy", x, y)


def _row_chunks(a, chunks=None):
    """`a` rechunked so that each block holds whole rows (and the given row chunks)."""
    spec = {k: -1 for k in range(1, a.ndim)}
    if chunks is not None:
        spec[0] = chunks
    return a.rechunk(spec) if spec else a


def _from_dask(client, x, y, workers, batch_size, partial) -> Dataset:
    from distributed import futures_of, wait

    _check_lengths(x, y)
    x = _row_chunks(x)
    n = _rows(x)
    steps = (math.ceil if partial else math.floor)(n / batch_size)
    if steps < 1:
        raise ValueError(f"{n} rows make no batch of {batch_size}")
    x = client.persist(x)
    futures = {f.key: f for f in futures_of(x)}
    xs = [futures[k[0] if isinstance(k, list) else k] for k in _first_axis_keys(x)]
    ys = _label_chunks(client, x, y)
    wait(xs + [f for f in ys if f is not None])
    holders = client.who_has(xs)
    load = {w: 0 for w in workers}
    blocks = []
    for k, (fx, fy, rows) in enumerate(zip(xs, ys, x.chunks[0])):
        held = [w for w in holders.get(fx.key, ()) if w in load]
        worker = min(held or workers, key=lambda w: load[w])
        load[worker] += rows
        # allow_other_workers: if `worker` is lost, Dask recomputes the pair elsewhere
        future = client.submit(_pair, fx, fy, workers=[worker], allow_other_workers=True,
                               pure=False)
        blocks.append(Block(0, spread(rows, steps), worker, future, ("chunk", k, fx, fy)))
    return Dataset(steps, blocks, n, "dask")


def _first_axis_keys(x) -> list:
    keys = x.__dask_keys__()
    while isinstance(keys[0], list) and isinstance(keys[0][0], list):
        keys = [k[0] for k in keys]
    return keys


def _label_chunks(client, x, y) -> list:
    from distributed import futures_of

    if y is None:
        return [None] * len(x.chunks[0])
    if is_dask_array(y):
        y = client.persist(_row_chunks(y, x.chunks[0]))
        futures = {f.key: f for f in futures_of(y)}
        return [futures[k[0] if isinstance(k, list) else k] for k in _first_axis_keys(y)]
    y = np.asarray(y)
    bounds = np.cumsum((0,) + x.chunks[0])
    return [client.scatter(y[a:b], hash=False) for a, b in itertools.pairwise(bounds)]


def _pair(x, y):
    return np.asarray(x), None if y is None else np.asarray(y)


def _from_batches(client, batches, workers, work_load_list) -> Dataset:
    work = list(work_load_list or [1] * len(workers))
    if len(work) != len(workers):
        raise ValueError(f"work_load_list has {len(work)} entries for {len(workers)} workers")
    shares = {w: _Share(k, work) for k, w in enumerate(workers)}
    pending = {w: [] for w in workers}  # rows waiting to be sent, per worker
    blocks, rows, steps = [], 0, 0
    for s, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"batch {s} is a {type(batch).__name__}; expected (x, y)")
        bx, by = np.asarray(batch[0]), np.asarray(batch[1])
        _check_lengths(bx, by)
        start = 0
        for w, size in zip(workers, split_sizes(len(bx), work)):
            pending[w].append((s, bx[start:start + size], by[start:start + size]))
            start += size
            if sum(p[1].nbytes + p[2].nbytes for p in pending[w]) >= _BLOCK_BYTES:
                blocks.append(_send_block(client, w, pending[w], shares[w]))
                pending[w] = []
        rows, steps = rows + len(bx), s + 1
    for w, parts in pending.items():
        if parts:
            blocks.append(_send_block(client, w, parts, shares[w]))
    if steps == 0:
        raise ValueError("the iterable of batches is empty")
    return Dataset(steps, blocks, rows, "batches", batches)


class _Share:
    """Rows [a, b) of a batch of n rows that worker k of `work` gets (to read them again)."""

    def __init__(self, k, work):
        self.k, self.work = k, work

    def __call__(self, n) -> tuple:
        sizes = split_sizes(n, self.work)
        start = sum(sizes[:self.k])
        return start, start + sizes[self.k]


def _send_block(client, worker, parts, share) -> Block:
    first = parts[0][0]
    sizes = [0] * (parts[-1][0] - first + 1)
    for s, bx, _ in parts:
        sizes[s - first] += len(bx)
    data = (np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
    future = client.scatter(data, workers=[worker], direct=True, hash=False)
    return Block(first, tuple(sizes), worker, future, ("batches", first, tuple(sizes), share))


class RemoteRows:
    """A block's (x, y) that Dask holds in the memory of the worker a replica runs on."""

    def __init__(self, key):
        self.key = key


def moved(x):
    """A task returning its argument: run on a worker, it copies a block there."""
    return x


def fetch(items: list) -> list:
    """Worker side: each RemoteRows read from this worker's memory, other items as they
    are. (An actor blocks if it gathers through Dask itself: the client moves the data
    here first, with a `moved` task, see faults.py.)"""
    from distributed import get_worker

    data = get_worker().data if any(isinstance(i, RemoteRows) for i in items) else None
    return [data[item.key] if isinstance(item, RemoteRows) else item for item in items]


class LocalData:
    """The blocks one replica holds (worker side): its local batch of each step."""

    def __init__(self):
        self.blocks: dict = {}

    def add(self, spec, x, y) -> None:
        """Hold a block: spec (id, first, sizes[, shuffle key, by default its id])."""
        block_id, first, sizes, *key = spec
        if len(x) != sum(sizes):
            raise ValueError(f"block {block_id}: {len(x)} rows but its steps read {sum(sizes)}")
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.blocks[block_id] = (first, offsets, x, y, key[0] if key else block_id)

    def batch(self, step: int, order=None) -> tuple:
        """(x, y, rows) of `step`; `order(key, rows)` may permute a block's rows (the same
        permutation for a block that replaces a lost one: it has the lost block's key)."""
        xs, ys = [], []
        for first, offsets, x, y, key in self.blocks.values():
            k = step - first
            if not 0 <= k < len(offsets) - 1 or offsets[k] == offsets[k + 1]:
                continue
            a, b = int(offsets[k]), int(offsets[k + 1])
            if order is None:
                xs.append(x[a:b])
                ys.append(None if y is None else y[a:b])
            else:
                rows = order(key, len(x))[a:b]
                xs.append(x[rows])
                ys.append(None if y is None else y[rows])
        if not xs:
            return None, None, 0
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        y = ys[0] if len(ys) == 1 or ys[0] is None else np.concatenate(ys)
        return x, y, len(x)

    def steps(self) -> int:
        """One past the last step any block is read at."""
        return max((first + len(off) - 1 for first, off, *_ in self.blocks.values()), default=0)
