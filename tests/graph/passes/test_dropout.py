"""strip_dropout (graph/passes/dropout.py): inference graphs do not drop."""

import numpy as np

import knetflow as kf
from knetflow.graph.passes import strip_dropout
from knetflow.layers.dropout import dropout
from tests.graph.passes.common import assert_same_values, ops_of

X = np.linspace(1.0, 2.0, 1000, dtype="float32")


def test_replaces_training_only_masks_by_one():
    #   x ── dropout_mask ──┐            x ── mul(., const 1)
    #   x ──────────────────┴ mul   =>
    x = kf.placeholder("x", (1000,))
    g = kf.Graph([dropout(x, 0.5)])
    f = strip_dropout(g)
    f.verify()
    assert ops_of(f) == ["input", "const", "mul"]
    one = f.nodes[1]
    assert one.spec == kf.Spec((), "float32") and float(one.attrs["value"]) == 1.0
    want = kf.Graph([x * 1.0])
    assert_same_values(want, f, {"x": X})
    np.testing.assert_array_equal(kf.compile(f, optimize_graph=False).run({"x": X})[0], X)


def test_nothing_to_strip_returns_the_same_graph():
    x = kf.placeholder("x", (1000,))
    g = kf.Graph([kf.exp(x)])
    assert strip_dropout(g) is g


def test_drop_true_is_kept():
    x = kf.placeholder("x", (1000,))
    g = kf.Graph([dropout(x, 0.5, drop=True, seed=2)])
    assert strip_dropout(g) is g
    y = kf.compile(g, training=False).run({"x": X})[0]
    assert 0.4 < np.mean(y == 0) < 0.6


def test_compile_strips_for_inference_only():
    x = kf.placeholder("x", (1000,))
    y = dropout(x, 0.5)
    np.testing.assert_array_equal(kf.compile([y], training=False).run({"x": X})[0], X)
    dropped = kf.compile([y], training=True).run({"x": X})[0]
    assert 0.4 < np.mean(dropped == 0) < 0.6
    np.testing.assert_allclose(dropped[dropped != 0], 2 * X[dropped != 0], rtol=1e-6)
