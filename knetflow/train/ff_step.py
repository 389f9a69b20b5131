"""FeedForward's compiled training step: forward, backward and update in one plan run.

One device: `kf.optim.step_graph` turns the training graph (loss, predictions,
batchnorm updates) into a graph whose updates apply the optimizer, compiled
once. Several devices: a `DataParallelPlan` replicates the loss and its
backward over the devices (the batch split by `work_load_list`, gradients
summed on the first device in a fixed order) and its `make_updates` hook adds,
in the same plan:

- the optimizer update of every trainable param, from the summed gradients
  (optimizer state as params `"<param>:<slot>"`, as step_graph names them);
- the predictions, each replica's on its slice, concatenated in batch order;
- the batchnorm moving statistics, each replica's update weighted by its
  share of the batch (exact for the moving mean; the moving variance
  averages the replicas' batch variances).

Replica predictions reuse the replicas' forward nodes: common-subexpression
elimination merges them (not across dropout, whose masks are random, so a
network with dropout reports training predictions under other masks).
"""

from __future__ import annotations

import numpy as np

from knetflow.graph.autodiff import trainable_params
from knetflow.graph.node import Graph
from knetflow.graph.symbol import Symbol
from knetflow.ops import concat, where
from knetflow.scheduler.data_parallel import DataParallelPlan, batch_inputs, replica_nodes
from knetflow.scheduler.plan import compile as _compile
from knetflow.train import optim

__all__ = ["TrainStep", "host", "optimizer_from_state"]


def host(value) -> np.ndarray:
    """A NumPy copy of a plan's array (on any device)."""
    if isinstance(value, np.ndarray):
        return np.array(value)
    get = getattr(value, "get", None)
    return np.array(get() if callable(get) else value)


def optimizer_from_state(state: dict):
    """A new optimizer of the type and hyperparameters a `state_dict()` holds, with its state."""
    if state.get("type") == "MultiOptimizer":
        return optim.MultiOptimizer({k: optimizer_from_state(v)
                                     for k, v in state["optimizers"].items()})
    classes = {cls.__name__: cls for cls in optim.OPTIMIZERS.values()}
    if state.get("type") not in classes:
        raise ValueError(f"saved optimizer state of unknown type {state.get('type')!r}; "
                         f"known: {sorted(classes)}")
    opt = classes[state["type"]]()
    opt.load_state_dict(state)
    return opt


def _data_parallel_updates(graph, devices, optimizer, kinds):
    """The make_updates hook: optimizer step, predictions and moving statistics."""
    names = [str(getattr(d, "name", d)) for d in devices]
    params = trainable_params(graph)
    split = set(batch_inputs(graph))

    def make_updates(step):
        grads = [Symbol(g) for g in step.outputs[1:]]
        updates = optim.apply_updates(optimizer, params, grads, kinds)
        preds, aux = [], {}
        for r, dev in enumerate(names):
            new = replica_nodes(graph, r, dev, split,
                                lambda n, r=r: step.input(f"{n.attrs['name']}@{r}"))
            preds.append(Symbol(new[graph.outputs[1].id]))
            weight = Symbol(step.input(f"weight@{r}"))
            for name, node in graph.updates.items():
                share = where(weight > 0, Symbol(new[node.id]) * weight, 0.0)
                aux[name] = share if r == 0 else aux[name] + share
        pred = preds[0] if len(preds) == 1 else concat(preds, axis=0)
        return Graph([step.outputs[0], pred], updates={**updates, **aux})

    return make_updates


class TrainStep:
    """A compiled training step over `devices`; `run(feed) -> (loss, predictions)`.

    `graph` is a training graph from `Symbol.to_graph(training=True)`: outputs
    (loss, predictions), updates of the auxiliary states.
    """

    def __init__(self, graph: Graph, devices: list, optimizer, work_load_list=None):
        self.kinds = {p.attrs["name"]: p.attrs.get("kind") for p in graph.params}
        self.param_names = [p.attrs["name"] for p in graph.params]
        trainable = [p.attrs["name"] for p in trainable_params(graph)]
        if len(devices) == 1:
            step = optim.step_graph(graph, optimizer, wrt=trainable, kinds=self.kinds)
            self.plan = _compile(step, devices=list(devices), training=True)
            self._run = self.plan.run
        else:
            if work_load_list is not None and len(work_load_list) != len(devices):
                raise ValueError(f"work_load_list {list(work_load_list)} has "
                                 f"{len(work_load_list)} entries for {len(devices)} devices "
                                 f"{[str(getattr(d, 'name', d)) for d in devices]}")
            parallel = DataParallelPlan(
                graph, list(devices), work_load_list=work_load_list,
                make_updates=_data_parallel_updates(graph, devices, optimizer, self.kinds))
            self.plan = parallel.plan
            self._run = parallel.run

    def run(self, feed: dict) -> tuple:
        loss, pred = self._run(feed)
        return float(host(loss)), host(pred)

    def params(self) -> dict:
        """The model's params (not optimizer state) as NumPy arrays."""
        values = self.plan.params
        return {name: host(values[name]) for name in self.param_names}

    def pull_optimizer_state(self, optimizer) -> None:
        """Copy the optimizer state the plan holds back into the optimizer(s)."""
        optim.state_from_plan(optimizer, self.plan, self.kinds)
