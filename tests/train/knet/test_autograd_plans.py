"""gradloss's planned path (train/knet/autograd.py `_shallow`): an argument that is a
leaf or one list, tuple or dict of leaves is handled by a plan made once per structure.
Every result and error must be what the general path (flatten, a Param per leaf,
rebuild) gives: each test runs both and compares."""

from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.graph import pytree
from knetflow.train.knet import autograd

RS = np.random.RandomState(8)
X = RS.randn(3, 4)


@pytest.fixture
def general(monkeypatch):
    """A function running a call with the planned path turned off (every argument
    flattened), to compare with."""

    def run(fn, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(autograd, "_shallow", lambda arg, plans: None)
            return fn(*args, **kwargs)

    return run


def assert_same(got, want):
    """The same structure, leaf types and values (NaN equal to NaN)."""
    assert type(got) is type(want)
    if isinstance(got, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    elif isinstance(got, dict):
        assert list(got) == list(want)
        for k in got:
            assert_same(got[k], want[k])
    elif got is None:
        assert want is None
    else:
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)


def loss_of_leaves(w, x):
    """Every differentiable leaf of w, at any depth, used once."""
    leaves, _ = pytree.flatten(w)
    total = kf.sum(x) * 0.0
    for k, v in enumerate(leaves):
        if isinstance(v, (str, bool, type(None))) or (
                isinstance(v, np.ndarray) and v.dtype.kind not in "biuf"):
            continue
        total = total + (k + 1.5) * kf.sum(kf.tanh(v * x[0, 0] + k))
    return total


STRUCTURES = {
    "the seed's list": [RS.randn(3, 4), 0.0],
    "an int bias": [RS.randn(4), 1],
    "a tuple": (RS.randn(2), np.float32(0.5), RS.randn(3).astype("float32")),
    "a dict": {"w": RS.randn(2, 2), "b": 0.25, "s": np.float64(2.0)},
    "a bare array": RS.randn(5),
    "a bare float": 1.5,
    "a bare int": 3,
    "a NumPy float": np.float32(-0.5),
    "an int array": np.arange(4),
    "constants among weights": [RS.randn(2), "name", None, True, np.array(["a"]), 0.5],
    "a Param inside": [kf.Param(RS.randn(3)), RS.randn(2)],
    "a bare Param": kf.Param(RS.randn(2)),
    "nested (flattened)": [RS.randn(2), {"b": [0.5, (RS.randn(2),)]}],
    "a namedtuple (flattened)": namedtuple("P", "a b")(RS.randn(2), 0.5),
    "a namedtuple leaf (flattened)": [namedtuple("Q", "a")(RS.randn(2)), 0.5],
    "empty and a weight": ([], RS.randn(2)),
}


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_gradients_and_losses_are_the_general_path_s(name, general):
    w = STRUCTURES[name]
    g = kf.gradloss(loss_of_leaves)
    for _ in range(2):  # the first call makes the plan, the second uses it
        got = g(w, X)
        want = general(g, w, X)
        assert_same(got[0], want[0])
        assert got[1] == want[1]


def test_the_seed_loop_is_planned_once_and_matches_by_hand(monkeypatch):
    made = []
    make = autograd._Shallow.make
    monkeypatch.setattr(autograd._Shallow, "make",
                        staticmethod(lambda *a: made.append(a) or make(*a)))
    lossgradient = kf.grad(lambda w, x, y: kf.mean((w[0] @ x + w[1] - y) ** 2))
    x, y = RS.randn(13, 20), RS.randn(1, 20)
    w = [0.1 * RS.randn(1, 13), 0.0]
    for _ in range(5):
        dw = lossgradient(w, x, y)
        r = w[0] @ x + w[1] - y
        np.testing.assert_allclose(dw[0], 2 * r @ x.T / r.size, rtol=1e-12)
        assert type(dw[1]) is float and dw[1] == pytest.approx(2 * r.sum() / r.size)
        for i in range(2):
            w[i] -= 0.1 * dw[i]
    assert made == [(list, (np.ndarray, float))]


def test_a_dict_of_the_same_types_keeps_its_own_keys():
    # one plan for both dicts (the same value types): the keys come from each call
    g = kf.grad(lambda w: kf.sum(list(w.values())[0] * 2.0) + list(w.values())[1])
    first = g({"a": np.ones(2), "b": 1.0})
    second = g({"z": np.ones(2), "y": 1.0})
    assert list(first) == ["a", "b"] and list(second) == ["z", "y"]
    np.testing.assert_array_equal(second["z"], [2.0, 2.0])
    assert second["y"] == 1.0


def test_a_leaf_the_loss_does_not_use_gets_zeros(general):
    g = kf.grad(lambda w: kf.sum(w[0] * 3.0))
    w = [np.ones(2), np.ones(3), 2.0]
    got = g(w)
    assert_same(got, general(g, w))
    np.testing.assert_array_equal(got[1], np.zeros(3))
    assert got[2] == 0.0 and type(got[2]) is float


def test_argnum_tuples_of_planned_and_flattened_arguments(general):
    def f(a, b, c):
        return kf.sum(a[0] * b["v"]) + kf.sum(c[0][0] * a[1])

    g = kf.gradloss(f, argnum=(0, 1, 2))
    args = ([np.ones(2), 2.0], {"v": np.full(2, 3.0)}, [[np.ones(2)]])
    got, want = g(*args), general(g, *args)
    assert_same(got[0], want[0])
    assert got[1] == want[1]


def test_values_that_change_between_calls_give_new_gradients():
    g = kf.grad(lambda w: kf.sum(w[0] * w[0]) * w[1])
    for scale in (1.0, 2.0, 3.0):
        dw = g([np.full(2, scale), scale])
        np.testing.assert_allclose(dw[0], 2 * scale * np.full(2, scale))
        assert dw[1] == pytest.approx(2 * scale * scale)


@pytest.mark.parametrize("arg", [["label", None], "text", [True, np.array(["a"])], None])
def test_nothing_to_differentiate_is_the_same_error(arg, general):
    g = kf.grad(lambda w, x: kf.sum(x))
    with pytest.raises(kf.TracingError) as planned:
        g(arg, X)
    with pytest.raises(kf.TracingError) as flattened:
        general(g, arg, X)
    assert str(planned.value) == str(flattened.value)
    assert str(planned.value) == (  # the message as it was before plans
        "argument 0 of test_nothing_to_differentiate_is_the_same_error.<locals>.<lambda> "
        f"holds nothing to differentiate ({arg!r}): differentiable leaves are float arrays, "
        "floats and Params")


def test_other_errors_are_unchanged(general):
    g = kf.grad(lambda w: kf.sum(w[0]), argnum=2)
    with pytest.raises(TypeError, match="argnum 2 is not one of them"):
        g([np.ones(2)])
    deep = np.ones(2)
    for _ in range(70):
        deep = [deep]
    with pytest.raises(kf.TracingError, match="nested more than 64 levels"):
        kf.grad(lambda w: kf.sum(np.ones(2)))([deep, 1.0])


def test_the_number_of_plans_is_bounded(monkeypatch):
    monkeypatch.setattr(autograd, "_MAX_PLANS", 2)
    g = kf.grad(lambda w: kf.sum(w[0]) * 1.0)
    for n in range(1, 6):  # five structures; those past the bound are planned per call
        dw = g([np.ones(2)] + [0.5] * n)
        np.testing.assert_array_equal(dw[0], np.ones(2))
        assert dw[1:] == [0.0] * n


def test_inside_a_trace_the_symbolic_path_is_taken():
    f = lambda w: kf.sum(w[0] ** 3) + w[1] ** 2  # noqa: E731
    hv = kf.grad(lambda w: kf.sum(kf.grad(f)(w)[0]) + kf.grad(f)(w)[1])([np.ones(2), 2.0])
    np.testing.assert_allclose(hv[0], [6.0, 6.0])
    assert hv[1] == pytest.approx(2.0)


# ---- properties ----

LEAVES = st.sampled_from(["array", "float32 array", "int array", "float", "int",
                          "np.float32", "Param", "string", "None", "bool"])


def _leaf(kind, rs):
    return {"array": lambda: rs.randn(2), "float32 array": lambda: rs.randn(3).astype("float32"),
            "int array": lambda: rs.randint(0, 3, 2), "float": lambda: float(rs.randn()),
            "int": lambda: int(rs.randint(-3, 3)), "np.float32": lambda: np.float32(rs.randn()),
            "Param": lambda: kf.Param(rs.randn(2)), "string": lambda: "s",
            "None": lambda: None, "bool": lambda: True}[kind]()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["list", "tuple", "dict", "leaf"]),
       st.lists(LEAVES, min_size=1, max_size=4), st.integers(0, 2**16))
def test_random_one_level_structures_match_the_general_path(kind, kinds, seed):
    rs = np.random.RandomState(seed)
    leaves = [_leaf(k, rs) for k in kinds]
    w = {"list": lambda: leaves, "tuple": lambda: tuple(leaves), "leaf": lambda: leaves[0],
         "dict": lambda: {f"k{i}": v for i, v in enumerate(leaves)}}[kind]()
    g = kf.gradloss(loss_of_leaves)
    with pytest.MonkeyPatch.context() as m:
        try:
            m.setattr(autograd, "_shallow", lambda arg, plans: None)
            want = g(w, X)
        except kf.TracingError as e:
            want = e
    if isinstance(want, Exception):
        with pytest.raises(kf.TracingError) as got:
            g(w, X)
        assert str(got.value) == str(want)
        return
    got = g(w, X)
    assert_same(got[0], want[0])
    assert got[1] == want[1]
