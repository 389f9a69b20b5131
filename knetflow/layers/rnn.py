"""Knet's `RNN` layer object with `rnnparam` and `rnnparams`, built on the `rnn_scan` op.

    r = kf.RNN(input_size, hidden_size, rnn_type="lstm", num_layers=1, ...)
    y = r(x)                 # x (T, B, X) -> y (T, B, H) or (T, B, 2H) bidirectional
    r.h, r.c                 # hidden and cell states, (L or 2L, B, H)

Each layer and direction is one `rnn_scan` node (the whole time loop) and its
gradient one `rnn_scan_grad` node, so a long sequence never unrolls into the
graph. The object holds all weights in one flat `kf.Param` `r.w`, which
`kf.diff` finds like any captured Param.

Layout of `r.w` (row-major; l is the 0-based pseudo-layer: layer * directions
+ direction, so forward and backward alternate when bidirectional; G gate
blocks of H columns each): first every weight matrix, for l = 0, 1, ...: the
input matrix Wx_l of shape (X_l, G*H) (absent with skip_input for the first
layer's directions), then the recurrent matrix Wh_l of shape (H, G*H); then
every bias, for l = 0, 1, ...: bx_l (G*H,) and bh_l (G*H,). X_l is input_size
for the first layer and H (2H bidirectional) above it. Gate pre-activations
are x[t] @ Wx_l + h[t-1] @ Wh_l + bx_l + bh_l, so `rnnparam(r, l, id, 0)`,
the seed's transposed matrix, is column block `id` of Wx_l (ids 0..G-1,
shape (X_l, H)) or block id-G of Wh_l (ids G..2G-1, shape (H, H)).
Gate ids follow Knet: relu/tanh 0 input, 1 hidden; gru reset 0/3, update 1/4,
new 2/5; lstm input 0/4, forget 1/5, new 2/6, output 3/7.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow import initializers
from knetflow.graph import state
from knetflow.graph.param import Param
from knetflow.layers.dropout import dropout
from knetflow.layers.state_attr import StateAttribute
from knetflow.ops.array import concat, reshape, stack
from knetflow.ops.base import Spec, fail, fmt
from knetflow.ops.elementwise import cast
from knetflow.ops.index import getitem
from knetflow.ops.rnn_loops import GATES
from knetflow.ops.rnn_ops import rnn_scan

__all__ = ["RNN", "rnnparam", "rnnparams"]


def _layout(input_size, hidden, gates, layers, dirs, skip_input) -> tuple:
    """({(pl, part): (offset, shape)}, total size) of the flat weight vector."""
    entries, off = {}, 0
    width = gates * hidden
    for pl in range(layers * dirs):
        x_l = input_size if pl < dirs else hidden * dirs
        if not (skip_input and pl < dirs):
            entries[(pl, "wx")] = (off, (x_l, width))
            off += x_l * width
        entries[(pl, "wh")] = (off, (hidden, width))
        off += hidden * width
    for pl in range(layers * dirs):
        for part in ("bx", "bh"):
            entries[(pl, part)] = (off, (width,))
            off += width
    return entries, off


def _shape_of(x) -> tuple:
    spec = getattr(x, "spec", None)
    if spec is not None and hasattr(spec, "shape"):
        return tuple(spec.shape)
    return tuple(np.shape(x))


class RNN:
    """A multi-layer relu/tanh/gru/lstm RNN with one flat weight Param (Knet `RNN`).

    `r(x, batch_sizes=None)` takes x of shape (T, B, X), (B, X) (one step) or
    (X,) (one instance, one step), or a packed (N, X) batch with `batch_sizes`
    (the batch size of each time step, non-increasing: sequences sorted by
    decreasing length, N = sum(batch_sizes)); y has x's leading shape and H
    (2H bidirectional) columns. The states `r.h`, `r.c` (c for lstm only) are
    (L or 2L, B, H): None starts at zero and stays None; 0 starts at zero and
    is replaced by the final state; an array (or Param) is the initial state
    and is replaced by the final state.

    What `r.h`/`r.c` hold:
    - eager calls on arrays: the final state arrays;
    - symbolic graphs (placeholders): the final state symbols, to use as
      outputs (`kf.compile([y, r.h])`);
    - while `kf.diff`/`kf.grad` traces a function: the symbol of the latest
      final state in the trace, so a second `r(x)` in the same function
      continues from it and the loss may use `r.h` (differentiably). They get
      their values back when the trace ends;
    - after every `kf.diff`/`kf.grad` call, the first (traced) and cached
      ones alike: the final states as arrays (values, not symbols). The next
      call feeds them as its initial state, as plain values: a training loop
      over sequence chunks carries the state from chunk to chunk (truncated
      BPTT, no gradient across calls; Knet's `r.h = value(r.h)` between
      calls is not needed, and harmless). Set `r.h = r.c = 0` (or None) to
      start again from zero. A call where r.h holds another kind of value
      than when traced (None, 0, an array, another batch size) traces again.
      Assigning `r.h` inside the differentiated function is part of the trace
      (e.g. `r.h = 0` restarts every call), and a Param there is differentiated.

    `dropout` is applied to the input of every layer in training graphs.
    `winit` fills each (X, H) block, `binit` each bias block, and `finit` both
    forget-gate bias blocks of an lstm (ids 1 and 5).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> r = kf.RNN(3, 4, rnn_type="gru", h=0)
        >>> r(np.ones((5, 2, 3), dtype="float32")).shape, r.h.shape
        ((5, 2, 4), (1, 2, 4))
    """

    def __init__(self, input_size: int, hidden_size: int, rnn_type: str = "lstm",
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 skip_input: bool = False, h=None, c=None, winit=initializers.xavier_uniform,
                 binit=initializers.zeros, finit=initializers.ones, dtype="float32"):
        if rnn_type not in GATES:
            raise ValueError(f"RNN: rnn_type must be one of {sorted(GATES)}, got {rnn_type!r}")
        if min(input_size, hidden_size, num_layers) < 1:
            raise ValueError(f"RNN: sizes must be positive, got input_size={input_size}, "
                             f"hidden_size={hidden_size}, num_layers={num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RNN: dropout must lie in [0, 1), got {dropout}")
        if skip_input and input_size != hidden_size:
            raise ValueError(f"RNN: skip_input needs input_size == hidden_size, got "
                             f"{input_size} and {hidden_size}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.rnn_type, self.num_layers = rnn_type, int(num_layers)
        self.bidirectional, self.dropout = bool(bidirectional), float(dropout)
        self.skip_input, self.dtype = bool(skip_input), str(np.dtype(dtype))
        self.layout, size = _layout(self.input_size, self.hidden_size, GATES[rnn_type],
                                    self.num_layers, self.directions, self.skip_input)
        self.w = Param(np.zeros(size, dtype=self.dtype))
        self._h, self._c = h, c  # see the properties: state of traces
        self._initialize(winit, binit, finit)

    h = StateAttribute("Hidden state (L or 2L, B, H): None, 0, an array, a Param, or a "
                       "symbol (see above).")
    c = StateAttribute("Cell state of an lstm, like `h`.")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _initialize(self, winit, binit, finit):
        for a in rnnparams(self):
            if a is not None:
                a[...] = np.asarray((winit if a.ndim == 2 else binit)(*a.shape))
        if self.rnn_type == "lstm":
            for pl in range(self.num_layers * self.directions):
                for gate in (1, 5):
                    view = rnnparam(self, pl, gate, 1)
                    view[...] = np.asarray(finit(*view.shape))

    def _piece(self, w, pl, part):
        """The weight `part` of pseudo-layer pl as a (symbolic or concrete) slice of w."""
        if (pl, part) not in self.layout:
            return None
        off, shape = self.layout[(pl, part)]
        return reshape(getitem(w, slice(off, off + math.prod(shape))), shape)

    def __call__(self, x, batch_sizes=None):
        shape = _shape_of(x)
        if not shape or not (shape[-1] is None or shape[-1] == self.input_size):
            fail("RNN", f"input of shape {fmt(_spec(shape))} does not match input_size="
                        f"{self.input_size}: the last axis holds the {self.input_size} inputs")
        x, out_shape = _as_sequence(x, shape, batch_sizes, self.hidden_size * self.directions)
        batch = int(batch_sizes[0]) if batch_sizes is not None else _shape_of(x)[1]
        h0, c0 = self._initial_states(batch)
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            x = self._maybe_dropout(x)
            ys = []
            for d in range(self.directions):
                pl = layer * self.directions + d
                outs = rnn_scan(x, self._piece(self.w, pl, "wx"), self._piece(self.w, pl, "wh"),
                                self._piece(self.w, pl, "bx"), self._piece(self.w, pl, "bh"),
                                _layer_state(h0, pl), _layer_state(c0, pl), mode=self.rnn_type,
                                reverse=d == 1, batch_sizes=batch_sizes)
                ys.append(outs[0])
                finals_h.append(outs[1])
                finals_c.append(outs[2] if len(outs) > 2 else None)
            x = ys[0] if len(ys) == 1 else _concat(ys)
        self._store_finals(finals_h, finals_c)
        return _reshape(x, out_shape)

    def _maybe_dropout(self, x):
        if self.dropout == 0.0:
            return x
        return dropout(x, self.dropout)

    def _initial_states(self, batch):
        """(h0, c0): the given initial states (None for zero), checked against the batch."""
        h0 = _state_value(self, "h", batch)
        c0 = _state_value(self, "c", batch) if self.rnn_type == "lstm" else None
        return h0, c0

    def _store_finals(self, finals_h, finals_c):
        if self._h is not None:
            state.write(self, "_h", stack(finals_h, axis=0), "RNN.h")
        if self.rnn_type == "lstm" and self._c is not None:
            state.write(self, "_c", stack(finals_c, axis=0), "RNN.c")

    def __repr__(self) -> str:
        return (f"RNN({self.input_size}, {self.hidden_size}, rnn_type={self.rnn_type!r}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional})")


def _spec(shape):
    return Spec(tuple(shape), "float32")


def _state_value(r, which, batch):
    """r.h or r.c as an initial state: None for zero (None or 0), else the array, checked.

    Inside a trace an array is an input fed from r.h/r.c at each call (graph/state.py).
    """
    value = state.read(r, "_" + which, f"RNN.{which}")
    if value is None or (isinstance(value, (int, float)) and value == 0):
        return None
    if isinstance(value, (int, float)):
        raise TypeError(f"RNN: r.{which} must be None, 0 or an array, got {value!r}")
    shape = _shape_of(value)
    want = (r.num_layers * r.directions, r.hidden_size)
    if len(shape) != 3 or shape[0] != want[0] or shape[2] != want[1]:
        fail("RNN", f"state r.{which} must be ({want[0]}, B, {want[1]}), got "
                    f"{fmt(_spec(shape))}")
    if None not in (batch, shape[1]) and batch != shape[1]:
        fail("RNN", f"state r.{which} {fmt(_spec(shape))} is for a batch of {shape[1]}, but the "
                    f"input has a batch of {batch}: set r.{which} = 0 (or None) to start a new "
                    f"batch from zero")
    if np.dtype(value.dtype) != np.dtype(r.dtype):
        value = value.astype(r.dtype) if isinstance(value, np.ndarray) else cast(value, r.dtype)
    return value


def _layer_state(state, pl):
    return None if state is None else getitem(state, pl)


def _concat(ys):
    return concat(ys, axis=-1)


def _as_sequence(x, shape, batch_sizes, out_width):
    """x as (T, B, X) (or packed (N, X)) and the shape to give y at the end (None: as is)."""
    if batch_sizes is not None:
        n = sum(int(b) for b in batch_sizes)
        rows = None if None in shape[:-1] else math.prod(shape[:-1])
        if rows is not None and rows != n:
            fail("RNN", f"input of shape {fmt(_spec(shape))} has {rows} rows but "
                        f"batch_sizes sum to {n}")
        if len(shape) == 2:
            return x, None
        return reshape(x, (n, shape[-1])), shape[:-1] + (out_width,)
    if len(shape) == 3:
        return x, None
    if len(shape) == 2:
        return reshape(x, (1, -1, shape[-1])), (-1, out_width)
    if len(shape) == 1:
        return reshape(x, (1, 1, shape[-1])), (out_width,)
    fail("RNN", f"input must be (X,), (B, X) or (T, B, X), got {fmt(_spec(shape))}")


def _reshape(y, shape):
    return y if shape is None else reshape(y, shape)


def _check_index(r, layer, id, param):
    gates = GATES[r.rnn_type]
    n_layers = r.num_layers * r.directions
    if not 0 <= layer < n_layers:
        raise IndexError(f"rnnparam: layer must be in 0..{n_layers - 1}, got {layer}")
    if not 0 <= id < 2 * gates:
        raise IndexError(f"rnnparam: id must be in 0..{2 * gates - 1} for {r.rnn_type}, "
                         f"got {id}")
    if param not in (0, 1):
        raise IndexError(f"rnnparam: param must be 0 (matrix) or 1 (bias), got {param}")
    return gates


def rnnparam(r: RNN, layer: int, id: int, param: int):
    """A view of one weight matrix (param=0) or bias (param=1) of r.w (Knet `rnnparam`).

    0-based: `layer` counts pseudo-layers (directions alternate when
    bidirectional), `id` < G are the input side, `id` >= G the recurrent side
    (see the module docstring for the gate order). A matrix is (X_l, H) or
    (H, H), used as x @ W; the input matrix of a skip_input layer is None.

    Example:
        >>> import knetflow as kf
        >>> r = kf.RNN(3, 4)
        >>> kf.rnnparam(r, 0, 1, 0).shape, kf.rnnparam(r, 0, 5, 1).shape
        ((3, 4), (4,))
    """
    gates = _check_index(r, layer, id, param)
    part = ("wx", "wh", "bx", "bh")[2 * param + (id >= gates)]
    if (layer, part) not in r.layout:
        return None
    off, shape = r.layout[(layer, part)]
    block = r.w.value[off:off + math.prod(shape)].reshape(shape)
    j, hidden = id % gates, r.hidden_size
    cols = slice(j * hidden, (j + 1) * hidden)
    return block[:, cols] if param == 0 else block[cols]


def rnnparams(r: RNN) -> list:
    """Every matrix, then every bias, as views of r.w sorted by (layer, id) (Knet `rnnparams`).

    Input matrices of skip_input layers are None.
    """
    n_ids = 2 * GATES[r.rnn_type]
    n_layers = r.num_layers * r.directions
    return [rnnparam(r, layer, id, param) for param in (0, 1)
            for layer in range(n_layers) for id in range(n_ids)]
