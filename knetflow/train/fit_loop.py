"""The one fit loop: epochs, metrics, callbacks, logs, progress bars and history.

`FeedForward.fit` in this process (`knetflow.train.mxnet.local_fit`) and
`knetflow.distributed.DaskTrainer` (which `FeedForward.fit(kvstore='dask')` goes
through) give `fit` a `Session`, the part that differs between them: how an
epoch's steps run, how the model is evaluated, what epoch-end callbacks get.
The rest is here, once:

    for epoch in epochs:
        reset the training metric; a progress bar over the epoch's steps
        session.train_epoch       batch-end callbacks after each step
        session.evaluate          the record's "eval"
        log Train-<metric>, Train-loss, Time cost, Validation-<metric>
        history.append(record); session.epoch_end; epoch-end callbacks

The history record, one per epoch (`FeedForward.history`, `DaskTrainer.history`):

    "epoch"  int    the epoch number, 0-based, as callbacks get it
    "loss"   float  the mean training loss over the epoch's rows
    "time"   float  seconds the epoch's training took (evaluation not included)
    "steps"  int    the training steps (batches) run
    "train"  dict   the training metric's values by name ({} without a metric)
    "eval"   dict   only with evaluation data: the metric's values on it by name,
                    and "loss" where the session computes it (DaskTrainer does)

Epoch-end callbacks are called `cb(epoch, symbol, arg_params, aux_params)`
(MXNet's form) with, among the keywords a callback takes (by name or
`**kwargs`), the session's extras (`optimizer_state`, ...) and `metrics`
(`"train-<name>"`, `"eval-<name>"`, `"train-loss"`: what `kf.callback.do_checkpoint`
saves); a callback naming a `record` parameter also gets the epoch's record.
Batch-end callbacks get `BatchEndParam(epoch, nbatch, eval_metric, locals)`.

Distributed kvstores register their names here (`register_kvstore`), so the
training layer never imports knetflow.distributed: the package's top level
registers Dask's names with a factory that imports it on first use.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import sys
import time

from knetflow.train.callback import BatchEndParam
from knetflow.train.progress import progress as _progress

__all__ = ["Session", "call_all", "epoch_end_extras", "epoch_metrics", "fit", "kvstore_of",
           "log_record", "register_kvstore"]

LOGGER = logging.getLogger("knetflow")

#: kvstore names that mean "train in this process" (MXNet's local kinds)
LOCAL_KVSTORES = (None, "local", "device", "local_update_cpu", "local_allreduce_cpu",
                  "local_allreduce_device")
#: kvstore name -> factory() making the store (registered by distributed layers)
_FACTORIES: dict = {}


class Session:
    """What the fit loop asks of a trainer; a subclass answers for one way of training."""

    def epoch_steps(self, epoch: int):
        """Start epoch `epoch`; its number of steps for the progress bar, None if unknown."""
        raise NotImplementedError

    def train_epoch(self, epoch: int, metric, on_step) -> tuple:
        """Run the epoch's steps, adding to `metric` (None: no metric) and calling
        `on_step(nbatch, loss, where)` after each (loss: the epoch's mean loss so far,
        where: the BatchEndParam's `locals`); returns (mean loss over rows, steps run)."""
        raise NotImplementedError

    def evaluate(self, epoch: int):
        """Values on the evaluation data by name, or None without evaluation data."""
        raise NotImplementedError

    def epoch_end(self, epoch: int, record: dict, wanted: bool):
        """After the epoch's record: `(symbol, arg_params, aux_params, extras)` for the
        epoch-end callbacks; `wanted` False says none will read them (None may be given)."""
        raise NotImplementedError


def fit(session: Session, epochs, metric=None, history=None, batch_end_callback=None,
        epoch_end_callback=None, logger=None, progress=None) -> list:
    """Train `session` for each epoch number of `epochs`; returns `history` (a list, new
    when None) with one record per epoch appended (schema in the module docstring).

    `metric`: the training metric (reset each epoch) or None; `logger` gets MXNet's epoch
    lines (default: the "knetflow" logger); `progress` draws a bar per epoch (None: when
    stderr is a terminal). Callbacks: one or a list (see the module docstring).
    """
    history = [] if history is None else history
    logger = logger or LOGGER
    show = sys.stderr.isatty() if progress is None else bool(progress)
    ends = _listed(epoch_end_callback)
    for epoch in epochs:
        record = _train_epoch(session, epoch, metric, batch_end_callback, show)
        evaluation = session.evaluate(epoch)
        if evaluation is not None:
            record["eval"] = dict(evaluation)
        log_record(record, logger)
        history.append(record)
        args = session.epoch_end(epoch, record, bool(ends))
        if ends:
            _epoch_end(ends, epoch, args, record)
    return history


def _train_epoch(session, epoch, metric, callback, show) -> dict:
    """The epoch's training steps and its record (before evaluation)."""
    if metric is not None:
        metric.reset()
    bar = _EpochBar(session.epoch_steps(epoch), show)

    def on_step(nbatch, loss, where):
        bar.advance(loss)
        call_all(callback, BatchEndParam(epoch=epoch, nbatch=nbatch, eval_metric=metric,
                                         locals=where))

    tic = time.perf_counter()
    try:
        loss, steps = session.train_epoch(epoch, metric, on_step)
    finally:
        bar.close()
    seconds = time.perf_counter() - tic
    train = dict(metric.get_name_value()) if metric is not None else {}
    return {"epoch": epoch, "loss": loss, "time": seconds, "steps": steps, "train": train}


def log_record(record: dict, logger) -> None:
    """Log an epoch's record as MXNet does: `Epoch[3] Train-accuracy=0.981000`, the
    training loss, `Time cost=...`, then each `Validation-<name>`."""
    epoch = record["epoch"]
    for name, value in record["train"].items():
        logger.info("Epoch[%d] Train-%s=%f", epoch, name, value)
    logger.info("Epoch[%d] Train-loss=%f", epoch, record["loss"])
    logger.info("Epoch[%d] Time cost=%.3f", epoch, record["time"])
    for name, value in record.get("eval", {}).items():
        logger.info("Epoch[%d] Validation-%s=%f", epoch, name, value)


def epoch_metrics(record: dict) -> dict:
    """The `metrics` epoch-end callbacks get: `"train-<name>"`, `"eval-<name>"` and
    `"train-loss"` of an epoch's record."""
    metrics = {f"train-{k}": v for k, v in record["train"].items()}
    metrics.update((f"eval-{k}", v) for k, v in record.get("eval", {}).items())
    metrics["train-loss"] = record["loss"]
    return metrics


def _epoch_end(callbacks, epoch, args, record) -> None:
    symbol, arg_params, aux_params, extras = args
    extras = {**extras, "metrics": epoch_metrics(record)}
    for cb in callbacks:
        kwargs = epoch_end_extras(cb, extras)
        if any(p.name == "record" for p in _parameters(cb)):
            kwargs["record"] = record
        cb(epoch, symbol, dict(arg_params), dict(aux_params), **kwargs)


class _EpochBar:
    """Knet's progress bar (`kf.progress`) over an epoch's steps, advanced by the loop with
    the loss so far; nothing when not shown."""

    def __init__(self, steps, show: bool):
        self.loss = float("nan")
        self._feed = None
        if show:
            counter = range(steps) if steps is not None else itertools.count()
            self._feed = iter(_progress(counter, msg=lambda p: f"loss={self.loss:.6g}",
                                        io=sys.stderr))

    def advance(self, loss) -> None:
        self.loss = loss
        if self._feed is not None:
            next(self._feed, None)

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()  # the bar draws its last line
            self._feed = None


# ---- callbacks ----


def _listed(callbacks) -> list:
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]


def call_all(callbacks, *args) -> None:
    """Call one callback or each of a list of them (MXNet accepts both)."""
    for cb in _listed(callbacks):
        cb(*args)


def _parameters(callback) -> list:
    try:
        return list(inspect.signature(callback).parameters.values())
    except (TypeError, ValueError):
        return []


def epoch_end_extras(callback, extras: dict) -> dict:
    """The keyword arguments among `extras` that `callback` accepts (by name or **kwargs):
    MXNet's plain `cb(epoch, symbol, arg_params, aux_params)` gets none of them."""
    params = _parameters(callback)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(extras)
    names = {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in extras.items() if k in names}


# ---- kvstores ----


def register_kvstore(name: str, factory) -> None:
    """Make `kvstore=name` in fit create its store with `factory()` (a distributed kvstore
    with a `train(model=..., ...)` method)."""
    _FACTORIES[name] = factory


def kvstore_of(kvstore):
    """None for in-process training, else the store whose `train(model=..., ...)` runs the fit:
    a registered name ('dask' / 'dist_sync' / 'dist_async' make a
    `knetflow.distributed.DaskKVStore`) makes its store; an object with a `train` method
    (a DaskKVStore) is used as it is."""
    if isinstance(kvstore, str) or kvstore is None:
        if kvstore in LOCAL_KVSTORES:
            return None
        factory = _FACTORIES.get(kvstore)
        if factory is None:
            raise ValueError(f"unknown kvstore {kvstore!r}; known: "
                             f"{[k for k in LOCAL_KVSTORES if k] + sorted(_FACTORIES)}")
        try:
            return factory()
        except ImportError as e:
            raise ImportError(f"kvstore={kvstore!r} trains on Dask through knetflow.distributed, "
                              f"which cannot be imported: {e}") from e
    if callable(getattr(kvstore, "train", None)):
        return kvstore
    raise TypeError(f"kvstore must be a name ({sorted(_FACTORIES)} or 'local') or a "
                    f"store with a train() method such as knetflow.distributed.DaskKVStore, "
                    f"got {type(kvstore).__name__}")
