"""`kf.metric`: MXNet's online evaluation metrics.

A metric accumulates over batches with `update(labels, preds)` (a list of
arrays each, or one array each) and reports with `get() -> (name, value)`;
`reset()` starts over. Class scores lie on the last axis (knetflow's
convention), one row per instance. MAE, MSE and RMSE are taken over every
element seen; F1 (binary, class 1 positive) from the counts over every batch.

Example:
    >>> import knetflow as kf, numpy as np
    >>> m = kf.metric.create("acc")
    >>> m.update([np.array([0, 1])], [np.array([[0.9, 0.1], [0.8, 0.2]])])
    >>> m.get()
    ('accuracy', 0.5)
"""

from __future__ import annotations

import numpy as np

from knetflow.devices.transfers import to_host

__all__ = [
    "F1",
    "MAE",
    "MSE",
    "RMSE",
    "Accuracy",
    "CompositeEvalMetric",
    "CrossEntropy",
    "CustomMetric",
    "EvalMetric",
    "TopKAccuracy",
    "check_label_shapes",
    "create",
    "np_metric",
]



def _pairs(labels, preds) -> list:
    if not isinstance(labels, (list, tuple)):
        labels = [labels]
    if not isinstance(preds, (list, tuple)):
        preds = [preds]
    check_label_shapes(labels, preds)
    return [(to_host(lab), to_host(p)) for lab, p in zip(labels, preds)]


def check_label_shapes(labels, preds, shape=0) -> None:
    """Raise ValueError when labels and preds differ in number (shape=0) or shape (MXNet)."""
    if shape == 0:
        got_l, got_p = len(labels), len(preds)
    else:
        got_l, got_p = np.shape(labels), np.shape(preds)
    if got_l != got_p:
        raise ValueError(f"labels and predictions do not match: {got_l} labels vs "
                         f"{got_p} predictions")


def _rows(label, pred, what):
    if len(label) != len(pred):
        raise ValueError(f"{what}: {len(label)} labels (shape {label.shape}) but "
                         f"{len(pred)} predictions (shape {pred.shape})")


class EvalMetric:
    """Base class (MXNet `EvalMetric`): sum_metric / num_inst over the updates."""

    def __init__(self, name, num=None):
        self.name = name
        self.num = num
        self.reset()

    def update(self, labels, preds) -> None:
        """Add a batch: labels and predictions (lists of arrays, or one array each)."""
        for label, pred in _pairs(labels, preds):
            self._update(label, pred)

    def _update(self, label, pred):
        raise NotImplementedError

    def reset(self) -> None:
        """Clear the statistics."""
        self.sum_metric = 0.0
        self.num_inst = 0

    def get(self) -> tuple:
        """(name, value); value is nan before any update."""
        if self.num_inst == 0:
            return self.name, float("nan")
        return self.name, float(self.sum_metric / self.num_inst)

    def get_name_value(self) -> list:
        """[(name, value), ...]."""
        name, value = self.get()
        if not isinstance(name, list):
            name, value = [name], [value]
        return list(zip(name, value))

    def __str__(self) -> str:
        return "EvalMetric: " + str(dict(self.get_name_value()))


class Accuracy(EvalMetric):
    """Fraction of instances whose top-scoring class is the label (MXNet `Accuracy`).

    Predictions shaped like the labels are taken as predicted labels.
    """

    def __init__(self, axis=-1, name="accuracy"):
        self.axis = axis
        super().__init__(name)

    def _update(self, label, pred):
        if pred.shape != label.shape:
            pred = np.argmax(pred, axis=self.axis)
        label = label.reshape(-1).astype("int64")
        pred = pred.reshape(-1).astype("int64")
        _rows(label, pred, self.name)
        self.sum_metric += int((pred == label).sum())
        self.num_inst += len(label)


class TopKAccuracy(EvalMetric):
    """Fraction of instances whose label is among the top_k scores (MXNet `TopKAccuracy`)."""

    def __init__(self, top_k=1, name=None):
        self.top_k = int(top_k)
        if self.top_k < 1:
            raise ValueError(f"TopKAccuracy: top_k must be >= 1, got {top_k}")
        super().__init__(name or f"top_k_accuracy_{self.top_k}")

    def _update(self, label, pred):
        label = label.reshape(-1).astype("int64")
        pred = pred.reshape(len(label), -1) if pred.ndim != 2 else pred
        _rows(label, pred, self.name)
        k = min(self.top_k, pred.shape[1])
        top = np.argpartition(-pred, k - 1, axis=1)[:, :k]
        self.sum_metric += int((top == label[:, None]).any(axis=1).sum())
        self.num_inst += len(label)


class F1(EvalMetric):
    """F1 score of a binary task, class 1 positive (MXNet `F1`), from counts over all updates."""

    def __init__(self, name="f1"):
        super().__init__(name)

    def reset(self) -> None:
        super().reset()
        self.tp = self.fp = self.fn = 0

    def _update(self, label, pred):
        label = label.reshape(-1).astype("int64")
        guess = np.argmax(pred, axis=-1).reshape(-1) if pred.ndim > 1 else (pred > 0.5)
        guess = guess.astype("int64")
        _rows(label, guess, self.name)
        if np.setdiff1d(np.unique(label), [0, 1]).size:
            raise ValueError(f"F1 is for binary labels 0/1, got {np.unique(label)[:10]}")
        self.tp += int(((guess == 1) & (label == 1)).sum())
        self.fp += int(((guess == 1) & (label == 0)).sum())
        self.fn += int(((guess == 0) & (label == 1)).sum())
        self.num_inst += len(label)

    def get(self) -> tuple:
        if self.num_inst == 0:
            return self.name, float("nan")
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return self.name, float(f1)


class _Regression(EvalMetric):
    def _update(self, label, pred):
        if label.ndim == 1 and pred.ndim == 2 and pred.shape[1] == 1:
            label = label[:, None]
        if label.size != pred.size:
            raise ValueError(f"{self.name}: labels of shape {label.shape} and predictions "
                             f"of shape {pred.shape} differ in size")
        err = pred.reshape(-1).astype("float64") - label.reshape(-1).astype("float64")
        self.sum_metric += float(self._error(err).sum())
        self.num_inst += err.size


class MAE(_Regression):
    """Mean absolute error over every element (MXNet `MAE`)."""

    def __init__(self, name="mae"):
        super().__init__(name)

    def _error(self, err):
        return np.abs(err)


class MSE(_Regression):
    """Mean squared error over every element (MXNet `MSE`)."""

    def __init__(self, name="mse"):
        super().__init__(name)

    def _error(self, err):
        return err * err


class RMSE(MSE):
    """Root mean squared error over every element (MXNet `RMSE`)."""

    def __init__(self, name="rmse"):
        super().__init__(name)

    def get(self) -> tuple:
        name, value = super().get()
        return name, float(np.sqrt(value))


class CrossEntropy(EvalMetric):
    """Mean of -log(prob of the label) over instances; preds are probabilities
    (MXNet `CrossEntropy`); `eps` guards log(0)."""

    def __init__(self, eps=1e-12, name="cross-entropy"):
        self.eps = eps
        super().__init__(name)

    def _update(self, label, pred):
        label = label.reshape(-1).astype("int64")
        pred = pred.reshape(len(label), -1)
        _rows(label, pred, self.name)
        prob = pred[np.arange(len(label)), label]
        self.sum_metric += float((-np.log(prob + self.eps)).sum())
        self.num_inst += len(label)


class CustomMetric(EvalMetric):
    """A metric from `feval(label, pred)` returning a value, or (sum, count) (MXNet
    `CustomMetric`)."""

    def __init__(self, feval, name=None, allow_extra_outputs=False):
        self.feval = feval
        self.allow_extra_outputs = allow_extra_outputs
        super().__init__(name or f"custom({getattr(feval, '__name__', 'feval')})")

    def update(self, labels, preds) -> None:
        if not isinstance(labels, (list, tuple)):
            labels = [labels]
        if not isinstance(preds, (list, tuple)):
            preds = [preds]
        if self.allow_extra_outputs:
            preds = list(preds)[:len(labels)]
        super().update(list(labels), list(preds))

    def _update(self, label, pred):
        result = self.feval(label, pred)
        if isinstance(result, tuple):
            self.sum_metric += float(result[0])
            self.num_inst += int(result[1])
        else:
            self.sum_metric += float(result)
            self.num_inst += 1


def np_metric(numpy_feval, name=None, allow_extra_outputs=False) -> CustomMetric:
    """A CustomMetric from a NumPy function of (label, pred) (MXNet `metric.np`)."""
    return CustomMetric(numpy_feval, name or getattr(numpy_feval, "__name__", None),
                        allow_extra_outputs)


class CompositeEvalMetric(EvalMetric):
    """Several metrics updated together (MXNet `CompositeEvalMetric`)."""

    def __init__(self, metrics=None, name="composite", **kwargs):
        self.metrics = [create(m) for m in (metrics or [])]
        super().__init__(name)

    def add(self, metric) -> None:
        """Add a child metric (an EvalMetric, a name or a function)."""
        self.metrics.append(create(metric))

    def get_metric(self, index):
        """The child metric at index."""
        try:
            return self.metrics[index]
        except IndexError:
            raise ValueError(f"metric index {index} out of range: "
                             f"{len(self.metrics)} metrics") from None

    def update(self, labels, preds) -> None:
        for m in self.metrics:
            m.update(labels, preds)

    def reset(self) -> None:
        for m in getattr(self, "metrics", []):
            m.reset()

    def get(self) -> tuple:
        names, values = [], []
        for m in self.metrics:
            name, value = m.get()
            names.extend(name if isinstance(name, list) else [name])
            values.extend(value if isinstance(value, list) else [value])
        return names, values


_NAMES = {"acc": Accuracy, "accuracy": Accuracy, "top_k_accuracy": TopKAccuracy,
          "top_k_acc": TopKAccuracy, "f1": F1, "mae": MAE, "mse": MSE, "rmse": RMSE,
          "ce": CrossEntropy, "cross-entropy": CrossEntropy, "crossentropy": CrossEntropy}


def create(metric, **kwargs) -> EvalMetric:
    """A metric from a name ('acc', 'top_k_accuracy', 'f1', 'mae', 'mse', 'rmse', 'ce'),
    an EvalMetric, a function feval(label, pred), or a list of these (MXNet `create`)."""
    if isinstance(metric, EvalMetric):
        return metric
    if isinstance(metric, (list, tuple)):
        return CompositeEvalMetric([create(m, **kwargs) for m in metric])
    if callable(metric):
        return CustomMetric(metric, **kwargs)
    key = str(metric).lower()
    if key not in _NAMES:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(_NAMES)}")
    return _NAMES[key](**kwargs)
