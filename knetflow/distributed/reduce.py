"""All-reduce between replicas: ring and tree, written against a small transport.

Sync training sums every replica's gradient (already weighted by its rows)
into one flat buffer that every replica ends up holding, bit for bit the same.
The gradients move between workers, never through the client:

    ring (bandwidth-optimal, 2(n-1) rounds of 1/n of the buffer):

        rank 0 ──> rank 1 ──> rank 2 ──> ... ──> rank n-1 ──┐
          ^─────────────────────────────────────────────────┘
        reduce-scatter: after n-1 rounds rank r holds chunk (r+1) % n summed
        all-gather:     n-1 more rounds pass the summed chunks around

    tree (latency-optimal, 2 log2(n) rounds of the whole buffer):

        reduce to rank 0 along a binomial tree, then broadcast back down it

Both sum in a fixed order that depends on ranks only (chunk c is summed
starting at rank c and going round the ring; the tree adds children in rank
order), so results never depend on timing and every replica applies the
same update.

A transport has `rank`, `size`, `send(dest, tag, array) -> handle` (the
handle's `wait()` returns once the peer holds the data) and
`recv(tag) -> array`. Workers use Dask actor calls (worker.py); tests use
threads and in-memory mailboxes. `Mailbox` is the receiving side both use:
messages arrive on one thread (the worker's event loop) and are taken on
another (the training thread), and an abort wakes every waiter.
"""

from __future__ import annotations

import threading
import time

import numpy as np

__all__ = [
    "ALGORITHMS",
    "Aborted",
    "Mailbox",
    "chunk_bounds",
    "ring_allreduce",
    "tree_allreduce",
]


class Aborted(RuntimeError):
    """The reduction stopped: a peer was lost or the client called off the round."""


def chunk_bounds(n: int, parts: int) -> list:
    """Start offsets of `parts` nearly equal chunks of n elements, and n at the end.

    Example:
        >>> chunk_bounds(10, 3)
        [0, 4, 7, 10]
    """
    base, extra = divmod(n, parts)
    bounds = [0]
    for k in range(parts):
        bounds.append(bounds[-1] + base + (1 if k < extra else 0))
    return bounds


class Mailbox:
    """Messages by tag: `put` from any thread, `get` blocks until the tag arrives.

    `abort(reason)` makes every pending and later `get` raise Aborted until
    `reopen()`; messages of an aborted round are dropped then.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._items: dict = {}
        self._aborted = None

    def put(self, tag, value) -> None:
        with self._cond:
            self._items[tag] = value
            self._cond.notify_all()

    def get(self, tag, timeout=None):
        """The message with `tag`; Aborted if aborted, TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while tag not in self._items:
                if self._aborted is not None:
                    raise Aborted(self._aborted)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no message {tag!r} from a peer within {timeout}s")
                self._cond.wait(left)
            return self._items.pop(tag)

    def check(self) -> None:
        """Raise Aborted when the mailbox is aborted (cheap; call between steps)."""
        if self._aborted is not None:
            raise Aborted(self._aborted)

    @property
    def aborted(self):
        return self._aborted

    def abort(self, reason: str) -> None:
        with self._cond:
            self._aborted = reason or "aborted"
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept messages again, dropping whatever an aborted round left behind."""
        with self._cond:
            self._aborted = None
            self._items.clear()


def ring_allreduce(buf: np.ndarray, transport, tag) -> np.ndarray:
    """Sum the 1-d `buf` over all ranks in place, by a ring; returns buf.

    `tag` names this reduction (e.g. its step), so messages of different
    reductions never mix.
    """
    n, r = transport.size, transport.rank
    if n == 1:
        return buf
    bounds = chunk_bounds(len(buf), n)

    def chunk(c):
        c %= n
        return buf[bounds[c]:bounds[c + 1]]

    right = (r + 1) % n
    sent = []
    for k in range(n - 1):  # reduce-scatter
        sent.append(transport.send(right, (tag, "rs", k), chunk(r - k)))
        target = chunk(r - k - 1)
        target += transport.recv((tag, "rs", k))
    for k in range(n - 1):  # all-gather
        sent.append(transport.send(right, (tag, "ag", k), chunk(r + 1 - k)))
        incoming = transport.recv((tag, "ag", k))
        sent[k].wait()  # chunk r - k went out in reduce-scatter round k; now it is overwritten
        chunk(r - k)[...] = incoming
    for handle in sent:
        handle.wait()
    return buf


def tree_allreduce(buf: np.ndarray, transport, tag) -> np.ndarray:
    """Sum the 1-d `buf` over all ranks in place, by a binomial tree; returns buf."""
    n, r = transport.size, transport.rank
    if n == 1:
        return buf
    mask, parent, handle = 1, None, None
    while mask < n:  # reduce towards rank 0: children in increasing rank order
        if r & mask:
            parent = r - mask
            handle = transport.send(parent, (tag, "up", r), buf)
            break
        child = r + mask
        if child < n:
            buf += transport.recv((tag, "up", child))
        mask <<= 1
    if parent is not None:
        incoming = transport.recv((tag, "down", r))
        handle.wait()
        buf[...] = incoming
    sent = []
    mask >>= 1
    while mask >= 1:  # broadcast back down the same tree
        child = r + mask
        if child < n:
            sent.append(transport.send(child, (tag, "down", child), buf))
        mask >>= 1
    for h in sent:
        h.wait()
    return buf


ALGORITHMS = {"ring": ring_allreduce, "tree": tree_allreduce}
