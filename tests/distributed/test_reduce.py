"""All-reduce algorithms over in-memory transports, one thread per rank (no Dask)."""

import threading

import numpy as np
import pytest

from knetflow.distributed.reduce import (
    Aborted,
    Mailbox,
    chunk_bounds,
    ring_allreduce,
    tree_allreduce,
)


class _Done:
    def wait(self):
        return None


class MemoryTransport:
    """Rank `rank` of `size`, sending copies into the peers' mailboxes."""

    def __init__(self, rank, boxes, log=None):
        self.rank, self.size, self.boxes, self.log = rank, len(boxes), boxes, log

    def send(self, dest, tag, array):
        if self.log is not None:
            self.log.append((self.rank, dest, tag))
        self.boxes[dest].put(tag, np.array(array))
        return _Done()

    def recv(self, tag):
        return self.boxes[self.rank].get(tag, timeout=10)


def run_ranks(reduce, inputs, tag="t"):
    """Run `reduce` on every rank at once; the buffers afterwards, by rank."""
    boxes = [Mailbox() for _ in inputs]
    bufs = [np.array(x) for x in inputs]
    errors = []

    def one(r):
        try:
            reduce(bufs[r], MemoryTransport(r, boxes), tag)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(r,)) for r in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    return bufs


@pytest.mark.parametrize("reduce", [ring_allreduce, tree_allreduce], ids=["ring", "tree"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
def test_allreduce_sums_and_every_rank_agrees(reduce, n):
    rng = np.random.default_rng(n)
    inputs = [rng.standard_normal(11) for _ in range(n)]
    out = run_ranks(reduce, inputs)
    np.testing.assert_allclose(out[0], np.sum(inputs, axis=0), rtol=1e-12, atol=1e-12)
    for buf in out[1:]:
        assert buf.tobytes() == out[0].tobytes()  # bit for bit: the same update everywhere


@pytest.mark.parametrize("reduce", [ring_allreduce, tree_allreduce], ids=["ring", "tree"])
def test_allreduce_is_deterministic(reduce):
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(1000) * 10.0 ** rng.integers(-8, 8, 1000) for _ in range(5)]
    first = run_ranks(reduce, inputs)[0]
    for _ in range(3):
        assert run_ranks(reduce, inputs)[0].tobytes() == first.tobytes()


def test_ring_buffer_shorter_than_ranks():
    inputs = [np.array([float(r)]) for r in range(4)]  # some chunks are empty
    for buf in run_ranks(ring_allreduce, inputs):
        assert buf.tolist() == [6.0]


def test_ring_sends_only_to_the_right_neighbour():
    boxes = [Mailbox() for _ in range(3)]
    log = []
    threads = [threading.Thread(target=ring_allreduce,
                                args=(np.ones(6), MemoryTransport(r, boxes, log), "t"))
               for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert {(src, dst) for src, dst, _ in log} == {(0, 1), (1, 2), (2, 0)}
    assert len(log) == 3 * 2 * (3 - 1)  # 2(n-1) rounds per rank


def test_chunk_bounds():
    assert chunk_bounds(10, 3) == [0, 4, 7, 10]
    assert chunk_bounds(2, 4) == [0, 1, 2, 2, 2]


def test_mailbox_abort_wakes_a_waiting_receiver():
    box = Mailbox()
    got = []

    def wait():
        try:
            box.get("never", timeout=10)
        except Aborted as e:
            got.append(str(e))

    t = threading.Thread(target=wait)
    t.start()
    box.abort("worker lost")
    t.join(5)
    assert got == ["worker lost"]
    with pytest.raises(Aborted):
        box.check()
    box.put("x", 1)
    box.reopen()  # the aborted round's messages are dropped
    box.check()
    with pytest.raises(TimeoutError, match="'x'"):
        box.get("x", timeout=0.01)
