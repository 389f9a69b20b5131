"""fold_constants (graph/passes/fold.py): pure ops on constants become constants."""

import numpy as np

import knetflow as kf
from knetflow.graph.passes import fold_constants
from knetflow.ops.array import reshape
from knetflow.layers.dropout import dropout
from tests.graph.passes.common import assert_same_values, ops_of

X = {"x": np.array([0.5, -1.0, 2.0], dtype="float32")}


def test_folds_a_constant_subgraph():
    #   c=[1,2,3] ── mul(., 2.0) ── exp ──┐
    #                                      mul ── out     =>   x ── mul(., const) ── out
    #   x ─────────────────────────────────┘
    x = kf.placeholder("x", (3,))
    c = kf.const(np.array([1.0, 2.0, 3.0], dtype="float32"))
    g = kf.Graph([x * kf.exp(c * 2.0)])
    f = fold_constants(g)
    assert f is not g
    f.verify()
    assert ops_of(f) == ["input", "const", "mul"]
    folded = f.nodes[1]
    np.testing.assert_allclose(folded.attrs["value"], np.exp([2.0, 4.0, 6.0]), rtol=1e-6)
    assert folded.attrs["value"].dtype == np.dtype("float32")
    assert not folded.attrs["value"].flags.writeable
    assert folded.spec == kf.Spec((3,), "float32")
    assert_same_values(g, f, X)


def test_nothing_to_fold_returns_the_same_graph():
    x = kf.placeholder("x", (3,))
    g = kf.Graph([kf.exp(x) * 2.0])
    assert fold_constants(g) is g
    f = fold_constants(kf.Graph([x * kf.exp(kf.const(1.0))]))
    assert fold_constants(f) is f


def test_folded_scalar_keeps_its_shape():
    #   const 3 ── sub ── const 2      (a 0-d result must stay 0-d, not become shape (1,))
    #   const 1 ──┘
    three = kf.const(3.0, dtype="float64")
    f = fold_constants(kf.Graph([three - kf.const(1.0, dtype="float64")]))
    f.verify()
    assert ops_of(f) == ["const"]
    value = f.outputs[0].attrs["value"]
    assert value.shape == () and value.dtype == np.dtype("float64") and float(value) == 2.0


def test_folded_value_takes_the_node_dtype():
    c = kf.const(np.array([1, 2], dtype="int32"))
    f = fold_constants(kf.Graph([c * 3]))
    value = f.outputs[0].attrs["value"]
    assert value.dtype == np.dtype("int32")
    np.testing.assert_array_equal(value, [3, 6])


def test_impure_view_and_huge_ops_are_not_folded():
    #   dropout_mask(const) is random; reshape(const) is a view; a folded huge value would
    #   bloat the graph: all three stay as they are
    c = kf.const(np.ones(4, dtype="float32"))
    big = kf.const(np.zeros((1 << 20) + 1, dtype="float32"))
    for out in (dropout(c, 0.5, drop=True), reshape(c, (2, 2)), big + 1.0):
        g = kf.Graph([out])
        assert fold_constants(g) is g


def test_folds_inside_a_backward_graph():
    x = kf.placeholder("x", (3,), "float64")
    g = kf.backward(kf.Graph([kf.sum(x ** 3)]), wrt=[x])
    f = fold_constants(g)
    f.verify()
    assert "sub" not in ops_of(f)  # 3 - 1 in the power rule became a constant
    assert_same_values(g, f, {"x": np.array([1.0, -2.0, 0.5])})


def test_inputs_read_only_for_their_shape_count_as_known_when_the_shape_is():
    # the gradient of a mean: broadcast_like(seed, x) / count(x) folds to one constant
    x = kf.placeholder("x", (4, 3))
    from knetflow.ops.reduce import broadcast_like, count

    g = kf.Graph([broadcast_like(kf.const(np.float32(2.0)), x) / count(x) * x])
    f = fold_constants(g)
    f.verify()
    assert sorted(ops_of(f)) == ["const", "input", "mul"]
    (folded,) = [n for n in f.nodes if n.op == "const"]
    np.testing.assert_array_equal(folded.attrs["value"], np.full((4, 3), 2 / 12, "float32"))
    assert_same_values(g, f, {"x": np.arange(12, dtype="float32").reshape(4, 3)})


def test_a_dynamic_shape_keeps_shape_only_inputs_live():
    from knetflow.ops.reduce import broadcast_like, count

    x = kf.placeholder("x", (None, 3))
    g = kf.Graph([broadcast_like(kf.const(np.float32(2.0)), x) / count(x)])
    assert fold_constants(g) is g


def test_a_big_broadcast_of_a_constant_stays_a_broadcast():
    from knetflow.ops.reduce import broadcast_like

    x = kf.placeholder("x", (300, 300))  # 90,000 elements: above the limit for shape folds
    g = kf.Graph([broadcast_like(kf.const(np.float32(2.0)), x) * x])
    assert "broadcast_like" in ops_of(fold_constants(g))


def test_folding_an_op_of_a_shape_alone_allocates_no_array_of_that_shape():
    # count's input gives only its shape: it was fed as np.empty(shape), so a model file
    # of a few hundred bytes declaring a (2**17, 2**17) input made loading allocate 128 GiB
    import tracemalloc

    import knetflow as kf

    x = kf.placeholder("x", (2**14, 2**14), "float64")       # 2 GiB if it were allocated
    graph = kf.Graph([kf.count(x, axis=1)])
    tracemalloc.start()
    try:
        plan = kf.compile(graph)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    (const,) = [n for n in plan.graph.nodes if n.op == "const"]
    assert const.attrs["value"] == 2**14        # the count of elements along axis 1
    assert "count" not in [n.op for n in plan.graph.nodes]
