"""fold_embedding_projections (graph/passes/project.py): an RNN layer over a lookup in a
small table looks its input terms up in the table times its input matrix."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.autodiff import gradients
from knetflow.graph.passes import fold_embedding_projections, optimize
from knetflow.ops.rnn_loops import GATES
from tests.graph.passes.common import assert_same_values, ops_of

T, B, X, H, V = 6, 3, 4, 5, 7   # 18 ids of a 7-row table: folded


def _layer(mode="lstm", ids_shape=(T, B), vocab=V, seed=0):
    """(ids, table E, rnn_scan's inputs after x, a feed) in float64."""
    rs = np.random.RandomState(seed)
    width = GATES[mode] * H
    ids = kf.placeholder("ids", ids_shape, "int64")
    E = kf.param("E", value=rs.uniform(-1, 1, (vocab, X)), dtype="float64")
    weights = [kf.param(name, value=rs.uniform(-0.5, 0.5, shape), dtype="float64")
               for name, shape in
               (("wx", (X, width)), ("wh", (H, width)), ("bx", (width,)), ("bh", (width,)))]
    feed = {"ids": rs.randint(0, vocab, ids_shape)}
    return ids, E, weights, feed


def _loss(y):
    return kf.sum(y * y)


@pytest.mark.parametrize("mode", sorted(GATES))
def test_a_layer_over_a_small_table_looks_its_terms_up_in_the_projected_table(mode):
    ids, E, weights, feed = _layer(mode)
    y = kf.rnn_scan(kf.embedding(E, ids), *weights, mode=mode)[0]
    g = kf.Graph([y])
    folded = fold_embedding_projections(g)
    folded.verify()
    assert "embedding" not in ops_of(folded)
    (scan,) = [n for n in folded.nodes if n.op == "rnn_scan"]
    assert scan.attrs["lookup"] and scan.inputs[0] is ids.node
    assert scan.inputs[1].op == "matmul" and scan.inputs[1].spec.shape == (V, GATES[mode] * H)
    assert_same_values(g, folded, feed, rtol=1e-12)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_backward_folds_first_and_its_gradients_are_the_unfolded_ones(mode):
    ids, E, weights, feed = _layer(mode, seed=1)
    loss = _loss(kf.rnn_scan(kf.embedding(E, ids), *weights, mode=mode)[0])
    targets = [E.node] + [w.node for w in weights]
    unfolded = kf.Graph([loss] + gradients(loss.node, targets))
    derived = kf.backward(kf.Graph([loss]), wrt=targets)
    assert "embedding" not in ops_of(derived) and "embedding" in ops_of(unfolded)
    assert_same_values(unfolded, derived, feed, rtol=1e-10)


def test_a_training_step_computes_the_folded_layer_once():
    ids, E, weights, feed = _layer(seed=2)
    loss = _loss(kf.rnn_scan(kf.embedding(E, ids), *weights)[0])
    step = kf.optim.step_graph(kf.Graph([loss]), kf.optim.SGD(lr=0.1))
    assert ops_of(step).count("rnn_scan") == 1
    assert "embedding" not in ops_of(step)
    targets = [E.node] + [w.node for w in weights]
    plan = kf.compile(kf.Graph([loss] + gradients(loss.node, targets)))
    before = {n: np.array(v) for n, v in plan.params.items()}
    value, *grads = plan.run(feed)
    stepped = kf.compile(step)
    np.testing.assert_allclose(stepped.run(feed)[0], value, rtol=1e-12)
    for node, grad in zip(targets, grads):
        name = node.attrs["name"]
        np.testing.assert_allclose(stepped.params[name], before[name] - 0.1 * grad,
                                   rtol=1e-10, atol=1e-12)


def test_a_packed_layer_over_reshaped_ids_is_folded_with_the_ids_reshaped():
    ids, E, weights, feed = _layer(ids_shape=(T, B))
    rows = kf.reshape(kf.embedding(E, ids), (T * B, X))
    y = kf.rnn_scan(rows, *weights, batch_sizes=(B,) * T)[0]
    g = kf.Graph([y])
    folded = fold_embedding_projections(g)
    (scan,) = [n for n in folded.nodes if n.op == "rnn_scan"]
    assert scan.attrs["lookup"] and scan.inputs[0].op == "reshape"
    assert scan.inputs[0].spec.shape == (T * B,)
    assert_same_values(g, folded, feed, rtol=1e-12)


def test_a_lookup_other_nodes_read_stays_for_them():
    ids, E, weights, feed = _layer()
    x = kf.embedding(E, ids)
    g = kf.Graph([kf.rnn_scan(x, *weights)[0], kf.sum(x)])
    folded = fold_embedding_projections(g)
    assert ops_of(folded).count("embedding") == 1
    assert [n for n in folded.nodes if n.op == "rnn_scan"][0].attrs["lookup"]
    assert_same_values(g, folded, feed, rtol=1e-12)


def _table(rows, width):
    return kf.param(f"table{rows}x{width}", value=np.ones((rows, width)), dtype="float64")


@pytest.mark.parametrize("build", [
    lambda ids, E, w: kf.rnn_scan(kf.embedding(_table(10, X), ids), *w),  # 10 rows, 18 ids
    lambda ids, E, w: kf.rnn_scan(kf.embedding(E, kf.placeholder("d", (None, B), "int64")),
                                  *w),                                # the ids' count unknown
    lambda ids, E, w: kf.rnn_scan(kf.embedding(E, ids) * 2.0, *w),    # not the lookup itself
    lambda ids, E, w: kf.rnn_scan(kf.embedding(_table(V, H), ids), None, *w[1:]),  # skip_input
], ids=["large table", "dynamic ids", "scaled rows", "skip_input"])
def test_other_layers_stay(build):
    ids, E, weights, _ = _layer()
    g = kf.Graph([build(ids, E, weights)[0]])
    assert fold_embedding_projections(g) is g


def test_the_new_nodes_are_where_and_on_what_the_layer_was():
    ids, E, weights, _ = _layer()
    with kf.device("cpu:0"):   # an annotation, unlike the leaves'
        y = kf.rnn_scan(kf.embedding(E, ids), *weights)[0]
    layer = y.node.inputs[0]
    folded = fold_embedding_projections(kf.Graph([y]))
    made = [n for n in folded.nodes if n.op in ("matmul", "rnn_scan")]
    assert layer.device == "cpu:0" and layer.where.startswith("test_project.py:")
    assert [(n.device, n.where) for n in made] == [(layer.device, layer.where)] * 2


def test_the_compiler_folds_the_forward_of_a_graph_derived_unfolded():
    ids, E, weights, feed = _layer(seed=3)
    loss = _loss(kf.rnn_scan(kf.embedding(E, ids), *weights)[0])
    targets = [E.node] + [w.node for w in weights]
    unfolded = kf.Graph([loss] + gradients(loss.node, targets))
    optimized = optimize(unfolded)
    assert [n.attrs.get("lookup") for n in optimized.nodes if n.op == "rnn_scan"] == [True]
    want = kf.compile(unfolded, optimize_graph=False).run(feed)
    got = kf.compile(unfolded).run(feed)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-10)


def test_knet_style_gradients_of_an_embedded_rnn_are_the_central_differences():
    rs = np.random.RandomState(4)
    rnn = kf.RNN(X, H, rnn_type="lstm", dtype="float64")
    emb = kf.Param(rs.uniform(-1, 1, (V, X)))
    ids = rs.randint(0, V, (T, B))

    def loss(ids):
        return _loss(rnn(kf.embedding(emb, ids)))

    r = kf.diff(loss, ids)
    got = kf.grad(r, emb)
    want, eps = np.zeros_like(emb.value), 1e-6
    for k in np.ndindex(emb.value.shape):
        saved = emb.value[k]
        emb.value[k] = saved + eps
        up = loss(ids)
        emb.value[k] = saved - eps
        down = loss(ids)
        emb.value[k] = saved
        want[k] = (up - down) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
