"""Partitioning placed graphs: send/recv pairs on cross-device edges only."""

import numpy as np

import knetflow as kf
from knetflow.scheduler.partition import partition


def _ops(graph):
    return [n.op for n in graph.nodes]


def test_one_transfer_per_value_and_destination():
    #   cpu:0: x ─ a=exp ─ send ──────────────┐
    #   cpu:1:            recv ─ tanh(a), sin(a) ─ add
    x = kf.placeholder("x", (3,))
    a = kf.exp(x)
    t, s = kf.tanh(a), kf.sin(a)
    out = t + s
    g = kf.Graph([out])
    where = {n.id: "cpu:1" for n in g.nodes}
    where[a.node.id] = "cpu:0"
    part = partition(g, where, move=lambda v, src, dst: np.array(v))
    assert _ops(part.graphs["cpu:0"]) == ["input", "exp", "send"]
    assert _ops(part.graphs["cpu:1"]) == ["recv", "tanh", "sin", "add"]
    assert part.transfers() == [("cpu:0", "cpu:1", 12)]
    assert part.outputs == [("cpu:1", 0)]


def test_inputs_and_consts_are_not_transferred():
    x = kf.placeholder("x", (2,))
    a = kf.exp(x * 2.0)
    b = kf.sin(x * 2.0)
    g = kf.Graph([a, b])
    where = {n.id: "cpu:0" for n in g.nodes}
    where[b.node.id] = where[b.node.inputs[0].id] = "cpu:1"
    part = partition(g, where, move=lambda v, src, dst: np.array(v))
    assert part.transfers() == []
    assert [n.attrs["name"] for n in part.graphs["cpu:1"].inputs] == ["x"]


def test_each_device_follows_the_global_order():
    # a ping-pong between devices must not deadlock: recv comes after the sends it needs
    x = kf.placeholder("x", (2,))
    a = kf.exp(x)          # cpu:0
    b = kf.tanh(a)         # cpu:1
    c = kf.sin(b) + a      # cpu:0
    d = kf.cos(c) * b      # cpu:1
    g = kf.Graph([d])
    where = {n.id: "cpu:0" for n in g.nodes}
    for s in (b, d):
        where[s.node.id] = "cpu:1"
    where[d.node.inputs[0].id] = "cpu:1"  # cos
    part = partition(g, where, move=lambda v, src, dst: np.array(v))
    assert _ops(part.graphs["cpu:0"]) == ["input", "exp", "send", "recv", "sin", "add", "send"]
    assert _ops(part.graphs["cpu:1"]) == ["recv", "tanh", "send", "recv", "cos", "mul"]


def test_a_device_holding_only_params_sends_them():
    #   cpu:1: w ─ send ─┐                      (a rule put w there, no op reads it there)
    #   cpu:0:         recv ─ mul(x, w) ─ sum
    x = kf.placeholder("x", (3,))
    w = kf.param("w", value=np.ones(3))
    g = kf.Graph([kf.sum(x * w)])
    where = {n.id: "cpu:0" for n in g.nodes}
    where[w.node.id] = "cpu:1"
    part = partition(g, where, move=lambda v, src, dst: np.array(v))
    assert _ops(part.graphs["cpu:1"]) == ["param", "send"]
    assert _ops(part.graphs["cpu:0"]) == ["input", "recv", "mul", "sum"]
    assert part.params == {"w": "cpu:1"} and part.transfers() == [("cpu:1", "cpu:0", 12)]
    mul = part.graphs["cpu:0"].nodes[2]
    assert part.origin[mul.id] is g.nodes[2]  # rebuilt to read the recv; reported as the original
