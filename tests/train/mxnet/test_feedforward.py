"""FeedForward (train/mxnet/feedforward.py): fit, predict, score, checkpoints and resuming,
callbacks, data parallelism over CPU devices, parameter checks, kvstore hand-off."""

import logging
import sys

import numpy as np
import pytest

import knetflow as kf
from knetflow.train.callback import BatchEndParam

sym = kf.sym


def blobs(n=240, features=6, classes=3, seed=0, dtype="float64"):
    """A learnable task: each class a Gaussian blob around its own center."""
    rs = np.random.RandomState(seed)
    centers = rs.randn(classes, features) * 2
    y = rs.randint(0, classes, n)
    x = centers[y] + rs.randn(n, features)
    return x.astype(dtype), y


def mlp(hidden=16, bn=False):
    sym.reset_names()
    net = sym.FullyConnected(sym.Variable("data"), num_hidden=hidden, name="fc1")
    if bn:
        net = sym.BatchNorm(net, name="bn1")
    net = sym.Activation(net, act_type="tanh", name="act1")
    net = sym.FullyConnected(net, num_hidden=3, name="fc2")
    return sym.SoftmaxOutput(net, name="softmax")


def model(num_epoch=3, **kw):
    kw.setdefault("optimizer", "adam")
    kw.setdefault("learning_rate", 0.02)
    kw.setdefault("numpy_batch_size", 32)
    kw.setdefault("initializer", kf.init.Xavier())
    return kf.FeedForward(kw.pop("symbol", None) or mlp(bn=kw.pop("bn", False)),
                          num_epoch=num_epoch, **kw)


def params_equal(a, b, rtol=0.0):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=0, err_msg=name)


# ---- fit, predict, score ----


def test_fit_lowers_the_loss_and_reaches_a_stated_accuracy():
    kf.seed(0)
    x, y = blobs(300)
    m = model(num_epoch=6).fit(x[:240], y[:240], eval_data=(x[240:], y[240:]))
    losses = [h["loss"] for h in m.history]
    assert losses[-1] < 0.5 * losses[0]
    assert m.score(x[240:], y[240:]) >= 0.9
    assert m.history[-1]["eval"]["accuracy"] == pytest.approx(m.score(x[240:], y[240:]))


def test_predict_gives_probabilities_and_score_their_accuracy():
    kf.seed(1)
    x, y = blobs(100)
    m = model(num_epoch=2).fit(x, y)
    p = m.predict(x)
    assert p.shape == (100, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert m.score(x, y) == pytest.approx((p.argmax(1) == y).mean())
    assert m.score(x, y, eval_metric="ce") == pytest.approx(-np.log(p[np.arange(100), y]).mean())
    out, _data, labels = m.predict(kf.minibatch(x, y, 25), return_data=True)
    np.testing.assert_allclose(out, p, rtol=1e-12)
    np.testing.assert_array_equal(labels, y)
    assert m.predict(x, num_batch=1).shape == (32, 3)


def test_iterable_batches_eval_iterables_and_epoch_size():
    kf.seed(2)
    x, y = blobs(96)
    batches = list(kf.minibatch(x, y, 16))
    m = model(num_epoch=2, epoch_size=3).fit(batches, eval_data=batches[:2])
    assert len(m.history) == 2 and set(m.history[0]["eval"]) == {"accuracy"}
    seen = []
    m = model(num_epoch=1).fit(iter(batches), batch_end_callback=lambda p: seen.append(p.nbatch))
    assert seen == list(range(6))


def test_regression_with_one_dimensional_labels():
    kf.seed(3)
    x, y = kf.datasets.housing_like(200, dtype="float64")
    sym.reset_names()
    net = sym.LinearRegressionOutput(sym.FullyConnected(sym.Variable("data"), 1, name="fc"),
                                     name="lro")
    m = kf.FeedForward(net, num_epoch=8, learning_rate=0.05, numpy_batch_size=20)
    m.fit(x, y.ravel(), eval_metric="mse")
    assert m.history[-1]["loss"] < 0.1 * m.history[0]["loss"]
    assert m.predict(x).shape == (200, 1)
    assert m.score(x, y.ravel(), eval_metric="rmse") < 0.5


def test_create_makes_and_fits_a_model():
    kf.seed(4)
    x, y = blobs(64)
    m = kf.FeedForward.create(mlp(), X=x, y=y, num_epoch=2, optimizer="adam",
                              learning_rate=0.01, numpy_batch_size=16)
    assert isinstance(m, kf.FeedForward) and len(m.history) == 2
    assert m.arg_params["fc1_weight"].shape == (16, 6)


# ---- checkpoints ----


def test_save_and_load_predict_the_same(tmp_path):
    kf.seed(5)
    x, y = blobs(64)
    m = model(num_epoch=2, bn=True).fit(x, y)
    m.save(tmp_path / "net")
    back = kf.FeedForward.load(tmp_path / "net", 2)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    params_equal(back.arg_params, m.arg_params)
    params_equal(back.aux_params, m.aux_params)
    assert back.begin_epoch == 2 and back.numpy_batch_size == 32
    graph, _arg, _aux = kf.load_checkpoint(tmp_path / "net", 2)
    np.testing.assert_allclose(kf.compile(graph).run({"data": x})[0], m.predict(x), rtol=1e-12)


@pytest.mark.parametrize("optimizer, kw", [("adam", {"learning_rate": 0.01}),
                                            ("sgd", {"learning_rate": 0.05, "momentum": 0.9})])
def test_resume_from_a_checkpoint_equals_training_straight_through(tmp_path, optimizer, kw):
    x, y = blobs(80)
    kf.seed(6)
    straight = model(num_epoch=4, bn=True, optimizer=optimizer, **kw).fit(x, y)
    kf.seed(6)
    first = model(num_epoch=2, bn=True, optimizer=optimizer, **kw)
    first.fit(x, y, epoch_end_callback=kf.callback.do_checkpoint(tmp_path / "run"))
    resumed = kf.FeedForward.load(tmp_path / "run", 2, num_epoch=4)
    assert type(resumed.create_optimizer()) is type(first.create_optimizer())
    resumed.fit(x, y)
    params_equal(resumed.arg_params, straight.arg_params)
    params_equal(resumed.aux_params, straight.aux_params)
    assert [h["epoch"] for h in resumed.history] == [2, 3]


def test_begin_epoch_trains_the_remaining_epochs():
    kf.seed(7)
    x, y = blobs(64)
    epochs = []
    m = model(num_epoch=3, begin_epoch=2)
    m.fit(x, y, epoch_end_callback=lambda e, s, a, b: epochs.append(e))
    assert epochs == [2] and [h["epoch"] for h in m.history] == [2]


# ---- callbacks and logging ----


def test_callbacks_get_mxnet_arguments(tmp_path):
    kf.seed(8)
    x, y = blobs(70)
    batches, ends, extras = [], [], []

    def on_epoch(epoch, symbol, arg_params, aux_params):
        ends.append((epoch, symbol.list_arguments(), sorted(arg_params), aux_params))

    def on_epoch_extra(epoch, symbol, arg_params, aux_params, optimizer_state=None, **kw):
        extras.append((optimizer_state["type"], sorted(kw)))

    m = model(num_epoch=2)
    m.fit(x, y, batch_end_callback=[batches.append],
          epoch_end_callback=[on_epoch, on_epoch_extra,
                              kf.callback.do_checkpoint(tmp_path / "ck")])
    assert all(isinstance(p, BatchEndParam) for p in batches)
    assert [(p.epoch, p.nbatch) for p in batches] == [(e, k) for e in (0, 1) for k in range(3)]
    assert batches[-1].eval_metric.get()[0] == "accuracy"
    assert "loss" in batches[0].locals and "data" in batches[0].locals
    assert [e[0] for e in ends] == [0, 1]
    assert ends[0][1] == m.symbol.list_arguments()
    assert ends[0][2] == ["fc1_bias", "fc1_weight", "fc2_bias", "fc2_weight"]
    assert ends[0][3] == {}
    assert extras[0] == ("Adam", ["layer_symbol", "metrics", "numpy_batch_size"])
    ckpt = kf.load_checkpoint(tmp_path / "ck", 2)
    assert set(ckpt.metrics) == {"train-accuracy", "train-loss"}
    assert ckpt.optimizer_state["type"] == "Adam"


def test_epoch_logs_and_progress_bar(caplog, capsys):
    kf.seed(9)
    x, y = blobs(64)
    with caplog.at_level(logging.INFO, logger="knetflow"):
        model(num_epoch=1).fit(x, y, eval_data=(x, y), progress=True)
    text = caplog.text
    for line in ("Epoch[0] Train-accuracy=", "Epoch[0] Train-loss=", "Epoch[0] Time cost=",
                 "Epoch[0] Validation-accuracy="):
        assert line in text
    assert "2/2" in capsys.readouterr().err


# ---- data parallelism ----


@pytest.fixture
def two_cpus():
    kf.set_cpu_devices(2)
    yield [kf.cpu(0), kf.cpu(1)]
    kf.set_cpu_devices(1)


def test_two_devices_train_like_one_step_by_step(two_cpus):
    x, y = blobs(90)
    runs = []
    for ctx, work in ((None, None), (two_cpus, [1, 3])):
        kf.seed(10)
        losses = []
        m = model(num_epoch=2, ctx=ctx, optimizer="sgd", learning_rate=0.1, momentum=0.9)
        m.fit(x, y, work_load_list=work, batch_end_callback=lambda p, out=losses: out.append(
            p.locals["loss"]))
        runs.append((losses, m))
    (loss1, one), (loss2, two) = runs
    np.testing.assert_allclose(loss2, loss1, rtol=1e-12)
    params_equal(two.arg_params, one.arg_params, rtol=1e-10)
    assert two.history[-1]["train"] == one.history[-1]["train"]


def test_two_devices_average_batchnorm_moving_means(two_cpus):
    x, y = blobs(40)
    means = []
    for ctx in (None, two_cpus):
        kf.seed(11)
        m = model(num_epoch=1, epoch_size=1, bn=True, ctx=ctx, numpy_batch_size=40)
        means.append(m.fit(x, y).aux_params["bn1_moving_mean"])
    np.testing.assert_allclose(means[1], means[0], rtol=1e-12)
    assert np.abs(means[0]).max() > 0


def test_work_load_list_must_match_the_devices(two_cpus):
    x, y = blobs(32)
    with pytest.raises(ValueError, match=r"work_load_list \[1, 2, 3\] has 3 entries for 2"):
        model(ctx=two_cpus).fit(x, y, work_load_list=[1, 2, 3])


# ---- parameters given ----


def test_arg_params_checked_against_the_symbol():
    x, y = blobs(32)
    kf.seed(12)
    good = model(num_epoch=1).fit(x, y)
    extra = dict(good.arg_params, fc9_weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"extra \{'fc9_weight': \(2, 2\)\}"):
        model(arg_params=extra).fit(x, y)
    m = model(num_epoch=1, arg_params=extra, allow_extra_params=True).fit(x, y)
    assert "fc9_weight" not in m.arg_params
    missing = {k: v for k, v in good.arg_params.items() if k != "fc2_bias"}
    with pytest.raises(ValueError, match=r"missing \{'fc2_bias': \(3,\)\}"):
        model(arg_params=missing).fit(x, y)
    m = model(num_epoch=1, arg_params=missing, allow_extra_params=True)
    assert m.fit(x, y).arg_params["fc2_bias"].shape == (3,)
    wrong = dict(good.arg_params, fc2_bias=np.zeros(4))
    with pytest.raises(ValueError, match=r"arg_params\['fc2_bias'\] has shape \(4,\); the "
                                         r"symbol needs \(3,\)"):
        model(arg_params=wrong).fit(x, y)


def test_given_params_are_used_as_they_are():
    x, y = blobs(32)
    kf.seed(13)
    a = model(num_epoch=1).fit(x, y)
    b = model(num_epoch=1, arg_params=a.arg_params, aux_params={})
    np.testing.assert_array_equal(b.predict(x), a.predict(x))


# ---- bad input and the kvstore ----


def test_bad_input_errors():
    x, y = blobs(32)
    with pytest.raises(ValueError, match=r"X has 32 instances \(shape \(32, 6\)\) but its labels "
                                         r"have 31"):
        model().fit(x, y[:31])
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        model(optimizer="adamw").fit(x, y)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        model().fit(x, y, eval_metric="auc")
    with pytest.raises(ValueError, match="give its labels y"):
        model().fit(x)
    with pytest.raises(ValueError, match="needs num_epoch"):
        model(num_epoch=None).fit(x, y)
    with pytest.raises(ValueError, match="no parameters: fit it first"):
        model().predict(x)
    with pytest.raises(TypeError, match="does not take the keyword arguments"):
        model(optimizer="sgd", beta9=1).fit(x, y)
    with pytest.raises(ValueError, match="unknown kvstore 'nccl'"):
        model().fit(x, y, kvstore="nccl")


def test_dask_kvstore_without_knetflow_distributed_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "knetflow.distributed", None)
    x, y = blobs(16)
    with pytest.raises(ImportError, match="knetflow.distributed"):
        model().fit(x, y, kvstore="dask")


def test_a_kvstore_object_runs_the_fit():
    calls = []

    class Store:
        def train(self, **kw):
            calls.append(kw)
            return "done"

    x, y = blobs(16)
    m = model()
    assert m.fit(x, y, eval_data=(x, y), kvstore=Store(), work_load_list=[1]) == "done"
    assert calls[0]["model"] is m and calls[0]["X"] is x and calls[0]["y"] is y
    assert sorted(calls[0]) == sorted(["model", "X", "y", "eval_data", "eval_metric",
                                       "epoch_end_callback", "batch_end_callback", "logger",
                                       "work_load_list"])


def test_trainer_hooks_for_distributed_training():
    x, y = blobs(20)
    m = model()
    m.bind(x.shape, x.dtype)
    graph = m.train_graph()
    assert [n.attrs["name"] for n in graph.inputs] == ["data", "softmax_label"]
    assert graph.outputs[0].spec.shape == ()
    assert m.data_name == "data" and m.label_name == "softmax_label"
    assert sum(len(d) for d, _ in m.batches(x, y, epoch=0)) == 20
    assert m.create_optimizer() is m.create_optimizer()


def test_a_model_pickles_with_its_optimizer_state(two_cpus):
    import pickle

    x, y = blobs(40)
    kf.seed(14)
    m = model(num_epoch=1, ctx=two_cpus).fit(x, y)
    back = pickle.loads(pickle.dumps(m))
    assert back.ctx == ["cpu:0", "cpu:1"]
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    assert back.create_optimizer().state_dict()["type"] == "Adam"
    params_equal(back.create_optimizer().state_dict()["state"], m.create_optimizer().state_dict()
                 ["state"])


def test_load_needs_a_checkpoint_written_from_a_feedforward(tmp_path):
    x = kf.placeholder("data", (None, 2))
    kf.save_checkpoint(tmp_path / "plain", 1, kf.relu(x), {}, {})
    with pytest.raises(ValueError, match="holds a graph but no layer symbol"):
        kf.FeedForward.load(tmp_path / "plain", 1)


def _cut_checkpoint(tmp_path, drop=(), add=None):
    """A FeedForward checkpoint whose params file lacks `drop` and holds `add` too."""
    kf.seed(5)
    x, y = blobs(64)
    m = model(num_epoch=1).fit(x, y)
    m.save(tmp_path / "net")
    ckpt = kf.load_checkpoint(tmp_path / "net", 1)
    arg = {k: v for k, v in ckpt.arg_params.items() if k not in drop}
    kf.save_checkpoint(tmp_path / "cut", 1, ckpt.graph, {**arg, **(add or {})},
                       ckpt.aux_params, **ckpt.metadata)
    return m, x


def test_load_refuses_a_missing_param_unless_allow_missing(tmp_path):
    m, x = _cut_checkpoint(tmp_path, drop=["fc2_weight"])
    with pytest.raises(kf.FormatError, match=r"cut-symbol.kfg \(with cut-0001.kfp\): .*param "
                                             r"'fc2_weight' has no value in arg_params or "
                                             r"aux_params \(allow_missing=True"):
        kf.FeedForward.load(tmp_path / "cut", 1)
    with pytest.warns(UserWarning, match=r"no values for 1 param\(s\) .*initialized them: "
                                         r"fc2_weight \(xavier_uniform\)"):
        back = kf.FeedForward.load(tmp_path / "cut", 1, allow_missing=True)
    params_equal({k: v for k, v in back.arg_params.items() if k != "fc2_weight"},
                 {k: v for k, v in m.arg_params.items() if k != "fc2_weight"})
    assert back.arg_params["fc2_weight"].shape == m.arg_params["fc2_weight"].shape
    assert not np.array_equal(back.arg_params["fc2_weight"], m.arg_params["fc2_weight"])
    assert back.predict(x).shape == (64, 3)


def test_load_refuses_an_extra_param_unless_allow_extra_params(tmp_path):
    m, x = _cut_checkpoint(tmp_path, add={"fc3_weight": np.ones(2)})
    with pytest.raises(kf.FormatError, match="cut-0001.kfp holds a value for 'fc3_weight', "
                                             "which is not a param of the graph"):
        kf.FeedForward.load(tmp_path / "cut", 1)
    back = kf.FeedForward.load(tmp_path / "cut", 1, allow_extra_params=True)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_an_optimizer_with_state_trains_on_devices_and_its_state_comes_home(optimizer):
    # pulling the optimizer state out of the step plan made NumPy arrays of sim:0's
    # arrays implicitly, which devices refuse: every stateful optimizer failed with ctx
    kf.set_sim_devices(2)
    try:
        net = kf.sym.SoftmaxOutput(kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=3,
                                                         name="fc"), name="softmax")
        rs = np.random.RandomState(0)
        x, y = rs.randn(8, 3).astype("float32"), rs.randint(0, 3, 8)
        model = kf.FeedForward(net, ctx=[kf.device("sim:0"), kf.device("sim:1")], num_epoch=2,
                               numpy_batch_size=4, optimizer=optimizer)
        model.fit(x, y)
        assert type(model.arg_params["fc_weight"]) is np.ndarray
        assert np.isfinite(model.predict(x)).all()
    finally:
        kf.set_sim_devices(0)
