"""kf.metric (train/metric.py): every metric against values computed by hand."""

import math

import numpy as np
import pytest

import knetflow as kf

SCORES = np.array([[0.1, 0.7, 0.2],    # predicts 1
                   [0.5, 0.3, 0.2],    # predicts 0
                   [0.2, 0.3, 0.5],    # predicts 2
                   [0.3, 0.4, 0.3]])   # predicts 1
LABELS = np.array([1, 2, 2, 0])


def test_accuracy():
    m = kf.metric.Accuracy()
    m.update([LABELS], [SCORES])  # right: rows 0 and 2
    assert m.get() == ("accuracy", 0.5)
    m.update(np.array([0]), np.array([[0.9, 0.1, 0.0]]))  # single arrays work too
    assert m.get() == ("accuracy", 3 / 5)
    m.reset()
    assert m.get()[0] == "accuracy" and math.isnan(m.get()[1])
    m.update([np.array([1, 0])], [np.array([1, 1])])  # predicted labels, same shape
    assert m.get()[1] == 0.5


def test_top_k_accuracy():
    scores = np.array([[0.1, 0.7, 0.2],    # top-2 {1, 2}
                       [0.5, 0.3, 0.2],    # top-2 {0, 1}
                       [0.2, 0.3, 0.5],    # top-2 {2, 1}
                       [0.3, 0.45, 0.25]])  # top-2 {1, 0}
    m = kf.metric.TopKAccuracy(top_k=2)
    m.update([LABELS], [scores])  # labels 1, 2, 2, 0: in for rows 0, 2, 3
    assert m.get() == ("top_k_accuracy_2", 0.75)
    m1 = kf.metric.create("top_k_accuracy")
    m1.update([LABELS], [scores])
    assert m1.get()[1] == 0.5  # top_k=1 is accuracy


def test_f1():
    m = kf.metric.F1()
    labels = np.array([1, 1, 0, 0, 1])
    preds = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.1, 0.9]])
    m.update([labels[:3]], [preds[:3]])
    m.update([labels[3:]], [preds[3:]])
    tp, fp, fn = 2, 1, 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert m.get() == ("f1", pytest.approx(2 * precision * recall / (precision + recall)))
    with pytest.raises(ValueError, match="binary labels"):
        m.update([np.array([2])], [np.array([[0.1, 0.9]])])


def test_regression_metrics():
    label = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([[1.5], [2.0], [2.0], [6.0]])  # (N, 1) against (N,)
    err = pred[:, 0] - label
    for name, expected in [("mae", np.abs(err).mean()), ("mse", (err ** 2).mean()),
                           ("rmse", np.sqrt((err ** 2).mean()))]:
        m = kf.metric.create(name)
        m.update([label[:2]], [pred[:2]])
        m.update([label[2:]], [pred[2:]])
        assert m.get() == (name, pytest.approx(expected))
    with pytest.raises(ValueError, match=r"labels of shape \(2,\) and predictions of shape "
                                         r"\(3,\) differ in size"):
        kf.metric.MSE().update([np.ones(2)], [np.ones(3)])


def test_cross_entropy():
    probs = SCORES / SCORES.sum(axis=1, keepdims=True)
    m = kf.metric.create("ce")
    m.update([LABELS], [probs])
    expected = -np.mean(np.log(probs[np.arange(4), LABELS]))
    assert m.get() == ("cross-entropy", pytest.approx(expected))


def test_custom_metric_and_np():
    def total_abs(label, pred):
        return float(np.abs(label - pred).sum()), len(label)

    m = kf.metric.create(total_abs)
    m.update([np.array([1.0, 2.0])], [np.array([2.0, 2.0])])
    assert m.get() == ("custom(total_abs)", 0.5)
    n = kf.metric.np_metric(lambda label, pred: 7.0, name="seven")
    n.update([np.zeros(1)], [np.zeros(1)])
    n.update([np.zeros(1)], [np.zeros(1)])
    assert n.get() == ("seven", 7.0)
    extra = kf.metric.CustomMetric(lambda label, pred: float(pred.sum()), "s",
                                   allow_extra_outputs=True)
    extra.update([np.zeros(1)], [np.ones(1), np.ones(5)])  # a state output is ignored
    assert extra.get() == ("s", 1.0)


def test_composite_and_name_value():
    m = kf.metric.create(["acc", kf.metric.TopKAccuracy(top_k=3)])
    assert isinstance(m, kf.metric.CompositeEvalMetric)
    m.update([LABELS], [SCORES])
    assert m.get() == (["accuracy", "top_k_accuracy_3"], [0.5, 1.0])
    assert m.get_name_value() == [("accuracy", 0.5), ("top_k_accuracy_3", 1.0)]
    m.add("mae")
    assert isinstance(m.get_metric(2), kf.metric.MAE)
    with pytest.raises(ValueError, match="metric index 5 out of range: 3 metrics"):
        m.get_metric(5)
    m.reset()
    assert all(math.isnan(v) for v in m.get()[1][:2])
    assert kf.metric.Accuracy().get_name_value()[0][0] == "accuracy"


def test_names_and_errors():
    for name, cls in [("acc", kf.metric.Accuracy), ("accuracy", kf.metric.Accuracy),
                      ("top_k_accuracy", kf.metric.TopKAccuracy), ("f1", kf.metric.F1),
                      ("mae", kf.metric.MAE), ("mse", kf.metric.MSE), ("rmse", kf.metric.RMSE),
                      ("ce", kf.metric.CrossEntropy)]:
        assert type(kf.metric.create(name)) is cls
    acc = kf.metric.Accuracy()
    assert kf.metric.create(acc) is acc
    with pytest.raises(ValueError, match="unknown metric 'auc'; known: .*'acc'"):
        kf.metric.create("auc")
    with pytest.raises(ValueError, match="do not match: 2 labels vs 1 predictions"):
        acc.update([LABELS, LABELS], [SCORES])
    with pytest.raises(ValueError, match=r"3 labels \(shape \(3,\)\) but 4 predictions"):
        acc.update([LABELS[:3]], [SCORES])
