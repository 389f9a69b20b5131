"""One training step: which params train, how optimizers meet them, the step's graph.

Every trainer goes through this module, so there is one answer to each question:

- **Which params train.** `trainable(graph)`: every param not marked
  `trainable=False` (running statistics, a fixed gamma), not updated by the
  graph itself (batchnorm's moving statistics, a counter) and of a float dtype.
  `kf.optim.step_graph`, FeedForward (one device or data-parallel) and Dask's
  replicas read this rule; Knet-style training updates the Params the loss
  used, or those given (`update_params`).
- **The optimizer wiring.** `resolve` gives a param its optimizer (one
  Optimizer, a MultiOptimizer by name and kind, or a dict of them), and
  `take_optimizers` a Knet Param its own copy in `.opt`; `norm_scales` spans
  neon's gradient-norm clipping over an optimizer's group, and
  `optimizer_updates` applies the formulas with it. `apply_updates` writes
  each param's new value and optimizer state as graph updates (the state as
  params `"<param>:<slot>"`); `update_arrays` applies the same formulas to
  arrays in place (`kf.update`, and through `update_params` Knet's
  `minimize` and `kf.sgd` ... `kf.adam`).
- **The step.** `step_graph`: forward, gradients and updates in one graph, so
  a step is one plan run. `TrainStep`: a training graph compiled on one device,
  or its data-parallel variant replicated over several in one plan. The
  update of gradients summed elsewhere: `update_graph` (Dask's replicas feed
  it the sums of every worker's gradients).
"""

from __future__ import annotations

import contextlib

import numpy as np

from knetflow.devices.base import is_device_array
from knetflow.devices.transfers import to_host
from knetflow.graph.autodiff import backward, trainable_params
from knetflow.graph.build import param as _param
from knetflow.graph.build import placeholder
from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.graph.symbol import Symbol
from knetflow.ops import concat, where
from knetflow.ops.binary import maximum
from knetflow.ops.elementwise import sqrt
from knetflow.ops.reduce import in_dtype, mean_dtype
from knetflow.ops.reduce import sum as _sum
from knetflow.scheduler.data_parallel import DataParallelPlan, batch_inputs, replica_nodes
from knetflow.scheduler.plan import compile as _compile
from knetflow.train.optimizers import SGD, MultiOptimizer, Optimizer, like

__all__ = [
    "TrainStep",
    "apply_updates",
    "grad_name",
    "gradient_graph",
    "host",
    "norm_scales",
    "optimizer_updates",
    "resolve",
    "state_from_plan",
    "step_graph",
    "take_optimizers",
    "trainable",
    "trainable_names",
    "update_arrays",
    "update_graph",
    "update_params",
]


# ---- which params train ----


def trainable(graph, wrt=None) -> list:
    """The param nodes a training step updates: those named (or given as nodes) in `wrt`,
    else every float param not marked `trainable=False` that the graph does not update."""
    if wrt is not None:
        return [graph.param(w if isinstance(w, str) else _node_name(w)) for w in wrt]
    return [p for p in trainable_params(graph)
            if p.attrs["name"] not in graph.updates and np.dtype(p.spec.dtype).kind == "f"]


def trainable_names(graph) -> list:
    """The names of `trainable(graph)`, in the graph's order."""
    return [p.attrs["name"] for p in trainable(graph)]


def _node_name(x) -> str:
    node = x.node if isinstance(x, Symbol) else x
    return node.attrs["name"]


def _marked(graph) -> Graph:
    """`graph` with `trainable=False` on each param the rule leaves out, so that code
    reading only that mark (the replicated backward) differentiates the same params."""
    keep = {p.id for p in trainable(graph)}

    def visit(node):
        if node.op != "param" or node.id in keep or not node.attrs.get("trainable", True):
            return node
        return node.replace(attrs={**node.attrs, "trainable": False})

    return rewrite(graph, visit)


# ---- the optimizer wiring ----


def resolve(optimizers, name, kind=None) -> Optimizer:
    """The optimizer for `name` from an Optimizer, a MultiOptimizer or a dict of them."""
    if isinstance(optimizers, Optimizer):
        return optimizers
    if isinstance(optimizers, dict):
        optimizers = MultiOptimizer(optimizers)
    if isinstance(optimizers, MultiOptimizer):
        return optimizers.resolve(name, kind)
    raise TypeError(f"expected an optimizer, a MultiOptimizer or a dict of them, "
                    f"got {type(optimizers).__name__}")


def norm_scales(items) -> list:
    """Per item (optimizer, gradient): neon's gradient_clip_norm factor, or None.

    The norm is global over the gradients whose optimizers share a group (one
    optimizer, or the copies made from it).
    """
    groups: dict = {}
    for k, (opt, _g) in enumerate(items):
        if opt.gradient_clip_norm is not None:
            groups.setdefault(id(opt._group), []).append(k)
    scales: list = [None] * len(items)
    for members in groups.values():
        total = None
        for k in members:
            opt, g = items[k]
            g = in_dtype(g, mean_dtype(g.dtype))  # as the optimizers: float16 in float32
            g = g * opt.rescale_grad if opt.rescale_grad != 1.0 else g
            sq = _sum(g * g)
            total = sq if total is None else total + sq
        norm = sqrt(total)
        for k in members:
            limit = items[k][0].gradient_clip_norm
            # in each gradient's own formula dtype: a group of float32 and float64
            # gradients has a float64 norm, which must not widen the float32 updates
            scales[k] = in_dtype(limit / maximum(norm, limit), mean_dtype(items[k][1].dtype))
    return scales


def apply_updates(optimizers, params, grads, kinds=None) -> dict:
    """{name: new value} of each param (node) and its optimizer state, given its gradient
    (a Symbol): the wiring of every compiled training step.

    Optimizer state becomes params `"<name>:<slot>"` starting from the optimizer's state
    for that param (so training resumes), else zeros; gradient-norm clipping groups and
    MultiOptimizer resolution (name, then `kinds` or the param's `kind` attribute) apply.
    """
    kinds = kinds or {}
    opts = [resolve(optimizers, p.attrs["name"],
                    kinds.get(p.attrs["name"], p.attrs.get("kind"))) for p in params]
    states = []
    for p, opt in zip(params, opts):
        name, spec = p.attrs["name"], p.spec
        start = opt.state.get(name) or opt.init_state(spec.shape, spec.dtype)
        states.append({slot: _param(f"{name}:{slot}", value=np.asarray(start[slot]),
                                    dtype=mean_dtype(spec.dtype)) for slot in opt.all_slots()})
    updates = {}
    new = optimizer_updates(opts, [Symbol(p) for p in params], grads, states)
    for p, (new_w, new_state) in zip(params, new):
        name = p.attrs["name"]
        updates[name] = new_w
        updates.update((f"{name}:{slot}", value) for slot, value in new_state.items())
    return updates


def optimizer_updates(opts, weights, grads, states) -> list:
    """(new weight, new state) per weight from its optimizer, gradient and state slots (on
    Symbols or arrays), with neon's gradient-norm groups spanning them all."""
    scales = norm_scales(list(zip(opts, grads)))
    return [opt.apply(w, g, state, scale)
            for opt, w, g, state, scale in zip(opts, weights, grads, states, scales)]


def update_arrays(items) -> None:
    """Update arrays in place from (array, gradient, optimizer, state key) items, the
    gradient-norm groups spanning them all: the eager twin of `apply_updates`."""
    if not items:
        return
    scales = [None] * len(items)
    if any(opt.gradient_clip_norm is not None for _, _, opt, _ in items):
        with _on_device(items[0][0]):  # eager ops run on the current device: the weights'
            scales = norm_scales([(opt, like(g, w, mean_dtype(w.dtype)))
                                  for w, g, opt, _ in items])
    for (w, g, opt, key), scale in zip(items, scales):
        with _on_device(w):
            opt.update(w, g, key=key, norm_scale=scale)


_HOST = contextlib.nullcontext()  # reusable: host arrays need no device made current


def _on_device(w):
    """A context making w's device (and a GPU's stream) current; nothing for host arrays."""
    if not is_device_array(w):
        return _HOST
    from knetflow.devices import transfers

    return transfers.device_of(w).activate()


def update_params(used, grad_of, optimizer, params=None) -> None:
    """One Knet-style update of Params in place (Knet `minimize`'s step).

    The Params updated are `params`, else every Param in `used` (those the loss read).
    Each keeps its optimizer in `.opt`: one set before is used with its state, an unset
    one becomes a copy of `optimizer` (for a MultiOptimizer, of the one its name maps
    to). `grad_of(p)` is p's gradient; None leaves p as it is.
    """
    items = []
    for p in take_optimizers(used if params is None else params, optimizer):
        g = grad_of(p)
        if g is not None:
            items.append((p.value, g, p.opt, ""))
    update_arrays(items)


def take_optimizers(params, optimizer) -> list:
    """The Params, each with its optimizer in `.opt`: a copy of `optimizer` (for a
    MultiOptimizer, of the one its name maps to) where unset (Knet's `Param.opt`)."""
    params = list(params)
    for p in params:
        if p.opt is None and optimizer is not None:
            p.opt = optimizer.for_param(p.name)
    return params


# ---- the step ----


def gradient_graph(graph, wrt=None) -> Graph:
    """`graph`'s outputs followed by the loss's gradient for each of `trainable(graph, wrt)`."""
    graph = graph if isinstance(graph, Graph) else Graph(graph)
    return backward(graph, wrt=trainable(graph, wrt))


def step_graph(graph, optimizers=None, wrt=None, kinds=None) -> Graph:
    """A Graph whose run is one training step: same outputs, and updates that apply
    the optimizer to every trainable param (its first output is the loss).

    Trainable params: `wrt` (names or nodes), by default `trainable(graph)`. Optimizer
    state becomes params named `"<param>:<slot>"`, starting from the optimizer's state
    for that param when it has one (so training resumes), else zeros. `optimizers` is
    one Optimizer (state kept per param name), a MultiOptimizer or a dict of them;
    `kinds` maps param names to layer kinds for MultiOptimizer.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = kf.param("w", value=np.array([1.0, -2.0]))
        >>> plan = kf.compile(kf.optim.step_graph(kf.Graph([kf.sum(w * w)]), kf.optim.SGD()))
        >>> plan.run({})[0], plan.params["w"]
        (array(5., dtype=float32), array([ 0.8, -1.6], dtype=float32))
    """
    optimizers = SGD() if optimizers is None else optimizers
    graph = graph if isinstance(graph, Graph) else Graph(graph)
    targets = trainable(graph, wrt)
    derived = backward(graph, wrt=targets)  # its outputs are graph's, perhaps rewritten
    n = len(graph.outputs)
    grads = [Symbol(g) for g in derived.outputs[n:]]
    updates = {**derived.updates, **apply_updates(optimizers, targets, grads, kinds)}
    return Graph(list(derived.outputs[:n]), inputs=derived.inputs, updates=updates)


def update_graph(graph: Graph, optimizer, names: list, parts: int = 1) -> Graph:
    """A graph whose run applies `optimizer` to the params `names` of `graph`, given
    their gradients fed as `"<param>:grad"`, summed over rows, and `"grad:scale"` (1/rows
    for a mean loss). With `parts` > 1 each gradient comes as `parts` partial sums
    (`grad_name(param, k)`), added in that order inside the update.

    The wiring is `apply_updates`', as in `step_graph`; only the gradients come from the
    feed instead of a derived backward graph.
    """
    targets = [graph.param(name) for name in names]
    fed, grads = [], []
    # the scale is fused into the update rather than applied to the fed buffers, which
    # other replicas may still be reading
    per_row = placeholder("grad:scale", (), targets[0].spec.dtype if targets else "float32")
    for name, p in zip(names, targets):
        inputs = [placeholder(grad_name(name, k), p.spec.shape, p.spec.dtype)
                  for k in range(parts)]
        total = inputs[0]
        for g in inputs[1:]:
            total = total + g
        fed.extend(inputs)
        grads.append(total * per_row)
    updates = apply_updates(optimizer, targets, grads)
    return Graph([], inputs=fed + [per_row], updates=updates)


def grad_name(name: str, part: int = 0) -> str:
    """The feed name of part `part` of a param's gradient in `update_graph`."""
    return f"{name}:grad" if part == 0 else f"{name}:grad@{part}"


def state_from_plan(optimizers, plan, kinds=None) -> None:
    """Copy the optimizer state a step plan holds (`"<param>:<slot>"` params) back into
    the optimizers, e.g. before `state_dict()` for a checkpoint."""
    kinds = kinds or {}
    for flat, value in plan.params.items():
        name, sep, slot = flat.rpartition(":")
        if not sep or name not in plan.params:
            continue
        opt = resolve(optimizers, name, kinds.get(name, _plan_kind(plan, name)))
        if slot in opt.all_slots():
            opt.state.setdefault(name, {})[slot] = to_host(value, copy=True)  # a device's too


def _plan_kind(plan, name):
    try:
        return plan.source.param(name).attrs.get("kind")
    except (AttributeError, KeyError):
        return None


def host(value) -> np.ndarray:
    """A NumPy copy of a plan's array (on any device)."""
    return to_host(value, copy=True)


class TrainStep:
    """A training graph compiled into one step over `devices`; `run(feed) -> (loss,
    predictions)`, the optimizer's updates applied in the same plan run.

    `graph`: outputs (loss, predictions) and updates of auxiliary state, as
    `Symbol.to_graph(training=True)` gives. One device: `step_graph`, compiled.
    Several: the data-parallel variant, a `DataParallelPlan` replicating the loss
    and its backward over the devices (the batch split by `work_load_list`,
    gradients summed in a fixed order), with in the same plan the optimizer's
    updates from the summed gradients, the replicas' predictions concatenated in
    batch order, and each auxiliary update weighted by its replica's share of the
    batch (exact for a moving mean; a moving variance averages the replicas' batch
    variances). The replicas' predictions reuse their forward nodes (merged by
    common-subexpression elimination, except across dropout's random masks).
    """

    def __init__(self, graph: Graph, devices: list, optimizer, work_load_list=None):
        self.kinds = {p.attrs["name"]: p.attrs.get("kind") for p in graph.params}
        self.param_names = [p.attrs["name"] for p in graph.params]
        if len(devices) == 1:
            step = step_graph(graph, optimizer, kinds=self.kinds)
            self.plan = _compile(step, devices=list(devices), training=True)
            self._run = self.plan.run
            return
        if work_load_list is not None and len(work_load_list) != len(devices):
            raise ValueError(f"work_load_list {list(work_load_list)} has "
                             f"{len(work_load_list)} entries for {len(devices)} devices "
                             f"{[str(getattr(d, 'name', d)) for d in devices]}")
        graph = _marked(graph)
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
        state_from_plan(optimizer, self.plan, self.kinds)


def _data_parallel_updates(graph, devices, optimizer, kinds):
    """DataParallelPlan's make_updates hook: optimizer step, predictions, moving statistics."""
    names = [str(getattr(d, "name", d)) for d in devices]
    params = trainable(graph)  # the replicated backward's order (see _marked)
    split = set(batch_inputs(graph))

    def make_updates(step):
        grads = [Symbol(g) for g in step.outputs[1:]]
        updates = apply_updates(optimizer, params, grads, kinds)
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
