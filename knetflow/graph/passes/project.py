"""Folding a lookup in a small table through an RNN layer's input matrix.

A recurrent layer over embedded ids, `rnn_scan(embedding(E, ids), wx, ...)`,
multiplies each of the N looked-up rows by wx: N*X*G*H multiply-adds forward,
and twice that backward (the input's and wx's gradients). When the table has
few rows (characters, a small vocabulary), those input terms are rows of the
small table `E @ wx`, so the layer can look them up there, a chunk of steps
at a time as its loop reaches them: `rnn_scan(ids, E @ wx, wh, bx, bh,
lookup=True)`. Differentiated, the three N-row products become V-row ones: the
table's gradient adds the gates' gradients up per id, and E's and wx's
gradients are products with it.

The results are the same sums; only their rounding differs (a row's input
terms are one dot product either way, but BLAS may block it differently).
`kf.backward` folds before differentiating, where the whole gain is; the
compiler folds what is left in a plan's graph (then only the forward product
goes).

Example:
    >>> import knetflow as kf, numpy as np
    >>> ids = kf.placeholder("ids", (20, 8), "int64")
    >>> E, wx = kf.param("E", value=np.ones((5, 3))), kf.param("wx", value=np.ones((3, 8)))
    >>> wh, b = kf.param("wh", value=np.ones((2, 8))), kf.param("b", value=np.zeros(8))
    >>> y, h, c = kf.rnn_scan(kf.embedding(E, ids), wx, wh, b, b)
    >>> [n.op for n in fold_embedding_projections(kf.Graph([y])).nodes if n.op != "param"]
    ['input', 'matmul', 'rnn_scan', 'get']
"""

from __future__ import annotations

import math

from knetflow.graph.node import Graph
from knetflow.graph.passes.dce import eliminate_dead_code
from knetflow.graph.passes.rewrite import rewrite
from knetflow.graph.symbol import Symbol

#: fold when the batch has at least this many rows per row of the table: the
#: table's product (V rows) then costs at most half of the rows' (N rows)
MIN_ROWS_PER_ENTRY = 2


def _lookup(x):
    """(embedding node, reshape node or None) when x is a table lookup, maybe reshaped
    keeping its last axis; else (None, None)."""
    reshaped = None
    if x.op == "reshape" and x.spec.is_static and x.inputs[0].spec.is_static:
        reshaped, x = x, x.inputs[0]
        if x.spec.shape[-1:] != reshaped.spec.shape[-1:]:
            return None, None
    return (x, reshaped) if x.op == "embedding" else (None, None)


def _foldable(node):
    """The lookup feeding rnn_scan `node` and its reshape when folding it pays, else None."""
    if (node.op != "rnn_scan" or node.attrs.get("skip_input")
            or node.attrs.get("lookup")):
        return None
    lookup, reshaped = _lookup(node.inputs[0])
    if lookup is None:
        return None
    table, ids = lookup.inputs
    if not (table.spec.is_static and ids.spec.is_static):
        return None
    rows = math.prod(ids.spec.shape)
    if table.spec.shape[0] * MIN_ROWS_PER_ENTRY > rows:
        return None
    return lookup, reshaped


def fold_embedding_projections(graph: Graph) -> Graph:
    """Each `rnn_scan` reading `embedding(E, ids)` (perhaps reshaped) with at least
    `MIN_ROWS_PER_ENTRY` ids per row of E looks its input terms up in `E @ wx`
    instead; other nodes stay. See the module docstring."""
    from knetflow.ops.array import reshape
    from knetflow.ops.linalg import matmul

    def visit(node):
        found = _foldable(node)
        if found is None:
            return node
        lookup, reshaped = found
        table, ids = lookup.inputs
        wx, rest = node.inputs[1], node.inputs[2:]

        def placed(sym):  # a new node where and as the layer was built
            return sym.node.replace(device=node.device, where=node.where)

        terms = placed(matmul(Symbol(table), Symbol(wx)))
        if reshaped is not None:
            ids = placed(reshape(Symbol(ids), reshaped.spec.shape[:-1]))
        return node.replace(inputs=(ids, terms) + rest, attrs={**node.attrs, "lookup": True})

    new = rewrite(graph, visit)
    return graph if new is graph else eliminate_dead_code(new)  # lookups left unread
