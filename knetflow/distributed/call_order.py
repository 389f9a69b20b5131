"""A replica's `run_steps` calls run in the order the client numbered them.

The client keeps a few calls queued on each replica (driver.py), so that no
replica idles while the client reads results. But Dask sends every actor
call as a message of its own, over whichever pooled connection is free, and
two calls sent one after the other may reach the worker in either order:
typically when both open new connections, at the start of a fit on a worker
that was just (re)started, or when the client refills its queue after a
recovery. Steps run out of order would meet their peers' gradients of other
steps (a shared-memory barrier counts reductions, not steps), or wait for
ring messages of a step the peers are not at, until the timeout.

So the client numbers each replica's calls 0, 1, 2, ... within a ring
generation (replica_calls.py), and the replica runs call k once call k-1 has ended.
`Turns` is that gate; it lives on the worker's event loop, where Dask runs
the coroutine methods of actors.

Example:
    >>> import asyncio
    >>> turns, ran = Turns(), []
    >>> async def call(ticket):
    ...     await turns.wait(0, ticket, lambda: None, timeout=5)
    ...     ran.append(ticket)
    ...     turns.done(0, ticket)
    >>> async def both():  # call 1 arrives first
    ...     await asyncio.gather(call(1), call(0))
    >>> asyncio.run(both()); ran
    [0, 1]
"""

from __future__ import annotations

import asyncio
import time

from knetflow.distributed.reduce import Aborted

__all__ = ["Turns"]

_POLL = 0.1  # seconds between checks of a waiting call (for aborts and a reset generation)


class Turns:
    """Which numbered call of the current generation may run next."""

    def __init__(self):
        self.generation, self.next = 0, 0
        self.running = False
        self._progress = time.monotonic()  # when a call last started or ended
        self._changed = None  # asyncio.Event set when `next` moves (made on the loop)

    def reset(self, generation: int) -> None:
        """A new generation: its calls are numbered from 0 (any thread may call this)."""
        self.generation, self.next, self.running = generation, 0, False
        self._progress = time.monotonic()

    async def wait(self, generation: int, ticket: int, check, timeout: float) -> None:
        """Return when call `ticket` of `generation` may run (it then runs alone until
        `done(ticket)`). Raises Aborted for a call of another generation or one that
        already ran, whatever `check()` raises (an aborted mailbox), and TimeoutError
        when the call before it has not arrived for `timeout` seconds."""
        while True:
            if generation != self.generation:
                raise Aborted(f"call {ticket} of ring generation {generation} reached a "
                              f"replica of generation {self.generation}")
            check()
            if ticket == self.next and not self.running:
                self.running = True
                self._progress = time.monotonic()
                return
            if ticket < self.next:
                raise Aborted(f"call {ticket} of generation {generation} arrived twice")
            if not self.running and time.monotonic() - self._progress > timeout:
                raise TimeoutError(f"call {self.next} of generation {generation} did not "
                                   f"arrive within {timeout:g} s (call {ticket} waits for it)")
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), _POLL)
            except asyncio.TimeoutError:
                pass

    def wake(self) -> None:
        """Have waiting calls look again now (after an abort). On the loop."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def done(self, generation: int, ticket: int) -> None:
        """Call `ticket` of `generation` ended (whatever its outcome): the next one may
        run. On the loop."""
        if generation == self.generation and ticket == self.next:
            self.next, self.running = ticket + 1, False
            self._progress = time.monotonic()
        self.wake()
