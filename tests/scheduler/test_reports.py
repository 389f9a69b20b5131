"""What a plan reports (scheduler/reports.py through Plan): `plan.placement`, the device
of each node, and `plan.profile()`, time per op and per device."""

import re

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.node import Graph, Node
from knetflow.ops.base import Spec
from knetflow.scheduler.codegen import generate
from knetflow.scheduler.reports import Placement


def _mlp():
    """sum(tanh(x @ w) * 2) with x (?, 3) and w (3, 2)."""
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.ones((3, 2)))
    return kf.Graph([kf.sum(kf.tanh(x @ w) * 2.0)])


# ---- placement ----


def test_placement_of_one_device_maps_params_and_ops_to_it():
    plan = kf.compile(_mlp())
    plan.run({"x": np.ones((4, 3))})
    placement = plan.placement
    ops = [n for n in plan._last.graph.nodes if n.op not in ("input", "const")]
    assert list(placement) == [n.label() for n in ops]  # run order, inputs and consts left out
    assert list(placement)[0] == "w" and "x" not in placement
    assert set(placement.values()) == {"cpu:0"} and len(placement) == len(ops)
    assert placement.by_device() == {"cpu:0": list(placement)}
    assert placement.node("w").op == "param"
    assert dict(placement) == eval(repr(placement)[len("Placement("):-1])  # noqa: S307


def test_placement_is_read_only_and_names_missing_nodes():
    plan = kf.compile(_mlp())
    plan.run({"x": np.ones((4, 3))})
    placement = plan.placement
    with pytest.raises(TypeError, match="does not support item assignment"):
        placement["w"] = "cpu:1"
    with pytest.raises(KeyError, match=r"the plan has no node 'q'; its nodes: \['w', "):
        placement["q"]  # noqa: B018
    with pytest.raises(KeyError, match=r"the plan has no node 'x'"):
        placement.node("x")


def test_placement_prints_a_table_with_the_users_lines():
    plan = kf.compile(_mlp())
    plan.run({"x": np.ones((4, 3))})
    lines = str(plan.placement).splitlines()
    assert lines[0].split() == ["node", "op", "shape", "device", "built", "at"]
    assert lines[1].split() == ["w", "param", "(3,", "2)", "cpu:0"]
    assert re.fullmatch(r"matmul#\d+ +matmul +\(4, 2\) +cpu:0 +test_reports\.py:\d+", lines[2])
    assert any(re.fullmatch(r"fused#\d+ +fused\[tanh,mul\] +\(4, 2\) +cpu:0 +.*", line)
               for line in lines)
    assert len(lines) == 1 + len(plan.placement)


def test_placement_follows_the_last_signature_and_needs_one_for_dynamic_shapes():
    plan = kf.compile(_mlp())
    with pytest.raises(ValueError, match=re.escape(
            "run the plan once, or pass feed_shapes, to get plan.placement (or call "
            "plan.placement_for(feed_shapes))")):
        plan.placement  # noqa: B018
    assert plan.placement_for({"x": (5, 3)}).node("w").spec.shape == (3, 2)
    assert str(plan.placement_for({"x": (5, 3)})).count("(5, 2)") == 2
    plan.run({"x": np.ones((2, 3))})
    assert "(2, 2)" in str(plan.placement) and "(5, 2)" not in str(plan.placement)
    static = kf.compile([kf.exp(kf.placeholder("s", (2,)))])
    assert list(static.placement.values()) == ["cpu:0"]  # static shapes: no run needed


def test_placement_of_several_devices_follows_rules_and_the_plan(two_cpus):
    x = kf.placeholder("x", (None, 3), "float64")
    w = kf.param("w", value=np.ones((3, 2)), dtype="float64")
    v = kf.param("v", value=np.ones(2), dtype="float64")
    with kf.device("cpu:0"):
        out = kf.sum(kf.tanh(x @ w) * v)
    plan = kf.compile([out], devices=two_cpus, placement={"w": "cpu:1", "v": "cpu:1"})
    plan.run({"x": np.ones((4, 3))})
    placement = plan.placement
    assert placement["w"] == placement["v"] == "cpu:1"
    assert [placement.node(k).op for k in placement.by_device()["cpu:0"]][-1] == "sum"
    assert dict(placement) == {  # the same as the program the plan runs
        placement.node(k).label(): plan._last.placement[placement.node(k).id]
        for k in placement}
    for name, home in plan._last.partition.params.items():
        assert placement[name] == home and kf.device(home).owns(plan.params[name])


def test_a_name_used_twice_gets_its_id():
    x = Node("input", (), {"name": "x"}, Spec((2,), "float32"))
    a = Node("exp", (x,), {}, Spec((2,), "float32"), name="h")
    b = Node("tanh", (a,), {}, Spec((2,), "float32"), name="h")
    placement = Placement(Graph([b]), {x.id: "cpu:0", a.id: "cpu:0", b.id: "cpu:1"})
    assert dict(placement) == {"h": "cpu:0", f"h#{b.id}": "cpu:1"}


# ---- profile ----


def test_profile_without_a_feed_reports_the_last_profile_runs():
    plan = kf.compile(_mlp())
    plan.run({"x": np.ones((4, 3))})
    message = ("this plan has no profile yet: plan.profile(feed, runs=10) times runs of feed "
               "op by op and keeps the report for plan.profile(); ordinary plan.run calls "
               "are not timed")
    with pytest.raises(ValueError, match=re.escape(message)):
        plan.profile()  # ordinary runs left no report
    first = plan.profile({"x": np.ones((4, 3))}, runs=2)
    assert plan.profile() is first
    plan.run({"x": np.ones((4, 3))})
    assert plan.profile() is first  # runs do not touch it
    second = plan.profile({"x": np.ones((7, 3))}, runs=1)
    assert plan.profile() is second and second.feed_shapes == {"x": (7, 3)}
    assert str(second).splitlines()[0] == "profile of 1 run(s) of x (7, 3)"


def test_profile_argument_errors():
    plan = kf.compile(_mlp())
    with pytest.raises(ValueError, match=r"runs=0: a profile needs at least one run"):
        plan.profile({"x": np.ones((4, 3))}, runs=0)
    with pytest.raises(kf.FeedError, match=r"feed is missing input\(s\) \['x'\]"):
        plan.profile({"y": np.ones((4, 3))})
    with pytest.raises(kf.FeedError, match=r"'y' is neither an input nor a param"):
        plan.profile({"x": np.ones((4, 3)), "y": np.ones(3)})
    with pytest.raises(kf.FeedError, match=r"input 'x' expects shape \(\?, 3\), got \(4, 2\)"):
        plan.profile({"x": np.ones((4, 2))})


def test_profile_runs_read_params_fed_by_name_and_never_update_them():
    w = kf.param("w", value=np.ones(3))
    x = kf.placeholder("x", (3,))
    plan = kf.compile(kf.Graph([kf.sum(x * w)], updates={"w": w * 0.5}))
    report = plan.profile({"x": np.ones(3), "w": np.full(3, 2.0)}, runs=2)
    assert sorted(report.by_op()) == ["mul", "sum"]
    np.testing.assert_array_equal(plan.params["w"], np.ones(3))


def test_profile_of_a_failing_op_names_it():
    i = kf.placeholder("i", (3,), "int64")
    plan = kf.compile([i ** i])
    with pytest.raises(kf.ExecutionError, match=r"pow failed on inputs of shapes \(3,\), \(3,\)"
                                                r" on cpu:0: ValueError: .*test_reports\.py"):
        plan.profile({"i": np.array([1, -1, 2])}, runs=1)


def test_profile_synchronizes_around_each_op_when_asked():
    x = kf.placeholder("x", (2,))
    graph = Graph([kf.sum(kf.exp(x))])
    calls, times = [], [0.0] * len(graph.nodes)
    program = generate(graph, np, profile=times, sync=lambda: calls.append(1))
    program.fn([np.ones(2, "float32")], [])
    assert len(calls) == 2 * 2  # before and after each of exp and sum
    assert sum(t > 0 for t in times) == 2 and times[0] == 0.0
