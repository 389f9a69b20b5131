"""State outputs of kf.diff (train/knet/autograd.py with graph/state.py): values after
traced and cached calls, retracing on another kind of state, devices, errors."""

import numpy as np
import pytest

import knetflow as kf
from tests.train.knet.traced import counting
from knetflow.devices.sim import SimArray
from knetflow.graph import state
from tests.train.knet.traced import feed_of, one_sim_device, trace_on


class Accumulator:
    """A toy stateful layer: y = x * s, then s <- s + sum(x). None: y = x, s stays None."""

    def __init__(self, s):
        self._s = s

    @property
    def s(self):
        return self._s

    @s.setter
    def s(self, value):
        state.assign(self, "_s", value, "Accumulator.s")

    def __call__(self, x):
        s = state.read(self, "_s", "Accumulator.s")
        if s is None:
            return x
        state.write(self, "_s", s + kf.sum(x), "Accumulator.s")
        return x * s




def _setup():
    w = kf.Param(np.array([1.0, -2.0, 0.5]))
    acc = Accumulator(np.zeros(3))
    f, calls = counting(lambda x: kf.sum(acc(x) * w))
    return w, acc, f, calls


def _eager_steps(xs, w, s):
    """(losses, states after each step) of the same computation in NumPy."""
    losses, states = [], []
    for x in xs:
        losses.append(float(np.sum(x * s * w.value)))
        s = s + x.sum()
        states.append(s)
    return losses, states


XS = [np.random.RandomState(k).randn(2, 3) for k in range(4)]


def test_state_after_traced_and_cached_calls_equals_eager():
    w, acc, f, calls = _setup()
    losses, states = _eager_steps(XS, w, np.zeros(3))
    for x, loss, s in zip(XS, losses, states):
        result = kf.diff(f, x)
        assert type(acc.s) is np.ndarray  # a value, not a symbol
        np.testing.assert_allclose(acc.s, s, rtol=1e-12)
        assert result.value == pytest.approx(loss, rel=1e-12)
    assert len(calls) == 1
    # the eager call of the same function agrees
    twin = Accumulator(np.zeros(3))
    for x in XS:
        float(kf.sum(twin(x) * w))
    np.testing.assert_allclose(twin.s, acc.s, rtol=1e-12)


def test_gradient_uses_the_state_fed_at_each_call():
    w, acc, f, _ = _setup()
    for x in XS[:3]:
        before = acc.s.copy()
        np.testing.assert_allclose(kf.grad(kf.diff(f, x), w), (x * before).sum(axis=0))


def test_a_new_kind_of_state_traces_again_once():
    w, acc, f, calls = _setup()
    x = XS[0]
    acc.s = None
    assert kf.value(kf.diff(f, x)) == pytest.approx(float(np.sum(x * w.value)))
    assert acc.s is None  # None stays None
    for s in (np.ones(3), None, np.ones(3), None):
        acc.s = s
        kf.diff(f, x)
    assert len(calls) == 2  # one trace with None, one with an array: both kept
    acc.s = np.ones((2, 3))  # another shape
    kf.diff(f, x)
    assert len(calls) == 3 and acc.s.shape == (2, 3)


def test_state_the_function_sets_itself_is_part_of_the_trace():
    w = kf.Param(np.ones(3))
    acc = Accumulator(None)
    start = np.full(3, 2.0)

    def restart(x):
        acc.s = start  # every call starts from `start`: not keyed on acc.s before the call
        return kf.sum(acc(x) * w)

    f, calls = counting(restart)
    for x in XS:
        assert kf.value(kf.diff(f, x)) == pytest.approx(float(np.sum(x * 2.0)))
        np.testing.assert_allclose(acc.s, start + x.sum())
    assert len(calls) == 1

    def reset(x):
        acc.s = 5  # a plain value: every call leaves it
        return kf.sum(x * w)

    g, calls = counting(reset)
    for x in XS[:2]:
        acc.s = 1
        kf.diff(g, x)
        assert acc.s == 5
    assert len(calls) == 1


def test_a_param_as_state_is_differentiated_then_replaced_by_the_final_value():
    w = kf.Param(np.ones(3))
    p = kf.Param(np.array([1.0, 2.0, 3.0]))
    acc = Accumulator(p)
    x = XS[0]
    result = kf.diff(lambda x: kf.sum(acc(x) * w), x)
    np.testing.assert_allclose(kf.grad(result, p), x.sum(axis=0))
    np.testing.assert_allclose(acc.s, p.value + x.sum())
    assert type(acc.s) is np.ndarray
    result = kf.diff(lambda x: kf.sum(acc(x) * w), x)  # now an array: fed, not differentiated
    assert kf.grad(result, p) is None


def test_state_comes_back_from_a_plan_on_a_strict_sim_device():
    """On a device the fed arrays are copies, so only state outputs can carry the update."""
    w, acc, f, calls = _setup()
    losses, states = _eager_steps(XS, w, np.zeros(3))
    with one_sim_device() as sim:
        entry = trace_on(sim, f, XS[0])
        raw = entry.plan.run(feed_of(entry, f, XS[0]), keep_on_device=True)
        assert type(raw[1]) is SimArray  # the state output lives on the device
        for x, loss, s in zip(XS, losses, states):
            result = kf.diff(f, x)
            assert type(acc.s) is np.ndarray  # fetched with device.get
            np.testing.assert_allclose(acc.s, s, rtol=1e-12)
            assert result.value == pytest.approx(loss, rel=1e-12)
    assert len(calls) == 1


# ---- errors ----


def test_state_is_restored_when_tracing_fails():
    acc = Accumulator(np.zeros(3))
    before = acc.s

    def broken(x):
        acc(x)
        raise ValueError("broken model")

    with pytest.raises(ValueError, match="broken model"):
        kf.diff(broken, XS[0])
    assert acc.s is before


def test_a_symbol_left_in_state_by_a_symbolic_graph_is_named():
    acc = Accumulator(np.zeros(3))
    acc(kf.placeholder("x", (None, 3), "float64"))  # a symbolic graph: acc.s is a symbol
    with pytest.raises(kf.TracingError, match=r"Accumulator.s holds a symbol of a graph built "
                                              r"outside this kf.diff/kf.grad call .*set it to "
                                              r"None, 0 or an array before differentiating"):
        kf.diff(lambda x: kf.sum(acc(x)), XS[0])


def test_a_placeholder_inside_a_differentiated_function_is_named():
    z = kf.placeholder("z", (3,), "float64")
    w = kf.Param(np.ones(3))

    def uses_z():
        return kf.sum(w * z)

    with pytest.raises(kf.TracingError, match=r"uses_z uses 'z' \(built at "
                                              r"test_autograd_state.py:\d+\), an input of a "
                                              r"graph built outside this kf.diff/kf.grad call, "
                                              r"which nothing feeds"):
        kf.diff(uses_z)
