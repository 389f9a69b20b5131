"""The time loops under the `rnn_scan` op: forward and BPTT for relu, tanh, gru and lstm.

Written against an array module `xp` (numpy or cupy) on 2-D arrays: the input
`x2` is (N, X) with the N rows grouped by time step, as in a packed batch, or
for a lookup (N,) integer ids of rows of wx, the table of projected inputs.
The steps come in the order of their schedule, and each step's input terms
from a `Projection` (both in `knetflow.ops.rnn_input`). Sequences are sorted
by decreasing length, so the rows active at a step are always the first
`rows` rows of the running state: a sequence that has ended keeps its final
state there, and (reversed) a sequence that has not started still holds h0.

The work is shaped for BLAS: the input projection is a few large GEMMs, each
step adds one `h @ wh` GEMM, and the backward gets `dwh` from one GEMM after
the loop. Gate activations go into the saved arrays in place. The logistic
function is computed as 0.5 * tanh(x / 2) + 0.5, which is exact in real
arithmetic and much cheaper than an expit pass; the 1/2 is folded into the
weights (`rnn_input.gate_scale`).

Gate column blocks (H columns each) follow Knet's `rnnparam` ids:
lstm (i, f, n, o), gru (r, z, n) where z is the formulas' input gate i[t],
relu/tanh (a single block).
"""

from __future__ import annotations

from knetflow.ops.rnn_input import gate_scale, is_uniform, projection

GATES = {"relu": 1, "tanh": 1, "gru": 3, "lstm": 4}


def _state(xp, value, batch, hidden, dtype, buf=None):
    """A (batch, hidden) running state holding `value` (zeros when None), in `buf` if given."""
    if buf is None:
        buf = xp.zeros((batch, hidden), dtype=dtype)
    elif value is None:
        buf.fill(0)
    if value is not None:
        buf[...] = value
    return buf


def _buffer(xp, out, k, shape, dtype):
    """out[k], a buffer the plan gave for the loop's k-th result, else a new array."""
    given = None if out is None else out[k]
    return xp.empty(shape, dtype) if given is None else given


def _prev(xp, series, init, steps, k, b):
    """The state before step k for its first b rows: the previous step's rows, else init."""
    if k == 0:
        return init[:b]
    poff, pb = steps[k - 1]
    if pb >= b:
        return series[poff:poff + b]
    return xp.concatenate([series[poff:poff + pb], init[pb:b]])


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


def hidden_weight_grad(xp, y, h0, dgh, steps, batch, out=None):
    """sum over steps of h_prev.T @ dgates: one GEMM (two for a uniform batch), into out."""
    n, hidden = y.shape
    if len(steps) > 1 and is_uniform(steps):
        b = steps[0][1]
        if steps[0][0] == 0:  # forward in time: step t reads the rows of step t-1
            dw = xp.matmul(y[:n - b].T, dgh[b:], out=out)
            first = dgh[:b]
        else:
            dw = xp.matmul(y[b:].T, dgh[:n - b], out=out)
            first = dgh[n - b:]
        if h0 is not None:
            dw += xp.matmul(h0.T, first)
        return dw
    init = _state(xp, h0, batch, hidden, y.dtype)
    hp = xp.empty_like(y)
    for k, (off, b) in enumerate(steps):
        hp[off:off + b] = _prev(xp, y, init, steps, k, b)
    return xp.matmul(hp.T, dgh, out=out)


def bias_grads(xp, dg, out, k):
    """(dbx, dbh): the column sums of dg, into out[k] and out[k + 1] where given."""
    db = xp.sum(dg, axis=0, out=None if out is None else out[k])
    dbh = _buffer(xp, out, k + 1, db.shape, db.dtype)
    xp.copyto(dbh, db)
    return db, dbh


# ---- relu and tanh: h[t] = f(W x[t] + R h[t-1] + bW + bR) ----


def simple_forward(xp, mode, x2, wx, wh, bx, bh, h0, c0, steps, batch, scratch=None,
                   out=None):
    hidden = wh.shape[0]
    proj = projection(xp, x2, wx, bx + bh, steps, 1, hidden, scratch)
    y = _buffer(xp, out, 0, (x2.shape[0], hidden), wh.dtype)
    h = _state(xp, h0, batch, hidden, y.dtype, None if out is None else out[1])
    tmp = xp.empty((batch, hidden), y.dtype)
    for k, (off, b) in enumerate(steps):
        yt, rec = y[off:off + b], tmp[:b]
        xp.matmul(h[:b], wh, out=rec)
        xp.add(proj.rows(k), rec, out=yt)
        if mode == "tanh":
            xp.tanh(yt, out=yt)
        else:
            xp.maximum(yt, 0, out=yt)
        h[:b] = yt
    return y, h, None, ()


def simple_backward(xp, mode, gy, ghT, gcT, wh, y, ws, h0, c0, steps, batch, out=None):
    hidden = wh.shape[0]
    dg, whT = _buffer(xp, out, 0, y.shape, y.dtype), _transposed(xp, wh)
    dh = _state(xp, ghT, batch, hidden, y.dtype, None if out is None else out[4])
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
    dwh = hidden_weight_grad(xp, y, h0, dg, steps, batch, None if out is None else out[1])
    return (dg, dwh) + bias_grads(xp, dg, out, 2) + (dh,)


# ---- lstm ----


def lstm_forward(xp, mode, x2, wx, wh, bx, bh, h0, c0, steps, batch, scratch=None,
                 out=None):
    H, dtype = wh.shape[0], wh.dtype
    scale = gate_scale(xp, 4, H, (0, 1, 3), dtype)
    shift = 1 - scale
    proj = projection(xp, x2, wx, (bx + bh) * scale, steps, 4, H, scratch, scale)
    wh = wh * scale
    n = x2.shape[0]
    y, gates = _buffer(xp, out, 0, (n, H), dtype), _buffer(xp, out, 3, (n, 4 * H), dtype)
    cs, tcs = _buffer(xp, out, 4, (n, H), dtype), _buffer(xp, out, 5, (n, H), dtype)
    h = _state(xp, h0, batch, H, dtype, None if out is None else out[1])
    c = _state(xp, c0, batch, H, dtype, None if out is None else out[2])
    tmp, prod = xp.empty((batch, 4 * H), dtype), xp.empty((batch, H), dtype)
    for k, (off, b) in enumerate(steps):
        rows = slice(off, off + b)
        g, rec = gates[rows], tmp[:b]
        xp.matmul(h[:b], wh, out=rec)
        xp.add(proj.rows(k), rec, out=g)
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


def lstm_backward(xp, mode, gy, ghT, gcT, wh, y, ws, h0, c0, steps, batch, out=None):
    gates, cs, tcs = ws
    H, dtype = wh.shape[0], y.dtype
    dg, whT = _buffer(xp, out, 0, gates.shape, dtype), _transposed(xp, wh)
    dh = _state(xp, ghT, batch, H, dtype, None if out is None else out[4])
    dc = _state(xp, gcT, batch, H, dtype, None if out is None else out[5])
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
    dwh = hidden_weight_grad(xp, y, h0, dg, steps, batch, None if out is None else out[1])
    return (dg, dwh) + bias_grads(xp, dg, out, 2) + (dh, dc)


# ---- gru ----


def gru_forward(xp, mode, x2, wx, wh, bx, bh, h0, c0, steps, batch, scratch=None,
                out=None):
    H, dtype = wh.shape[0], wh.dtype
    # r, z, n; bR stays apart from bW, as n needs it apart
    scale = gate_scale(xp, 3, H, (0, 1), dtype)
    shift = 1 - scale
    proj = projection(xp, x2, wx, bx * scale, steps, 3, H, scratch, scale)
    wh, bh = wh * scale, bh * scale
    n = x2.shape[0]
    y, gates = _buffer(xp, out, 0, (n, H), dtype), _buffer(xp, out, 3, (n, 3 * H), dtype)
    hn = _buffer(xp, out, 4, (n, H), dtype)
    h = _state(xp, h0, batch, H, dtype, None if out is None else out[1])
    tmp = xp.empty((batch, 3 * H), dtype)
    for k, (off, b) in enumerate(steps):
        rows = slice(off, off + b)
        g, rec, p = gates[rows], tmp[:b], proj.rows(k)
        xp.matmul(h[:b], wh, out=rec)
        rec += bh
        xp.add(p[:, :2 * H], rec[:, :2 * H], out=g[:, :2 * H])
        g[:, 2 * H:] = p[:, 2 * H:]
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


def gru_backward(xp, mode, gy, ghT, gcT, wh, y, ws, h0, c0, steps, batch, out=None):
    gates, hn = ws
    H, dtype = wh.shape[0], y.dtype
    dg, dgh = _buffer(xp, out, 0, gates.shape, dtype), xp.empty_like(gates)
    whT = _transposed(xp, wh)
    dh = _state(xp, ghT, batch, H, dtype, None if out is None else out[4])
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
    dwh = hidden_weight_grad(xp, y, h0, dgh, steps, batch, None if out is None else out[1])
    dbx = xp.sum(dg, axis=0, out=None if out is None else out[2])
    dbh = xp.sum(dgh, axis=0, out=None if out is None else out[3])
    return dg, dwh, dbx, dbh, dh


FORWARD = {"relu": simple_forward, "tanh": simple_forward, "gru": gru_forward,
           "lstm": lstm_forward}
BACKWARD = {"relu": simple_backward, "tanh": simple_backward, "gru": gru_backward,
            "lstm": lstm_backward}
#: arrays each mode's forward saves for its backward (after y and the final states)
SAVED = {"relu": 0, "tanh": 0, "gru": 2, "lstm": 3}
