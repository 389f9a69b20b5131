"""The order of a replica's calls (call_order.py), on an event loop in this process."""

import asyncio

import pytest

from knetflow.distributed.reduce import Aborted
from knetflow.distributed.call_order import Turns


def never():
    """A `check` for a mailbox that is never aborted."""


async def run(turns, ran, generation, ticket, delay=0.0, timeout=5.0, check=never):
    await asyncio.sleep(delay)
    await turns.wait(generation, ticket, check, timeout)
    ran.append(ticket)
    await asyncio.sleep(0.01)  # the call "runs" a while: later tickets must wait for it
    turns.done(generation, ticket)


def test_calls_run_in_ticket_order_whatever_their_arrival():
    turns, ran = Turns(), []

    async def main():
        await asyncio.gather(*(run(turns, ran, 0, t, delay) for t, delay in
                               [(3, 0.0), (1, 0.01), (0, 0.03), (2, 0.02)]))

    asyncio.run(main())
    assert ran == [0, 1, 2, 3] and turns.next == 4


def test_a_new_generation_numbers_from_zero_and_turns_away_older_calls():
    turns, ran = Turns(), []

    async def main():
        await run(turns, ran, 0, 0)
        turns.reset(1)
        with pytest.raises(Aborted, match="call 1 of ring generation 0 reached a replica of "
                                          "generation 1"):
            await turns.wait(0, 1, never, 5)
        turns.done(0, 0)  # a late end of an old call changes nothing
        await run(turns, ran, 1, 0)

    asyncio.run(main())
    assert ran == [0, 0] and (turns.generation, turns.next) == (1, 1)


def test_a_call_that_already_ran_is_refused():
    turns = Turns()

    async def main():
        await run(turns, [], 0, 0)
        with pytest.raises(Aborted, match="call 0 of generation 0 arrived twice"):
            await turns.wait(0, 0, never, 5)

    asyncio.run(main())


def test_an_abort_reaches_waiting_calls_at_once():
    turns, aborted = Turns(), []

    def check():
        if aborted:
            raise Aborted("lost worker w1")

    async def main():
        waiting = asyncio.ensure_future(turns.wait(0, 1, check, 60))  # call 0 never comes
        await asyncio.sleep(0.02)
        aborted.append(True)
        turns.wake()
        loop = asyncio.get_running_loop()
        tic = loop.time()
        with pytest.raises(Aborted, match="lost worker w1"):
            await waiting
        return loop.time() - tic

    assert asyncio.run(main()) < 0.05  # woken, not found by the next periodic look


def test_a_call_whose_predecessor_never_arrives_times_out():
    turns = Turns()

    async def main():
        with pytest.raises(TimeoutError, match=r"call 0 of generation 0 did not arrive "
                                               r"within 0\.2 s \(call 1 waits for it\)"):
            await turns.wait(0, 1, never, timeout=0.2)

    asyncio.run(main())


def test_a_long_call_before_does_not_count_against_the_timeout():
    turns, ran = Turns(), []

    async def slow_first():
        await turns.wait(0, 0, never, 0.1)
        ran.append(0)
        await asyncio.sleep(0.4)  # longer than the timeout: call 1 still waits for it
        turns.done(0, 0)

    async def main():
        await asyncio.gather(slow_first(), run(turns, ran, 0, 1, delay=0.01, timeout=0.1))

    asyncio.run(main())
    assert ran == [0, 1]
