"""fuse_elementwise (graph/passes/fuse.py): chains of ufunc ops become one `fused` node."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.passes import fuse_elementwise
from tests.graph.passes.common import assert_same_values, ops_of

X = np.array([0.5, -1.0, 2.0], dtype="float32")


def test_fuses_a_chain():
    #   x ── exp ── mul(., c) ── tanh ── sum     =>   x, c ── fused ── sum
    x = kf.placeholder("x", (3,))
    g = kf.Graph([kf.sum(kf.tanh(kf.exp(x) * 2.0))])
    line = f"test_fuse.py:{g.nodes[-1].where.split(':')[1]}"
    f = fuse_elementwise(g)
    f.verify()
    assert ops_of(f) == ["input", "const", "fused", "sum"]
    fused = f.nodes[2]
    assert fused.attrs == {"program": (("exp", (0,)), ("mul", (-1, 1)), ("tanh", (-1,))),
                           "dtype": "float32", "wheres": (line, line, line)}
    assert fused.inputs == (x.node, f.nodes[1])
    assert fused.spec == kf.Spec((3,), "float32")
    assert_same_values(g, f, {"x": X})


def test_running_value_may_be_the_second_operand():
    #   x ── exp ── sum ──┐
    #   x ── tanh ────────┴ mul        =>  the chain tanh -> mul reads the sum as input 1
    x = kf.placeholder("x", (3,))
    g = kf.Graph([kf.sum(kf.exp(x)) * kf.tanh(x)])
    f = fuse_elementwise(g)
    f.verify()
    assert ops_of(f) == ["input", "exp", "sum", "fused"]
    assert f.outputs[0].attrs["program"] == (("tanh", (0,)), ("mul", (1, -1)))
    assert_same_values(g, f, {"x": X})


def test_nothing_to_fuse_returns_the_same_graph():
    x = kf.placeholder("x", (3,))
    y = kf.placeholder("y", (2, 3))
    for outs in ([kf.exp(x)],                       # a single op
                 [kf.sum(kf.exp(x))],               # the consumer has attributes
                 [kf.exp(x) + y],                   # the chain would change shape
                 [kf.relu(kf.sigm(x))]):            # not ufunc ops
        g = kf.Graph(outs)
        assert fuse_elementwise(g) is g


def test_shared_values_and_outputs_end_a_chain():
    #   e = exp(x) has two users (and is an output): it is computed on its own
    x = kf.placeholder("x", (3,))
    e = kf.exp(x)
    g = kf.Graph([kf.tanh(e) + kf.sin(e)])
    f = fuse_elementwise(g)
    f.verify()
    assert ops_of(f) == ["input", "exp", "sin", "fused"]
    assert f.outputs[0].attrs["program"] == (("tanh", (0,)), ("add", (-1, 1)))
    assert fuse_elementwise(kf.Graph([e, kf.tanh(e)])).nodes[1] is e.node
    assert_same_values(g, f, {"x": X})


def test_fused_scalar_chain():
    x = kf.placeholder("x", (), "float64")
    g = kf.Graph([kf.tanh(kf.exp(x))])
    f = fuse_elementwise(g)
    assert ops_of(f) == ["input", "fused"]
    assert_same_values(g, f, {"x": np.array(0.3)})


def test_differentiate_before_fusing():
    x = kf.placeholder("x", (3,))
    f = fuse_elementwise(kf.Graph([kf.sum(kf.tanh(kf.exp(x)))]))
    with pytest.raises(NotImplementedError, match="differentiate the graph before fusing"):
        kf.backward(f, wrt=["x"])
