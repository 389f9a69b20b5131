"""Tests of knetflow/ops/cpu_threads.py's `split_rows` and `split_batch`: parts cover
the rows in order, one per thread, only for calls big enough and only when the BLAS
budget gives two threads or more; errors from any part are raised."""

import threading

import numpy as np
import pytest

from knetflow.ops import cpu_threads
from tests.ops.threads import force_split, grow_pool, needs_pool


def _parts(n, nbytes):
    seen = []

    def job(a, b):
        seen.append(threading.get_ident())
        return (a, b)

    return cpu_threads.split_rows(n, job, nbytes), seen


@needs_pool
@pytest.mark.parametrize("n, want", [(2, [(0, 1), (1, 2)]), (7, [(0, 3), (3, 7)]),
                                     (100, [(0, 50), (50, 100)])])
def test_split_parts_cover_the_rows_in_order_on_two_threads(n, want, monkeypatch):
    force_split(monkeypatch, 2)
    parts, threads = _parts(n, 1)
    assert parts == want
    assert len(set(threads)) == 2


@needs_pool
def test_three_threads_get_near_even_parts(monkeypatch):
    force_split(monkeypatch, 3)
    parts, _ = _parts(8, 1)
    assert parts == [(0, 2), (2, 5), (5, 8)]


@needs_pool
def test_one_row_or_a_small_call_stays_on_this_thread(monkeypatch):
    force_split(monkeypatch, 2)
    assert _parts(1, 1 << 40) == ([(0, 1)], [threading.get_ident()])
    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 1 << 20)
    assert _parts(10, (1 << 20) - 1) == ([(0, 10)], [threading.get_ident()])
    assert len(_parts(10, 1 << 20)[0]) == 2


@needs_pool
def test_a_blas_budget_of_one_thread_disables_splitting(monkeypatch):
    from threadpoolctl import threadpool_limits

    grow_pool(2)
    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 0)
    assert cpu_threads.WORKERS is None
    with threadpool_limits(limits=1, user_api="blas"):
        assert _parts(10, 1 << 40) == ([(0, 10)], [threading.get_ident()])
    with threadpool_limits(limits=2, user_api="blas"):
        assert len(_parts(10, 1 << 40)[0]) == 2


def test_without_openblas_every_call_stays_on_this_thread(monkeypatch):
    monkeypatch.setattr(cpu_threads, "_blas", cpu_threads._OpenBlas())
    monkeypatch.setattr(cpu_threads._blas, "_found", True)      # found nothing usable
    monkeypatch.setattr(cpu_threads, "WORKERS", 4)
    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 0)
    assert _parts(10, 1 << 40)[0] == [(0, 10)]


@needs_pool
def test_an_error_in_either_part_is_raised(monkeypatch):
    force_split(monkeypatch, 2)
    limit = cpu_threads._blas._get()

    def fails(at):
        def job(a, b):
            if a == at:
                raise ValueError(f"part at {a}")
        return job

    for at in (0, 5):
        with pytest.raises(ValueError, match=f"part at {at}"):
            cpu_threads.split_rows(10, fails(at), 1)
    assert cpu_threads._blas._get() == limit and cpu_threads._blas._active == 0


@needs_pool
def test_each_part_has_its_own_scratch(monkeypatch):
    force_split(monkeypatch, 2)
    out = np.zeros(6)

    def job(a, b):
        (tmp,) = cpu_threads.scratch([(b - a, "float64")])
        tmp[...] = np.arange(a, b)
        out[a:b] = tmp * 2
        return tmp.__array_interface__["data"][0]

    addresses = cpu_threads.split_rows(6, job, 1)
    np.testing.assert_array_equal(out, np.arange(6) * 2.0)
    assert addresses[0] != addresses[1]


@needs_pool
@pytest.mark.parametrize("n", [1, 2, 7])
def test_split_batch_cuts_every_input_and_out_by_rows_and_makes_out_when_missing(
        n, monkeypatch):
    force_split(monkeypatch, 2)
    rows = []

    def part(x, y, out):
        rows.append(len(x))
        assert len(y) == len(out) == len(x)
        return np.subtract(x, y, out=out)

    kernel = cpu_threads.split_batch((n, 3), "float32", part, 1)
    x, y = np.arange(3.0 * n).reshape(n, 3), np.ones((n, 3))
    got = kernel(x, y)
    assert got.dtype == np.float32 and got.shape == (n, 3)
    np.testing.assert_array_equal(got, x - y)
    assert sorted(rows) == sorted([n // 2, n - n // 2] if n > 1 else [1])
    out = np.full((n, 3), np.nan, np.float32)
    assert kernel(x, y, out=out) is out
    np.testing.assert_array_equal(out, x - y)
