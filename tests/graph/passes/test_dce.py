"""eliminate_dead_code (graph/passes/dce.py): keep what the outputs need, and the inputs."""

import numpy as np

import knetflow as kf
from knetflow.graph.passes import eliminate_dead_code
from tests.graph.passes.common import assert_same_values, ops_of


def test_live_graph_is_returned_as_it_is():
    x = kf.placeholder("x", (3,))
    g = kf.Graph([kf.exp(x) + 1.0])
    assert eliminate_dead_code(g) is g


def test_drops_nodes_no_output_needs():
    #   x ── exp ── out          x ── exp ── out
    #   x ── tanh ── sin    =>   (the dead branch is gone)
    #   u  (declared, unused: stays an input)
    x = kf.placeholder("x", (3,))
    u = kf.placeholder("u", (2,))
    out = kf.exp(x)
    g = kf.Graph([out, kf.sin(kf.tanh(x))], inputs=[x, u])
    g.outputs = (out.node,)  # as a pass that drops an output leaves it
    f = eliminate_dead_code(g)
    assert f is not g
    f.verify()
    assert ops_of(f) == ["input", "exp", "input"]
    assert [n.attrs["name"] for n in f.inputs] == ["x", "u"]
    feed = {"x": np.array([0.0, 1.0, 2.0], dtype="float32"), "u": np.zeros(2, "float32")}
    assert_same_values(g, f, feed)
    assert eliminate_dead_code(f) is f
