"""kf.callback (train/callback.py): checkpoints, speed and progress, metric logs."""

import io
import logging
import os

import numpy as np
import pytest

import knetflow as kf
from knetflow.train.callback import BatchEndParam

needs_checkpoints = pytest.mark.skipif(not hasattr(kf, "save_checkpoint"),
                                       reason="kf.save_checkpoint (serialization) not present")


@needs_checkpoints
def test_do_checkpoint_every_period_with_optimizer_state(tmp_path):
    x = kf.placeholder("x", (None, 2))
    w = kf.param("w", (2, 2))
    prefix = os.path.join(tmp_path, "mlp")
    opt = kf.optim.Adam()
    weights = np.ones((2, 2), "float32")
    kf.update(weights, np.ones((2, 2)), opt)
    callback = kf.callback.do_checkpoint(prefix, period=2)
    for epoch in range(4):  # epochs 0..3 -> files 0002 and 0004
        callback(epoch, x @ w, {"w": weights * (epoch + 1)}, {},
                 optimizer_state=opt.state_dict())
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".kfp")) == [
        "mlp-0002.kfp", "mlp-0004.kfp"]
    checkpoint = kf.load_checkpoint(prefix, 4)
    _graph, arg, _aux = checkpoint
    np.testing.assert_array_equal(arg["w"], weights * 4)
    restored = kf.optim.Adam()
    restored.load_state_dict(checkpoint.optimizer_state)
    np.testing.assert_array_equal(restored.state[""]["m"], opt.state[""]["m"])
    assert float(restored.state[""]["t"]) == 1.0 and restored.hyper() == opt.hyper()


@needs_checkpoints
def test_do_checkpoint_mxnet_signature(tmp_path):
    x = kf.placeholder("x", (None, 2))
    w = kf.param("w", (2, 2))
    prefix = os.path.join(tmp_path, "m")
    kf.callback.do_checkpoint(prefix)(0, x @ w, {"w": np.zeros((2, 2), "float32")}, {})
    assert os.path.exists(prefix + "-0001.kfp") and os.path.exists(prefix + "-symbol.kfg")


def test_speedometer_logs_speed_and_metric(caplog):
    metric = kf.metric.Accuracy()
    metric.update([np.array([0, 1])], [np.array([[0.9, 0.1], [0.2, 0.8]])])
    speed = kf.callback.Speedometer(batch_size=32, frequent=2)
    with caplog.at_level(logging.INFO, logger="knetflow"):
        for nbatch in range(5):
            speed(BatchEndParam(epoch=1, nbatch=nbatch, eval_metric=metric, locals=None))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # batches 2 and 4
    assert messages[0].startswith("Epoch[1] Batch [2]\tSpeed: ")
    assert messages[0].endswith("samples/sec\tTrain-accuracy=1.000000")


def test_progress_bar_callback():
    out = io.StringIO()
    bar = kf.callback.ProgressBar(total=4, io=out)
    metric = kf.metric.MSE()
    metric.update([np.zeros(2)], [np.ones(2)])
    for nbatch in range(4):
        bar(BatchEndParam(0, nbatch, metric))
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("┣" + "█" * 20 + "┫ [100.00%, 4/4, 00:00/00:00, ")
    assert last.endswith("] mse=1\n")


def test_log_train_metric_and_log_metrics(caplog):
    metric = kf.metric.create(["acc", "ce"])
    metric.update([np.array([1])], [np.array([[0.3, 0.7]])])
    cb = kf.callback.log_train_metric(period=3, auto_reset=True)
    with caplog.at_level(logging.INFO, logger="knetflow"):
        cb(BatchEndParam(2, 3, metric))
        assert [r.getMessage() for r in caplog.records] == [
            "Iter[2] Batch[3] Train-accuracy=1.000000",
            "Iter[2] Batch[3] Train-cross-entropy=0.356675"]
        assert np.isnan(metric.get()[1][0])  # auto_reset
        caplog.clear()
        metric.update([np.array([0])], [np.array([[0.3, 0.7]])])
        pairs = kf.callback.log_metrics(5, metric, kind="Validation")
    assert pairs[0] == ("accuracy", 0.0)
    assert caplog.records[0].getMessage() == "Epoch[5] Validation-accuracy=0.000000"
