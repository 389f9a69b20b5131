"""`DaskKVStore`: `FeedForward.fit(kvstore='dask')` on a Dask cluster.

MXNet trains a FeedForward on several machines through a distributed
kvstore (`dist_sync`, `dist_async`); here the kvstore is a Dask cluster and
the fit runs through `DaskTrainer`: the model binds its data shape, builds
its training graph (loss, predictions) and its optimizer as for a local fit,
the trainer's replicas train them on the workers, driven by the fit loop
`FeedForward.fit` uses in-process (the same epochs, metrics, callbacks, logs
and history records). After each epoch the model takes the params, so
callbacks see it as a local fit's do; at the end it has the optimizer state
too, ready to predict, score, save or go on training.

    model.fit(X, y, kvstore="dask")                           # a local cluster
    model.fit(X, y, kvstore=kf.distributed.DaskKVStore("tcp://scheduler:8786"))
    model.fit(X, y, kvstore=kf.distributed.DaskKVStore(mode="async"))
"""

from __future__ import annotations

import numpy as np

from knetflow.distributed.report import LOGGER
from knetflow.distributed.trainer import DaskTrainer
from knetflow.train import fit_loop

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
        self.trainer = None  # the DaskTrainer of the last fit (stats, recoveries)

    @property
    def type(self) -> str:
        """MXNet's name for this kind of store."""
        return f"dist_{self.mode}"

    def train(self, model, X, y=None, eval_data=None, eval_metric="acc",
              epoch_end_callback=None, batch_end_callback=None, logger=None,
              work_load_list=None):
        """Fit `model` (a FeedForward) on the cluster; its params are updated in place."""
        from knetflow.train.mxnet import batches

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
            y = batches.fit_rows(np.asarray(y), label_shape)
        options = {"progress": None, "shuffle": True, **self.trainer_kwargs}
        trainer = DaskTrainer(
            graph, optimizer, client_or_address=self.address, mode=self.mode,
            sync_every=self.sync_every, n_workers=self.n_workers, security=self.security,
            inputs=(model.data_name, model.label_name), pred_output=1, eval_metric=eval_metric,
            logger=logger or LOGGER, label_shape=label_shape, **options)
        self.trainer = trainer
        with trainer.running(X, y, batch_size=model.numpy_batch_size,
                             eval_data=_eval_pair(eval_data), work_load_list=work_load_list,
                             partial=True) as session:
            fit_loop.fit(_ModelSession(session, model),
                         range(model.begin_epoch, model.num_epoch), metric=trainer.eval_metric,
                         history=model.history, batch_end_callback=batch_end_callback,
                         epoch_end_callback=epoch_end_callback, logger=trainer.logger,
                         progress=trainer.progress)
        _take_params(model, trainer.params)
        model.begin_epoch = max(model.begin_epoch, model.num_epoch)
        return model

    def __repr__(self) -> str:
        where = self.address if self.address is not None else f"local x{self.n_workers}"
        return f"<DaskKVStore {self.type} on {where}>"


def _bind(model, X, y) -> None:
    """Bind the model's data shape without pulling data to the client."""
    from knetflow.train.mxnet import batches

    if batches.is_array(X):
        model.bind(tuple(X.shape), np.dtype(X.dtype))
        return
    data, _ = batches.first_batch(model.batches(X, y))
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


class _ModelSession(fit_loop.Session):
    """A DaskTrainer's session training a FeedForward: after each epoch the model takes
    the params, and epoch-end callbacks get what FeedForward.fit's get (the bound layer
    symbol, the model's params, its layer symbol's JSON and batch size)."""

    def __init__(self, session, model):
        self.session, self.model = session, model

    def epoch_steps(self, epoch: int):
        return self.session.epoch_steps(epoch)

    def train_epoch(self, epoch: int, metric, on_step) -> tuple:
        return self.session.train_epoch(epoch, metric, on_step)

    def evaluate(self, epoch: int):
        return self.session.evaluate(epoch)

    def epoch_end(self, epoch: int, record: dict, wanted: bool):
        model = self.model
        _graph, arg, aux, extras = self.session.epoch_end(epoch, record, True)
        _take_params(model, {**arg, **aux})
        extras = {**extras, "layer_symbol": model.symbol.tojson(),
                  "numpy_batch_size": model.numpy_batch_size}
        return model.bound_symbol(), model.arg_params, model.aux_params, extras
