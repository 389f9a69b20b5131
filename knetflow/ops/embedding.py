"""Embedding lookup: rows of a (V, E) table picked by integer ids of any shape.

`embedding(w, ids)` is `w[ids]`, shaped `(*ids.shape, E)`. Its gradient
scatter-adds the output gradient into a zero table with `index_add` (so
repeated ids accumulate), whose own gradient is a lookup again: second
derivatives work.
"""

from __future__ import annotations

from knetflow.ops.base import INT_DTYPES, Op, Spec, apply, fail, fmt, register
from knetflow.ops.index import index_add, zeros_like

__all__ = ["embedding"]


@register
class Embedding(Op):
    """Rows of table w (V, E) at integer ids: shape (*ids.shape, E)."""
    name, out_arg, nondiff = "embedding", True, (1,)
    saves = (1,)

    def infer(w: Spec, ids: Spec) -> Spec:
        if w.ndim != 2:
            fail("embedding", f"the table must be a (V, E) matrix, got {w!r}")
        if ids.dtype not in INT_DTYPES:
            fail("embedding", f"ids must be integers, got {ids.dtype} {fmt(ids)}")
        return Spec(ids.shape + (w.shape[1],), w.dtype)

    def forward(xp, w, ids, out=None):
        return xp.take(w, ids, axis=0, out=out)

    def grad(g, out, w, ids):
        return (index_add(zeros_like(w, dtype=g.dtype), ids, g), None)


def embedding(w, ids):
    """The rows of the (V, E) table w at integer `ids`, shaped (*ids.shape, E).

    0-based ids (Python); the gradient w.r.t. w adds up the rows' gradients,
    so an id used twice gets the sum.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = np.arange(6.0).reshape(3, 2)
        >>> kf.embedding(w, np.array([[2, 0]]))
        array([[[4., 5.],
                [0., 1.]]])
    """
    return apply(Embedding, w, ids)
