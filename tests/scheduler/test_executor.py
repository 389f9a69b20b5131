"""Running placed, partitioned graphs: one executor per device."""

import threading

import numpy as np
import pytest

import knetflow as kf
from knetflow.scheduler.placement import PlacementError
from tests.ops.harness import build
from tests.ops.test_core_ops import CASES as CORE_CASES


def _two_branch_graph():
    x = kf.placeholder("x", (64, 64), "float64")
    a = kf.tanh(kf.exp(x * 0.1))
    b = kf.cos(kf.sin(x))
    w = kf.param("w", value=np.full((64, 64), 0.01))
    return kf.Graph([kf.sum((a + b) @ w)]), {"x": np.random.RandomState(0).rand(64, 64)}


@pytest.mark.parametrize("kind", ["two_cpus", "two_sims"])
def test_outputs_and_gradients_match_one_device(kind, request):
    devices = request.getfixturevalue(kind)
    graph, feed = _two_branch_graph()
    grads = kf.backward(graph)
    want = kf.compile(grads).run(feed)
    for rule in ("auto", lambda n: devices[n.id % 2]):
        got = kf.compile(grads, devices=devices, placement=rule).run(feed)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-12)


@pytest.mark.parametrize("case", CORE_CASES[:12], ids=str)
def test_core_cases_alternating_over_sim_devices(case, two_sims):
    arrays, syms, outs = build(case, "float64")
    feed = {f"a{k}": a for k, a in enumerate(arrays)}
    want = kf.compile(list(outs)).run(feed)
    got = kf.compile(list(outs), devices=two_sims,
                     placement=lambda n: two_sims[n.id % 2]).run(feed)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w)


def test_a_fault_on_one_device_cancels_the_run_and_names_it(two_cpus):
    i = kf.placeholder("i", (3,), "int64")
    with kf.device("cpu:1"):
        bad = i ** i                      # NumPy refuses negative integer powers
    with kf.device("cpu:0"):
        out = kf.sum(bad * 2) + kf.sum(i)  # cpu:0 waits for cpu:1's value
    plan = kf.compile([out], devices=two_cpus)
    with pytest.raises(kf.ExecutionError, match=r"pow failed on inputs of shapes \(3,\), \(3,\) "
                                                r"on cpu:1: ValueError: .*test_executor.py:\d+"):
        plan.run({"i": np.array([1, -1, 2])})
    threads = threading.active_count()
    assert plan.run({"i": np.array([1, 2, 3])})[0] == 2 * (1 + 4 + 27) + 6  # still usable
    for _ in range(3):
        with pytest.raises(kf.ExecutionError):
            plan.run({"i": np.array([1, -1, 2])})
    assert threading.active_count() <= threads  # executors are reused, none leaked


def test_memory_report_and_explain_per_device(two_cpus):
    graph, feed = _two_branch_graph()
    plan = kf.compile(graph, devices=two_cpus, placement=lambda n: two_cpus[n.id % 2])
    plan.run(feed)
    assert set(plan.memory_report()) == set(two_cpus)
    text = plan.explain()
    assert "cpu:0:" in text and "cpu:1:" in text and "transfers:" in text


def test_budget_exceeded_fails_before_running(two_sims):
    kf.set_sim_devices(2, memory_budget=40000)  # the param fits; the intermediates do not
    graph, feed = _two_branch_graph()
    with pytest.raises(PlacementError, match=r"no device has that much left"):
        kf.compile(graph, devices=["sim:0", "sim:1"]).run(feed)


def test_updates_live_on_the_param_device(two_sims):
    w = kf.param("w", value=np.ones(3))
    with kf.device("sim:1"):
        loss = kf.sum(w * w)
    plan = kf.compile(kf.Graph([loss], updates={"w": w * 0.5}), devices=two_sims)
    plan.run({})
    plan.run({})
    np.testing.assert_allclose(kf.device("sim:1").get(plan.params["w"]), [0.25] * 3)


def _two_device_model(devices):
    x = kf.placeholder("x", (3,), "float64")
    with kf.device(devices[0]):
        w = kf.param("w", value=np.array([1.0, 2.0, 3.0]), dtype="float64")
        a = kf.exp(x * w)
    with kf.device(devices[1]):
        v = kf.param("v", value=np.array([0.5, 0.5, 0.5]), dtype="float64")
        b = kf.tanh(a * v)
    return kf.compile([kf.sum(b)], devices=devices), {"x": np.array([0.1, 0.2, 0.3])}


def _expected(w, v, x):
    return np.tanh(np.exp(x * w) * v).sum()


def test_params_fed_by_name_and_set_go_to_their_home_device(two_sims):
    plan, feed = _two_device_model(two_sims)
    w, v = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.5])
    np.testing.assert_allclose(plan.run(feed)[0], _expected(w, v, feed["x"]))
    v2 = np.array([1.0, -1.0, 2.0])
    np.testing.assert_allclose(plan.run({**feed, "v": v2})[0], _expected(w, v2, feed["x"]))
    plan.set_params({"v": v2, "w": w * 2})
    assert kf.device("sim:1").owns(plan.params["v"]) and kf.device("sim:0").owns(plan.params["w"])
    np.testing.assert_allclose(plan.run(feed)[0], _expected(w * 2, v2, feed["x"]))


def test_profile_of_a_plan_on_sim_devices(two_sims):
    plan, feed = _two_device_model(two_sims)
    want = plan.run(feed)
    profile = plan.profile(feed, runs=2)  # each op timed on the device the plan puts it on
    placement = plan.placement
    ops = [(n.op, d) for n, _, d in profile.rows if n.op not in ("send", "recv")]
    assert [d for _, d in ops] == [placement[n.label()] for n, _, _ in profile.rows
                                   if n.op not in ("send", "recv")]
    assert {d for _, d in ops} == {"sim:0", "sim:1"}
    sends = [(d, n.attrs["channel"].dst) for n, _, d in profile.rows if n.op == "send"]
    recvs = [(n.attrs["channel"].src, d) for n, _, d in profile.rows if n.op == "recv"]
    assert sends and sorted(sends) == sorted(recvs)  # every transfer timed at both ends
    assert set(profile.by_device()) == {"sim:0", "sim:1"} and profile.total > 0
    assert "send to sim:1" in str(profile) and "recv from sim:0" in str(profile)
    np.testing.assert_array_equal(plan.run(feed), want)  # the plan runs as before
    single = kf.compile([kf.exp(kf.placeholder("y", (2,)))], devices=["sim:1"])
    report = single.profile({"y": np.ones(2)}, runs=1)
    assert set(report.by_op()) == {"exp"} and list(report.by_device()) == ["sim:1"]


def test_eager_ops_run_on_device_arrays(two_sims):
    x = kf.device("sim:1").put(np.array([0.0, 1.0]))
    y = kf.exp(x) * 2.0
    assert kf.device("sim:1").owns(y)
    np.testing.assert_allclose(kf.device("sim:1").get(y), 2 * np.exp([0.0, 1.0]))


@pytest.mark.parametrize("where", ["one", "two_cpus", "two_sims"])
def test_one_plan_run_from_two_threads_gives_each_run_its_own_values(where, request):
    # a program's buffers and channels serve one run: two threads running one plan took
    # each other's values (most runs on two devices), and a receive could wait forever
    devices = ["cpu:0"] if where == "one" else request.getfixturevalue(where)
    rs = np.random.RandomState(0)
    x = kf.placeholder("x", (8, 16), "float64")
    w = kf.param("w", value=rs.randn(16, 16), dtype="float64")
    a = kf.tanh(x @ w)
    with kf.device(devices[-1]):
        b = kf.exp(a * 0.5) + 1.0
    plan = kf.compile(kf.Graph([kf.sum(a * b, axis=1)]), devices=devices)
    feeds = [rs.randn(8, 16) for _ in range(20)]
    want = [kf.device(devices[0]).get(plan.run({"x": f})[0]) for f in feeds]
    wrong = []

    def work(offset):
        for i in range(40):
            k = (i + offset) % len(feeds)
            got = kf.device(devices[0]).get(plan.run({"x": feeds[k]})[0])
            if not np.array_equal(np.asarray(got), np.asarray(want[k])):
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in (0, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a run never finished"
    assert wrong == []
