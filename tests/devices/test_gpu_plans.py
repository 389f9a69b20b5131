"""Plans on GPUs, against the fake CuPy: the multi-device executor running GPU partitions.

The same graphs give the same outputs and gradients on one CPU device and on
["gpu:0", "gpu:1"], ["cpu:0", "gpu:0"] or a single GPU; transfers take the
right paths (host <-> device copies, peer copies); each executor thread runs
its device's kernels with that device and its stream current; nothing CUDA
would leave unordered happens (the fake records such races); a fault on one
GPU cancels the run cleanly.
"""

import threading

import numpy as np
import pytest

import knetflow as kf
from knetflow.scheduler.data_parallel import DataParallelPlan
from knetflow.scheduler.placement import PlacementError
from tests.devices.fake_cupy import CUDARuntimeError, install
from tests.scheduler.test_data_parallel import _batches, _model, _sgd

GPUS = ["gpu:0", "gpu:1"]


@pytest.fixture
def rt(monkeypatch):
    fake = install(monkeypatch, 2)
    yield fake
    assert fake.races == []


def two_branch_graph(n=8):
    x = kf.placeholder("x", (n, n), "float64")
    a = kf.tanh(kf.exp(x * 0.1))
    b = kf.cos(kf.sin(x))
    w = kf.param("w", value=np.full((n, n), 0.01))
    loss = kf.sum(kf.relu((a + b) @ w) - kf.mean(x, axis=0))
    return kf.Graph([loss]), {"x": np.random.RandomState(0).rand(n, n)}


def alternate(devices):
    """A placement rule taking the devices in turn, in the order the plan asks about its
    nodes: the same placement whatever ids earlier tests' nodes took."""
    chosen = {}

    def rule(n):
        if n.id not in chosen:
            chosen[n.id] = devices[len(chosen) % len(devices)]
        return chosen[n.id]

    return rule


def same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is np.ndarray, type(g)
        np.testing.assert_allclose(g, w, rtol=1e-12)


def kernels_by_thread(rt):
    """{(thread name, device, stream ptr)} over the kernels of the log."""
    return {(e.thread, e.device, e.stream) for e in rt.entries("kernel")}


@pytest.mark.parametrize("rule", ["auto", "alternate"])
def test_two_gpus_give_the_outputs_and_gradients_of_one_cpu(rt, rule):
    graph, feed = two_branch_graph()
    grads = kf.backward(graph)
    want = kf.compile(grads).run(feed)
    plan = kf.compile(grads, devices=GPUS,
                      placement=alternate(GPUS) if rule == "alternate" else "auto")
    for _ in range(2):  # the second run reuses the programs and their buffers
        same(plan.run(feed), want)


def test_each_gpu_executor_runs_on_its_device_and_stream(rt):
    graph, feed = two_branch_graph()
    plan = kf.compile(kf.backward(graph), devices=GPUS, placement=alternate(GPUS))
    plan.run(feed)  # compiles: constants are uploaded by the caller, in each GPU's context
    before = len(rt.log)
    plan.run(feed)
    streams = {0: kf.gpu(0).stream.ptr, 1: kf.gpu(1).stream.ptr}
    seen = {(e.thread, e.device, e.stream) for e in rt.log[before:] if e.kind == "kernel"}
    assert {(d, s) for _, d, s in seen} == {(0, streams[0]), (1, streams[1])}
    threads = {d: {t for t, dd, _ in seen if dd == d} for d in (0, 1)}
    assert threads[0] == {threading.current_thread().name}  # the first device: the caller
    assert len(threads[1]) == 1 and threads[1].pop().startswith("knetflow-gpu:1")


def test_values_between_gpus_never_go_through_the_host(rt):
    graph, feed = two_branch_graph()
    plan = kf.compile(kf.backward(graph), devices=GPUS, placement=alternate(GPUS))
    plan.run(feed)
    before = len(rt.log)
    outs = plan.run(feed)
    moved = [e for e in rt.log[before:] if e.kind in ("h2d", "d2h", "peer")]
    program = plan._last
    fed_to_gpu1 = len(program.programs["gpu:1"].graph.inputs)
    # the feed goes from the host to each GPU reading it, once
    assert sum(e.kind == "h2d" for e in moved) == 1 + fed_to_gpu1
    assert sum(e.kind == "d2h" for e in moved) == len(outs)    # the outputs
    assert sum(e.kind == "peer" for e in moved) == len(program.partition.transfers())
    assert all(e.stream in (kf.gpu(0).stream.ptr, kf.gpu(1).stream.ptr) for e in moved)


def test_values_cross_between_gpus_by_peer_copies_on_the_receivers_stream(rt):
    x = kf.placeholder("x", (4, 4), "float64")
    with kf.device("gpu:0"):
        a = kf.exp(x)
    with kf.device("gpu:1"):
        b = kf.sum(a * 2)
    plan = kf.compile([b], devices=GPUS)
    (out,) = plan.run({"x": np.ones((4, 4))})
    assert out == pytest.approx(32 * np.e)
    peers = rt.entries("peer")  # gpu:1 reads only `a`: one peer copy, on gpu:1's stream
    assert [(e.name, e.stream, e.nbytes) for e in peers] == [("0->1", kf.gpu(1).stream.ptr,
                                                              128)]
    assert "gpu:0 -> gpu:1: 128 bytes" in plan.explain()


def test_cpu_and_gpu_give_the_outputs_and_gradients_of_one_cpu(rt):
    graph, feed = two_branch_graph()
    grads = kf.backward(graph)
    want = kf.compile(grads).run(feed)
    devices = ["cpu:0", "gpu:0"]
    plan = kf.compile(grads, devices=devices, placement=alternate(devices))
    same(plan.run(feed), want)
    copies = {e.kind for e in rt.log if e.kind in ("h2d", "d2h", "peer")}
    assert copies == {"h2d", "d2h"}  # host <-> device only
    assert all(e.stream == kf.gpu(0).stream.ptr for e in rt.entries("kernel"))


def test_a_gpu_first_and_a_cpu_second(rt):
    graph, feed = two_branch_graph()
    grads = kf.backward(graph)
    want = kf.compile(grads).run(feed)
    devices = ["gpu:1", "cpu:0"]
    same(kf.compile(grads, devices=devices, placement=alternate(devices)).run(feed), want)


@pytest.mark.parametrize("device", GPUS)
def test_a_single_gpu_plan(rt, device):
    graph, feed = two_branch_graph()
    grads = kf.backward(graph)
    want = kf.compile(grads).run(feed)
    plan = kf.compile(grads, devices=[device])
    same(plan.run(feed), want)
    g = kf.device(device)
    assert {(d, s) for _, d, s in kernels_by_thread(rt)} == {(g.index, g.stream.ptr)}


def test_updates_and_params_stay_on_their_gpu(rt):
    w = kf.param("w", value=np.ones(3))
    with kf.device("gpu:1"):
        loss = kf.sum(w * w)
    plan = kf.compile(kf.Graph([loss], updates={"w": w * 0.5}), devices=GPUS)
    assert plan.run({})[0] == 3.0
    assert plan.run({})[0] == 0.75
    assert kf.gpu(1).owns(plan.params["w"])
    np.testing.assert_allclose(kf.gpu(1).get(plan.params["w"]), [0.25] * 3)


def test_a_fault_on_one_gpu_cancels_the_run_and_names_it(rt):
    i = kf.placeholder("i", (3,), "int64")
    with kf.device("gpu:1"):
        bad = i ** i                       # NumPy (so the fake) refuses negative integer powers
    with kf.device("gpu:0"):
        out = kf.sum(bad * 2) + kf.sum(i)  # gpu:0 waits for gpu:1's value
    plan = kf.compile([out], devices=GPUS)
    with pytest.raises(kf.ExecutionError, match=r"pow failed on inputs of shapes \(3,\), \(3,\) "
                                                r"on gpu:1: ValueError: .*test_gpu_plans.py:\d+"):
        plan.run({"i": np.array([1, -1, 2])})
    threads = threading.active_count()
    assert plan.run({"i": np.array([1, 2, 3])})[0] == 2 * (1 + 4 + 27) + 6  # still usable
    for _ in range(2):
        with pytest.raises(kf.ExecutionError):
            plan.run({"i": np.array([1, -1, 2])})
    assert threading.active_count() <= threads


def test_a_cuda_error_in_a_transfer_cancels_the_run(rt):
    w = kf.param("w", value=np.zeros(4))
    with kf.device("gpu:1"):
        a = kf.exp(w)
    with kf.device("gpu:0"):
        out = kf.sum(a)
    plan = kf.compile([out], devices=GPUS)
    assert plan.run({})[0] == 4.0
    rt.inject("memcpyPeerAsync", CUDARuntimeError("cudaErrorECCUncorrectable: uncorrectable "
                                                  "ECC error encountered"))
    with pytest.raises(kf.ExecutionError, match=r"send failed on inputs of shapes \(4,\) on "
                                                r"gpu:1: CUDARuntimeError: "
                                                r"cudaErrorECCUncorrectable"):
        plan.run({})
    assert plan.run({})[0] == 4.0


def test_a_cuda_error_copying_a_feed_names_the_device(rt):
    x = kf.placeholder("x", (4,), "float64")
    with kf.device("gpu:1"):
        out = kf.sum(kf.exp(x))
    plan = kf.compile([out], devices=GPUS)
    feed = {"x": np.zeros(4)}
    rt.inject("set", CUDARuntimeError("cudaErrorLaunchFailure: unspecified launch failure"))
    with pytest.raises(kf.ExecutionError, match=r"plan failed on gpu:1: CUDARuntimeError: "
                                                r"cudaErrorLaunchFailure"):
        plan.run(feed)
    assert plan.run(feed)[0] == 4.0


def test_memory_report_and_explain_with_gpus(rt):
    graph, feed = two_branch_graph()
    plan = kf.compile(kf.backward(graph), devices=["cpu:0", "gpu:0", "gpu:1"],
                      placement=alternate(["cpu:0", "gpu:0", "gpu:1"]))
    plan.run(feed)
    report = plan.memory_report()
    assert set(report) == {"cpu:0", "gpu:0", "gpu:1"} and all(v > 0 for v in report.values())
    text = plan.explain()
    for d in ("cpu:0", "gpu:0", "gpu:1"):
        assert f"\n{d}: " in f"\n{text}" and f"peak {report[d]} bytes" in text
    assert "transfers: " in text and "gpu:0 -> gpu:1" in text and "cpu:0 -> gpu:" in text


def test_a_plan_over_the_gpu_budget_fails_at_compile_time(monkeypatch):
    install(monkeypatch, 2, memory=4096)
    graph, feed = two_branch_graph(32)  # 8 KiB per intermediate
    with pytest.raises(PlacementError, match="no device has that much left: budgets "
                                             "{'gpu:0': 4096, 'gpu:1': 4096}"):
        kf.compile(graph, devices=GPUS).run(feed)


def test_random_ops_draw_on_their_gpu(rt):
    x = kf.placeholder("x", (100,), "float32")
    with kf.device("gpu:1"):
        y = kf.dropout(x, 0.5, drop=True)
    with kf.device("gpu:0"):
        z = y + 1
    (out,) = kf.compile([z], devices=GPUS).run({"x": np.ones(100, "float32")})
    assert set(out.tolist()) == {1.0, 3.0} and out.dtype == np.float32
    (draw,) = rt.entries("kernel", name="random.random")
    assert (draw.device, draw.stream) == (1, kf.gpu(1).stream.ptr)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a replica with no rows computes no 0/0
def test_data_parallel_training_on_two_gpus_equals_one_cpu(rt):
    one = DataParallelPlan(_model(), ["cpu:0"], make_updates=_sgd(0.5))
    two = DataParallelPlan(_model(), GPUS, make_updates=_sgd(0.5), work_load_list=[1, 3])
    for x, y in _batches(4, [8, 7, 3, 1]):
        np.testing.assert_allclose(two.run({"x": x, "y": y})[0], one.run({"x": x, "y": y})[0],
                                   rtol=1e-12)
    for name, value in two.params.items():
        assert isinstance(value, rt.cupy.ndarray)
        np.testing.assert_allclose(kf.gpu(0).get(value), one.params[name], rtol=1e-12)


def test_knet_style_training_with_params_on_a_gpu(rt):
    rs = np.random.RandomState(0)
    x, y, w0 = rs.randn(16, 3), rs.randn(16), np.array([1.0, -2.0, 0.5])
    gpu = kf.gpu(1)
    runs = {}
    for where, put in (("host", lambda a: a.copy()), ("gpu", gpu.put)):
        w, opt, losses = kf.Param(put(w0)), kf.optim.Adam(lr=0.05), []
        xs, ys = put(x), put(y)
        for _ in range(3):
            r = kf.diff(lambda x, y: kf.mean((x @ w - y) ** 2), xs, ys)
            kf.update(w, kf.grad(r, w), opt)
            losses.append(r.value)
        runs[where] = (losses, w.value)
    np.testing.assert_allclose(runs["gpu"][0], runs["host"][0], rtol=1e-12)
    assert gpu.owns(runs["gpu"][1])
    np.testing.assert_allclose(gpu.get(runs["gpu"][1]), runs["host"][1], rtol=1e-12)
