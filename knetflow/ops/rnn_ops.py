"""The recurrence as one op: `rnn_scan` runs one RNN layer in one direction over
all time steps, and `rnn_scan_grad` is its whole backward pass (BPTT) in one loop.

A 100-step sequence is thus one node in the forward graph and one in the
backward graph, never 100: plans stay small and compile in constant time.
The loops themselves live in `knetflow.ops.rnn_loops`, their input side (the
order of the steps, the input terms) in `knetflow.ops.rnn_input`.

    rnn_scan(x, wx, wh, bx, bh, h0=None, c0=None, mode, reverse, batch_sizes)
        -> (y, hT) or, for lstm, (y, hT, cT)

x is (T, B, X), or (N, X) packed time step after time step when
`batch_sizes` (non-increasing, summing to N) is given; wx is (X, G*H), wh is
(H, G*H), bx and bh are (G*H,), h0 and c0 are (B, H) with G the number of
gate blocks (1 for relu/tanh, 3 for gru, 4 for lstm); y is (T, B, H) or (N, H).
`wx=None` (Knet's skipInput) uses x itself as every gate's input term (X == H).
`lookup=True` takes x as integer ids, (T, B) or packed (N,), of rows of wx, a
(V, G*H) table of input terms already projected: the compiler folds an
embedding through the input matrix this way (`knetflow.graph.passes.project`).
The op also outputs the arrays its backward reads (gate activations, cell
states), which the public function hides.

The gradient rule gives dx and dwx from dgates with two ordinary matmuls
outside the loop op, so they vanish from the plan when unused (a data input).
"""

from __future__ import annotations

import threading
from itertools import pairwise

import numpy as np

from knetflow.ops.base import (
    INT_DTYPES, Op, Spec, TupleSpec, apply_multi, fail, fmt, register)
from knetflow.ops.rnn_input import Scratch, schedule
from knetflow.ops.rnn_loops import BACKWARD, FORWARD, GATES, SAVED

__all__ = ["rnn_scan"]


def _same(d1, d2) -> bool:
    return d1 is None or d2 is None or d1 == d2


def _split(rest, skip_input):
    """(wx, wh, bx, bh, state) from the inputs after x."""
    if skip_input:
        return (None,) + tuple(rest[:3]) + (tuple(rest[3:]),)
    return tuple(rest[:4]) + (tuple(rest[4:]),)


def _n_final(mode) -> int:
    """How many final states the mode outputs: h, and c for lstm."""
    return 2 if mode == "lstm" else 1


def _check_mode(opname, mode):
    if mode not in GATES:
        fail(opname, f"mode must be one of {sorted(GATES)}, got {mode!r}")


def _rows(opname, x: Spec, batch_sizes):
    """(leading shape of y, number of rows N, batch B) for input x."""
    if batch_sizes is None:
        if x.ndim != 3:
            fail(opname, f"input must be (T, B, X) without batch_sizes, got {fmt(x)}")
        t, b = x.shape[:2]
        return (t, b), (None if None in (t, b) else t * b), b
    if x.ndim != 2:
        fail(opname, f"input must be packed (N, X) with batch_sizes, got {fmt(x)}")
    n = sum(batch_sizes)
    if not _same(x.shape[0], n):
        fail(opname, f"input {fmt(x)} has {x.shape[0]} rows but batch_sizes sum to {n}")
    return (n,), n, batch_sizes[0]


def _looked_up(x: Spec, wx: Spec) -> Spec:
    """What the rows a lookup picks make up: the input x the layer reads."""
    if x.dtype not in INT_DTYPES:
        fail("rnn_scan", f"a lookup's input must be integer row ids, got {x.dtype} {fmt(x)}")
    if wx.ndim != 2:
        fail("rnn_scan", f"a lookup's table must be (V, G*H), got {fmt(wx)}")
    return Spec(x.shape + wx.shape[1:], wx.dtype)


def _check_weights(opname, x, wx, wh, bx, bh, mode, lookup=False):
    """Hidden size H from wh (H, G*H); every weight's shape checked against it and x."""
    gates = GATES[mode]
    if wh.ndim != 2 or not _same(wh.shape[1], None if wh.shape[0] is None else gates * wh.shape[0]):
        fail(opname, f"recurrent weight must be (H, {gates}*H) for {mode}, got {fmt(wh)}")
    hidden = wh.shape[0]
    width = None if hidden is None else gates * hidden
    for name, b in (("bx", bx), ("bh", bh)):
        if b.ndim != 1 or not _same(b.shape[0], width):
            fail(opname, f"bias {name} must be ({width},) for wh {fmt(wh)}, got {fmt(b)}")
    if wx is None:
        if not _same(x.shape[-1], hidden):
            fail(opname, f"skip_input needs input size == hidden size, got input {fmt(x)} "
                         f"and hidden size {hidden}")
    elif lookup:
        if not _same(wx.shape[1], width):
            fail(opname, f"a lookup's table must be (V, {width}) for wh {fmt(wh)}, got {fmt(wx)}")
    elif wx.ndim != 2 or not _same(wx.shape[0], x.shape[-1]) or not _same(wx.shape[1], width):
        fail(opname, f"input weight must be ({x.shape[-1]}, {width}) for input {fmt(x)} and "
                     f"wh {fmt(wh)}, got {fmt(wx)}")
    return hidden


def _check_dtypes(opname, specs):
    dtypes = {s.dtype for s in specs}
    if len(dtypes) > 1 or not specs[0].is_float:
        shown = ", ".join(repr(s) for s in specs)
        fail(opname, f"inputs must share one floating-point dtype, got {shown}")
    return specs[0].dtype


def _saved_specs(mode, n, hidden, dtype):
    widths = {"lstm": (4, 1, 1), "gru": (3, 1)}.get(mode, ())
    return tuple(Spec((n, None if hidden is None else w * hidden), dtype) for w in widths)


@register
class RnnScan(Op):
    """One RNN layer, one direction, all time steps (see module docstring)."""
    name = "rnn_scan"
    saves = ("out",)
    outs_arg = True

    def infer(x, *rest, mode="lstm", reverse=False, batch_sizes=None, skip_input=False,
              lookup=False):
        _check_mode("rnn_scan", mode)
        if skip_input and lookup:
            fail("rnn_scan", "a lookup reads its table in wx: it has no skip_input form")
        if len(rest) < (3 if skip_input else 4):
            fail("rnn_scan", f"needs x, {'' if skip_input else 'wx, '}wh, bx and bh")
        wx, wh, bx, bh, state = _split(rest, skip_input)
        if lookup:
            x = _looked_up(x, wx)
        dtype = _check_dtypes("rnn_scan", (x,) + tuple(rest))
        hidden = _check_weights("rnn_scan", x, wx, wh, bx, bh, mode, lookup)
        lead, n, batch = _rows("rnn_scan", x, batch_sizes)
        if len(state) not in (0, _n_final(mode)):
            fail("rnn_scan", f"{mode} takes {_n_final(mode)} initial state(s) or none, "
                             f"got {len(state)}")
        for s in state:
            if s.ndim != 2 or not _same(s.shape[0], batch) or not _same(s.shape[1], hidden):
                fail("rnn_scan", f"initial state must be ({batch}, {hidden}), got {fmt(s)}")
        final = Spec((batch, hidden), dtype)
        return TupleSpec((Spec(lead + (hidden,), dtype),) + (final,) * _n_final(mode)
                         + _saved_specs(mode, n, hidden, dtype))

    def forward(xp, x, *rest, mode="lstm", reverse=False, batch_sizes=None, skip_input=False,
                lookup=False, out=None):
        return _scan(xp, x, rest, mode, reverse, batch_sizes, skip_input, lookup, out=out)

    def bind(xp, attrs, in_specs, out_spec):
        """On NumPy, the loop with a Scratch of its own: its projection chunk is reused
        (already mapped memory) from one run of the plan to the next."""
        if xp is not np:
            return None
        scratch, lock = Scratch(), threading.Lock()
        mode, reverse = attrs.get("mode", "lstm"), attrs.get("reverse", False)
        batch_sizes, skip_input = attrs.get("batch_sizes"), attrs.get("skip_input", False)
        lookup = attrs.get("lookup", False)

        def rnn_scan(x, *rest, out=None):
            if not lock.acquire(blocking=False):  # the plan runs on another thread too
                return _scan(xp, x, rest, mode, reverse, batch_sizes, skip_input, lookup,
                             out=out)
            try:
                return _scan(xp, x, rest, mode, reverse, batch_sizes, skip_input, lookup,
                             scratch, out)
            finally:
                lock.release()

        return rnn_scan

    def grad(gs, outs, x, *rest, mode="lstm", reverse=False, batch_sizes=None,
             skip_input=False, lookup=False):
        from knetflow.ops.array import reshape, reshape_like, transpose
        from knetflow.ops.index import index_add, zeros_like
        from knetflow.ops.linalg import matmul
        from knetflow.ops.reduce import sum as sum_

        wx, wh, _, _, state = _split(rest, skip_input)
        k = 1 + _n_final(mode)
        given = tuple(g is not None for g in gs[:k])
        if not any(given):
            return (None,) * (1 + len(rest))
        ins = [g for g in gs[:k] if g is not None] + [wh, outs[0], *outs[k:], *state]
        res = apply_multi(RnnScanGrad, *ins, mode=mode, reverse=reverse,
                          batch_sizes=batch_sizes, given=given, has_state=bool(state))
        dxw, dwh, dbx, dbh = res[:4]
        if lookup:  # the rows' gradients added up per id: the table's gradient
            dx = None
            dwx = (index_add(zeros_like(wx), reshape(x, (-1,)), dxw),)
        elif skip_input:
            hidden = wh.shape[0]
            dx = reshape_like(sum_(reshape(dxw, (-1, GATES[mode], hidden)), axis=1), x)
            dwx = ()
        else:
            dx = reshape_like(matmul(dxw, transpose(wx)), x)
            dwx = (matmul(transpose(reshape(x, (-1, x.shape[-1]))), dxw),)
        return (dx,) + dwx + (dwh, dbx, dbh) + tuple(res[4:4 + len(state)])


def _scan(xp, x, rest, mode, reverse, batch_sizes, skip_input, lookup=False, scratch=None,
          out=None):
    """rnn_scan's outputs: y, the final state(s) and the arrays the backward reads.

    `out`: the plan's buffers for these outputs, None where it gives none.
    """
    wx, wh, bx, bh, state = _split(rest, skip_input)
    h0, c0 = (tuple(state) + (None, None))[:2]
    batch = x.shape[1] if batch_sizes is None else batch_sizes[0]
    if lookup:  # ids, read as rows of x's own (N, X) with one column
        _check_ids(x, wx.shape[0])
        x = x[..., None]
        x2 = x.reshape(-1)
    else:
        x2 = x.reshape(-1, x.shape[-1])
    steps = schedule(x2.shape[0], batch, batch_sizes, reverse)
    if out is not None:  # the loops take (y, h, c, *saved), with c None unless lstm
        y_buf = None if out[0] is None else out[0].reshape(-1, wh.shape[0])
        k = 1 + _n_final(mode)
        out = (y_buf, out[1], out[2] if mode == "lstm" else None) + tuple(out[k:])
    y, h, c, saved = FORWARD[mode](xp, mode, x2, wx, wh, bx, bh, h0, c0, steps, batch,
                                   scratch, out)
    y = y.reshape(x.shape[:-1] + (wh.shape[0],))
    return (y, h) + ((c,) if mode == "lstm" else ()) + tuple(saved)


def _check_ids(ids, rows):
    """IndexError unless every id picks a row of a `rows`-row table, as np.take (negative
    ids count from the end); the message says where such a lookup comes from."""
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < -rows or hi >= rows:
        raise IndexError(f"id {hi if hi >= rows else lo} is out of range for a lookup in a "
                         f"table of {rows} rows (the layer reads an embedding's rows as rows "
                         f"of E @ wx)")


def _grad_args(args, mode, given, has_state):
    """(gy, ghT, gcT, wh, y, saved, h0, c0) from rnn_scan_grad's inputs."""
    k = sum(given)
    grads = iter(args[:k])
    gy, ghT, gcT = ([next(grads) if g else None for g in given] + [None])[:3]
    wh, y = args[k], args[k + 1]
    saved = tuple(args[k + 2:k + 2 + SAVED[mode]])
    state = tuple(args[k + 2 + SAVED[mode]:]) if has_state else ()
    h0, c0 = (state + (None, None))[:2]
    return gy, ghT, gcT, wh, y, saved, h0, c0


@register
class RnnScanGrad(Op):
    """BPTT of `rnn_scan`: (dgates (N, G*H), dwh, dbx, dbh, dh0[, dc0]) in one loop.

    Inputs: the given output gradients (dy, dhT[, dcT], as flagged by `given`),
    wh, y, the saved arrays and, with `has_state`, h0[, c0].
    """
    name = "rnn_scan_grad"
    outs_arg = True

    def infer(*specs, mode="lstm", reverse=False, batch_sizes=None, given=(), has_state=False):
        _check_mode("rnn_scan_grad", mode)
        k = sum(given)
        wh, y = specs[k], specs[k + 1]
        hidden, width = wh.shape[0], wh.shape[1]
        if batch_sizes is None:
            t, b = y.shape[:2]
            n = None if None in (t, b) else t * b
        else:
            n, b = sum(batch_sizes), batch_sizes[0]
        state = Spec((b, hidden), y.dtype)
        return TupleSpec((Spec((n, width), y.dtype), wh, Spec((width,), y.dtype),
                          Spec((width,), y.dtype)) + (state,) * _n_final(mode))

    def forward(xp, *args, mode="lstm", reverse=False, batch_sizes=None, given=(),
                has_state=False, out=None):
        gy, ghT, gcT, wh, y, saved, h0, c0 = _grad_args(args, mode, given, has_state)
        hidden = wh.shape[0]
        batch = y.shape[1] if batch_sizes is None else batch_sizes[0]
        y2 = y.reshape(-1, hidden)
        gy2 = None if gy is None else gy.reshape(-1, hidden)
        steps = schedule(y2.shape[0], batch, batch_sizes, reverse)
        return BACKWARD[mode](xp, mode, gy2, ghT, gcT, wh, y2, saved, h0, c0, steps, batch,
                              out)

    def grad(gs, outs, *inputs, **attrs):
        raise NotImplementedError("rnn_scan_grad: second-order gradients through RNN layers "
                                  "are not implemented")


def _batch_sizes(batch_sizes):
    """batch_sizes as a tuple of ints, checked: positive and non-increasing."""
    if batch_sizes is None:
        return None
    sizes = tuple(int(b) for b in batch_sizes)
    if not sizes or any(b <= 0 for b in sizes) or any(a < b for a, b in pairwise(sizes)):
        fail("rnn_scan", f"batch_sizes must be positive and non-increasing (sequences sorted "
                         f"by decreasing length), got {list(sizes)}")
    return sizes


def rnn_scan(x, wx, wh, bx, bh, h0=None, c0=None, mode="lstm", reverse=False, batch_sizes=None,
             lookup=False):
    """One recurrent layer in one direction over a whole sequence, as one op (Knet `RNN`'s loop).

    Returns (y, hT), and (y, hT, cT) for lstm; see the module docstring for
    shapes. `wx=None` skips the input matrix (Knet's skipInput). With only
    one of h0, c0 given, the other starts at zero. `reverse=True` runs from
    the last step to the first (the backward half of a bidirectional layer).
    `lookup=True`: x holds integer ids, (T, B) or packed (N,), and the input
    terms of a row are row x of wx, a (V, G*H) table: `rnn_scan(ids, E @ wx, ...,
    lookup=True)` is `rnn_scan(kf.embedding(E, ids), wx, ...)`.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> x, wx, wh = np.ones((5, 2, 3)), np.zeros((3, 16)), np.zeros((4, 16))
        >>> y, h, c = kf.rnn_scan(x, wx, wh, np.zeros(16), np.zeros(16))
        >>> y.shape, h.shape
        ((5, 2, 4), (2, 4))
    """
    from knetflow.ops.index import zeros_like

    _check_mode("rnn_scan", mode)
    if mode != "lstm" and c0 is not None:
        fail("rnn_scan", f"{mode} has no cell state; c0 is for lstm only")
    if mode == "lstm" and (h0 is None) != (c0 is None):
        h0 = zeros_like(c0) if h0 is None else h0
        c0 = zeros_like(h0) if c0 is None else c0
    state = tuple(s for s in (h0, c0) if s is not None)
    if lookup and wx is None:
        fail("rnn_scan", "a lookup reads its rows in wx: give the (V, G*H) table")
    weights = (wh, bx, bh) if wx is None else (wx, wh, bx, bh)
    outs = apply_multi(RnnScan, x, *weights, *state, mode=mode, reverse=bool(reverse),
                       batch_sizes=_batch_sizes(batch_sizes), skip_input=wx is None,
                       **({"lookup": True} if lookup else {}))
    return tuple(outs[:1 + _n_final(mode)])
