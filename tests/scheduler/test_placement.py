"""Placement on small literal graphs: rules, annotations, auto, colocation, budgets."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.specialize import specialize
from knetflow.scheduler.placement import PlacementError, place


def _branches(n=256):
    #   x ─ exp ─ tanh ─┐
    #   x ─ sin ─ cos  ─┴─ add
    x = kf.placeholder("x", (n, n))
    a = kf.tanh(kf.exp(x))
    b = kf.cos(kf.sin(x))
    return kf.Graph([a + b]), a, b


def test_one_device_takes_everything():
    g, *_ = _branches()
    assert set(place(g, ["cpu:0"]).values()) == {"cpu:0"}


def test_auto_spreads_independent_branches_over_two_devices():
    g, a, b = _branches()
    where = place(g, ["cpu:0", "cpu:1"])
    assert where[a.node.id] != where[b.node.id]
    assert where[a.node.inputs[0].id] == where[a.node.id]  # a chain stays together


def test_auto_keeps_a_small_chain_on_one_device():
    x = kf.placeholder("x", (4,))
    y = kf.tanh(kf.exp(kf.sin(x)))
    where = place(kf.Graph([y]), ["cpu:0", "cpu:1"])
    assert len({where[n.id] for n in kf.Graph([y]).nodes if not n.is_leaf}) == 1


def test_annotation_pattern_and_callable_rules(two_cpus):
    x = kf.placeholder("x", (8,))
    with kf.device("cpu:1"):
        a = kf.exp(x)
    b = kf.tanh(a)
    g = kf.Graph([b])
    assert place(g, ["cpu:0", "cpu:1"])[a.node.id] == "cpu:1"
    by_name = place(g, ["cpu:0", "cpu:1"], rule={"x": "cpu:0", "tanh*": "cpu:0"})
    assert by_name[x.node.id] == "cpu:0"
    by_fn = place(g, ["cpu:0", "cpu:1"], rule=lambda n: "cpu:0" if n.op == "tanh" else None)
    assert by_fn[b.node.id] == "cpu:0"


def test_strict_mode_refuses_a_missing_device():
    x = kf.placeholder("x", (8,))
    y = kf.exp(x)
    rule = {"exp*": "gpu:3"}
    with pytest.raises(PlacementError, match=r"placed on gpu:3, which this plan does not have"):
        place(kf.Graph([y]), ["cpu:0", "cpu:1"], rule=rule, strict=True)
    assert place(kf.Graph([y]), ["cpu:0", "cpu:1"], rule=rule)[y.node.id] in ("cpu:0", "cpu:1")


def test_param_update_is_colocated_with_the_param(two_cpus):
    w = kf.param("w", value=np.ones(4, "float32"))
    with kf.device("cpu:1"):
        loss = kf.sum(w * w)
    g = kf.Graph([loss], updates={"w": w * 0.5})
    where = place(g, ["cpu:0", "cpu:1"])
    assert where[w.node.id] == "cpu:1"
    assert where[g.updates["w"].id] == "cpu:1"


def test_budget_too_small_everywhere_is_an_error():
    x = kf.placeholder("x", (1000,))
    g = specialize(kf.Graph([kf.exp(x)]), {})
    with pytest.raises(PlacementError, match="needs 4000 bytes and no device has that much"):
        place(g, ["cpu:0", "cpu:1"], budgets={"cpu:0": 100, "cpu:1": 100})
