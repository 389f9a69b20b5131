"""`DaskKVStore`: `FeedForward.fit(kvstore='dask')` on a Dask cluster.

MXNet trains a FeedForward on several machines through a distributed
kvstore (`dist_sync`, `dist_async`); here the kvstore is a Dask cluster and
the fit runs through `DaskTrainer`: the model binds its data shape, builds
its training graph (loss, predictions) and its optimizer as for a local fit,
the trainer trains them on the workers, and the model gets the trained
params and optimizer state back, ready to predict, score or save.

    model.fit(X, y, kvstore="dask")                           # a local cluster
    model.fit(X, y, kvstore=kf.distributed.DaskKVStore("tcp://scheduler:8786"))
    model.fit(X, y, kvstore=kf.distributed.DaskKVStore(mode="async"))
"""

from __future__ import annotations

import numpy as np

from knetflow.distributed.report import LOGGER
from knetflow.distributed.trainer import DaskTrainer

__all__ = ["DaskKVStore"]


class DaskKVStore:
    """A Dask cluster as FeedForward's kvstore (MXNet `kvstore.create('dist_sync')`).

    `client_or_address`: a `distributed.Client`, a scheduler address, or None
    to start a LocalCluster of `n_workers` processes on 127.0.0.1 for each fit.
    `mode` 'sync' (gradients summed every `sync_every` steps, worker to worker)
    or 'async' (a parameter server). Other keywords go to `DaskTrainer`
    (`reduce`, `transport`, `timeout`, `progress`, `security`, ...).

    Example:
        >>> import knetflow as kf
        >>> store = kf.distributed.DaskKVStore(mode="sync", n_workers=2)
        >>> store.type
        'dist_sync'
    """

    def __init__(self, client_or_address=None, mode="sync", sync_every=1, n_workers=2,
                 security=None, **trainer_kwargs):
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        self.address, self.mode, self.sync_every = client_or_address, mode, int(sync_every)
        self.n_workers, self.security = n_workers, security
        self.trainer_kwargs = trainer_kwargs
        self.trainer = None  # the DaskTrainer of the last fit (history, stats)

    @property
    def type(self) -> str:
        """MXNet's name for this kind of store."""
        return f"dist_{self.mode}"

    def train(self, model, X, y=None, eval_data=None, eval_metric="acc",
              epoch_end_callback=None, batch_end_callback=None, logger=None,
              work_load_list=None):
        """Fit `model` (a FeedForward) on the cluster; its params are updated in place."""
        from knetflow.train import ff_data

        if model.num_epoch is None:
            raise ValueError("FeedForward.fit needs num_epoch (the number of epochs to train)")
        if model.epoch_size is not None:
            raise ValueError("epoch_size is not supported with a Dask kvstore: an epoch is "
                             "one pass over the data")
        if model.label_name is None:
            raise ValueError(f"cannot train {model.symbol!r}: it has no output layer with a "
                             "loss (SoftmaxOutput or LinearRegressionOutput)")
        _bind(model, X, y)
        optimizer = model.create_optimizer()
        graph = model.train_graph()
        label_shape = graph.input(model.label_name).spec.shape
        if y is not None and not hasattr(y, "chunks"):
            y = ff_data.fit_rows(np.asarray(y), label_shape)
        options = {"progress": None, "shuffle": True, **self.trainer_kwargs}
        trainer = DaskTrainer(
            graph, optimizer, client_or_address=self.address, mode=self.mode,
            sync_every=self.sync_every, n_workers=self.n_workers, security=self.security,
            inputs=(model.data_name, model.label_name), pred_output=1, eval_metric=eval_metric,
            logger=logger or LOGGER, label_shape=label_shape, **options)
        self.trainer = trainer
        trainer.fit(X, y, batch_size=model.numpy_batch_size, epochs=model.num_epoch,
                    begin_epoch=model.begin_epoch, eval_data=_eval_pair(eval_data),
                    work_load_list=work_load_list, partial=True,
                    epoch_end_callback=_epoch_end(model, epoch_end_callback),
                    batch_end_callback=batch_end_callback)
        _take_params(model, trainer.params)
        model.begin_epoch = max(model.begin_epoch, model.num_epoch)
        return model

    def __repr__(self) -> str:
        where = self.address if self.address is not None else f"local x{self.n_workers}"
        return f"<DaskKVStore {self.type} on {where}>"


def _bind(model, X, y) -> None:
    """Bind the model's data shape without pulling data to the client."""
    from knetflow.train import ff_data

    if ff_data.is_array(X):
        model.bind(tuple(X.shape), np.dtype(X.dtype))
        return
    data, _ = ff_data.first_batch(model.batches(X, y))
    model.bind(data.shape, data.dtype)


def _eval_pair(eval_data):
    """eval_data as DaskTrainer takes it: an (X, y) pair or an iterable of batches."""
    if eval_data is None or isinstance(eval_data, tuple):
        return eval_data
    if isinstance(eval_data, list) and len(eval_data) == 2 and hasattr(eval_data[0], "shape") \
            and np.ndim(eval_data[0]) > 1:
        return tuple(eval_data)
    return eval_data


def _take_params(model, params: dict) -> None:
    arg = {k: np.asarray(v) for k, v in params.items() if k in (model.arg_params or {})}
    aux = {k: np.asarray(v) for k, v in params.items() if k in (model.aux_params or {})}
    model.set_params(arg, aux)


def _epoch_end(model, callbacks):
    """The trainer's epoch-end hook: update the model, record history, call the user's
    callbacks as FeedForward.fit calls them (with the bound layer symbol)."""
    from knetflow.train.fit_loop import epoch_end_extras

    def hook(epoch, graph, arg, aux, optimizer_state=None, record=None):
        _take_params(model, {**arg, **aux})
        record = record or {}
        entry = {"epoch": epoch, "loss": record.get("loss"), "time": record.get("seconds"),
                 "train": record.get("metric", {})}
        if "eval" in record:
                entry["eval"] = {k: v for k, v in record["eval"].items() if k != "loss"}
        model.history.append(entry)
        if callbacks is None:
            return
        metrics = {f"train-{k}": v for k, v in entry["train"].items()}
        metrics.update((f"eval-{k}", v) for k, v in entry.get("eval", {}).items())
        metrics["train-loss"] = entry["loss"]
        extras = {"optimizer_state": optimizer_state, "layer_symbol": model.symbol.tojson(),
                  "numpy_batch_size": model.numpy_batch_size, "metrics": metrics}
        for cb in callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]:
            cb(epoch, model.bound_symbol(), dict(model.arg_params), dict(model.aux_params),
               **epoch_end_extras(cb, extras))

    return hook
