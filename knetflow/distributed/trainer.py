"""`DaskTrainer`: data-parallel training of a loss graph on a Dask cluster.

The lower-level entry point: give it a `kf.Graph` whose first output is the
loss (and, optionally, an output of predictions for a metric) and a
`kf.optim` optimizer; `fit(X, y, batch_size, epochs)` trains on the workers
and leaves the trained params in `.params` and the optimizer's state in the
optimizer. `kf.distributed.DaskKVStore` runs `FeedForward.fit` through it.

    client ── run steps a..b ──> replica 0 <── gradient chunks ──> replica 1 ...
           <── losses, metric counters ──┘          (worker to worker)

One fit: connect (or start a LocalCluster), check knetflow imports on every
worker, place the data (data.py), start one Replica per worker with the
graph and initial params (identical everywhere: `running`), then hand a
`Session` to the fit loop every trainer shares (knetflow.train.fit_loop:
epochs, metric, callbacks, logs, progress, history), which runs each epoch's
steps (driver.py), evaluates and checkpoints through it; at the end bring the
params and optimizer state back and close what was started.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import warnings

from knetflow import rng
from knetflow.distributed import driver
from knetflow.distributed.cluster import check_workers, connect
from knetflow.distributed.data import prepare
from knetflow.distributed.replica_calls import Fleet
from knetflow.distributed.reduce import ALGORITHMS
from knetflow.distributed.report import LOGGER, add_counters
from knetflow.graph.node import Graph
from knetflow.scheduler.data_parallel import refuse_seeded_dropout
from knetflow.train import fit_loop, optim
from knetflow.train import metric as _metric
from knetflow.version import __version__

__all__ = ["DaskTrainer"]


class DaskTrainer:
    """Train `loss_graph` data-parallel on Dask workers (sync all-reduce or async server).

    `loss_graph`: a `kf.Graph` whose first output is the loss (a mean over the
    batch, or a sum with `loss_reduction="sum"`); `pred_output` indexes an
    output the metric `eval_metric` reads. `inputs` names the graph inputs
    fed from X and y (default: those with a dynamic first dimension, in order).
    `optimizer`: a `kf.optim` optimizer (its state, if any, is resumed; the
    trained state is written back) or a name.

    `mode="sync"`: every `sync_every` steps (local gradients accumulated in
    between) the replicas' gradients are summed worker to worker and every
    replica applies the same update: the same result as single-process
    training on the same global batches. Replicas on one host sum through
    shared memory (`transport="auto"`); `"tcp"` uses the ring or tree
    (`reduce`) over Dask comms, as replicas on several hosts do.
    `mode="async"`: a parameter server applies each replica's gradients as
    they come.

    Cluster: `client_or_address` (a Client, an address, or None for a
    LocalCluster of `n_workers` processes on 127.0.0.1, closed after each
    fit), `security` (a `distributed.Security`, passed through),
    `connect_timeout` seconds. Progress: `progress` draws a bar per epoch
    (None: when stderr is a terminal), `logger` gets MXNet-style epoch lines.
    `checkpoint=prefix` saves `prefix-%04d.kfp` after each epoch, and
    `fit(begin_epoch=k)` resumes from epoch k's. `timeout` bounds a silent
    peer or worker (seconds); `poll` is how often the client checks for lost
    workers while it waits; `steps_per_call` (default: about a second of
    steps) and `window` set how many steps one call runs and how many calls
    are queued ahead on each replica.

    After `fit`: `params` (name -> array), `history` (one record per epoch:
    `epoch`, `loss`, `time`, `steps`, `train` metric, `eval` metric and loss;
    the schema of every trainer, see knetflow.train.fit_loop), `stats` (per step over the last epoch, mean over
    replicas: `compute_ms` local gradients, `sync_ms` reduction and update,
    `wait_ms` of it waiting for the slowest replica on shared memory),
    `recoveries` (per lost-worker recovery: the epoch and step training
    resumed at, the lost workers, how many went on).

    Example (starts a local cluster of two worker processes):
        >>> import knetflow as kf, numpy as np
        >>> x = kf.placeholder("x", (None, 3), "float64")
        >>> y = kf.placeholder("y", (None,), "float64")
        >>> w = kf.param("w", value=np.zeros(3))
        >>> loss = kf.mean((x @ w - y) ** 2)
        >>> X = np.random.rand(64, 3); Y = X @ np.array([1.0, -2.0, 0.5])
        >>> trainer = kf.distributed.DaskTrainer(kf.Graph([loss]), kf.optim.SGD(lr=0.5))
        >>> trainer.fit(X, Y, batch_size=16, epochs=20).params["w"].round(1)  # doctest: +SKIP
        array([ 1. , -2. ,  0.5])
    """

    def __init__(self, loss_graph, optimizer=None, client_or_address=None, mode="sync",
                 sync_every=1, n_workers=2, security=None, reduce="ring", transport="auto",
                 inputs=None, loss_reduction="mean", pred_output=None, eval_metric=None,
                 shuffle=False, seed=None, steps_per_call=None, window=2, timeout=300.0,
                 poll=0.5,
                 progress=False, logger=None, checkpoint=None, params=None, label_shape=None,
                 connect_timeout=10.0, **cluster_kwargs):
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        if reduce not in ALGORITHMS:
            raise ValueError(f"reduce must be one of {sorted(ALGORITHMS)}, got {reduce!r}")
        if transport not in ("auto", "shm", "tcp"):
            raise ValueError(f"transport must be 'auto', 'shm' or 'tcp', got {transport!r}")
        if int(sync_every) < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.graph = loss_graph if isinstance(loss_graph, Graph) else Graph(loss_graph)
        if client_or_address is not None or n_workers > 1:
            refuse_seeded_dropout(self.graph, "Dask workers")
        self.optimizer = optim.create(optimizer or "sgd")
        self.address, self.security = client_or_address, security
        self.mode, self.sync_every, self.reduce = mode, int(sync_every), reduce
        self.transport = transport
        self.n_workers, self.cluster_kwargs = n_workers, cluster_kwargs
        self.inputs = list(inputs) if inputs else _batch_inputs(self.graph)
        self.loss_reduction, self.pred_output = loss_reduction, pred_output
        self.eval_metric = None if eval_metric is None else _metric.create(eval_metric)
        self.shuffle = shuffle
        # kf.seed's value by default, as for every other random source of knetflow
        self.seed = int(rng._root.entropy) % 2**32 if seed is None else int(seed)
        self.steps_per_call = None if steps_per_call is None else int(steps_per_call)
        self.window, self.step_seconds = int(window), None
        self.timeout, self.poll = float(timeout), float(poll)
        self.progress, self.logger = progress, logger or LOGGER
        self.checkpoint, self.params = checkpoint, None if params is None else dict(params)
        self.label_shape, self.connect_timeout = label_shape, float(connect_timeout)
        self.history: list = []
        self.recoveries: list = []
        self.stats: dict = {}
        self.last_optimizer_state = None
        self.knet_params: dict = {}  # from_loss: name -> kf.Param or state, updated after fit
        self.client = self.fleet = self.data = self.eval = None

    @classmethod
    def from_loss(cls, f, x, y=None, optimizer=None, **kwargs) -> DaskTrainer:
        """A trainer for a Knet-style loss `f(x, y)` reading `kf.Param`s (passed or
        captured): traced once on batches shaped like x and y; `fit` then writes the
        trained values back into the Params' arrays, in place.

        Example (on a local cluster; X, Y as in the class example):
            >>> import knetflow as kf, numpy as np
            >>> w = kf.Param(np.zeros(3), name="w")
            >>> loss = lambda x, y: kf.mean((x @ w - y) ** 2)
            >>> kf.distributed.DaskTrainer.from_loss(  # doctest: +SKIP
            ...     loss, X, Y, kf.optim.SGD(lr=0.5)).fit(X, Y, batch_size=16, epochs=20)
            >>> w.value.round(1)  # doctest: +SKIP
            array([ 1. , -2. ,  0.5])
        """
        from knetflow.distributed.traced_loss import trace_loss

        graph, params = trace_loss(f, x, y)
        trainer = cls(graph, optimizer, inputs=["x"] if y is None else ["x", "y"], **kwargs)
        trainer.knet_params = params
        return trainer

    # -- the public entry point --
    def fit(self, X, y=None, batch_size=100, epochs=1, begin_epoch=0, eval_data=None,
            work_load_list=None, partial=False, epoch_end_callback=None,
            batch_end_callback=None) -> DaskTrainer:
        """Train epochs begin_epoch..epochs-1 (MXNet's num_epoch/begin_epoch) on X, y.

        X: a NumPy array, a dask.array, or an iterable of (x, y) batches (y None);
        `batch_size` is the global batch, split by `work_load_list`. With
        `checkpoint=prefix` and begin_epoch > 0, training resumes from the
        checkpoint of that epoch (params and optimizer state).
        """
        if begin_epoch and self.checkpoint:
            self._resume(begin_epoch)
        with self.running(X, y, batch_size, eval_data, work_load_list, partial) as session:
            fit_loop.fit(session, range(begin_epoch, epochs), metric=self.eval_metric,
                         history=self.history, batch_end_callback=batch_end_callback,
                         epoch_end_callback=epoch_end_callback, logger=self.logger,
                         progress=self.progress)
        return self

    @contextlib.contextmanager
    def running(self, X, y=None, batch_size=100, eval_data=None, work_load_list=None,
                partial=False):
        """The replicas started on the cluster for the fit loop: yields the `Session` that
        runs epochs on them; on leaving, the trained params and optimizer state come back
        (unless training failed) and what was started is closed."""
        conn = connect(self.address, n_workers=self.n_workers, security=self.security,
                       timeout=self.connect_timeout, **self.cluster_kwargs)
        try:
            self._start(conn, X, y, eval_data, batch_size, work_load_list, partial)
            yield _Session(self)
            self._finish()
        finally:
            try:
                if self.fleet is not None:
                    self.fleet.close()
            finally:
                self.fleet = self.data = self.eval = None
                conn.close()

    # -- set-up --
    def _start(self, conn, X, y, eval_data, batch_size, work_load_list, partial) -> None:
        from knetflow.serialize import dumps
        from knetflow.serialize.graph_codec import param_values

        self.client = conn.client
        workers = conn.workers()
        if not workers:
            raise RuntimeError("the Dask cluster has no workers (none joined within a minute)")
        versions = check_workers(self.client, workers)
        _warn_versions(versions)
        link = conn.dashboard()
        if link:
            print(f"knetflow: Dask dashboard at {link}", file=sys.stderr)
            self.logger.info("Dask dashboard at %s", link)
        self.params = param_values(self.graph, self.params)
        model = dumps(self.graph, self.params)
        self.data = prepare(self.client, X, y, workers, batch_size, work_load_list, partial)
        self.eval = None
        if eval_data is not None:
            ex, ey = eval_data if isinstance(eval_data, tuple) else (eval_data, None)
            self.eval = prepare(self.client, ex, ey, workers, batch_size, None, partial=True)
        self.fleet = Fleet(self.client, self.timeout)
        self.fleet.start(workers, model, self._config(), self.data, self.eval)

    def _config(self) -> dict:
        return {"optimizer": self.optimizer, "metric": copy.deepcopy(self.eval_metric),
                "mode": self.mode, "reduce": self.reduce, "transport": self.transport,
                "inputs": self.inputs,
                "loss_reduction": self.loss_reduction, "pred_output": self.pred_output,
                "seed": self.seed, "shuffle": self.shuffle, "timeout": self.timeout,
                "label_shape": self.label_shape}

    def _resume(self, epoch) -> None:
        from knetflow.serialize import load_checkpoint

        saved = load_checkpoint(self.checkpoint, epoch)
        self.params = {**saved.arg_params, **saved.aux_params}
        if saved.optimizer_state is not None:
            self.optimizer.load_state_dict(saved.optimizer_state)
            self.last_optimizer_state = saved.optimizer_state
        self.logger.info("resuming from %s at epoch %d", self.checkpoint, epoch)

    # -- for the fit loop's session --
    def _timings(self, log) -> None:
        steps = list(log.steps.values())
        if steps:
            self.stats = {name + "_ms": 1e3 * sum(s[name] for s in steps) / len(steps)
                          for name in ("compute", "sync", "wait")}
            self.stats["steps"] = len(steps)

    def _evaluate(self) -> dict:
        if self.mode == "async":
            self.fleet.call_all("pull_params")
        results = self.fleet.call_all("evaluate", self.eval.steps)
        rows = sum(r["rows"] for r in results.values())
        out = {"loss": sum(r["loss"] for r in results.values()) / rows if rows else float("nan")}
        if self.eval_metric is not None:
            metric = copy.deepcopy(self.eval_metric)
            metric.reset()
            for r in results.values():
                for counters in r["metric"]:
                    add_counters(metric, counters)
            out.update(metric.get_name_value())
        return out

    def _snapshot(self) -> dict:
        if self.mode == "async":
            return self.fleet.wait({self.fleet.ps_worker: self.fleet.ps.snapshot()})[
                self.fleet.ps_worker]
        first = self.fleet.workers[0]
        return self.fleet.wait({first: self.fleet.actors[first].snapshot()})[first]

    def _split(self, params) -> tuple:
        aux = {k: v for k, v in params.items() if k in self.graph.updates}
        return {k: v for k, v in params.items() if k not in aux}, aux

    def _finish(self) -> None:
        snap = self._snapshot()
        self.params = dict(snap["params"])
        if snap["optimizer"] is not None:
            self.optimizer.load_state_dict(snap["optimizer"])
        if self.knet_params:  # Knet-style: the Params and state objects themselves
            from knetflow.distributed.traced_loss import store_back

            store_back(self.knet_params, self.params)

    @property
    def arg_params(self) -> dict:
        return self._split(self.params or {})[0]

    @property
    def aux_params(self) -> dict:
        return self._split(self.params or {})[1]


def _batch_inputs(graph) -> list:
    names = [n.attrs["name"] for n in graph.inputs if n.spec.shape and n.spec.shape[0] is None]
    if not names or len(names) > 2:
        raise ValueError(f"cannot tell which inputs X and y feed among {names or 'none'}; "
                         "pass inputs=(data name, label name)")
    return names


def _warn_versions(versions: dict) -> None:
    other = {w: v for w, v in versions.items() if v != __version__}
    if other:
        warnings.warn(f"knetflow {__version__} on the client but {other} on workers",
                      RuntimeWarning, stacklevel=3)


class _Session(fit_loop.Session):
    """A DaskTrainer's replicas as the fit loop drives them (see `DaskTrainer.running`)."""

    def __init__(self, trainer: DaskTrainer):
        self.trainer = trainer

    def epoch_steps(self, epoch: int) -> int:
        return self.trainer.data.steps

    def train_epoch(self, epoch: int, metric, on_step) -> tuple:
        trainer = self.trainer

        def step_done(step, log):
            took = log.steps[step]["compute"] + log.steps[step]["sync"]
            trainer.step_seconds = took if not trainer.step_seconds else (
                0.8 * trainer.step_seconds + 0.2 * took)
            on_step(step, log.loss, {"trainer": trainer, "log": log})

        log = driver.EpochLog(metric, step_done)
        run = driver.sync_epoch if trainer.mode == "sync" else driver.async_epoch
        run(trainer, epoch, log)
        trainer._timings(log)
        return log.loss, len(log.steps)

    def evaluate(self, epoch: int):
        return None if self.trainer.eval is None else self.trainer._evaluate()

    def epoch_end(self, epoch: int, record: dict, wanted: bool):
        """The replicas' params and optimizer state (checkpointed with `checkpoint=`)."""
        trainer = self.trainer
        if not wanted and not trainer.checkpoint:
            return None
        snap = trainer._snapshot()
        trainer.last_optimizer_state = snap["optimizer"]
        arg, aux = trainer._split(snap["params"])
        if trainer.checkpoint:
            from knetflow.serialize import save_checkpoint

            save_checkpoint(trainer.checkpoint, epoch + 1, trainer.graph, arg, aux,
                            optimizer_state=snap["optimizer"], metrics={"loss": record["loss"]})
        return trainer.graph, arg, aux, {"optimizer_state": snap["optimizer"]}
