"""The fit loop (train/fit_loop.py) on a literal session: the history record, callbacks,
logs and progress bar that FeedForward.fit and DaskTrainer share."""

import logging

import numpy as np
import pytest

import knetflow as kf
from knetflow.train import fit_loop
from knetflow.train.callback import BatchEndParam

RECORD_KEYS = {"epoch", "loss", "time", "steps", "train", "eval"}


class Scripted(fit_loop.Session):
    """Two steps an epoch: rows 3 and 1, losses 1.0 and 5.0 (mean over rows 2.0), labels
    [0, 1, 1, 0] against predictions of class 0 (accuracy 0.5)."""

    def __init__(self, evaluation=None):
        self.evaluation = evaluation
        self.calls = []

    def epoch_steps(self, epoch):
        self.calls.append(("steps", epoch))
        return 2

    def train_epoch(self, epoch, metric, on_step):
        self.calls.append(("train", epoch))
        total = rows = 0
        for nbatch, (n, loss, labels) in enumerate([(3, 1.0, [0, 1, 1]), (1, 5.0, [0])]):
            total, rows = total + loss * n, rows + n
            metric.update([np.array(labels)], [np.tile([0.9, 0.1], (n, 1))])
            on_step(nbatch, total / rows, {"loss": loss})
        return total / rows, 2

    def evaluate(self, epoch):
        self.calls.append(("evaluate", epoch))
        return self.evaluation

    def epoch_end(self, epoch, record, wanted):
        self.calls.append(("end", epoch, wanted))
        if not wanted:
            return None
        return "symbol", {"w": np.ones(2)}, {}, {"optimizer_state": {"type": "SGD"}}


def test_one_record_per_epoch_in_the_schema():
    history = fit_loop.fit(Scripted({"accuracy": 0.25, "loss": 3.0}), range(2, 4),
                           metric=kf.metric.Accuracy(), progress=False)
    assert [h["epoch"] for h in history] == [2, 3]
    for h in history:
        assert set(h) == RECORD_KEYS
        assert (h["loss"], h["steps"], h["train"]) == (2.0, 2, {"accuracy": 0.5})
        assert h["eval"] == {"accuracy": 0.25, "loss": 3.0} and h["time"] >= 0
    without = fit_loop.fit(Scripted(), range(1), metric=kf.metric.Accuracy(), history=history)
    assert without is history and "eval" not in history[-1] and len(history) == 3


def test_session_calls_in_order_and_epoch_end_wanted_only_with_callbacks():
    session = Scripted()
    fit_loop.fit(session, range(1), metric=kf.metric.Accuracy())
    assert session.calls == [("steps", 0), ("train", 0), ("evaluate", 0), ("end", 0, False)]
    session = Scripted()
    fit_loop.fit(session, range(1), metric=kf.metric.Accuracy(),
                 epoch_end_callback=lambda *a: None)
    assert session.calls[-1] == ("end", 0, True)


def test_callbacks_get_mxnet_arguments_and_the_extras_they_take():
    batches, plain, extra, records = [], [], [], []

    def with_extras(epoch, symbol, arg, aux, optimizer_state=None, metrics=None):
        extra.append((optimizer_state, metrics))

    def with_record(epoch, symbol, arg, aux, record):
        records.append(record)

    history = fit_loop.fit(
        Scripted({"accuracy": 0.25}), range(2), metric=kf.metric.Accuracy(),
        batch_end_callback=batches.append,
        epoch_end_callback=[lambda *a: plain.append(a), with_extras, with_record])
    assert all(isinstance(p, BatchEndParam) for p in batches)
    assert [(p.epoch, p.nbatch, p.locals["loss"]) for p in batches] == [
        (0, 0, 1.0), (0, 1, 5.0), (1, 0, 1.0), (1, 1, 5.0)]
    assert batches[-1].eval_metric.get() == ("accuracy", 0.5)
    assert [a[:2] for a in plain] == [(0, "symbol"), (1, "symbol")]
    assert extra[0] == ({"type": "SGD"}, {"train-accuracy": 0.5, "eval-accuracy": 0.25,
                                          "train-loss": 2.0})
    assert records == history


def test_metric_reset_each_epoch_and_no_metric():
    metric = kf.metric.Accuracy()
    metric.update([np.array([1])], [np.array([[0.0, 1.0]])])
    history = fit_loop.fit(Scripted(), range(2), metric=metric)
    assert [h["train"] for h in history] == [{"accuracy": 0.5}] * 2

    class NoMetric(Scripted):
        def train_epoch(self, epoch, metric, on_step):
            assert metric is None
            on_step(0, 1.5, {})
            return 1.5, 1

    assert fit_loop.fit(NoMetric(), range(1))[0]["train"] == {}


def test_mxnet_epoch_logs_and_a_progress_bar(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="knetflow"):
        fit_loop.fit(Scripted({"accuracy": 0.25}), range(1), metric=kf.metric.Accuracy(),
                     progress=True)
    assert [r.getMessage() for r in caplog.records][:2] == [
        "Epoch[0] Train-accuracy=0.500000", "Epoch[0] Train-loss=2.000000"]
    assert caplog.records[2].getMessage().startswith("Epoch[0] Time cost=")
    assert caplog.records[3].getMessage() == "Epoch[0] Validation-accuracy=0.250000"
    err = capsys.readouterr().err
    assert "[100.00%, 2/2," in err and "loss=2" in err


def test_an_error_in_an_epoch_closes_its_bar_and_propagates(capsys):
    class Failing(Scripted):
        def train_epoch(self, epoch, metric, on_step):
            on_step(0, 1.0, {})
            raise RuntimeError("replica lost")

    with pytest.raises(RuntimeError, match="replica lost"):
        fit_loop.fit(Failing(), range(1), metric=kf.metric.Accuracy(), progress=True)
    assert "1/2" in capsys.readouterr().err


def test_feedforward_history_is_the_loop_record():
    kf.seed(0)
    x, y = kf.datasets.mnist_like(64)
    net = kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=10, name="fc")
    model = kf.FeedForward(kf.sym.SoftmaxOutput(net), num_epoch=2, numpy_batch_size=16)
    model.fit(x, y, eval_data=(x, y))
    assert [set(h) for h in model.history] == [RECORD_KEYS] * 2
    assert [h["steps"] for h in model.history] == [4, 4]
    assert set(model.history[0]["train"]) == set(model.history[0]["eval"]) == {"accuracy"}
