"""eliminate_common_subexpressions (graph/passes/cse.py): one node per pure computation."""

import numpy as np

import knetflow as kf
from knetflow.graph.passes import eliminate_common_subexpressions as cse
from knetflow.layers.dropout import dropout
from tests.graph.passes.common import assert_same_values, ops_of

X = {"x": np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], dtype="float32")}


def test_merges_repeated_pure_ops():
    #   x ── exp ──┐             x ── exp ══ add ── out
    #   x ── exp ──┴ add ── out
    x = kf.placeholder("x", (2, 3))
    g = kf.Graph([kf.exp(x) + kf.exp(x)])
    f = cse(g)
    assert f is not g
    f.verify()
    assert ops_of(f) == ["input", "exp", "add"]
    assert f.outputs[0].inputs[0] is f.outputs[0].inputs[1]
    assert_same_values(g, f, X)


def test_merges_equal_constants_and_what_depends_on_them():
    #   x * 2.0 + x * 2.0   (two consts, two muls)  =>  one const, one mul
    x = kf.placeholder("x", (2, 3))
    g = kf.Graph([x * 2.0 + x * 2.0])
    f = cse(g)
    f.verify()
    assert ops_of(f) == ["input", "const", "mul", "add"]
    assert_same_values(g, f, X)


def test_nothing_to_merge_returns_the_same_graph():
    x = kf.placeholder("x", (2, 3))
    g = kf.Graph([kf.exp(x) + kf.tanh(x)])
    assert cse(g) is g
    f = cse(kf.Graph([kf.exp(x) * kf.exp(x)]))
    assert cse(f) is f


def test_different_attrs_values_or_ops_stay_apart():
    x = kf.placeholder("x", (2, 3))
    for out in (kf.sum(x, axis=0) + kf.sum(x, axis=1, keepdims=True),
                x * 2.0 + x * 3.0,
                kf.exp(x) + kf.tanh(x),
                x * kf.const(np.float32(2.0)) + x * kf.const(2.0, dtype="float64")):
        g = kf.Graph([out])
        assert cse(g) is g


def test_impure_ops_are_never_merged():
    x = kf.placeholder("x", (2, 3))
    g = kf.Graph([dropout(x, 0.5, drop=True) + dropout(x, 0.5, drop=True)])
    f = cse(g)
    assert ops_of(f).count("dropout_mask") == 2


def test_graph_outputs_are_not_merged():
    x = kf.placeholder("x", (2, 3))
    g = kf.Graph([kf.exp(x), kf.exp(x)])
    assert cse(g) is g


def test_big_constants_are_not_compared():
    x = kf.placeholder("x", (300,))
    big = np.ones(300, dtype="float32")
    g = kf.Graph([x * big + x * big])
    assert cse(g) is g
