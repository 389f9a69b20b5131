"""Dropout as a layer: `kf.dropout` (Knet `dropout`), whose default drops only in
training (inside `kf.diff`/`kf.grad`, or in plans compiled with `training=True`).

The mask is the random op `dropout_mask` (knetflow/ops/random.py).
"""

from __future__ import annotations

from knetflow.graph import trace
from knetflow.graph.symbol import Symbol
from knetflow.ops.base import apply
from knetflow.ops.binary import mul
from knetflow.ops.random import DropoutMask

__all__ = ["dropout"]


def _symbolic(x) -> bool:
    """Whether x builds graph nodes (a Symbol, or a traced object inside a trace)."""
    return isinstance(x, Symbol) or (
        trace.current() is not None and hasattr(x, "__knetflow_trace__"))


def dropout(x, p, drop=None, seed=None):
    """Zero each element of x with probability p, scale the rest by 1/(1-p) (Knet `dropout`).

    `drop=None` drops only in training: not on eager arrays, and in graphs
    only when compiled with `training=True`. `drop=True` always drops,
    `drop=False` never. `seed` (an int) makes the mask deterministic.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> y = kf.dropout(np.ones(1000), 0.5, drop=True, seed=1)
        >>> sorted(set(y.tolist()))
        [0.0, 2.0]
        >>> x = np.ones(3)
        >>> kf.dropout(x, 0.5) is x  # eager calls are not training: x itself
        True
    """
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must lie in [0, 1], got {p}")
    if p == 0.0 or drop is False:
        return x
    if drop is None and not _symbolic(x):
        return x
    mask = apply(DropoutMask, x, p=p, seed=None if seed is None else int(seed),
                 training_only=drop is None)
    return mul(x, mask)
