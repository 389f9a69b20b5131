"""fuse_relu_into_pool_grad (graph/passes/pool_relu.py): relu_grad(pool_grad(x, y, dy), x)
becomes pool_relu_grad(x, y, dy), giving the same bits."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.passes import optimize
from knetflow.graph.passes.pool_relu import fuse_relu_into_pool_grad
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.elementwise import relu_grad
from tests.graph.passes.common import ops_of

SHAPE = (3, 2, 4, 6)


def _pooled_relu_graph(dtype="float32", **kw):
    """The backward of sum(pool(relu(z * w)) * r):

        z, w ── mul ── relu ──┬── pool ── mul(., r) ── sum
                              │     │
        dy ── pool_grad(relu, pool, dy) ── relu_grad(., relu) ── mul(., z) ── dw
    """
    z = kf.placeholder("z", SHAPE, dtype)
    w = kf.param("w", value=np.linspace(-1, 1, np.prod(SHAPE)).reshape(SHAPE).astype(dtype))
    y = kf.pool(kf.relu(z * w), **kw)
    r = kf.const(np.arange(1, 1 + np.prod(y.shape)).reshape(y.shape).astype(dtype))
    return kf.backward(kf.Graph([kf.sum(y * r)], inputs=[z]))


def _feed(dtype):
    # rounded: windows with ties and windows of zeros after the relu
    return {"z": np.round(np.random.RandomState(0).randn(*SHAPE) * 2).astype(dtype)}


def _assert_same_bits(before, after, feed):
    want = kf.compile(before, optimize_graph=False, training=True).run(feed)
    got = kf.compile(after, optimize_graph=False, training=True).run(feed)
    for w, g in zip(want, got):
        assert w.dtype == g.dtype
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(np.signbit(g), np.signbit(w))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [{}, {"window": 3, "stride": 2, "padding": 1}, {"mode": 2}])
def test_fuses_the_gradient_through_pool_and_relu(dtype, kw):
    g = _pooled_relu_graph(dtype, **kw)
    grad = next(n for n in g.nodes if n.op == "pool_grad")
    masked = next(n for n in g.nodes if n.op == "relu_grad")
    f = fuse_relu_into_pool_grad(g)
    f.verify()
    assert "pool_grad" not in ops_of(f) and "relu_grad" not in ops_of(f)
    fused = next(n for n in f.nodes if n.op == "pool_relu_grad")
    assert fused.attrs == grad.attrs and fused.spec == masked.spec
    assert fused.inputs == grad.inputs and fused.where == masked.where
    _assert_same_bits(g, f, _feed(dtype))


def test_a_graph_without_the_pattern_is_returned_as_it_is():
    x = kf.placeholder("x", SHAPE)
    g = kf.backward(kf.Graph([kf.sum(kf.relu(kf.pool(x * kf.param("w", value=2.0))))]))
    assert "relu_grad" in ops_of(g)
    assert fuse_relu_into_pool_grad(g) is g


def _manual(build):
    """A graph of build(x, y, dy, grad) for x relu'd, y its pool, grad their pool_grad."""
    z = kf.placeholder("z", SHAPE)
    x = kf.relu(z)
    y = kf.pool(x)
    dy = kf.placeholder("dy", y.shape)
    return kf.Graph(build(x, y, dy, kf.pool_grad(x, y, dy)), inputs=[z, dy])


@pytest.mark.parametrize("build", [
    lambda x, y, dy, grad: [relu_grad(grad, x), grad],                  # a result too
    lambda x, y, dy, grad: [relu_grad(grad, x) + kf.exp(grad)],         # read twice
    lambda x, y, dy, grad: [relu_grad(grad, x * 2.0)],                  # another mask
    lambda x, y, dy, grad: [relu_grad(grad, kf.relu(x))],               # not x itself
    lambda x, y, dy, grad: [relu_grad(x, x)],                           # no pool_grad
], ids=["result", "two-users", "other-mask", "mask-not-x", "no-pool-grad"])
def test_other_readers_or_masks_leave_the_graph_unchanged(build):
    g = _manual(build)
    assert fuse_relu_into_pool_grad(g) is g


def test_the_pattern_built_by_hand_fuses_and_matches():
    g = _manual(lambda x, y, dy, grad: [relu_grad(grad, x) * 3.0])
    f = fuse_relu_into_pool_grad(g)
    assert ops_of(f).count("pool_relu_grad") == 1
    rs = np.random.RandomState(1)
    feed = {"z": np.round(rs.randn(*SHAPE)).astype("float32"),
            "dy": rs.randn(SHAPE[0], SHAPE[1], 2, 3).astype("float32")}
    _assert_same_bits(g, f, feed)


def _annotated(graph, device):
    return rewrite(graph, lambda n: n if n.is_leaf else n.replace(device=device))


@pytest.mark.parametrize("device, fused", [("cpu:1", True), ("gpu:0", False),
                                           ("sim:0", False)])
def test_fuses_only_on_cpu_devices(device, fused):
    g = _annotated(_pooled_relu_graph(), device)
    assert ("pool_relu_grad" in ops_of(fuse_relu_into_pool_grad(g))) == fused


def test_the_two_ops_on_different_devices_stay():
    g = _pooled_relu_graph()

    def visit(n):
        return n.replace(device="cpu:1") if n.op == "relu_grad" else n

    g = rewrite(g, visit)
    assert fuse_relu_into_pool_grad(g) is g


def test_a_fused_graph_survives_a_save_and_load(tmp_path):
    f = fuse_relu_into_pool_grad(_pooled_relu_graph())
    kf.save(str(tmp_path / "g.kfg"), f)
    loaded = kf.load(str(tmp_path / "g.kfg")).graph
    assert "pool_relu_grad" in ops_of(loaded)
    _assert_same_bits(f, loaded, _feed("float32"))


def test_a_compiled_plan_gives_the_unoptimized_bits():
    # whatever optimize() runs, the plan's gradients are the unfused graph's
    g = _pooled_relu_graph()
    _assert_same_bits(g, kf.compile(g, training=True).graph, _feed("float32"))


def test_optimize_fuses_unless_fusion_is_off():
    # check_numerics turns fusion off, so a NaN is blamed on pool_grad or relu_grad itself
    g = _pooled_relu_graph()
    assert "pool_relu_grad" in ops_of(optimize(g))
    assert "pool_relu_grad" not in ops_of(optimize(g, fuse=False))
