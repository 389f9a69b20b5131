"""Test helpers for kernels that split their work between threads (knetflow/ops/cpu_threads.py)."""

import numpy as np
import pytest

from knetflow.ops import cpu_threads

needs_pool = pytest.mark.skipif(not cpu_threads._blas.usable,
                                reason="split calls need NumPy's BLAS to be a pthreads OpenBLAS")


def grow_pool(n):
    """OpenBLAS's pool grown to n threads (it never shrinks), the limit left as it was."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        np.ones((300, 300)) @ np.ones((300, 300))
    assert cpu_threads._blas._pool.value >= n


def force_split(monkeypatch, n=2):
    """Every `split_rows` call, however small, split between n threads."""
    grow_pool(n)
    monkeypatch.setattr(cpu_threads, "WORKERS", n)
    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 0)
    assert cpu_threads.workers() == n
