"""RNN (rnn_scan, rnn_scan_grad, the RNN object, rnnparam/rnnparams) against a
step-by-step NumPy reference written from the seed's gate formulas."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.ops.rnn_ops import rnn_scan
from tests.ops.harness import Arg, Case, check

GATES = {"relu": 1, "tanh": 1, "gru": 3, "lstm": 4}
MODES = list(GATES)

# ---- the reference: one sequence, one time step at a time, the seed's formulas ----


def sigm(x):
    return 1 / (1 + np.exp(-x))


def cell(mode, x, h, c, W, R, bW, bR):
    """One step of the seed's formulas; W[k], R[k] are (in, H) blocks (W None: skipInput)."""
    def wx(k):
        return x if W is None else x @ W[k]

    if mode in ("relu", "tanh"):
        a = wx(0) + h @ R[0] + bW[0] + bR[0]
        return (np.tanh(a) if mode == "tanh" else np.maximum(a, 0)), c
    if mode == "gru":  # ids: reset 0, update (the formulas' input gate i) 1, new 2
        r = sigm(wx(0) + h @ R[0] + bW[0] + bR[0])
        i = sigm(wx(1) + h @ R[1] + bW[1] + bR[1])
        n = np.tanh(wx(2) + r * (h @ R[2] + bR[2]) + bW[2])
        return (1 - i) * n + i * h, c
    i = sigm(wx(0) + h @ R[0] + bW[0] + bR[0])  # lstm ids: input 0, forget 1, new 2, output 3
    f = sigm(wx(1) + h @ R[1] + bW[1] + bR[1])
    n = np.tanh(wx(2) + h @ R[2] + bW[2] + bR[2])
    o = sigm(wx(3) + h @ R[3] + bW[3] + bR[3])
    c = f * c + i * n
    return o * np.tanh(c), c


def run_direction(mode, seqs, params, h0, c0, reverse):
    """Each sequence (len_b, X) on its own: outputs (len_b, H) and the final h, c of each."""
    W, R, bW, bR = params
    hidden = R[0].shape[0]
    outs, hs, cs = [], [], []
    for b, seq in enumerate(seqs):
        h = np.zeros(hidden) if h0 is None else h0[b]
        c = np.zeros(hidden) if c0 is None else c0[b]
        out = np.zeros((len(seq), hidden))
        for t in (range(len(seq) - 1, -1, -1) if reverse else range(len(seq))):
            h, c = cell(mode, seq[t], h, c, W, R, bW, bR)
            out[t] = h
        outs.append(out)
        hs.append(h)
        cs.append(c)
    return outs, np.array(hs), np.array(cs)


def split(x, batch_sizes):
    """(T, B, X) or packed (N, X) -> one (len_b, X) array per sequence."""
    if batch_sizes is None:
        return [x[:, b] for b in range(x.shape[1])]
    offsets = np.cumsum([0] + list(batch_sizes))
    return [np.array([x[offsets[t] + b] for t in range(len(batch_sizes)) if batch_sizes[t] > b])
            for b in range(batch_sizes[0])]


def join(outs, batch_sizes):
    """The inverse of split."""
    if batch_sizes is None:
        return np.stack(outs, axis=1)
    return np.array([outs[b][t] for t in range(len(batch_sizes)) for b in range(batch_sizes[t])])


def blocks(wx, wh, bx, bh, gates):
    """Per-gate (in, H) blocks of full (in, G*H) matrices and (G*H,) biases."""
    def cut(a):
        return None if a is None else np.split(a, gates, axis=-1)

    return cut(wx), cut(wh), cut(bx), cut(bh)


def ref_scan(mode, reverse=False, batch_sizes=None):
    """A reference for rnn_scan(x, wx, wh, bx, bh[, h0[, c0]])."""
    def ref(x, wx, wh, bx, bh, h0=None, c0=None):
        params = blocks(wx, wh, bx, bh, GATES[mode])
        outs, h, c = run_direction(mode, split(x, batch_sizes), params, h0, c0, reverse)
        y = join(outs, batch_sizes)
        return (y, h, c) if mode == "lstm" else (y, h)

    return ref


def ref_rnn(r, x, batch_sizes=None, h0=None, c0=None):
    """A reference for the RNN object: weights read with rnnparam; (y, final h, final c)."""
    gates, dirs = GATES[r.rnn_type], r.directions
    seqs = split(x, batch_sizes)
    hs, cs = [], []
    for layer in range(r.num_layers):
        results = []
        for d in range(dirs):
            pl = layer * dirs + d
            W = None if kf.rnnparam(r, pl, 0, 0) is None else [
                kf.rnnparam(r, pl, k, 0) for k in range(gates)]
            R = [kf.rnnparam(r, pl, gates + k, 0) for k in range(gates)]
            bW = [kf.rnnparam(r, pl, k, 1) for k in range(gates)]
            bR = [kf.rnnparam(r, pl, gates + k, 1) for k in range(gates)]
            results.append(run_direction(r.rnn_type, seqs, (W, R, bW, bR),
                                         None if h0 is None else h0[pl],
                                         None if c0 is None else c0[pl], reverse=d == 1))
            hs.append(results[-1][1])
            cs.append(results[-1][2])
        seqs = [np.concatenate([res[0][b] for res in results], axis=1) for b in range(len(seqs))]
    return join(seqs, batch_sizes), np.array(hs), np.array(cs)


# ---- harness cases of the two ops ----


def _scan_case(mode, reverse=False, state=True, batch_sizes=None, skip=False, lookup=False,
               T=3, B=2, X=2, H=2, V=3):
    """A harness case of rnn_scan; `lookup`: x is ids of rows of a (V, G*H) table in wx,
    against the reference reading those rows with an identity input matrix."""
    width = GATES[mode] * H
    X = H if skip else X
    x_shape = (sum(batch_sizes), X) if batch_sizes else (T, B, X)
    B = batch_sizes[0] if batch_sizes else B
    if lookup:
        args = [Arg(x_shape[:-1], "int", high=V), Arg((V, width), "unit")]
    else:
        args = [Arg(x_shape)] + ([] if skip else [Arg((X, width), "unit")])
    args += [Arg((H, width), "unit"), Arg((width,), "unit"), Arg((width,), "unit")]
    if state:
        args += [Arg((B, H), "unit")] * (2 if mode == "lstm" else 1)
    ref = ref_scan(mode, reverse, batch_sizes)

    def fn(x, *rest):
        if skip:
            rest = (None,) + rest
        return rnn_scan(x, *rest[:4], *rest[4:], mode=mode, reverse=reverse,
                        batch_sizes=batch_sizes, lookup=lookup)

    def ref_fn(x, *rest):
        if lookup:
            table = rest[0]
            return ref(table[x], np.eye(width, dtype=table.dtype), *rest[1:])
        return ref(x, *(((None,) + rest) if skip else rest))

    name = (f"rnn_scan_{mode}{'_rev' if reverse else ''}{'' if state else '_nostate'}"
            f"{'_packed' if batch_sizes else ''}{'_skip' if skip else ''}"
            f"{'_lookup' if lookup else ''}")
    return Case(name, fn, ref_fn, args, grad_rtol=1e-4, grad_atol=1e-6)


CASES = [
    _scan_case("lstm"),
    _scan_case("lstm", reverse=True, state=False),
    _scan_case("lstm", batch_sizes=(3, 2, 2, 1)),
    _scan_case("lstm", reverse=True, batch_sizes=(3, 3, 1), skip=True),
    _scan_case("gru"),
    _scan_case("gru", reverse=True, batch_sizes=(3, 2, 1)),
    _scan_case("gru", state=False, skip=True),
    _scan_case("tanh"),
    _scan_case("tanh", reverse=True, batch_sizes=(2, 2, 1), state=False),
    _scan_case("relu"),
    _scan_case("relu", reverse=True, skip=True),
    _scan_case("lstm", lookup=True),
    _scan_case("lstm", reverse=True, batch_sizes=(3, 2, 2, 1), lookup=True),
    _scan_case("gru", state=False, lookup=True),
    _scan_case("tanh", reverse=True, lookup=True),
    _scan_case("relu", batch_sizes=(2, 2, 1), state=False, lookup=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- the RNN object against the reference ----


def _rnn(mode, dtype="float64", **kw):
    kf.seed(0)
    r = kf.RNN(kw.pop("X", 3), kw.pop("H", 4), rnn_type=mode, dtype=dtype, **kw)
    # random biases, so that every bias block is exercised
    r.w.value[...] = np.random.RandomState(1).uniform(-0.8, 0.8, r.w.value.shape)
    return r


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers,bidir", [(1, False), (1, True), (2, False), (2, True)])
def test_rnn_matches_reference(mode, layers, bidir):
    r = _rnn(mode, num_layers=layers, bidirectional=bidir, h=0, c=0)
    x = np.random.RandomState(2).randn(4, 3, 3)
    y = r(x)
    want_y, want_h, want_c = ref_rnn(r, x)
    assert y.shape == (4, 3, 4 * r.directions)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.h, want_h, rtol=1e-10, atol=1e-12)
    assert r.h.shape == (layers * r.directions, 3, 4)
    if mode == "lstm":
        np.testing.assert_allclose(r.c, want_c, rtol=1e-10, atol=1e-12)
    else:
        assert r.c == 0  # no cell state outside lstm: c stays as given


@pytest.mark.parametrize("mode", MODES)
def test_skip_input(mode):
    r = _rnn(mode, X=4, H=4, num_layers=2, bidirectional=True, skip_input=True)
    assert kf.rnnparam(r, 0, 0, 0) is None and kf.rnnparam(r, 1, 0, 0) is None
    assert kf.rnnparam(r, 2, 0, 0).shape == (8, 4)
    assert kf.rnnparam(r, 0, 0, 1).shape == (4,)  # input biases stay
    x = np.random.RandomState(3).randn(3, 2, 4)
    np.testing.assert_allclose(r(x), ref_rnn(r, x)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_batch_sizes(mode):
    sizes = (3, 3, 2, 1)
    r = _rnn(mode, num_layers=2, bidirectional=True, h=0, c=0)
    x = np.random.RandomState(4).randn(sum(sizes), 3)
    y = r(x, batch_sizes=sizes)
    want_y, want_h, want_c = ref_rnn(r, x, batch_sizes=sizes)
    assert y.shape == (9, 8) and r.h.shape == (4, 3, 4)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.h, want_h, rtol=1e-10, atol=1e-12)
    if mode == "lstm":
        np.testing.assert_allclose(r.c, want_c, rtol=1e-10, atol=1e-12)


def test_batch_sizes_equal_to_a_uniform_batch():
    r = _rnn("lstm", bidirectional=True)
    x = np.random.RandomState(5).randn(4, 2, 3)
    np.testing.assert_allclose(r(x.reshape(8, 3), batch_sizes=[2, 2, 2, 2]),
                               r(x).reshape(8, 8), rtol=1e-12)


def test_one_and_two_dimensional_inputs_are_one_time_step():
    r = _rnn("gru", bidirectional=True)
    x = np.random.RandomState(6).randn(2, 3)
    y2 = r(x)
    assert y2.shape == (2, 8)
    np.testing.assert_allclose(y2, r(x[None])[0], rtol=1e-12)
    y1 = r(x[0])
    assert y1.shape == (8,)
    np.testing.assert_allclose(y1, y2[0], rtol=1e-12)


# ---- hidden and cell states ----


def test_state_none_starts_at_zero_and_stays_none():
    r = _rnn("lstm")
    x = np.random.RandomState(7).randn(3, 2, 3)
    y = r(x)
    assert r.h is None and r.c is None
    np.testing.assert_allclose(y, ref_rnn(r, x)[0], rtol=1e-10)


def test_state_zero_is_replaced_by_the_final_state():
    r = _rnn("lstm", h=0, c=0)
    x = np.random.RandomState(8).randn(3, 2, 3)
    y = r(x)
    np.testing.assert_allclose(r.h[0], y[-1], rtol=1e-12)  # the last step's output
    _, h, c = ref_rnn(r, x)
    np.testing.assert_allclose(r.c, c, rtol=1e-10)


def test_state_array_is_the_initial_state_and_is_replaced():
    rs = np.random.RandomState(9)
    h0, c0 = rs.randn(2, 2, 4), rs.randn(2, 2, 4)
    r = _rnn("lstm", num_layers=2, h=h0.copy(), c=c0.copy())
    x = rs.randn(3, 2, 3)
    y = r(x)
    want_y, want_h, want_c = ref_rnn(r, x, h0=h0, c0=c0)
    np.testing.assert_allclose(y, want_y, rtol=1e-10)
    np.testing.assert_allclose(r.h, want_h, rtol=1e-10)
    np.testing.assert_allclose(r.c, want_c, rtol=1e-10)
    # calling again continues from the stored state
    y2 = r(x)
    np.testing.assert_allclose(y2, ref_rnn(r, x, h0=want_h, c0=want_c)[0], rtol=1e-10)


def test_only_h_given_for_lstm_starts_c_at_zero():
    rs = np.random.RandomState(10)
    h0 = rs.randn(1, 2, 4)
    r = _rnn("lstm", h=h0.copy())
    x = rs.randn(3, 2, 3)
    np.testing.assert_allclose(r(x), ref_rnn(r, x, h0=h0)[0], rtol=1e-10)
    assert r.c is None


def test_state_is_a_symbol_in_graphs():
    r = _rnn("gru", h=0)
    x = kf.placeholder("x", (3, None, 3), "float64")
    y = r(x)
    assert isinstance(r.h, kf.Symbol) and r.h.shape == (1, None, 4)
    xv = np.random.RandomState(11).randn(3, 5, 3)
    y_val, h_val = kf.compile([y, r.h]).run({"x": xv})
    np.testing.assert_allclose(y_val, ref_rnn(r, xv)[0], rtol=1e-10)
    np.testing.assert_allclose(h_val, ref_rnn(r, xv)[1], rtol=1e-10)


# ---- gradients through kf.diff ----


def _numeric(loss, p, k, eps=1e-6):
    flat = p.value.reshape(-1)
    old = flat[k]
    flat[k] = old + eps
    up = loss()
    flat[k] = old - eps
    down = loss()
    flat[k] = old
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("mode", MODES)
def test_diff_gradients_against_central_differences(mode):
    rs = np.random.RandomState(12)
    r = _rnn(mode, num_layers=2, bidirectional=True)
    sizes = (3, 2, 2)
    x = kf.Param(rs.randn(sum(sizes), 3))
    h0 = kf.Param(rs.randn(4, 3, 4))
    weights = rs.randn(sum(sizes), 8)

    def loss():
        r.h = h0
        r.c = h0 if mode == "lstm" else None
        y = r(x, batch_sizes=sizes)
        return kf.sum(y * weights) + kf.sum(r.h * r.h)

    result = kf.diff(loss)
    eager = float(loss())
    assert abs(result.value - eager) < 1e-9
    for p in (r.w, x, h0):
        g = kf.grad(result, p).reshape(-1)
        for k in rs.choice(p.value.size, 8, replace=False):
            assert g[k] == pytest.approx(_numeric(lambda: float(loss()), p, k), rel=1e-5,
                                         abs=1e-7)


def test_diff_of_a_long_sequence_is_a_small_plan():
    from knetflow.train.knet import trace_cache

    r = kf.RNN(3, 4, num_layers=2, bidirectional=True)
    sizes = {}
    for T in (5, 100):
        x = np.random.RandomState(13).randn(T, 2, 3).astype("float32")
        kf.diff(lambda x: kf.sum(r(x)), x)
        entry = next(reversed(trace_cache._cache.values()))[0]  # the newest trace
        ops = [n.op for n in entry.plan.graph.nodes]
        sizes[T] = len(ops)
        assert ops.count("rnn_scan") == 4 and ops.count("rnn_scan_grad") == 4
    assert sizes[5] == sizes[100] < 150


def test_second_order_is_not_implemented():
    x = kf.placeholder("x", (3, 2, 2), "float64")
    wx = kf.placeholder("wx", (2, 2), "float64")
    y, _ = rnn_scan(x, wx, np.eye(2) * 0.5, np.zeros(2), np.zeros(2), mode="tanh")
    first = kf.backward(kf.Graph([kf.sum(y)]), wrt=["wx"])
    with pytest.raises(NotImplementedError, match="rnn_scan_grad"):
        kf.backward(kf.Graph([kf.sum(kf.Symbol(first.outputs[1]))], inputs=[x, wx]), wrt=["wx"])


# ---- rnnparam, rnnparams, layout, initialization ----


def test_rnnparam_shapes_and_views():
    r = kf.RNN(3, 5, rnn_type="lstm", num_layers=2, bidirectional=True)
    assert kf.rnnparam(r, 0, 0, 0).shape == (3, 5)      # input side, first layer
    assert kf.rnnparam(r, 1, 7, 0).shape == (5, 5)      # recurrent side, backward direction
    assert kf.rnnparam(r, 2, 3, 0).shape == (10, 5)     # second layer reads both directions
    assert kf.rnnparam(r, 3, 6, 1).shape == (5,)
    view = kf.rnnparam(r, 1, 2, 0)
    view[...] = 7.0
    assert np.count_nonzero(r.w.value == 7.0) == 15     # a view into the flat Param
    n_weights = (3 * 20 + 5 * 20) * 2 + (10 * 20 + 5 * 20) * 2 + 4 * 2 * 20
    assert r.w.value.shape == (n_weights,)


@pytest.mark.parametrize("mode", MODES)
def test_rnnparams_order_and_count(mode):
    r = kf.RNN(2, 3, rnn_type=mode, num_layers=2)
    ps = kf.rnnparams(r)
    g = GATES[mode]
    assert len(ps) == 2 * 2 * (2 * g)
    matrices, biases = ps[:len(ps) // 2], ps[len(ps) // 2:]
    assert all(p.ndim == 2 for p in matrices) and all(p.ndim == 1 for p in biases)
    assert matrices[0].shape == (2, 3) and matrices[2 * g].shape == (3, 3)
    assert np.shares_memory(ps[1], kf.rnnparam(r, 0, 1, 0))
    assert sum(p.size for p in ps) == r.w.value.size


def test_initialization_winit_binit_finit():
    r = kf.RNN(3, 4, rnn_type="lstm", binit=kf.init.zeros, finit=kf.init.ones)
    for pl_id in range(8):
        bias = kf.rnnparam(r, 0, pl_id, 1)
        np.testing.assert_array_equal(bias, 1.0 if pl_id in (1, 5) else 0.0)
    assert np.abs(kf.rnnparam(r, 0, 0, 0)).max() <= np.sqrt(6 / 7)  # xavier bound
    assert r.w.value.dtype == np.float32
    gru = kf.RNN(3, 4, rnn_type="gru")
    assert not np.any(gru.w.value[-24:])  # biases zero; finit only concerns lstm


def test_dropout_only_in_training():
    r = _rnn("tanh", num_layers=2, dropout=0.5)
    x = np.random.RandomState(14).randn(3, 2, 3)
    np.testing.assert_allclose(r(x), ref_rnn(r, x)[0], rtol=1e-10)  # eager: not training
    ops = {n.op for n in kf.Graph([r(kf.placeholder("x", (3, 2, 3), "float64"))]).nodes}
    assert "dropout_mask" in ops


# ---- errors ----


def test_wrong_input_size_names_both():
    r = kf.RNN(5, 4)
    with pytest.raises(kf.ShapeError, match=r"\(3, 2, 7\).*input_size=5"):
        r(np.ones((3, 2, 7), "float32"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rnn_type"):
        kf.RNN(3, 4, rnn_type="lsmt")
    with pytest.raises(ValueError, match="skip_input"):
        kf.RNN(3, 4, skip_input=True)
    r = kf.RNN(3, 4, h=np.zeros((2, 2, 4), "float32"))
    with pytest.raises(kf.ShapeError, match=r"r\.h must be \(1, B, 4\)"):
        r(np.ones((3, 2, 3), "float32"))
    with pytest.raises(kf.ShapeError, match="non-increasing"):
        kf.RNN(3, 4)(np.ones((4, 3), "float32"), batch_sizes=[1, 3])
    with pytest.raises(kf.ShapeError, match="batch_sizes sum to 5"):
        kf.RNN(3, 4)(np.ones((4, 3), "float32"), batch_sizes=[3, 2])
    with pytest.raises(IndexError, match="id must be in 0..7"):
        kf.rnnparam(kf.RNN(3, 4), 0, 8, 0)


def test_rnn_scan_shape_errors():
    x = kf.placeholder("x", (3, 2, 5))
    with pytest.raises(kf.ShapeError, match=r"input weight must be \(5, 16\)"):
        rnn_scan(x, kf.placeholder("wx", (4, 16)), kf.placeholder("wh", (4, 16)),
                 kf.placeholder("bx", (16,)), kf.placeholder("bh", (16,)))
    with pytest.raises(kf.ShapeError, match=r"recurrent weight must be \(H, 3\*H\)"):
        rnn_scan(x, kf.placeholder("wx", (5, 12)), kf.placeholder("wh", (4, 16)),
                 kf.placeholder("bx", (12,)), kf.placeholder("bh", (12,)), mode="gru")


def test_an_id_out_of_range_names_the_lookup_as_the_embedding_did():
    rnn = kf.RNN(4, 5)
    emb = kf.Param(np.ones((3, 4), "float32"))
    ids = np.zeros((10, 2), "int64")
    ids[3, 1] = 7

    def loss(ids):
        return kf.sum(rnn(kf.embedding(emb, ids)))

    with pytest.raises(kf.ExecutionError, match=r"IndexError: id 7 is out of range for a lookup "
                                                r"in a table of 3 rows \(the layer reads an "
                                                r"embedding's rows as rows of E @ wx\)"):
        kf.diff(loss, ids)
    ids[3, 1] = -3   # as np.take: the first row
    want = kf.sum(rnn(kf.embedding(emb.value, np.where(ids < 0, ids + 3, ids))))
    assert kf.diff(loss, ids).value == pytest.approx(float(want), rel=1e-6)


def test_rnn_scan_lookup_errors():
    ids, table = kf.placeholder("ids", (3, 2), "int64"), kf.placeholder("t", (7, 16))
    wh, b = kf.placeholder("wh", (4, 16)), kf.placeholder("b", (16,))
    with pytest.raises(kf.ShapeError, match=r"lookup's input must be integer row ids, got "
                                            r"float32 \(3, 2\)"):
        rnn_scan(kf.placeholder("x", (3, 2)), table, wh, b, b, lookup=True)
    with pytest.raises(kf.ShapeError, match=r"lookup's table must be \(V, 16\) for wh "
                                            r"\(4, 16\), got \(7, 12\)"):
        rnn_scan(ids, kf.placeholder("t12", (7, 12)), wh, b, b, lookup=True)
    with pytest.raises(kf.ShapeError, match=r"lookup's table must be \(V, G\*H\), got \(16,\)"):
        rnn_scan(ids, b, wh, b, b, lookup=True)
    with pytest.raises(kf.ShapeError, match=r"lookup reads its rows in wx: give the \(V, "
                                            r"G\*H\) table"):
        rnn_scan(ids, None, wh, b, b, lookup=True)


# ---- the input projection in chunks, and the kernel plans bind ----


def _scan_inputs(rs, mode, x_shape, batch, hidden, skip):
    width = GATES[mode] * hidden
    inputs = hidden if skip else x_shape[-1]
    return (rs.randn(*x_shape), None if skip else rs.uniform(-0.6, 0.6, (inputs, width)),
            rs.uniform(-0.6, 0.6, (hidden, width)), rs.uniform(-0.5, 0.5, width),
            rs.uniform(-0.5, 0.5, width), rs.randn(batch, hidden),
            rs.randn(batch, hidden) if mode == "lstm" else None)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk_steps", [1, 2, 3])
@pytest.mark.parametrize("packed,reverse,skip", [(False, False, False), (True, True, False),
                                                 (False, True, True), (True, False, True)])
def test_projection_in_chunks_matches_the_reference(monkeypatch, mode, chunk_steps, packed,
                                                    reverse, skip):
    from knetflow.ops import rnn_input

    H, B = 3, 4
    # chunks of chunk_steps full steps (more when the packed batch's steps shrink)
    monkeypatch.setattr(rnn_input, "CHUNK_BYTES", chunk_steps * B * GATES[mode] * H * 8)
    sizes = (4, 4, 3, 2, 2, 1, 1) if packed else None
    shape = (sum(sizes), H if skip else 2) if packed else (7, B, H if skip else 2)
    x, wx, wh, bx, bh, h0, c0 = _scan_inputs(np.random.RandomState(20), mode, shape, B, H, skip)
    got = rnn_scan(x, wx, wh, bx, bh, h0, c0, mode=mode, reverse=reverse, batch_sizes=sizes)
    want = ref_scan(mode, reverse, sizes)(x, wx, wh, bx, bh, h0, c0)
    for g, w in zip(got, want, strict=False):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_plans_bound_kernel_equals_the_eager_op_run_after_run(monkeypatch, mode, reverse):
    from knetflow.ops import rnn_input
    from knetflow.ops.rnn_ops import RnnScan

    monkeypatch.setattr(rnn_input, "CHUNK_BYTES", 2 * 3 * GATES[mode] * 4 * 8)
    assert RnnScan.bind(np, {"mode": mode}, [], None) is not None
    rs = np.random.RandomState(21)
    _, wx, wh, bx, bh, h0, c0 = _scan_inputs(rs, mode, (5, 3, 2), 3, 4, False)
    x = kf.placeholder("x", (5, 3, 2), "float64")
    outs = rnn_scan(x, wx, wh, bx, bh, h0, c0, mode=mode, reverse=reverse)
    plan = kf.compile(list(outs))
    for _ in range(3):  # the kernel's scratch carries over: each run must still be exact
        xv = rs.randn(5, 3, 2)
        want = rnn_scan(xv, wx, wh, bx, bh, h0, c0, mode=mode, reverse=reverse)
        got = plan.run({"x": xv})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_kernels_outputs_are_not_its_scratch():
    from knetflow.ops.rnn_ops import RnnScan

    rs = np.random.RandomState(22)
    x, wx, wh, bx, bh, h0, c0 = _scan_inputs(rs, "lstm", (4, 2, 3), 2, 3, False)
    kernel = RnnScan.bind(np, {"mode": "lstm"}, [], None)
    first = [a.copy() for a in kernel(x, wx, wh, bx, bh, h0, c0)]
    kept = kernel(x, wx, wh, bx, bh, h0, c0)
    kernel(rs.randn(4, 2, 3), wx, wh, bx, bh, h0, c0)  # another run must leave `kept` alone
    for k, f in zip(kept, first, strict=True):
        np.testing.assert_array_equal(k, f)


def _scan_loss(mode, x, wx, wh, bx, bh, h0, c0, weights):
    """rnn_scan's outputs and a scalar of y and the last final state."""
    outs = rnn_scan(x, wx, wh, bx, bh, h0, c0, mode=mode)
    return outs, kf.sum(outs[0] * weights) + kf.sum(outs[-1] * outs[-1])


@pytest.mark.parametrize("mode", MODES)
def test_pooled_outputs_of_the_scan_and_its_backward_run_after_run(mode):
    # the gradient plan hands rnn_scan and rnn_scan_grad planned buffers for the outputs
    # read inside the plan (gates, dgates, ...); y's view, the last state and the gradients
    # are results: kept from one run, they must survive the next, and each run is exact
    from knetflow.ops.array import reshape

    rs = np.random.RandomState(23)
    _, wx, wh, bx, bh, h0, c0 = _scan_inputs(rs, mode, (5, 3, 2), 3, 4, False)
    weights = rs.randn(5, 3, 4)
    x = kf.placeholder("x", (5, 3, 2), "float64")
    w = kf.param("wh", value=wh, dtype="float64")
    outs, loss = _scan_loss(mode, x, wx, w, bx, bh, h0, c0, weights)
    graph = kf.backward(kf.Graph([loss, reshape(outs[0], (15, 4)), outs[-1]]), wrt=[x, w])
    plan = kf.compile(graph)
    kept = []
    for run in range(3):
        xv = rs.randn(5, 3, 2)
        got = plan.run({"x": xv})
        if run == 0:
            pooled = [b for prog in plan._programs.values()
                      for bufs in prog.memory.outs_of.values() for b in bufs]
            assert any(b is not None for b in pooled), "no planned buffer for a multi-output op"
        fresh = kf.compile(graph).run({"x": xv})  # new buffers: nothing carried over
        for g, f in zip(got, fresh, strict=True):
            np.testing.assert_array_equal(g, f)
        want = ref_scan(mode)(xv, wx, wh, bx, bh, h0, c0)
        np.testing.assert_allclose(got[1], want[0].reshape(15, 4), rtol=1e-10)
        np.testing.assert_allclose(got[2], want[-1], rtol=1e-10)
        for a, copy in kept:
            np.testing.assert_array_equal(a, copy)
        kept += [(a, a.copy()) for a in got]

    def ref_loss(xa, wha):
        outs = ref_scan(mode)(xa, wx, wha, bx, bh, h0, c0)
        return float((outs[0] * weights).sum() + (outs[-1] ** 2).sum())

    # the last run's gradients against central differences of the reference
    for value, grad, nudge in ((xv, got[3], lambda e: (xv + e, wh)),
                               (wh, got[4], lambda e: (xv, wh + e))):
        for k in rs.choice(value.size, 4, replace=False):
            e = np.zeros(value.size)
            e[k] = 1e-6
            e = e.reshape(value.shape)
            num = (ref_loss(*nudge(e)) - ref_loss(*nudge(-e))) / 2e-6
            assert grad.reshape(-1)[k] == pytest.approx(num, rel=1e-5, abs=1e-8)
