"""Gradients of functions of weight containers (graph/pytree.py, train/knet/autograd.py):
the seeds' `w = [W, b]`, tuples, dicts, nesting; gradients of the same structure."""

from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from tests.train.knet.traced import counting

RS = np.random.RandomState(5)
X, Y = RS.randn(13, 20), RS.randn(1, 20)


def linreg(w, x, y):
    return kf.mean((w[0] @ x + w[1] - y) ** 2)


def linreg_grads(W, b, x, y):
    r = W @ x + b - y
    n = r.size
    return 2 * r @ x.T / n, float(2 * r.sum() / n)


def test_the_seed_linreg_loop_with_a_list_of_an_array_and_a_number():
    lossgradient = kf.grad(linreg)
    w = [0.1 * RS.randn(1, 13), 0.0]
    dw = lossgradient(w, X, Y)
    assert type(dw) is list and len(dw) == 2 and type(dw[1]) is float
    want_W, want_b = linreg_grads(w[0], w[1], X, Y)
    np.testing.assert_allclose(dw[0], want_W, rtol=1e-12)
    assert dw[1] == pytest.approx(want_b, rel=1e-12)
    first = float(linreg([np.asarray(v) for v in w], X, Y))
    for _ in range(20):
        dw = lossgradient(w, X, Y)
        for i in range(len(w)):
            w[i] -= 0.1 * dw[i]
    assert float(linreg(w, X, Y)) < first


def test_tuples_of_equal_shapes_are_not_stacked():
    w = (np.ones(3), np.full(3, 2.0))
    g = kf.grad(lambda w: kf.sum(w[0] * w[1] * w[1]))(w)
    assert type(g) is tuple and len(g) == 2
    np.testing.assert_array_equal(g[0], [4, 4, 4])
    np.testing.assert_array_equal(g[1], [4, 4, 4])


def test_dicts_nesting_and_namedtuples_keep_their_structure():
    Pair = namedtuple("Pair", "a b")
    w = {"dense": [np.ones(2), {"bias": 0.5}], "pair": Pair(np.full(2, 3.0), np.float64(2.0))}

    def f(w):
        d = w["dense"]
        return kf.sum(d[0] * w["pair"].a) + d[1]["bias"] * w["pair"].b

    g = kf.grad(f)(w)
    assert list(g) == ["dense", "pair"] and type(g["pair"]) is Pair
    np.testing.assert_array_equal(g["dense"][0], [3, 3])
    assert g["dense"][1] == {"bias": 2.0} and type(g["dense"][1]["bias"]) is float
    np.testing.assert_array_equal(g["pair"].a, [1, 1])
    assert g["pair"].b == 0.5 and type(g["pair"].b) is np.float64


def test_leaves_that_are_not_numbers_pass_through_as_constants():
    w = [np.ones(2), "relu", None, True]

    def f(w):
        assert w[1] == "relu" and w[2] is None and w[3] is True
        return kf.sum(w[0] * 3.0)

    g = kf.grad(f)(w)
    np.testing.assert_array_equal(g[0], [3, 3])
    assert g[1:] == [None, None, None]


def test_the_seeds_int_bias_is_a_weight():
    w = [0.1 * RS.randn(1, 13), 0]  # as the seed writes it: Any[0.1*randn(1,13), 0]
    dw = kf.grad(linreg)(w, X, Y)
    want_W, want_b = linreg_grads(w[0], 0.0, X, Y)
    assert type(dw[1]) is float and dw[1] == pytest.approx(want_b, rel=1e-12)
    np.testing.assert_allclose(dw[0], want_W, rtol=1e-12)
    w[1] -= 0.1 * dw[1]
    assert type(w[1]) is float
    w2 = [0.1 * RS.randn(1, 13), 0]
    kf.update(w2, kf.grad(linreg)(w2, X, Y), lr=0.1)
    assert type(w2[1]) is float and w2[1] != 0.0


def test_items_the_function_replaces_are_carried_out_of_every_call():
    def f(w, s):  # the seed's CharLM: predict stores its new state in s
        s[0] = s[0] + w[0]
        return kf.sum(s[0] * w[0])

    s = [np.zeros(2)]
    f_calls, calls = counting(f)
    for k in range(3):
        g = kf.grad(f_calls)([np.ones(2)], s)
        np.testing.assert_array_equal(s[0], np.full(2, k + 1.0))  # as a plain call leaves it
        np.testing.assert_array_equal(g[0], np.full(2, k + 2.0))  # d/dw sum((s + w) w)
    assert len(calls) == 1
    kept = {"h": np.zeros(2)}

    def h(w):
        kept["h"] = kept["h"] * 0.5 + w
        return kf.sum(kept["h"] * w)

    for k in range(2):
        kf.grad(h)(np.ones(2))
        assert type(kept["h"]) is np.ndarray  # never a symbol
    np.testing.assert_array_equal(kept["h"], [1.5, 1.5])


def test_params_in_containers_and_diff():
    W, b = kf.Param(np.ones((1, 13))), kf.Param(np.zeros((1, 1)))
    g = kf.grad(linreg)([W, b], X, Y)
    want_W, want_b = linreg_grads(W.value, b.value, X, Y)
    np.testing.assert_allclose(g[0], want_W, rtol=1e-12)
    np.testing.assert_allclose(g[1], [[want_b]], rtol=1e-12)
    r = kf.diff(linreg, {"w": [W, b]}["w"], X, Y)
    assert r.params == [W, b]
    np.testing.assert_allclose(kf.grad(r, W), want_W, rtol=1e-12)


def test_argnum_tuples():
    a, b = np.ones(2), [np.full(2, 2.0), 3.0]
    ga, gb = kf.grad(lambda a, b: kf.sum(a * b[0]) * b[1], argnum=(0, 1))(a, b)
    np.testing.assert_array_equal(ga, [6, 6])
    np.testing.assert_array_equal(gb[0], [3, 3])
    assert gb[1] == 4.0
    (g,), loss = kf.gradloss(lambda a, b: kf.sum(a * b[0]), argnum=(-1,))(a, b)
    assert loss == 4.0 and g[1] == 0.0 and type(g[1]) is float  # unused: zero


def test_a_new_structure_traces_again_the_same_does_not():
    f, calls = counting(lambda w: sum(kf.sum(v * v) for v in w))
    g = kf.grad(f)
    for _ in range(3):
        g([np.ones(2), np.ones(3)])
    assert len(calls) == 1
    assert [list(v) for v in g((np.ones(2), np.ones(3)))] == [[2, 2], [2, 2, 2]]
    assert len(g([np.ones(2), np.ones(3), np.ones(1)])) == 3
    assert len(calls) == 3


def test_update_takes_the_gradients_of_any_structure():
    w = {"W": np.ones(3), "b": [np.zeros(2)]}
    g = kf.grad(lambda w: kf.sum(w["W"] ** 2) + kf.sum(w["b"][0] - 1.0))(w)
    kf.update(w["W"], g["W"], lr=0.5)
    kf.update(w["b"], g["b"], kf.optim.SGD(lr=0.5))
    np.testing.assert_array_equal(w["W"], [0, 0, 0])
    np.testing.assert_array_equal(w["b"][0], [-0.5, -0.5])


def test_errors_name_the_argument():
    with pytest.raises(kf.TracingError, match=r"argument 0 of .* holds nothing to differentiate "
                                              r"\(\[True, 'a'\]\)"):
        kf.grad(lambda w, x: kf.sum(x))([True, "a"], np.ones(2))
    with pytest.raises(TypeError, match="called with 1 positional argument.*argnum 2"):
        kf.grad(lambda x: kf.sum(x), argnum=2)(np.ones(2))
    with pytest.raises(TypeError, match="argnum must be an int or a tuple of ints"):
        kf.grad(lambda x: kf.sum(x), argnum="x")


leaf_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
trees = st.recursive(
    leaf_shapes.map(lambda s: ("array", s)) | st.just(("float", ())),
    lambda kids: st.lists(kids, min_size=1, max_size=3).map(lambda v: ("list", v))
    | st.lists(kids, min_size=1, max_size=3).map(lambda v: ("tuple", v))
    | st.dictionaries(st.sampled_from("abc"), kids, min_size=1).map(lambda v: ("dict", v)),
    max_leaves=6)


def _make(spec, rs):
    kind, body = spec
    if kind == "array":
        return rs.uniform(-2, 2, body)
    if kind == "float":
        return float(rs.uniform(-2, 2))
    if kind == "dict":
        return {k: _make(v, rs) for k, v in body.items()}
    items = [_make(v, rs) for v in body]
    return items if kind == "list" else tuple(items)


def _leaves(w):
    if isinstance(w, dict):
        return [x for v in w.values() for x in _leaves(v)]
    if isinstance(w, (list, tuple)):
        return [x for v in w for x in _leaves(v)]
    return [w]


@settings(max_examples=40, deadline=None)
@given(spec=trees, seed=st.integers(0, 2**16))
def test_gradients_of_random_structures(spec, seed):
    w = _make(spec, np.random.RandomState(seed))
    g = kf.grad(lambda w: sum(kf.sum(v ** 3) for v in _leaves(w)))(w)
    for v, gv in zip(_leaves(w), _leaves(g)):
        assert type(gv) is type(v)
        np.testing.assert_allclose(gv, 3 * np.asarray(v) ** 2, rtol=1e-12)
    assert len(_leaves(g)) == len(_leaves(w))
