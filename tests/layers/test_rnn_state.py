"""RNN final states through kf.diff: r.h/r.c after traced and cached calls, the
carried-state (truncated BPTT) loop, state inside a trace, devices, misuse."""

import numpy as np
import pytest

import knetflow as kf
from tests.ops.test_rnn import _rnn, ref_rnn
from tests.train.knet.traced import TraceLog, one_sim_device, trace_on

CHUNKS = [np.random.RandomState(20 + k).randn(4, 3, 3) for k in range(4)]


def _loss(r, traces, weights=None):
    wy = np.random.RandomState(21).randn(4, 3, 4 * r.directions) if weights is None else weights

    def loss(x):
        traces.append(1)
        return kf.sum(r(x) * wy)

    return loss, wy


def _check_carried(r, loss, traces, n_traces=2):
    """kf.diff over CHUNKS from zero: after each call, the states equal the reference."""
    h = c = None
    for x in CHUNKS:
        kf.diff(loss, x)
        _, h, c = ref_rnn(r, x, h0=h, c0=c)
        assert type(r.h) is np.ndarray
        np.testing.assert_allclose(r.h, h, rtol=1e-10, atol=1e-12)
        if r.rnn_type == "lstm":
            assert type(r.c) is np.ndarray
            np.testing.assert_allclose(r.c, c, rtol=1e-10, atol=1e-12)
    assert len(traces) == n_traces  # r.h = 0 at the first call, an array after it


@pytest.mark.parametrize("mode,layers,bidir", [("lstm", 1, False), ("gru", 1, False),
                                               ("lstm", 2, True), ("gru", 2, False)])
def test_states_after_traced_and_cached_calls_match_the_reference(mode, layers, bidir):
    r = _rnn(mode, num_layers=layers, bidirectional=bidir, h=0, c=0)
    traces = TraceLog()
    _check_carried(r, _loss(r, traces)[0], traces)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_states_come_back_from_a_plan_on_a_strict_sim_device(mode):
    r = _rnn(mode, h=0, c=0)
    traces = TraceLog()
    loss, _ = _loss(r, traces)
    with one_sim_device() as sim:
        kf.diff(loss, CHUNKS[0])       # the first call traces with r.h = 0 (on cpu:0)
        _, h, c = ref_rnn(r, CHUNKS[0])
        trace_on(sim, loss, CHUNKS[1])  # r.h is an array now: the cached trace runs on sim:0
        for x in CHUNKS[1:]:
            kf.diff(loss, x)
            _, h, c = ref_rnn(r, x, h0=h, c0=c)
            assert type(r.h) is np.ndarray
            np.testing.assert_allclose(r.h, h, rtol=1e-10, atol=1e-12)
            if mode == "lstm":
                np.testing.assert_allclose(r.c, c, rtol=1e-10, atol=1e-12)
    assert len(traces) == 2


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_carried_state_training_loop_matches_an_eager_loop(mode):
    """Truncated BPTT, the seed's idiom: r.h carries from chunk to chunk as a value."""
    r = _rnn(mode, h=0, c=0)
    traces = TraceLog()
    loss, wy = _loss(r, traces)
    losses, weights = [], []
    for epoch in range(2):
        r.h = r.c = 0  # each epoch starts from zero
        for x in CHUNKS:
            weights.append(r.w.value.copy())
            result = kf.diff(loss, x)
            losses.append(result.value)
            r.w.value -= 0.05 * kf.grad(result, r.w)
    assert len(traces) == 2  # both traces are kept: no retrace at the second epoch
    twin = _rnn(mode)  # the same loop run eagerly, with the weights each step had
    k = 0
    for epoch in range(2):
        twin.h = twin.c = 0
        for x in CHUNKS:
            twin.w.value[...] = weights[k]
            assert float(kf.sum(twin(x) * wy)) == pytest.approx(losses[k], rel=1e-10)
            k += 1
    np.testing.assert_allclose(r.h, twin.h, rtol=1e-10)


def test_the_gradient_does_not_flow_across_calls():
    """A carried state is fed as a plain value: the gradient is that of one chunk
    from the given initial state (compared with an explicit h0 array)."""
    r = _rnn("gru", h=0)
    traces = TraceLog()
    loss, _ = _loss(r, traces)
    kf.diff(loss, CHUNKS[0])
    h0 = r.h.copy()
    g_carried = kf.grad(kf.diff(loss, CHUNKS[1]), r.w)
    r.h = h0
    g_given = kf.grad(kf.diff(loss, CHUNKS[1]), r.w)
    np.testing.assert_allclose(g_carried, g_given, rtol=1e-12)


def test_none_stays_none_after_diff():
    r = _rnn("lstm")
    traces = TraceLog()
    loss, _ = _loss(r, traces)
    for x in CHUNKS[:2]:
        kf.diff(loss, x)
        assert r.h is None and r.c is None
    assert len(traces) == 1


def test_inside_the_trace_the_state_is_a_symbol_and_a_second_call_continues():
    r = _rnn("lstm", h=0, c=0)
    seen = []

    def loss(a, b):
        ya = r(a)
        seen.append((type(r.h), type(r.c)))
        return kf.sum(ya) + kf.sum(r(b)) + kf.sum(r.h * r.h)

    a, b = CHUNKS[0], CHUNKS[1]
    for _ in range(2):
        before = (r.h, r.c)
        result = kf.diff(loss, a, b)
        h0, c0 = (None, None) if isinstance(before[0], int) else before
        ya, h1, c1 = ref_rnn(r, a, h0=h0, c0=c0)
        yb, h2, c2 = ref_rnn(r, b, h0=h1, c0=c1)
        assert result.value == pytest.approx(ya.sum() + yb.sum() + (h2 * h2).sum(), rel=1e-10)
        np.testing.assert_allclose(r.h, h2, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(r.c, c2, rtol=1e-10, atol=1e-12)
    assert seen == [(kf.Symbol, kf.Symbol)] * 2  # traced with r.h = 0, then with arrays


def test_restarting_inside_the_function_traces_once():
    r = _rnn("gru")
    traces = TraceLog()
    wy = np.random.RandomState(22).randn(4, 3, 4)

    def loss(x):
        traces.append(1)
        r.h = 0  # every call starts from zero and leaves its final state in r.h
        return kf.sum(r(x) * wy)

    for x in CHUNKS:
        kf.diff(loss, x)
        np.testing.assert_allclose(r.h, ref_rnn(r, x)[1], rtol=1e-10, atol=1e-12)
    assert len(traces) == 1


def test_a_state_of_another_dtype_is_cast():
    r = _rnn("tanh", dtype="float32", h=np.zeros((1, 3, 4)))  # float64 state
    x = CHUNKS[0].astype("float32")
    kf.diff(lambda x: kf.sum(r(x)), x)
    assert r.h.dtype == np.float32
    np.testing.assert_allclose(r.h, ref_rnn(r, x.astype("float64"))[1], rtol=1e-4, atol=1e-5)


# ---- misuse ----


def test_a_carried_state_of_another_batch_size_is_named():
    r = _rnn("lstm", h=0, c=0)
    kf.diff(lambda x: kf.sum(r(x)), CHUNKS[0])
    with pytest.raises(kf.ShapeError, match=r"RNN: state r.h \(1, 3, 4\) is for a batch of 3, "
                                            r"but the input has a batch of 2: set r.h = 0 \(or "
                                            r"None\) to start a new batch from zero"):
        kf.diff(lambda x: kf.sum(r(x)), CHUNKS[0][:, :2])
    assert r.h.shape == (1, 3, 4)  # unchanged by the failed call


def test_a_symbolic_final_state_left_in_r_h_is_named():
    r = _rnn("gru", h=0)
    r(kf.placeholder("x", (4, None, 3), "float64"))  # a symbolic graph: r.h is a symbol
    with pytest.raises(kf.TracingError, match=r"RNN.h holds a symbol of a graph built outside "
                                              r"this kf.diff/kf.grad call \(stack#\d+ built at "
                                              r"test_rnn_state.py:\d+\); set it to None, 0 or an "
                                              r"array before differentiating"):
        kf.diff(lambda x: kf.sum(r(x)), CHUNKS[0])
    assert isinstance(r.h, kf.Symbol)
    r.h = 0
    kf.diff(lambda x: kf.sum(r(x)), CHUNKS[0])
    assert type(r.h) is np.ndarray
