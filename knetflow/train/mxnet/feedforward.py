"""`kf.FeedForward`: MXNet's model API over layer symbols (create, fit, predict, score,
save, load).

A FeedForward holds a `kf.sym` symbol, its parameters by name (`arg_params`,
`aux_params`: NumPy arrays) and an optimizer. `fit` binds the data shape
(building the training graph and initializing missing params), then runs one
compiled plan per batch: forward, derived backward and optimizer update
together (`knetflow.train.step.TrainStep`), on one device or data-parallel over a
`ctx` list, through the fit loop every trainer shares (`knetflow.train.fit_loop`,
with this process's session in `knetflow.train.mxnet.local_fit`). `history` holds one
record per epoch trained (the schema is fit_loop's). `predict` and `score` run
the inference graph on `ctx[0]`.
Checkpoints are `kf.save_checkpoint` files carrying the symbol's JSON and the
optimizer state, so `FeedForward.load` resumes training exactly.

For trainers outside this module (`knetflow.distributed`): `data_name`,
`label_name`, `bind(data_shape, dtype)`, `train_graph()`, `create_optimizer()`,
`batches(X, y, epoch)`, `get_params()`, `set_params(arg, aux)`.
"""

from __future__ import annotations

import logging

import numpy as np

from knetflow.train import fit_loop, optim
from knetflow.train import metric as _metric
from knetflow.train.callback import BatchEndParam
from knetflow.train.initializer_classes import Uniform
from knetflow.train.mxnet import batches
from knetflow.train.mxnet.layer_symbol import LayerSymbol, load_json
from knetflow.train.mxnet.local_fit import LocalFit
from knetflow.train.step import host

__all__ = ["BatchEndParam", "FeedForward"]

LOGGER = logging.getLogger("knetflow")

#: MXNet's default initializer (one shared instance: initializers keep no state)
DEFAULT_INITIALIZER = Uniform(0.01)


def _devices(ctx) -> list:
    if ctx is None:
        return ["cpu:0"]
    return list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]


class FeedForward:
    """A feed-forward model trained and run from a layer symbol (MXNet `FeedForward`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> x, y = kf.datasets.mnist_like(512)
        >>> net = kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=10, name="fc")
        >>> model = kf.FeedForward(kf.sym.SoftmaxOutput(net), num_epoch=8, optimizer="adam",
        ...                        learning_rate=0.01)
        >>> model.fit(x, y).score(x, y) > 0.9
        True

    `optimizer` is a name ('sgd', 'adam', ...) or an optimizer object; extra
    keyword arguments (MXNet's `learning_rate`, `momentum`, `wd`, ...) go to
    `kf.optim.create`. `arg_params`/`aux_params` give parameter values; with
    `allow_extra_params` names the symbol does not use are ignored and missing
    ones initialized, otherwise either is an error.
    """

    def __init__(self, symbol, ctx=None, num_epoch=None, epoch_size=None, optimizer="sgd",
                 initializer=DEFAULT_INITIALIZER, numpy_batch_size=128, arg_params=None,
                 aux_params=None, allow_extra_params=False, begin_epoch=0, **kwargs):
        if not isinstance(symbol, LayerSymbol):
            raise TypeError(f"FeedForward needs a kf.sym symbol, got {type(symbol).__name__}")
        self.symbol = symbol
        self.ctx = _devices(ctx)
        self.num_epoch, self.epoch_size = num_epoch, epoch_size
        self.optimizer, self.kwargs = optimizer, kwargs
        self.initializer = initializer
        self.numpy_batch_size = int(numpy_batch_size)
        self.arg_params = None if arg_params is None else dict(arg_params)
        self.aux_params = None if aux_params is None else dict(aux_params)
        self.allow_extra_params = allow_extra_params
        self.begin_epoch = int(begin_epoch)
        self.history: list = []    # per epoch: {"epoch", "loss", "time", "steps", "train", "eval"}
        self._input = None         # (data shape with None batch, dtype) once bound
        self._opt = None
        self._optimizer_state = None
        self._predictor = None
        names = symbol.list_inputs()
        labels = symbol.list_labels()
        data = [n for n in names if n not in labels]
        if len(data) != 1 or len(labels) > 1:
            raise ValueError(f"FeedForward needs one data input and at most one label, the "
                             f"symbol has inputs {data} and labels {labels}")
        self.data_name = data[0]
        self.label_name = labels[0] if labels else None

    # ---- parameters ----
    def bind(self, data_shape, dtype) -> None:
        """Set the data shape (batch dim free) and dtype; initialize or check the params."""
        declared = next(n.attrs.get("dtype") for n in self.symbol.topo()
                        if n.kind == "Variable" and n.name == self.data_name)
        dtype = np.dtype(declared or dtype)
        dtype = str(dtype) if dtype.kind in "fiu" else "float32"
        self._input = ((None,) + tuple(data_shape[1:]), dtype)
        specs = self.symbol.to_graph(training=False, shape_only=True, **self._shape_kw())
        self._init_params(specs)

    def _shape_kw(self) -> dict:
        shape, dtype = self._input
        return {self.data_name: shape, "dtypes": {self.data_name: dtype}}

    def _init_params(self, graph) -> None:
        aux_names = set(self.symbol.list_auxiliary_states())
        specs = {n.attrs["name"]: n.spec for n in graph.params}
        want_arg = {k: v for k, v in specs.items() if k not in aux_names}
        want_aux = {k: v for k, v in specs.items() if k in aux_names}
        self.arg_params = self._fill(self.arg_params, want_arg, "arg_params")
        self.aux_params = self._fill(self.aux_params, want_aux, "aux_params")
        self._predictor = None

    def _fill(self, given, wanted, what) -> dict:
        fresh = given is None
        given = dict(given or {})
        extra = sorted(set(given) - set(wanted))
        missing = sorted(set(wanted) - set(given))
        if not self.allow_extra_params and not fresh and (extra or missing):
            raise ValueError(
                f"{what} do not match the symbol: extra {_sizes(given, extra)}, missing "
                f"{ {n: wanted[n].shape for n in missing} }; the symbol needs "
                f"{ {n: s.shape for n, s in wanted.items()} } (allow_extra_params=True ignores "
                "extra names and initializes missing ones)")
        out = {}
        for name, spec in wanted.items():
            if name in given:
                value = np.asarray(given[name])
                if value.shape != spec.shape:
                    raise ValueError(f"{what}[{name!r}] has shape {value.shape}; the symbol "
                                     f"needs {spec.shape} for data of shape {self._input[0]}")
                out[name] = value.astype(spec.dtype, copy=False)
            else:
                out[name] = np.zeros(spec.shape, dtype=spec.dtype)
                self.initializer(name, out[name])
        return out

    def get_params(self) -> tuple:
        """(arg_params, aux_params) (MXNet `get_params`)."""
        return self.arg_params, self.aux_params

    def set_params(self, arg_params, aux_params=None) -> None:
        """Replace parameter values by name."""
        self.arg_params = {**(self.arg_params or {}), **dict(arg_params)}
        self.aux_params = {**(self.aux_params or {}), **dict(aux_params or {})}
        self._predictor = None

    def _all_params(self) -> dict:
        return {**(self.arg_params or {}), **(self.aux_params or {})}

    # ---- graphs, optimizer, data ----
    def train_graph(self):
        """The training graph for the bound data shape: outputs (loss, predictions)."""
        return self.symbol.to_graph(training=True, params=self._all_params(),
                                    **self._shape_kw())

    def create_optimizer(self):
        """The model's optimizer, made once from `optimizer` and the keyword arguments (or,
        for a loaded model given neither, from the checkpoint), with any loaded state."""
        if self._opt is None:
            state, self._optimizer_state = self._optimizer_state, None
            if self.optimizer is None and state is not None:
                self._opt = optim.optimizer_from_state(state)
            else:
                try:
                    self._opt = optim.create(self.optimizer or "sgd", **self.kwargs)
                except TypeError as e:
                    raise TypeError(f"optimizer {self.optimizer!r} does not take the keyword "
                                    f"arguments {sorted(self.kwargs)}: {e}") from None
                if state is not None:
                    self._opt.load_state_dict(_without_hyper(state))
        return self._opt

    def batches(self, X, y=None, epoch=None):
        """The (data, label) batches of one pass (shuffled NumPy rows when `epoch` is given)."""
        return batches.batches(X, y, self.numpy_batch_size, epoch)

    def _feed(self, data, label=None) -> dict:
        feed = {self.data_name: data}
        if label is not None and self.label_name is not None:
            feed[self.label_name] = label
        return feed

    # ---- training ----
    def fit(self, X, y=None, eval_data=None, eval_metric="acc", epoch_end_callback=None,
            batch_end_callback=None, kvstore="local", logger=None, work_load_list=None,
            monitor=None, eval_batch_end_callback=None, progress=None):
        """Train for epochs begin_epoch..num_epoch-1 (MXNet `fit`); returns the model.

        X is an array (with labels y) or an iterable of (data, label) batches;
        eval_data a (data, labels) pair or an iterable of batches. Each epoch logs
        Train-<metric>, Train-loss, Time cost and Validation-<metric> on `logger`,
        draws a progress bar (`progress`; by default when stderr is a terminal), and
        calls `epoch_end_callback(epoch, symbol, arg_params, aux_params)` (with
        `optimizer_state=`, `layer_symbol=` and `metrics=` when it accepts them, as
        `kf.callback.do_checkpoint` does). Each epoch appends its record to `history`
        (`epoch`, `loss`, `time`, `steps`, `train`, `eval`: see `knetflow.train.fit_loop`).
        `kvstore='dask'` (or a DaskKVStore) trains on `knetflow.distributed` instead,
        through the same fit loop.
        """
        store = fit_loop.kvstore_of(kvstore)
        if store is not None:
            return store.train(model=self, X=X, y=y, eval_data=eval_data,
                               eval_metric=eval_metric, epoch_end_callback=epoch_end_callback,
                               batch_end_callback=batch_end_callback, logger=logger,
                               work_load_list=work_load_list)
        if self.num_epoch is None:
            raise ValueError("FeedForward.fit needs num_epoch (the number of epochs to train)")
        if self.label_name is None:
            raise ValueError(f"cannot train {self.symbol!r}: it has no output layer with a "
                             "loss (SoftmaxOutput or LinearRegressionOutput)")
        if monitor is not None:
            (logger or LOGGER).warning("FeedForward.fit: monitor is not supported; ignored")
        if not batches.is_array(X) and iter(X) is X:
            X = list(X)  # a one-shot iterator: keep its batches for the epochs to come
        if (eval_data is not None and not isinstance(eval_data, (tuple, list))
                and not batches.is_array(eval_data) and iter(eval_data) is eval_data):
            eval_data = list(eval_data)
        metric = _metric.create(eval_metric)
        session = LocalFit(self, X, y, eval_data, eval_metric, eval_batch_end_callback,
                           work_load_list)
        fit_loop.fit(session, range(self.begin_epoch, self.num_epoch), metric=metric,
                     history=self.history, batch_end_callback=batch_end_callback,
                     epoch_end_callback=epoch_end_callback, logger=logger or LOGGER,
                     progress=progress)
        self.begin_epoch = max(self.begin_epoch, self.num_epoch)
        return self

    # ---- inference ----
    def _predict_plan(self, data):
        if self.arg_params is None:
            raise ValueError("the model has no parameters: fit it first, or give arg_params")
        rest, dtype = tuple(data.shape[1:]), np.dtype(data.dtype)
        if self._input is None or self._input[0][1:] != rest:
            self.bind(data.shape, dtype)
        if self._predictor is None:
            from knetflow.scheduler.plan import compile

            graph = self.symbol.to_graph(params=self._all_params(), **self._shape_kw())
            self._predictor = compile(graph, devices=[self.ctx[0]])
        return self._predictor

    def predict(self, X, num_batch=None, return_data=False, reset=True):
        """The network's output for X, on ctx[0] (MXNet `predict`): class probabilities
        for SoftmaxOutput. X is an array or an iterable of batches; with `return_data`,
        returns (outputs, data, labels). `reset` is accepted for MXNet's signature (each
        call starts at the first batch)."""
        outs, datas, labels = [], [], []
        for k, (data, label) in enumerate(batches.predict_batches(X, self.numpy_batch_size)):
            if num_batch is not None and k >= num_batch:
                break
            outs.append(host(self._predict_plan(data).run(self._feed(data))[0]))
            if return_data:
                datas.append(data)
                labels.append(label)
        if not outs:
            raise ValueError("predict got no data")
        out = np.concatenate(outs)
        if not return_data:
            return out
        has_labels = all(lab is not None for lab in labels)
        return out, np.concatenate(datas), np.concatenate(labels) if has_labels else None

    def score(self, X, y=None, eval_metric="acc", num_batch=None, batch_end_callback=None,
              reset=True):
        """The metric of the predictions for X against its labels (MXNet `score`); a number,
        or a list of them for several metrics."""
        m = _metric.create(eval_metric)
        self._evaluate((X, y) if y is not None else X, m, num_batch, batch_end_callback, 0)
        value = m.get()[1]
        return value

    def _evaluate(self, data, m, num_batch, callback, epoch) -> None:
        m.reset()
        for k, (xb, yb) in enumerate(batches.eval_batches(data, self.numpy_batch_size)):
            if num_batch is not None and k >= num_batch:
                break
            if yb is None:
                raise ValueError("scoring needs labels: give y, or (data, label) batches")
            pred = host(self._predict_plan(xb).run(self._feed(xb))[0])
            m.update([batches.label_like(yb, pred)], [pred])
            fit_loop.call_all(callback, BatchEndParam(epoch=epoch, nbatch=k, eval_metric=m,
                                                      locals=locals()))

    # ---- saving ----
    def bound_symbol(self) -> LayerSymbol:
        """The symbol with the bound data shape and dtype set on its data Variable."""
        if self._input is None:
            raise ValueError("the model has no data shape yet: fit or predict first")
        shape, dtype = self._input
        return self.symbol.with_shapes(dtypes={self.data_name: dtype},
                                       **{self.data_name: shape})

    def save(self, prefix, epoch=None):
        """Checkpoint to `prefix-symbol.kfg` and `prefix-%04d.kfp` (MXNet `save`), with the
        optimizer state and the symbol's JSON; epoch defaults to num_epoch."""
        from knetflow.serialize import save_checkpoint

        epoch = self.num_epoch if epoch is None else epoch
        if epoch is None:
            raise ValueError("save needs an epoch number (the model has no num_epoch)")
        opt = self._opt
        state = opt.state_dict() if opt is not None else self._optimizer_state
        return save_checkpoint(prefix, int(epoch), self.bound_symbol(), self.arg_params,
                               self.aux_params, optimizer_state=state,
                               layer_symbol=self.symbol.tojson(),
                               numpy_batch_size=self.numpy_batch_size)

    @staticmethod
    def load(prefix, epoch, ctx=None, allow_missing=False, **kwargs) -> FeedForward:
        """A model from checkpoint `prefix`, `epoch` (MXNet `load`), ready to predict or to
        resume training at begin_epoch=epoch with its saved optimizer state. kwargs:
        other FeedForward arguments (num_epoch, optimizer, numpy_batch_size, ...).

        A param the checkpoint has no value for is a kf.FormatError unless
        `allow_missing`: then it starts from the value `kf.load_checkpoint` draws
        for it, and a warning names it. Values for names the symbol lacks are an
        error unless `allow_extra_params`."""
        from knetflow.serialize import load_checkpoint

        ckpt = load_checkpoint(prefix, epoch, allow_missing=allow_missing,
                               allow_extra=bool(kwargs.get("allow_extra_params")))
        text = ckpt.metadata.get("layer_symbol")
        if not text:
            raise ValueError(f"checkpoint {prefix!r} epoch {epoch} holds a graph but no layer "
                             "symbol (not saved by FeedForward): use kf.load_checkpoint and "
                             "compile its graph")
        kwargs.setdefault("begin_epoch", int(epoch))
        if "numpy_batch_size" in ckpt.metadata:
            kwargs.setdefault("numpy_batch_size", int(ckpt.metadata["numpy_batch_size"]))
        if ckpt.optimizer_state is not None and "optimizer" not in kwargs and not any(
                k in kwargs for k in ("learning_rate", "lr", "momentum", "wd")):
            kwargs["optimizer"] = None  # rebuilt from the saved type and hyperparameters
        symbol = load_json(text)
        aux_names = set(symbol.list_auxiliary_states())
        drawn = ckpt.initialized
        arg = {**ckpt.arg_params, **{k: v for k, v in drawn.items() if k not in aux_names}}
        aux = {**ckpt.aux_params, **{k: v for k, v in drawn.items() if k in aux_names}}
        model = FeedForward(symbol, ctx=ctx, arg_params=arg, aux_params=aux, **kwargs)
        model._optimizer_state = ckpt.optimizer_state
        node = ckpt.graph.input(model.data_name)
        model._input = (node.spec.shape, node.spec.dtype)
        return model

    @staticmethod
    def create(symbol, X, y=None, ctx=None, num_epoch=None, epoch_size=None, optimizer="sgd",
               initializer=DEFAULT_INITIALIZER, eval_data=None, eval_metric="acc",
               epoch_end_callback=None, batch_end_callback=None, kvstore="local", logger=None,
               work_load_list=None, eval_batch_end_callback=None, **kwargs) -> FeedForward:
        """Make a model and fit it (MXNet `FeedForward.create`); returns the trained model."""
        model = FeedForward(symbol, ctx=ctx, num_epoch=num_epoch, epoch_size=epoch_size,
                            optimizer=optimizer, initializer=initializer, **kwargs)
        model.fit(X, y, eval_data=eval_data, eval_metric=eval_metric,
                  epoch_end_callback=epoch_end_callback, batch_end_callback=batch_end_callback,
                  kvstore=kvstore, logger=logger, work_load_list=work_load_list,
                  eval_batch_end_callback=eval_batch_end_callback)
        return model

    def __knetflow_save__(self) -> dict:
        """For kf.save(path, model): the inference graph, params and the symbol's JSON."""
        graph = self.bound_symbol().to_graph(shape_only=True)
        return {"graph": graph, "params": self._all_params(),
                "metadata": {"layer_symbol": self.symbol.tojson()}}

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("_opt") is not None:
            state["_optimizer_state"], state["_opt"] = state["_opt"].state_dict(), None
            state["optimizer"] = state["optimizer"] if isinstance(state["optimizer"], str) \
                else None
        state["_predictor"] = None
        state["ctx"] = [str(getattr(d, "name", d)) for d in self.ctx]  # devices hold threads
        return state

    def __repr__(self) -> str:
        ctx = [str(getattr(d, "name", d)) for d in self.ctx]
        return f"<FeedForward {self.symbol.name} on {ctx}, epochs {self.num_epoch}>"


def _sizes(values, names) -> dict:
    return {n: tuple(np.shape(values[n])) for n in names}


def _without_hyper(state: dict) -> dict:
    """Only the state arrays of a state_dict (the model's own hyperparameters stay)."""
    if state.get("type") == "MultiOptimizer":
        return {**state, "optimizers": {k: _without_hyper(v)
                                        for k, v in state["optimizers"].items()}}
    return {"type": state.get("type"), "state": state.get("state", {})}
