"""FeedForward's data: arrays cut into batches, iterables of batches, evaluation pairs.

Training data is either an array X with labels y (NumPy, or anything array-like
with `shape` and slicing, such as a dask.array), cut into batches of
`numpy_batch_size` rows, or an iterable of `(data, label)` batches iterated
once per epoch (a list, `kf.minibatch(...)`, any re-iterable object).

NumPy training arrays are shuffled each epoch, as MXNet's FeedForward does.
The order of epoch e depends only on `kf.seed` and e, not on what ran before,
so training resumed from a checkpoint at epoch e sees the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np

from knetflow import rng

__all__ = [
    "ArrayBatches",
    "batches",
    "epoch_order",
    "eval_batches",
    "first_batch",
    "fit_rows",
    "is_array",
    "label_like",
    "predict_batches",
]


def is_array(x) -> bool:
    """Whether x is one array of instances (not a list or iterable of batches)."""
    if isinstance(x, np.ndarray):
        return True
    return (not isinstance(x, (list, tuple, dict, str)) and hasattr(x, "shape")
            and hasattr(x, "dtype") and hasattr(x, "__getitem__"))


def epoch_order(n: int, epoch: int) -> np.ndarray:
    """The shuffled row order of training epoch `epoch` (from kf.seed and the epoch alone)."""
    entropy = rng.entropy()  # the kf.seed value (or fresh entropy when never seeded)
    return np.random.default_rng([int(entropy), int(epoch), 0x5EED]).permutation(n)


class ArrayBatches:
    """Batches of `batch_size` rows of X (and y); the last may be smaller; sized, re-iterable."""

    def __init__(self, X, y, batch_size: int, order=None):
        self.X, self.y = X, y
        self.batch_size = int(batch_size)
        self.order = order

    def __len__(self) -> int:
        full, rest = divmod(len(self.X), self.batch_size)
        return full + (1 if rest else 0)

    def __iter__(self):
        n = len(self.X)
        for start in range(0, n, self.batch_size):
            rows = slice(start, min(start + self.batch_size, n))
            if self.order is not None:
                rows = np.sort(self.order[rows])  # sorted: faster gathers, same batch
            xb = np.asarray(self.X[rows])
            yield xb, None if self.y is None else np.asarray(self.y[rows])


class _Iterable:
    """An iterable of batches as (data, label) pairs; sized when the source is."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        for item in self.source:
            yield split(item)


def split(item) -> tuple:
    """(data, label or None) of one batch: a (data, label) pair, a dict, or data alone."""
    if isinstance(item, dict):
        keys = list(item)
        labels = [k for k in keys if k.endswith("label")]
        data = [k for k in keys if k not in labels]
        if len(data) != 1 or len(labels) > 1:
            raise ValueError(f"a batch dict needs one data entry and at most one '*label' "
                             f"entry, got keys {keys}")
        return np.asarray(item[data[0]]), (np.asarray(item[labels[0]]) if labels else None)
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return np.asarray(item[0]), None if item[1] is None else np.asarray(item[1])
        if len(item) == 1:
            return np.asarray(item[0]), None
        raise ValueError(f"a batch must be (data, label) or data, got a sequence of "
                         f"{len(item)} items")
    return np.asarray(item), None


def check_pair(X, y, what="X") -> None:
    """X and y of the same length, or an error naming both sizes."""
    if y is None:
        return
    if len(X) != len(y):
        raise ValueError(f"{what} has {len(X)} instances (shape {tuple(X.shape)}) but its "
                         f"labels have {len(y)} (shape {tuple(np.shape(y))})")


def batches(X, y, batch_size, epoch=None, need_labels=True):
    """The batches of one pass over the data; `epoch` shuffles NumPy arrays for training."""
    if is_array(X):
        if y is None and need_labels:
            raise ValueError(f"X is an array of shape {tuple(X.shape)}: give its labels y "
                             "(or pass an iterable of (data, label) batches)")
        if y is not None and not is_array(y):
            y = np.asarray(y)
        check_pair(X, y)
        order = (epoch_order(len(X), epoch)
                 if epoch is not None and isinstance(X, np.ndarray) else None)
        return ArrayBatches(X, y, batch_size, order)
    if y is not None:
        raise ValueError("y is only used with an array X; an iterable X yields (data, label) "
                         "batches itself")
    if X is None or not hasattr(X, "__iter__"):
        raise TypeError(f"X must be an array or an iterable of (data, label) batches, got "
                        f"{type(X).__name__}")
    return _Iterable(X)


def eval_batches(eval_data, batch_size):
    """Batches of `eval_data`: a (data, labels) pair of arrays, or an iterable of batches."""
    if eval_data is None:
        return None
    if (isinstance(eval_data, (tuple, list)) and len(eval_data) == 2
            and is_array(eval_data[0]) and not isinstance(eval_data[1], tuple)):
        return batches(eval_data[0], eval_data[1], batch_size)
    return batches(eval_data, None, batch_size)


def predict_batches(X, batch_size):
    """Batches of X for prediction: an array, a (data, labels) pair, or batches."""
    if (isinstance(X, (tuple, list)) and len(X) == 2 and is_array(X[0])
            and not isinstance(X[1], tuple)):
        return batches(X[0], X[1], batch_size)
    return batches(X, None, batch_size, need_labels=False)


def first_batch(data) -> tuple:
    """The first (data, label) of a batches object (an error when there is none)."""
    for item in data:
        return item
    raise ValueError("the data holds no batches (an empty array, or an iterator already "
                     "consumed: pass a list or a re-iterable object for several epochs)")


def fit_rows(label, shape):
    """label reshaped to `shape` (batch dim free) when each row holds as many values."""
    label = np.asarray(label)
    rest = tuple(shape[1:])
    if label.shape[1:] != rest and label.ndim >= 1 and label.size == len(label) * int(
            np.prod(rest, dtype=np.int64)):
        return label.reshape((len(label),) + rest)
    return label


def label_like(label, pred):
    """label reshaped to pred's shape when they hold as many values ((N,) vs (N, 1))."""
    if label is None:
        return None
    label = np.asarray(label)
    if label.shape != pred.shape and label.size == np.size(pred):
        return label.reshape(pred.shape)
    return label
