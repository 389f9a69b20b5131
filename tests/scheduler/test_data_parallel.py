"""In-process data parallelism: replicas, deterministic gradient sums, batch splits."""

import re

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.specialize import specialize
from knetflow.ops.base import Spec
from knetflow.scheduler.data_parallel import (DataParallelPlan, replicated_backward, split_feed,
                                              split_sizes, without_empty_replicas)


def _model():
    x = kf.placeholder("x", (None, 5), "float64")
    y = kf.placeholder("y", (None,), "int64")
    rs = np.random.RandomState(0)
    w1 = kf.param("w1", value=rs.randn(5, 8) * 0.5, dtype="float64")
    w2 = kf.param("w2", value=rs.randn(8, 3) * 0.5, dtype="float64")
    return kf.Graph([kf.nll(kf.tanh(x @ w1) @ w2, y)])


def _sgd(lr):
    def make_updates(step):
        params = {p.attrs["name"]: p for p in step.params}
        grads = step.outputs[1:]
        return kf.Graph(step.outputs, updates={
            name: kf.Symbol(p) - lr * kf.Symbol(g) for (name, p), g in zip(params.items(), grads)})
    return make_updates


def _batches(n_steps, rows):
    rs = np.random.RandomState(1)
    return [(rs.randn(r, 5), rs.randint(0, 3, r)) for r in rows[:n_steps]]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a replica with no rows computes no 0/0
@pytest.mark.parametrize("kind", ["two_cpus", "two_sims"])
def test_two_devices_train_exactly_like_one(kind, request):
    devices = request.getfixturevalue(kind)
    rows = [8, 8, 7, 3, 1]  # uneven last batches, one smaller than the replica count
    one = DataParallelPlan(_model(), ["cpu:0"], make_updates=_sgd(0.5))
    two = DataParallelPlan(_model(), devices, make_updates=_sgd(0.5), work_load_list=[1, 3])
    for x, y in _batches(5, rows):
        loss1 = one.run({"x": x, "y": y})[0]
        loss2 = two.run({"x": x, "y": y})[0]
        np.testing.assert_allclose(loss2, loss1, rtol=1e-12)
    for name in ("w1", "w2"):
        got = two.params[name]
        got = got if isinstance(got, np.ndarray) else kf.device(devices[0]).get(got)
        np.testing.assert_allclose(got, one.params[name], rtol=1e-12)


def test_params_their_sums_and_updates_are_spread_over_the_devices(two_sims):
    plan = DataParallelPlan(_model(), two_sims, make_updates=_sgd(0.5))
    x, y = _batches(1, [6])[0]
    plan.run({"x": x, "y": y})
    homes = plan.plan._last.partition.params
    assert homes == {"w1": "sim:0", "w2": "sim:1"}  # biggest first, to the emptiest device
    for name, device in homes.items():  # a strict device refuses another's arrays
        assert kf.device(device).owns(plan.params[name])


def test_results_do_not_depend_on_thread_timing(two_cpus):
    x, y = _batches(1, [9])[0]
    runs = [DataParallelPlan(_model(), two_cpus).run({"x": x, "y": y})[1] for _ in range(5)]
    for r in runs[1:]:
        assert np.array_equal(r, runs[0])  # bitwise: fixed reduction order


def test_split_sizes_follow_work_load_and_sum_to_the_batch():
    assert split_sizes(10, [1, 1]) == [5, 5]
    assert split_sizes(10, [1, 3]) == [2, 8]
    assert split_sizes(1, [1, 1]) == [0, 1]
    assert sum(split_sizes(7, [2, 1, 1])) == 7


def test_split_feed_cuts_batch_inputs_and_weights():
    feed = split_feed({"x": np.arange(6).reshape(6, 1), "k": 3}, ["x"], 2, [1, 2])
    assert feed["x@0"].tolist() == [[0], [1]] and feed["x@1"].shape == (4, 1)
    assert feed["k"] == 3
    assert feed["weight@0"] == pytest.approx(1 / 3) and feed["weight@1"] == pytest.approx(2 / 3)


def test_split_feed_errors():
    with pytest.raises(ValueError, match="work_load_list has 3 entries for 2 devices"):
        split_feed({"x": np.ones((2, 1))}, ["x"], 2, [1, 1, 1])
    with pytest.raises(ValueError, match="batch inputs differ in length: 'y' has 3 rows"):
        split_feed({"x": np.ones((2, 1)), "y": np.ones(3)}, ["x", "y"], 2)


# ---- replicas a batch leaves without rows ----


def _specialized_step(rows):
    """The two-replica step of _model, specialized to `rows` rows per replica."""
    step = replicated_backward(_model(), ["cpu:0", "cpu:1"])
    specs = {f"{name}@{r}": Spec((n,) + shape, dtype) for r, n in enumerate(rows)
             for name, shape, dtype in (("x", (5,), "float64"), ("y", (), "int64"))}
    specs.update({f"weight@{r}": Spec((), "float64") for r in range(2)})
    return specialize(step, specs)


def _readers(graph, name):
    return [n for n in graph.nodes if any(i.op == "input" and i.attrs["name"] == name
                                          for i in n.inputs)]


def test_what_only_an_empty_replica_computes_is_cut():
    step = _specialized_step([0, 3])
    cut = without_empty_replicas(step, 2, ["x", "y"])
    assert [n.attrs["name"] for n in cut.inputs] == [n.attrs["name"] for n in step.inputs]
    assert [n.attrs["name"] for n in cut.params] == ["w1", "w2"]
    for name in ("x@0", "y@0", "weight@0"):  # still fed, read by nothing
        assert _readers(step, name) and not _readers(cut, name)
    assert _readers(cut, "x@1") and _readers(cut, "weight@1")
    for both in ([2, 1], [0, 0]):  # rows everywhere, or nowhere: the step itself
        full = _specialized_step(both)
        assert without_empty_replicas(full, 2, ["x", "y"]) is full


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("kind", ["two_cpus", "two_sims"])
def test_a_batch_smaller_than_the_replica_count_divides_nothing_by_zero(kind, request):
    devices = request.getfixturevalue(kind)
    one = DataParallelPlan(_model(), ["cpu:0"])
    two = DataParallelPlan(_model(), devices)
    (x, y), = _batches(1, [1])
    with np.errstate(all="raise"):   # a 0/0 on this thread (cpu:0, replica 0) would raise
        got = two.run({"x": x, "y": y})
    for g, w in zip(got, one.run({"x": x, "y": y})):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    graphs = two.plan._last.partition.graphs
    assert not any(_readers(g, "x@0") for g in graphs.values())  # replica 0 ran nothing


def test_a_plan_refuses_an_adapt_that_changes_its_inputs():
    x, y = kf.placeholder("x", (2,)), kf.placeholder("y", (2,))
    plan = kf.Plan(kf.Graph([x * 2.0], inputs=[x, y]), adapt=lambda g: kf.Graph(g.outputs))
    with pytest.raises(ValueError, match=re.escape(
            "adapt must keep the graph's inputs, params and updates ['x', 'y'], got ['x']")):
        plan.run({"x": np.ones(2), "y": np.ones(2)})


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_feedforward_with_batchnorm_on_a_one_row_last_batch(two_cpus):
    # the data-parallel step's predictions and batch statistics: an empty replica's are cut too
    data = kf.sym.Variable("data")
    fc = kf.sym.FullyConnected(data, num_hidden=3, name="fc1")
    net = kf.sym.SoftmaxOutput(kf.sym.BatchNorm(fc, name="bn"), name="softmax")
    rs = np.random.RandomState(0)
    X, y = rs.randn(9, 4).astype("float32"), rs.randint(0, 3, 9)
    model = kf.FeedForward(net, ctx=[kf.cpu(0), kf.cpu(1)], num_epoch=2, numpy_batch_size=4)
    with np.errstate(all="raise"):
        model.fit(X, y)   # batches of 4, 4 and 1 rows
    assert all(np.isfinite(v).all() for v in model.arg_params.values())
    assert all(np.isfinite(v).all() for v in model.aux_params.values())


def _seeded_dropout_graph():
    x = kf.placeholder("x", (None, 5), "float64")
    w = kf.param("w", value=np.random.RandomState(0).randn(5, 8), dtype="float64")
    return kf.Graph([kf.mean(kf.dropout(kf.tanh(x @ w), 0.5, seed=7) ** 2)])


def test_a_seeded_dropout_is_refused_over_replicas_and_kept_on_one(two_cpus):
    # each replica drew the mask of the batch's first rows for its own rows: the loss was
    # 0.69 over two devices where one process gives 0.56
    from knetflow.distributed.trainer import DaskTrainer

    x = np.random.RandomState(1).randn(6, 5)
    one = DataParallelPlan(_seeded_dropout_graph(), ["cpu:0"]).run({"x": x})
    again = DataParallelPlan(_seeded_dropout_graph(), ["cpu:0"]).run({"x": x})
    np.testing.assert_array_equal(one[0], again[0])           # the seed's one mask
    with pytest.raises(ValueError, match=r"dropout with seed=7 \(built at .*\) cannot be split "
                                         r"over 2 replicas"):
        DataParallelPlan(_seeded_dropout_graph(), two_cpus)
    with pytest.raises(ValueError, match="cannot be split over Dask workers"):
        DaskTrainer(_seeded_dropout_graph(), n_workers=2)
