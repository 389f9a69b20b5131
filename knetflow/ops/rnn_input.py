"""The input side of a recurrent layer's loop: in which order the steps run, and each
step's input terms, computed a chunk of steps at a time just before the loop reaches
them.

A *schedule* lists the steps in the order they are processed as
`(row offset, rows)` of the input's N rows (grouped by time step, as in a packed
batch); a uniform batch is the packed batch whose steps all have B rows, and a
reversed direction is the same list reversed.

A `Projection` gives each step's (rows, G*H) input terms: `x2 @ wx` (a few large
GEMMs over chunks of steps into one reused block), x2 repeated per gate
(skip_input), or rows of a table of projected terms picked by ids (a lookup).

    >>> schedule(6, 2, None, reverse=True)
    [(4, 2), (2, 2), (0, 2)]
"""

from __future__ import annotations

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


#: about how many bytes of projected rows a chunk holds: small enough to stay in
#: the last-level cache until its steps read it, large enough for full-speed GEMMs
CHUNK_BYTES = 4 << 20


class Scratch:
    """Arrays a loop may reuse from one call to the next; `None` in its place allocates.

    A plan's bound kernel keeps one, so that the large projection chunk is
    memory already mapped: a GEMM writing into fresh pages pays the page faults
    on its threads, which on two threads cost as much as the GEMM itself.
    Nothing a loop returns ever lives here.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, xp, name, shape, dtype):
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = xp.empty(shape, dtype)
        return a


def _empty(xp, scratch, name, shape, dtype):
    if scratch is None:
        return xp.empty(shape, dtype)
    return scratch.get(xp, name, shape, dtype)


class Projection:
    """x2 @ wx + bias for the rows of each step, one chunk of steps at a time.

    `rows(k)` is step k's (b, G*H) block, valid until the step after it; the
    chunk holding step k is computed (one GEMM and one bias pass) when step k is
    the first of its chunk, in the order the loop processes the steps. Chunks
    are consecutive steps in that order, so their rows are contiguous in x2
    (reversed steps walk the rows backwards). Without wx (skip_input) a chunk
    is x2's rows repeated per gate, times `scale`; for ids x2 (a lookup), the
    rows of wx they pick.
    """

    def __init__(self, xp, x2, wx, bias, steps, width, scratch=None, scale=None):
        self.xp, self.x2, self.wx, self.bias, self.scale = xp, x2, wx, bias, scale
        per_row = width * bias.dtype.itemsize
        most = max([b for _, b in steps] + [CHUNK_BYTES // max(per_row, 1)])
        self.first, self.span = {}, []  # chunk start step -> chunk index; chunk row ranges
        k = 0
        while k < len(steps):
            j, lo, hi = k, steps[k][0], steps[k][0] + steps[k][1]
            while j + 1 < len(steps):
                off, b = steps[j + 1]
                if max(hi, off + b) - min(lo, off) > most:
                    break
                lo, hi, j = min(lo, off), max(hi, off + b), j + 1
            self.first[k] = len(self.span)
            self.span.append((lo, hi))
            k = j + 1
        rows = max([hi - lo for lo, hi in self.span] + [0])
        self.buf = _empty(xp, scratch, "projection", (rows, width), bias.dtype)
        self.steps, self.lo = steps, 0

    def rows(self, k):
        chunk = self.first.get(k)
        if chunk is not None:
            lo, hi = self.span[chunk]
            self.lo = lo
            out = self.buf[:hi - lo]
            if self.wx is None:
                xp, n = self.xp, hi - lo
                gates = out.shape[1] // self.x2.shape[1]
                xp.multiply(self.x2[lo:hi, None, :], self.scale.reshape(gates, -1),
                            out=out.reshape(n, gates, -1))
            elif self.x2.ndim == 1:
                self.xp.take(self.wx, self.x2[lo:hi], axis=0, out=out)
            else:
                self.xp.matmul(self.x2[lo:hi], self.wx, out=out)
            out += self.bias
        off, b = self.steps[k]
        return self.buf[off - self.lo:off - self.lo + b]


def gate_scale(xp, n_gates, hidden, sigm_blocks, dtype):
    """1/2 on the columns of the blocks that take a sigmoid, 1 elsewhere.

    sigm(a) = 0.5 * tanh(a / 2) + 0.5, so with the 1/2 folded into the (small)
    weights and biases a step needs one tanh over all its gates, then
    `g * scale + (1 - scale)` over whole rows (scale is 1/2 on sigmoid columns,
    1 elsewhere): contiguous passes, much cheaper than passes over column blocks.
    """
    scale = xp.ones(n_gates * hidden, dtype=dtype)
    for k in sigm_blocks:
        scale[k * hidden:(k + 1) * hidden] = 0.5
    return scale


def projection(xp, x2, wx, bias, steps, n_gates, hidden, scratch, scale=None):
    """The Projection of x2 by wx (times scale when given), plus bias (already scaled)."""
    if scale is None:
        scale = xp.ones(n_gates * hidden, dtype=bias.dtype)
        wxs = wx
    else:
        wxs = None if wx is None else wx * scale
    return Projection(xp, x2, wxs, bias, steps, n_gates * hidden, scratch, scale)
