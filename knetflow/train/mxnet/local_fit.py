"""FeedForward.fit in this process: the session the fit loop (fit_loop.py) drives.

A fit compiles the model's training graph once into a `TrainStep` (train/step.py:
forward, backward and the optimizer's updates in one plan, on one device or
data-parallel over `ctx`) and runs it once per batch. After each epoch the
params and the optimizer state come back to the model, so that evaluation,
callbacks and checkpoints see the trained values.

An epoch is a pass over the data, or, with `epoch_size`, that many batches
taken from one stream of passes continuing from epoch to epoch.
"""

from __future__ import annotations

from knetflow.train.mxnet import batches
from knetflow.train import metric as _metric
from knetflow.train.fit_loop import Session
from knetflow.train.step import TrainStep

__all__ = ["LocalFit"]


class LocalFit(Session):
    """One `FeedForward.fit` on the model's devices (`model.ctx`).

    `X`, `y` and `eval_data` as `fit` takes them (iterators already made lists);
    `eval_metric` names the metric evaluation makes afresh each epoch.
    """

    def __init__(self, model, X, y=None, eval_data=None, eval_metric="acc",
                 eval_batch_end_callback=None, work_load_list=None):
        data, _ = batches.first_batch(model.batches(X, y))
        model.bind(data.shape, data.dtype)
        self.model, self.X, self.y = model, X, y
        self.optimizer = model.create_optimizer()
        graph = model.train_graph()
        self.label_shape = graph.input(model.label_name).spec.shape
        self.step = TrainStep(graph, model.ctx, self.optimizer, work_load_list)
        self.eval_data, self.eval_metric = eval_data, eval_metric
        self.eval_batch_end_callback = eval_batch_end_callback
        self._stream = None if model.epoch_size is None else self._passes()
        self._batches = None

    def epoch_steps(self, epoch: int):
        if self._stream is None:
            self._batches = self.model.batches(self.X, self.y, epoch)
        else:
            self._batches = [next(self._stream) for _ in range(int(self.model.epoch_size))]
        try:
            return len(self._batches)
        except TypeError:
            return None

    def _passes(self):
        """Batches of pass after pass over the data, from the model's begin_epoch on."""
        passes = self.model.begin_epoch
        while True:
            got = False
            for item in self.model.batches(self.X, self.y, passes):
                got = True
                yield item
            if not got:
                raise ValueError("the training data ran out of batches (an iterator "
                                 "consumed by an earlier pass?)")
            passes += 1

    def train_epoch(self, epoch: int, metric, on_step) -> tuple:
        total, count, steps = 0.0, 0, 0
        for nbatch, (data, label) in enumerate(self._batches):
            if label is None:
                raise ValueError(f"training batch {nbatch} of epoch {epoch} has no label")
            label = batches.fit_rows(label, self.label_shape)
            loss, pred = self.step.run(self.model._feed(data, label))
            total, count, steps = total + loss * len(data), count + len(data), steps + 1
            if metric is not None:
                metric.update([batches.label_like(label, pred)], [pred])
            on_step(nbatch, total / count, locals())
        if count == 0:
            raise ValueError(f"epoch {epoch} had no training batches (an iterator consumed by "
                             "an earlier epoch? pass a list or a re-iterable object)")
        self._pull()
        return total / count, steps

    def _pull(self) -> None:
        """The trained params and optimizer state, back into the model."""
        model, values = self.model, self.step.params()
        model.arg_params.update((k, v) for k, v in values.items() if k in model.arg_params)
        model.aux_params.update((k, v) for k, v in values.items() if k in model.aux_params)
        self.step.pull_optimizer_state(self.optimizer)
        model._predictor = None

    def evaluate(self, epoch: int):
        if self.eval_data is None:
            return None
        m = _metric.create(self.eval_metric)
        self.model._evaluate(self.eval_data, m, None, self.eval_batch_end_callback, epoch)
        return dict(m.get_name_value())

    def epoch_end(self, epoch: int, record: dict, wanted: bool):
        if not wanted:
            return None
        model = self.model
        extras = {"optimizer_state": self.optimizer.state_dict(),
                  "layer_symbol": model.symbol.tojson(),
                  "numpy_batch_size": model.numpy_batch_size}
        return model.bound_symbol(), model.arg_params, model.aux_params, extras
