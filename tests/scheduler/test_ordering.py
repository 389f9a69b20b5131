"""Instruction order by simulation: sends early, recvs late, never a wait cycle."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.scheduler.ordering import schedule
from knetflow.scheduler.partition import partition

KINDS = {"cpu:0": "cpu", "cpu:1": "cpu", "cpu:2": "cpu"}


def _ops(graph):
    return [n.op for n in graph.nodes if not n.is_leaf]


def _cut(graph, where):
    part = partition(graph, where, move=lambda v, src, dst: v)
    schedule(part, {d: KINDS[d] for d in part.graphs})
    return part


def test_a_param_is_sent_before_its_home_device_starts_its_own_work():
    # cpu:1 needs w; cpu:0 would otherwise send it only after its own big matmul
    x = kf.placeholder("x", (256, 512))
    w = kf.param("w", (512, 512))
    a = kf.sum(x @ w)            # cpu:0
    b = kf.sum(kf.tanh(x) @ w)   # cpu:1
    g = kf.Graph([a + b])
    where = {n.id: "cpu:0" for n in g.nodes}
    for n in g.nodes:
        if n.op == "tanh" or (n.op in ("matmul", "sum") and n.id in _ancestors(b.node)):
            where[n.id] = "cpu:1"
    part = _cut(g, where)
    assert _ops(part.graphs["cpu:0"])[0] == "send"
    assert _ops(part.graphs["cpu:1"])[:3] == ["tanh", "recv", "matmul"]


def test_work_that_can_run_now_goes_before_a_node_waiting_on_a_recv():
    # cpu:0 adds cpu:1's slow result to its own, then has independent work left
    x = kf.placeholder("x", (300, 300))
    slow = kf.sum(x @ x @ x)      # cpu:1
    mine = kf.sum(kf.exp(x))      # cpu:0
    total = mine + slow           # cpu:0, waits for the recv
    later = kf.sum(x @ x)         # cpu:0, independent of cpu:1
    g = kf.Graph([total, later])
    where = {n.id: "cpu:0" for n in g.nodes}
    for n in _ancestors(slow.node):
        where[n] = "cpu:1"
    where[x.node.id] = "cpu:0"
    unscheduled = partition(g, where, move=lambda v, src, dst: v)
    before = _ops(unscheduled.graphs["cpu:0"])
    assert before.index("add") < before.index("matmul")  # the partitioner's order waits
    after = _ops(_cut(g, where).graphs["cpu:0"])
    assert after.index("recv") > after.index("matmul") and after[-2:] == ["recv", "add"]


def _ancestors(node):
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n.id not in seen and not n.is_leaf:
            seen.add(n.id)
            stack.extend(n.inputs)
    return seen


_UNARY = (kf.exp, kf.tanh, kf.sin, kf.relu)
_BINARY = (kf.add, kf.mul, kf.sub)


@st.composite
def _placed_programs(draw):
    """A random DAG over inputs a, b with a device per step, and output indices."""
    steps = []
    for k in range(draw(st.integers(1, 12))):
        n = k + 2
        fn = draw(st.sampled_from(_UNARY + _BINARY))
        arity = 1 if fn in _UNARY else 2
        refs = tuple(draw(st.integers(0, n - 1)) for _ in range(arity))
        steps.append((fn, refs, draw(st.sampled_from(["cpu:0", "cpu:1", "cpu:2"]))))
    total = len(steps) + 2
    outs = sorted(set(draw(st.lists(st.integers(2, total - 1), min_size=1, max_size=3)))
                  | {total - 1})
    return steps, outs


def _build(program, a, b):
    """The outputs, and each step's node id -> device; nodes carry the device too."""
    steps, outs = program
    values, where = [a, b], {}
    for fn, refs, device in steps:
        with kf.device(device):
            args = [kf.tanh(values[r]) if fn is kf.exp else values[r] for r in refs]
            values.append(fn(*args))
        where[values[-1].node.id] = device
    return [values[k] for k in outs], where


def _never_waits_in_a_cycle(part) -> bool:
    """Play the executors: each runs its list in order; a recv needs its send done."""
    lists = {d: [n for n in g.nodes if not n.is_leaf] for d, g in part.graphs.items()}
    at = dict.fromkeys(lists, 0)
    sent = set()
    while True:
        moved = False
        for d, nodes in lists.items():
            while at[d] < len(nodes):
                n = nodes[at[d]]
                if n.op == "recv" and id(n.attrs["channel"]) not in sent:
                    break
                if n.op == "send":
                    sent.add(id(n.attrs["channel"]))
                at[d] += 1
                moved = True
        if all(at[d] == len(nodes) for d, nodes in lists.items()):
            return True
        if not moved:
            return False


@settings(max_examples=60, deadline=None)
@given(program=_placed_programs())
def test_random_placed_graphs_keep_a_topological_order_without_wait_cycles(program):
    kf.set_cpu_devices(3)
    try:
        a, b = kf.placeholder("a", (3,)), kf.placeholder("b", (3,))
        outs, chosen = _build(program, a, b)
    finally:
        kf.set_cpu_devices(1)
    g = kf.Graph(outs)
    where = {n.id: chosen.get(n.id, "cpu:0") for n in g.nodes}
    part = _cut(g, where)
    for graph in part.graphs.values():
        seen = set()
        for n in graph.nodes:
            assert all(i.id in seen for i in n.inputs), f"{n.op} before its inputs"
            seen.add(n.id)
    assert _never_waits_in_a_cycle(part)


@settings(max_examples=15, deadline=None)
@given(program=_placed_programs())
def test_random_placed_graphs_run_on_three_devices_like_on_one(program):
    kf.set_cpu_devices(3)
    try:
        a, b = kf.placeholder("a", (3,)), kf.placeholder("b", (3,))
        outs, _ = _build(program, a, b)
        values = {"a": np.array([0.1, -0.4, 0.7]), "b": np.array([0.3, 0.2, -0.5])}
        one = kf.compile(outs)
        feed = {name: values[name] for name in one.input_names}
        three = kf.compile(outs, devices=["cpu:0", "cpu:1", "cpu:2"])
        want, got = one.run(feed), three.run(feed)
        for w, o in zip(want, got):
            np.testing.assert_allclose(o, w, rtol=1e-6)
    finally:
        kf.set_cpu_devices(1)
