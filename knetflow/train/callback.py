"""`kf.callback`: MXNet's training callbacks: checkpoints, speed and progress, metric logs.

Epoch-end callbacks are called as `cb(epoch, symbol, arg_params, aux_params)`
(0-based epoch), with `optimizer_state=`, `metrics=` and the other extras a
callback takes; batch-end callbacks as `cb(BatchEndParam(epoch, nbatch,
eval_metric, locals))`. The fit loop every trainer shares calls them
(`knetflow.train.fit_loop`, whose docstring lists the extras).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import namedtuple

from knetflow.serialize import save_checkpoint
from knetflow.train.progress import format_speed, format_time

__all__ = [
    "BatchEndParam",
    "ProgressBar",
    "Speedometer",
    "do_checkpoint",
    "log_metrics",
    "log_train_metric",
]

LOGGER = logging.getLogger("knetflow")

#: What a batch-end callback receives (MXNet `BatchEndParam`)
BatchEndParam = namedtuple("BatchEndParam", ["epoch", "nbatch", "eval_metric", "locals"])
BatchEndParam.__new__.__defaults__ = (None,)


def do_checkpoint(prefix, period=1):
    """An epoch-end callback saving a checkpoint every `period` epochs (MXNet
    `do_checkpoint`), with `kf.save_checkpoint(prefix, epoch + 1, ...)`: files
    `prefix-symbol.kfg` and `prefix-%04d.kfp` numbered from 1.

    Example: `model.fit(X, y, epoch_end_callback=kf.callback.do_checkpoint("out/mlp"))`.
    """
    period = int(max(1, period))

    def _callback(iter_no, sym, arg, aux, optimizer_state=None, **extra):
        if (iter_no + 1) % period == 0:
            save_checkpoint(prefix, iter_no + 1, sym, arg, aux,
                                     optimizer_state=optimizer_state, **extra)

    return _callback


def _metric_pairs(eval_metric) -> list:
    if eval_metric is None:
        return []
    return list(eval_metric.get_name_value())


class Speedometer:
    """A batch-end callback logging samples per second and the training metric every
    `frequent` batches (MXNet `Speedometer(batch_size, frequent=50)`)."""

    def __init__(self, batch_size, frequent=50, auto_reset=False, logger=None):
        self.batch_size = int(batch_size)
        self.frequent = int(frequent)
        self.auto_reset = auto_reset
        self.logger = logger or LOGGER
        self.init = False
        self.tic = 0.0
        self.last_count = 0

    def __call__(self, param) -> None:
        count = param.nbatch
        if self.last_count > count:
            self.init = False  # a new epoch
        self.last_count = count
        if not self.init:
            self.init = True
            self.tic = time.perf_counter()
            return
        if count % self.frequent == 0:
            elapsed = max(time.perf_counter() - self.tic, 1e-12)
            speed = self.frequent * self.batch_size / elapsed
            text = "".join(f"\tTrain-{n}={v:f}" for n, v in _metric_pairs(param.eval_metric))
            self.logger.info("Epoch[%d] Batch [%d]\tSpeed: %.2f samples/sec%s",
                             param.epoch, count, speed, text)
            if self.auto_reset and param.eval_metric is not None:
                param.eval_metric.reset()
            self.tic = time.perf_counter()


class ProgressBar:
    """A batch-end callback drawing Knet's progress bar over `total` batches per epoch,
    with the training metric at the end of the line (MXNet `ProgressBar`)."""

    def __init__(self, total, length=20, io=None):
        self.total = int(total)
        self.length = int(length)
        self.io = io
        self.start = None

    def __call__(self, param) -> None:
        done = min(param.nbatch + 1, self.total)
        if done == 1 or self.start is None:
            self.start = time.perf_counter()
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        estimate = elapsed * self.total / done
        filled = int(self.length * done / max(1, self.total))
        bar = "█" * filled + " " * (self.length - filled)
        metrics = " ".join(f"{n}={v:.5g}" for n, v in _metric_pairs(param.eval_metric))
        line = (f"\r┣{bar}┫ [{100 * done / max(1, self.total):.2f}%, {done}/{self.total}, "
                f"{format_time(elapsed)}/{format_time(estimate)}, {format_speed(rate)}] "
                f"{metrics}")
        out = self.io if self.io is not None else sys.stderr
        out.write(line + ("\n" if done == self.total else ""))
        out.flush()


def log_train_metric(period, auto_reset=False, logger=None):
    """A batch-end callback logging the training metric every `period` batches (MXNet)."""
    logger = logger or LOGGER

    def _callback(param):
        if param.nbatch % period == 0 and param.eval_metric is not None:
            for name, value in _metric_pairs(param.eval_metric):
                logger.info("Iter[%d] Batch[%d] Train-%s=%f", param.epoch, param.nbatch,
                            name, value)
            if auto_reset:
                param.eval_metric.reset()

    return _callback


def log_metrics(epoch, eval_metric, kind="Train", logger=None) -> list:
    """Log each metric as `Epoch[3] Train-accuracy=0.981000` (kind 'Train' or
    'Validation'); returns the (name, value) pairs."""
    logger = logger or LOGGER
    pairs = _metric_pairs(eval_metric)
    for name, value in pairs:
        logger.info("Epoch[%d] %s-%s=%f", epoch, kind, name, value)
    return pairs
