"""The one training step (train/step.py): which params train, the optimizer wiring, the
step graph, the data-parallel variant, and every trainer reading the same rule."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.distributed.replica_step import ReplicaStep
from knetflow.train import optim, step
from tests.train.test_optim import C, D, W0, compiled  # the quadratic both files train


# ---- which params train ----


def frozen_graph():
    """A loss over w, a param marked trainable=False, a counter the graph updates, and
    an integer param: only w trains."""
    w = kf.param("w", value=np.ones(2), dtype="float64")
    fixed = kf.param("fixed", value=np.ones(2), dtype="float64")
    fixed = kf.Symbol(fixed.node.replace(attrs={**fixed.node.attrs, "trainable": False}))
    count = kf.param("count", value=np.array(0.0), dtype="float64")
    index = kf.param("index", value=np.array(1), dtype="int64")
    loss = kf.sum(w * w * fixed) + count * 0.0 + kf.sum(index * 0.0)
    return kf.Graph([loss], updates={"count": count + 1})


def test_trainable_leaves_out_marked_updated_and_integer_params():
    graph = frozen_graph()
    assert step.trainable_names(graph) == ["w"]
    assert [p.attrs["name"] for p in step.trainable(graph, wrt=["fixed", "w"])] == ["fixed", "w"]
    assert set(optim.step_graph(graph, optim.SGD()).updates) == {"w", "count"}


def test_step_graph_trains_only_what_it_should():
    w = kf.param("w", value=np.ones(2), dtype="float64")
    count = kf.param("count", value=np.array(0.0), dtype="float64")
    graph = kf.Graph([kf.sum(w * w) + count * 0.0], updates={"count": count + 1})
    step_ = optim.step_graph(graph, optim.SGD(lr=0.25))
    assert set(step_.updates) == {"w", "count"}
    plan = kf.compile(step_)
    loss = plan.run({})[0]
    assert float(loss) == 2.0 and float(plan.params["count"]) == 1.0
    np.testing.assert_allclose(plan.params["w"], [0.5, 0.5])
    only = optim.step_graph(kf.Graph([kf.sum(w * w) + kf.sum(count * w)]), wrt=["w"])
    assert set(only.updates) == {"w"}


def bn_model_graph(fix_gamma):
    """A FeedForward training graph with a BatchNorm whose gamma is fixed or not."""
    sym = kf.sym
    sym.reset_names()
    net = sym.FullyConnected(sym.Variable("data"), num_hidden=4, name="fc1")
    net = sym.BatchNorm(net, fix_gamma=fix_gamma, name="bn1")
    net = sym.FullyConnected(net, num_hidden=3, name="fc2")
    model = kf.FeedForward(sym.SoftmaxOutput(net, name="softmax"), numpy_batch_size=8)
    model.bind((8, 5), np.float64)
    return model.train_graph()


@pytest.mark.parametrize("fix_gamma", [True, False])
def test_every_trainer_trains_the_same_params(fix_gamma):
    graph = bn_model_graph(fix_gamma)
    names = step.trainable_names(graph)
    assert ("bn1_gamma" in names) is not fix_gamma
    assert not {"bn1_moving_mean", "bn1_moving_var"} & set(names)
    one = step.TrainStep(graph, ["cpu:0"], optim.Momentum())
    assert {n.split(":")[0] for n in one.plan.params if n.endswith(":velocity")} == set(names)
    assert ReplicaStep(graph, optim.Momentum(), ("data", "softmax_label")).names == names


@pytest.fixture
def two_cpus():
    kf.set_cpu_devices(2)
    yield [kf.cpu(0), kf.cpu(1)]
    kf.set_cpu_devices(1)


def test_the_data_parallel_variant_reads_the_same_rule(two_cpus):
    """A param the graph updates but does not mark trainable=False (first in the graph's
    order) trains on two devices as on one: it is not given another param's gradient."""
    x = kf.placeholder("x", (None, 2), "float64")
    count = kf.param("count", value=np.array(0.0), dtype="float64")
    w = kf.param("w", value=np.array([1.0, -1.0]), dtype="float64")
    pred = x * w + count * 0.0
    graph = kf.Graph([kf.mean(pred * pred), pred], updates={"count": count + 1})
    assert [p.attrs["name"] for p in graph.params] == ["count", "w"]
    feed = {"x": np.arange(8.0).reshape(4, 2)}
    results = []
    for devices in (["cpu:0"], two_cpus):
        train = step.TrainStep(graph, devices, optim.SGD(lr=0.01))
        loss, out = train.run(feed)
        results.append((loss, out, train.params()))
    (loss1, out1, p1), (loss2, out2, p2) = results
    assert loss2 == pytest.approx(loss1, rel=1e-12)
    np.testing.assert_allclose(out2, out1, rtol=1e-12)
    np.testing.assert_allclose(p2["w"], p1["w"], rtol=1e-12)
    assert float(p1["count"]) == float(p2["count"]) == 1.0


# ---- the wiring: graph updates and eager updates alike ----


def test_float32_stays_float32_in_the_step_graph():
    w = kf.param("w", value=W0.astype("float32"))
    plan = kf.compile(optim.step_graph(kf.Graph([kf.sum(w * w)]), optim.Adam()))
    plan.run({})
    assert plan.params["w"].dtype == np.float32 and plan.params["w:t"].dtype == np.float32
    assert float(plan.params["w:t"]) == 1.0


def test_multioptimizer_in_a_step_graph():
    w = kf.param("fc1_weight", value=np.ones(2), dtype="float64")
    b = kf.param("fc1_bias", value=np.ones(2), dtype="float64")
    loss = kf.sum(w * w) + kf.sum(b * b)
    m = optim.MultiOptimizer({"default": optim.SGD(lr=0.1), "bias": optim.Momentum(lr=0.1)})
    plan = kf.compile(optim.step_graph(kf.Graph([loss]), m))
    assert set(plan.params) == {"fc1_weight", "fc1_bias", "fc1_bias:velocity"}
    plan.run({})
    np.testing.assert_allclose(plan.params["fc1_weight"], [0.8, 0.8])
    np.testing.assert_allclose(plan.params["fc1_bias"], [0.8, 0.8])
    # kinds= supplies layer kinds the names do not carry
    plan2 = kf.compile(optim.step_graph(kf.Graph([loss]), optim.MultiOptimizer(
        {"default": optim.SGD(), "FullyConnected": optim.Adam()}),
        kinds={"fc1_weight": "FullyConnected"}))
    assert "fc1_weight:m" in plan2.params and "fc1_bias:m" not in plan2.params


def test_update_graph_applies_fed_gradients_as_the_step_graph_does():
    """Dask's update (gradients fed, as partial sums over rows) against the step graph."""
    w = kf.param("w", value=W0, dtype="float64")
    graph = kf.Graph([kf.sum(0.5 * C * w * w + D * w)])
    want = compiled(optim.Adam(lr=0.1, gradient_clip_norm=1.0), 1)[0][-1]
    plan = kf.compile(step.update_graph(graph, optim.Adam(lr=0.1, gradient_clip_norm=1.0),
                                        ["w"], parts=2))
    g = C * W0 + D
    plan.run({step.grad_name("w"): 3 * g, step.grad_name("w", 1): 5 * g,
              "grad:scale": np.array(1 / 8)})
    np.testing.assert_allclose(plan.params["w"], want, rtol=1e-12)


def test_update_params_gives_each_param_its_own_optimizer_copy():
    a, b = kf.Param(np.array([1.0]), name="a"), kf.Param(np.array([2.0]), name="b")
    own = optim.SGD(lr=0.5)
    b.opt = own
    shared = optim.Momentum(lr=0.1)
    step.update_params([a, b], lambda p: np.array([1.0]), shared)
    assert isinstance(a.opt, optim.Momentum) and a.opt is not shared and b.opt is own
    np.testing.assert_allclose([a.value[0], b.value[0]], [0.9, 1.5])
    step.update_params([a, b], lambda p: None if p is a else np.array([1.0]), shared,
                       params=[a])
    np.testing.assert_allclose([a.value[0], b.value[0]], [0.9, 1.5])  # a's gradient: None


# ---- state: checkpoints and resuming ----


def test_step_plan_state_round_trip():
    """3 compiled steps, state back into the optimizer, a new step graph resumes it."""
    straight, _ = compiled(optim.Adam(), steps=5)
    opt = optim.Adam()
    w = kf.param("w", value=W0, dtype="float64")
    graph = kf.Graph([kf.sum(0.5 * C * w * w + D * w)])
    plan = kf.compile(optim.step_graph(graph, opt))
    for _ in range(3):
        plan.run({})
    optim.state_from_plan(opt, plan)
    saved = opt.state_dict()
    assert set(saved["state"]) == {"w:m", "w:v", "w:t"} and float(saved["state"]["w:t"]) == 3
    opt2 = optim.Adam()
    opt2.load_state_dict(saved)
    w2 = kf.param("w", value=plan.params["w"], dtype="float64")
    plan2 = kf.compile(optim.step_graph(kf.Graph([kf.sum(0.5 * C * w2 * w2 + D * w2)]), opt2))
    for _ in range(2):
        plan2.run({})
    np.testing.assert_allclose(plan2.params["w"], straight[-1], rtol=1e-12)
