"""In-process data parallelism: replicas, deterministic gradient sums, batch splits."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.scheduler.data_parallel import DataParallelPlan, split_feed, split_sizes


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
