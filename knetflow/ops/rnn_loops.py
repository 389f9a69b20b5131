"""The time loops under the `rnn_scan` op: forward and BPTT for relu, tanh, gru and lstm.

Written against an array module `xp` (numpy or cupy) on 2-D arrays: the input
`x2` is (N, X) with the N rows grouped by time step, as in a packed batch.
A *schedule* lists the steps in the order they are processed as
`(row offset, rows)`; a uniform batch is the packed batch whose steps all have
B rows, and a reversed direction is the same list reversed. Sequences are
sorted by decreasing length, so the rows active at a step are always the first
`rows` rows of the running state: a sequence that has ended keeps its final
state there, and (reversed) a sequence that has not started still holds h0.

The work is shaped for BLAS: the input projection `x2 @ wx` of every step is
one GEMM before the loop, each step adds one `h @ wh` GEMM, and the backward
gets `dwh` from one GEMM after the loop. Gate activations go into the saved
arrays in place. The logistic function is computed as 0.5 * tanh(x / 2) + 0.5,
which is exact in real arithmetic and much cheaper than an expit pass; the
1/2 is folded into the weights (`_halved`).

Gate column blocks (H columns each) follow Knet's `rnnparam` ids:
lstm (i, f, n, o), gru (r, z, n) where z is the formulas' input gate i[t],
relu/tanh (a single block).
"""

from __future__ import annotations

GATES = {"relu": 1, "tanh": 1, "gru": 3, "lstm": 4}


def schedule(n_rows: int, batch: int, batch_sizes, reverse: bool) -> list:
    """[(row offset, rows)] of every step, in the order the direction processes them."""
    if batch_sizes is None:
        sizes = [batch] * (n_rows // batch if batch else 0)
    else:
        sizes = list(batch_sizes)
    steps, off = [], 0
    for b in sizes:
        steps.append((off, b))
        off += b
    return steps[::-1] if reverse else steps


def is_uniform(steps) -> bool:
    return len({b for _, b in steps}) <= 1


def _state(xp, value, batch, hidden, dtype):
    """A fresh (batch, hidden) running state holding `value` (zeros when None)."""
    out = xp.zeros((batch, hidden), dtype=dtype)
    if value is not None:
        out[...] = value
    return out


def _prev(xp, series, init, steps, k, b):
    """The state before step k for its first b rows: the previous step's rows, else init."""
    if k == 0:
        return init[:b]
    poff, pb = steps[k - 1]
    if pb >= b:
        return series[poff:poff + b]
    return xp.concatenate([series[poff:poff + pb], init[pb:b]])


def _project(xp, x2, wx, n_gates):
    """x2 @ wx for all steps at once; without wx (skip_input) x2 repeated per gate.

    Biases are added per step to the small recurrent product, which is in cache,
    rather than in a pass over this large array.
    """
    return xp.tile(x2, (1, n_gates)) if wx is None else xp.matmul(x2, wx)


def _halved(xp, x2, wx, wh, biases, n_gates, sigm_blocks):
    """Inputs with the gate columns of the blocks that take a sigmoid scaled by 1/2.

    sigm(a) = 0.5 * tanh(a / 2) + 0.5, so with the 1/2 folded into the (small)
    weights and biases a step needs one tanh over all its gates, then
    `g * scale + (1 - scale)` over whole rows (scale is 1/2 on sigmoid columns,
    1 elsewhere): contiguous passes, much cheaper than passes over column blocks.
    Returns (x2 @ wx for all steps, wh, biases, scale), scaled.
    """
    hidden = wh.shape[0]
    scale = xp.ones(n_gates * hidden, dtype=wh.dtype)
    for k in sigm_blocks:
        scale[k * hidden:(k + 1) * hidden] = 0.5
    if wx is None:
        xw = _project(xp, x2, None, n_gates)
        xw *= scale
    else:
        xw = _project(xp, x2, wx * scale, n_gates)
    return xw, wh * scale, [b * scale for b in biases], scale


def _dsigm_(xp, d, s, tmp):
    """d *= s * (1 - s), the logistic's derivative at output s."""
    xp.subtract(1, s, out=tmp)
    tmp *= s
    d *= tmp


def _dtanh_(xp, d, t, tmp):
    """d *= 1 - t**2, tanh's derivative at output t."""
    xp.multiply(t, t, out=tmp)
    xp.subtract(1, tmp, out=tmp)
    d *= tmp


def _transposed(xp, w):
    """w.T laid out row-major: BLAS multiplies by it up to twice as fast as by a strided view."""
    return xp.ascontiguousarray(w.T)


def hidden_weight_grad(xp, y, h0, dgh, steps, batch):
    """sum over steps of h_prev.T @ dgates: one GEMM (two for a uniform batch)."""
    n, hidden = y.shape
    if len(steps) > 1 and is_uniform(steps):
        b = steps[0][1]
        if steps[0][0] == 0:  # forward in time: step t reads the rows of step t-1
            dw = xp.matmul(y[:n - b].T, dgh[b:])
            first = dgh[:b]
        else:
            dw = xp.matmul(y[b:].T, dgh[:n - b])
            first = dgh[n - b:]
        if h0 is not None:
            dw += xp.matmul(h0.T, first)
        return dw
    init = _state(xp, h0, batch, hidden, y.dtype)
    hp = xp.empty_like(y)
    for k, (off, b) in enumerate(steps):
        hp[off:off + b] = _prev(xp, y, init, steps, k, b)
    return xp.matmul(hp.T, dgh)


# ---- relu and tanh: h[t] = f(W x[t] + R h[t-1] + bW + bR) ----


def simple_forward(xp, mode, x2, wx, wh, bx, bh, h0, c0, steps, batch):
    hidden = wh.shape[0]
    y, bias = _project(xp, x2, wx, 1), bx + bh
    h = _state(xp, h0, batch, hidden, y.dtype)
    tmp = xp.empty((batch, hidden), y.dtype)
    for off, b in steps:
        yt, rec = y[off:off + b], tmp[:b]
        xp.matmul(h[:b], wh, out=rec)
        rec += bias
        yt += rec
        if mode == "tanh":
            xp.tanh(yt, out=yt)
        else:
            xp.maximum(yt, 0, out=yt)
        h[:b] = yt
    return y, h, None, ()


def simple_backward(xp, mode, gy, ghT, gcT, wh, y, ws, h0, c0, steps, batch):
    hidden = wh.shape[0]
    dg, whT = xp.empty_like(y), _transposed(xp, wh)
    dh = _state(xp, ghT, batch, hidden, y.dtype)
    tmp = xp.empty((batch, hidden), y.dtype)
    for k in range(len(steps) - 1, -1, -1):
        off, b = steps[k]
        rows = slice(off, off + b)
        dht, d = dh[:b], dg[rows]
        if gy is not None:
            dht += gy[rows]
        if mode == "tanh":
            xp.copyto(d, dht)
            _dtanh_(xp, d, y[rows], tmp[:b])
        else:
            xp.multiply(dht, y[rows] > 0, out=d)
        xp.matmul(d, whT, out=dht)
    dwh = hidden_weight_grad(xp, y, h0, dg, steps, batch)
    db = dg.sum(axis=0)
    return dg, dwh, db, db.copy(), dh


# ---- lstm ----


def lstm_forward(xp, mode, x2, wx, wh, bx, bh, h0, c0, steps, batch):
    H = wh.shape[0]
    gates, wh, (bias,), scale = _halved(xp, x2, wx, wh, [bx + bh], 4, (0, 1, 3))
    dtype, shift = gates.dtype, 1 - scale
    y, cs, tcs = (xp.empty((gates.shape[0], H), dtype) for _ in range(3))
    h, c = _state(xp, h0, batch, H, dtype), _state(xp, c0, batch, H, dtype)
    tmp, prod = xp.empty((batch, 4 * H), dtype), xp.empty((batch, H), dtype)
    for off, b in steps:
        rows = slice(off, off + b)
        g, rec = gates[rows], tmp[:b]
        xp.matmul(h[:b], wh, out=rec)
        rec += bias
        g += rec
        xp.tanh(g, out=g)
        g *= scale
        g += shift
        ct = cs[rows]
        xp.multiply(g[:, H:2 * H], c[:b], out=ct)
        ct += xp.multiply(g[:, :H], g[:, 2 * H:3 * H], out=prod[:b])
        c[:b] = ct
        xp.tanh(ct, out=tcs[rows])
        xp.multiply(g[:, 3 * H:], tcs[rows], out=y[rows])
        h[:b] = y[rows]
    return y, h, c, (gates, cs, tcs)


def lstm_backward(xp, mode, gy, ghT, gcT, wh, y, ws, h0, c0, steps, batch):
    gates, cs, tcs = ws
    H, dtype = wh.shape[0], y.dtype
    dg, whT = xp.empty_like(gates), _transposed(xp, wh)
    dh, dc = _state(xp, ghT, batch, H, dtype), _state(xp, gcT, batch, H, dtype)
    c_init = _state(xp, c0, batch, H, dtype)
    t1, t2 = xp.empty((batch, H), dtype), xp.empty((batch, 4 * H), dtype)
    # the gates' derivatives are g * (lin - g) + (1 - lin): s(1 - s) for the
    # sigmoids (lin 1), 1 - n^2 for the tanh (lin 0), in whole-row passes
    lin = xp.ones(4 * H, dtype=dtype)
    lin[2 * H:3 * H] = 0
    const = 1 - lin
    for k in range(len(steps) - 1, -1, -1):
        off, b = steps[k]
        rows = slice(off, off + b)
        g, d, tc = gates[rows], dg[rows], tcs[rows]
        i, f, n, o = (g[:, j * H:(j + 1) * H] for j in range(4))
        di, df, dn, do = (d[:, j * H:(j + 1) * H] for j in range(4))
        dht, dct, s = dh[:b], dc[:b], t1[:b]
        if gy is not None:
            dht += gy[rows]
        xp.multiply(dht, tc, out=do)
        # dc[t] = dh[t] * o * (1 - tanh(c)^2) + dc from step t+1
        xp.multiply(tc, tc, out=s)
        xp.subtract(1, s, out=s)
        s *= o
        s *= dht
        dct += s
        xp.multiply(dct, n, out=di)
        xp.multiply(dct, _prev(xp, cs, c_init, steps, k, b), out=df)
        xp.multiply(dct, i, out=dn)
        dct *= f
        slope = xp.subtract(lin, g, out=t2[:b])
        slope *= g
        slope += const
        d *= slope
        xp.matmul(d, whT, out=dht)
    dwh = hidden_weight_grad(xp, y, h0, dg, steps, batch)
    db = dg.sum(axis=0)
    return dg, dwh, db, db.copy(), dh, dc


# ---- gru ----


def gru_forward(xp, mode, x2, wx, wh, bx, bh, h0, c0, steps, batch):
    H = wh.shape[0]
    # r, z, n; bR stays apart from bW, as n needs it apart
    gates, wh, (bx, bh), scale = _halved(xp, x2, wx, wh, [bx, bh], 3, (0, 1))
    shift = 1 - scale
    dtype = gates.dtype
    y, hn = xp.empty((gates.shape[0], H), dtype), xp.empty((gates.shape[0], H), dtype)
    h = _state(xp, h0, batch, H, dtype)
    tmp = xp.empty((batch, 3 * H), dtype)
    for off, b in steps:
        rows = slice(off, off + b)
        g, rec = gates[rows], tmp[:b]
        g += bx
        xp.matmul(h[:b], wh, out=rec)
        rec += bh
        g[:, :2 * H] += rec[:, :2 * H]
        xp.tanh(g[:, :2 * H], out=g[:, :2 * H])
        g *= scale  # r, z from tanh to sigm; the n block (scale 1, shift 0) is unchanged
        g += shift
        hn[rows] = rec[:, 2 * H:]
        n = g[:, 2 * H:]
        n += xp.multiply(g[:, :H], rec[:, 2 * H:], out=rec[:, :H])
        xp.tanh(n, out=n)
        # h[t] = (1 - z) * n + z * h[t-1] = n + z * (h[t-1] - n)
        ht = y[rows]
        xp.subtract(h[:b], n, out=ht)
        ht *= g[:, H:2 * H]
        ht += n
        h[:b] = ht
    return y, h, None, (gates, hn)


def gru_backward(xp, mode, gy, ghT, gcT, wh, y, ws, h0, c0, steps, batch):
    gates, hn = ws
    H, dtype = wh.shape[0], y.dtype
    dg, dgh, whT = xp.empty_like(gates), xp.empty_like(gates), _transposed(xp, wh)
    dh = _state(xp, ghT, batch, H, dtype)
    h_init = _state(xp, h0, batch, H, dtype)
    t1, direct = xp.empty((batch, H), dtype), xp.empty((batch, H), dtype)
    for k in range(len(steps) - 1, -1, -1):
        off, b = steps[k]
        rows = slice(off, off + b)
        g, d, e, s = gates[rows], dg[rows], dgh[rows], t1[:b]
        r, z, n = (g[:, j * H:(j + 1) * H] for j in range(3))
        dr, dz, dn = (d[:, j * H:(j + 1) * H] for j in range(3))
        dht = dh[:b]
        if gy is not None:
            dht += gy[rows]
        xp.subtract(1, z, out=dn)
        dn *= dht
        _dtanh_(xp, dn, n, s)
        xp.subtract(_prev(xp, y, h_init, steps, k, b), n, out=dz)
        dz *= dht
        _dsigm_(xp, dz, z, s)
        xp.multiply(dn, hn[rows], out=dr)
        _dsigm_(xp, dr, r, s)
        e[:, :2 * H] = d[:, :2 * H]
        xp.multiply(dn, r, out=e[:, 2 * H:])
        xp.multiply(dht, z, out=direct[:b])
        xp.matmul(e, whT, out=dht)
        dht += direct[:b]
    dwh = hidden_weight_grad(xp, y, h0, dgh, steps, batch)
    return dg, dwh, dg.sum(axis=0), dgh.sum(axis=0), dh


FORWARD = {"relu": simple_forward, "tanh": simple_forward, "gru": gru_forward,
           "lstm": lstm_forward}
BACKWARD = {"relu": simple_backward, "tanh": simple_backward, "gru": gru_backward,
            "lstm": lstm_backward}
#: arrays each mode's forward saves for its backward (after y and the final states)
SAVED = {"relu": 0, "tanh": 0, "gru": 2, "lstm": 3}
