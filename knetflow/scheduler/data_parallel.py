"""In-process data parallelism: one training graph replicated over devices.

`replicated_backward(graph, devices)` is `kf.backward` for a batch split over
devices: replica r computes the loss on its slice of every batch input (those
with a dynamic first dimension) and its gradients, on device r; the
gradients of each parameter are summed in replica order on the parameter's
home device, so the result does not depend on thread timing. Each replica's
loss is weighted by its share of the batch (a fed scalar), so the sum is the
whole batch's mean loss and the summed gradient is its gradient, whatever the
split, uneven last batches included. A replica that a batch leaves with no
rows (fewer rows than replicas) would take means over no rows, 0/0: for such
a batch the plan compiles the step with everything only that replica
computes replaced by zeros (`without_empty_replicas`), so it computes
nothing and adds nothing. Parameters have one copy, on their home
device; every replica reads the same values, so they are identical everywhere
by construction. Homes are spread over the devices, balanced by bytes
(`param_homes`), so the sums and the optimizer's updates run on all of them
side by side rather than all on the first.

    x ─ split ─> x@0 ─ loss@0 ─ grad@0 ─┐
              └> x@1 ─ loss@1 ─ grad@1 ─┴─ sum (w's home) ─> optimizer update

`DataParallelPlan` compiles that graph (plus optional updates) and splits
each feed by `work_load_list`.
"""

from __future__ import annotations

import numpy as np

from knetflow.graph import build
from knetflow.graph.autodiff import gradients, trainable_params
from knetflow.graph.build import const, placeholder
from knetflow.graph.node import Graph
from knetflow.graph.passes.project import fold_embedding_projections
from knetflow.graph.passes.rewrite import rewrite, rewrite_nodes
from knetflow.graph.symbol import Symbol
from knetflow.ops.base import Spec
from knetflow.ops.binary import where


def batch_inputs(graph) -> list:
    """Names of the inputs split across replicas: those with a dynamic first dim."""
    return [n.attrs["name"] for n in graph.inputs if n.spec.shape and n.spec.shape[0] is None]


def param_homes(params, devices: list) -> dict:
    """Param name -> device: biggest first, each to the device with the fewest bytes so far.

    Example:
        >>> import knetflow as kf
        >>> ps = [kf.param(n, s).node for n, s in (("w", (100, 10)), ("b", (10,)),
        ...                                        ("v", (50, 10)))]
        >>> param_homes(ps, ["cpu:0", "cpu:1"])
        {'w': 'cpu:0', 'v': 'cpu:1', 'b': 'cpu:1'}
    """
    names = [str(getattr(d, "name", d)) for d in devices]
    load = dict.fromkeys(names, 0)
    homes = {}
    for p in sorted(params, key=lambda p: -(p.spec.nbytes or 0)):  # stable: ties keep order
        home = min(names, key=lambda d: load[d])
        homes[p.attrs["name"]] = home
        load[home] += p.spec.nbytes or 0
    return homes


def replicated_backward(graph: Graph, devices: list, loss_reduction: str = "mean",
                        homes: dict | None = None) -> Graph:
    """Outputs: the whole batch's loss, then d loss / d param for every trainable param.

    `homes` (param name -> device) says where each gradient is summed; by default
    `param_homes`.
    """
    names = [str(getattr(d, "name", d)) for d in devices]
    if len(names) > 1:
        refuse_seeded_dropout(graph, f"{len(names)} replicas")
    graph = fold_embedding_projections(graph)  # as kf.backward does before differentiating
    split = set(batch_inputs(graph))
    params = trainable_params(graph)
    homes = homes or param_homes(params, names)
    losses, grads = [], []
    for r, dev in enumerate(names):
        with _annotate(dev):
            loss_r = _replica(graph, r, dev, split)
            if loss_reduction == "mean":
                weight = placeholder(f"weight@{r}", (), graph.outputs[0].spec.dtype)
                # weight 0 on every replica (a batch of no rows): the loss adds 0, not NaN
                loss_r = where(weight > 0, loss_r * weight, 0.0)
            grads.append(gradients(loss_r.node, params))
        losses.append(loss_r)
    with _annotate(names[0]):  # fixed order: deterministic sums
        total = losses[0]
        for lr in losses[1:]:
            total = total + lr
    summed = []
    for k, p in enumerate(params):
        with _annotate(homes[p.attrs["name"]]):
            g = Symbol(grads[0][k])
            for rg in grads[1:]:
                g = g + Symbol(rg[k])
        summed.append(g)
    return Graph([total] + summed)


def without_empty_replicas(graph: Graph, n_replicas: int, split: list) -> Graph:
    """`graph`, specialized to fed shapes, with every node that only replicas without rows
    compute replaced by zeros of its shape (an empty array where it has rows).

    A node belongs to replica r when it reads r's inputs (`name@r` of each split
    input, `weight@r`) and no other replica's. What zeros replace enters the
    step only through weighted sums (weight 0 there) or concatenations of rows,
    so the results do not change, and nothing divides by an empty replica's
    count. With every replica or none empty, `graph` itself.
    """
    by_name = {n.attrs["name"]: n for n in graph.inputs}
    empty = {r for r in range(n_replicas)
             if split and by_name[f"{split[0]}@{r}"].spec.shape[0] == 0}
    if not empty or len(empty) == n_replicas:
        return graph
    owner = {by_name[f"{name}@{r}"].id: r for r in range(n_replicas)
             for name in list(split) + ["weight"] if f"{name}@{r}" in by_name}
    reads = {}  # original node id -> the replicas whose split inputs it reads

    def visit(node, original):
        if original.is_leaf:
            reads[original.id] = {owner[original.id]} if original.id in owner else set()
            return node
        reads[original.id] = set().union(*(reads[i.id] for i in original.inputs))
        # a tuple-valued node is left as it is; its `get`s are cut, and it drops out
        if reads[original.id] and reads[original.id] <= empty and isinstance(node.spec, Spec):
            return const(np.zeros(node.spec.shape, node.spec.dtype)).node
        return node

    # rebuilt from the results: what only cut nodes read is gone
    return rewrite(graph, visit, originals=True)


def _replica(graph, r, device, split) -> Symbol:
    """Replica r of the graph's first output, its split inputs new placeholders `name@r`."""
    new = replica_nodes(graph, r, device, split, lambda n: placeholder(
        f"{n.attrs['name']}@{r}", n.spec.shape, n.spec.dtype).node)
    return Symbol(new[graph.outputs[0].id])


def refuse_seeded_dropout(graph: Graph, replicas: str) -> None:
    """Raise a ValueError when `graph` holds a dropout with a fixed `seed`: each replica
    would draw the whole batch's first rows' mask for its own rows, not the one the
    batch's rows get in one process, so the step would differ from it."""
    for n in graph.nodes:
        if n.op == "dropout_mask" and n.attrs.get("seed") is not None:
            raise ValueError(
                f"dropout with seed={n.attrs['seed']} (built at {n.where}) cannot be split "
                f"over {replicas}: each would draw its rows' mask from the seed's start, "
                f"not the rows' own; drop the seed (each replica then draws its own mask) "
                f"or train in one process")


def replica_nodes(graph, r, device, split, input_of) -> dict:
    """Replica r of every node of `graph` (old id -> node): a split input n becomes
    `input_of(n)` (replica r's input), op nodes are annotated with `device`."""
    def visit(n):
        if n.op == "input" and n.attrs["name"] in split:
            return input_of(n)
        if n.is_leaf:
            return n
        return n.replace(device=n.device or device)

    return rewrite_nodes(graph.nodes, visit)


class _annotate:
    """Symbols built inside are annotated with `device` (as `with kf.device(...)`)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        build.push_device(self.device)

    def __exit__(self, *exc):
        build.pop_device()
        return False


def split_sizes(n: int, work_load_list: list) -> list:
    """Rows per replica: proportional to work_load_list, summing to n exactly."""
    total = float(sum(work_load_list))
    bounds = [round(n * sum(work_load_list[:k + 1]) / total) for k in range(len(work_load_list))]
    return [b - a for a, b in zip([0] + bounds[:-1], bounds)]


def split_feed(feed: dict, split: list, n_replicas: int, work_load_list=None) -> dict:
    """The replicated graph's feed: batch inputs cut by rows, weights per replica."""
    work = work_load_list or [1] * n_replicas
    if len(work) != n_replicas:
        raise ValueError(f"work_load_list has {len(work)} entries for {n_replicas} devices")
    out = {k: v for k, v in feed.items() if k not in split}
    sizes = None
    for name in split:
        x = np.asarray(feed[name])
        if sizes is None:
            sizes = split_sizes(len(x), work)
            total = len(x)
        elif len(x) != total:
            raise ValueError(f"batch inputs differ in length: {name!r} has {len(x)} rows, "
                             f"others {total}")
        start = 0
        for r, size in enumerate(sizes):
            out[f"{name}@{r}"] = x[start:start + size]
            start += size
    for r, size in enumerate(sizes or [0] * n_replicas):
        out[f"weight@{r}"] = np.asarray(size / max(sum(sizes or [1]), 1))
    return out


class DataParallelPlan:
    """A training step replicated over `devices`; `run(feed)` splits the batch.

    `make_updates(graph) -> Graph` may add parameter updates (an optimizer
    step) to the replicated backward graph; they run on each param's device.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> x = kf.placeholder("x", (None, 3), "float64")
        >>> w = kf.param("w", value=np.ones(3))
        >>> step = DataParallelPlan(kf.Graph([kf.mean((x * w) ** 2)]), ["cpu:0"])
        >>> loss, grad = step.run({"x": np.ones((4, 3))})
        >>> float(loss), [round(float(g), 4) for g in grad]   # a mean of 12 squares
        (1.0, [0.6667, 0.6667, 0.6667])
    """

    def __init__(self, graph: Graph, devices: list, work_load_list=None, make_updates=None,
                 loss_reduction="mean", **compile_kw):
        from knetflow.scheduler.plan import Plan

        self.devices = devices
        self.split = batch_inputs(graph)
        self.work_load_list = work_load_list
        homes = param_homes(trainable_params(graph), devices)
        step = replicated_backward(graph, devices, loss_reduction, homes)
        if make_updates is not None:
            step = make_updates(step)
        if "placement" not in compile_kw:  # each param with its gradient sum (see above)
            compile_kw["placement"] = lambda node: (
                homes.get(node.attrs["name"]) if node.op == "param" else None)
        self.plan = Plan(step, devices=devices, training=True, adapt=lambda g: (
            without_empty_replicas(g, len(devices), self.split)), **compile_kw)

    def run(self, feed: dict):
        return self.plan.run(split_feed(feed, self.split, len(self.devices),
                                        self.work_load_list))

    @property
    def params(self) -> dict:
        return self.plan.params
