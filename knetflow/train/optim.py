"""`kf.optim`: optimizers, MultiOptimizer, and compiled training steps.

The optimizers (`SGD, Momentum, Nesterov, Adagrad, Rmsprop, Adadelta, Adam`,
see `knetflow.train.optimizers`) write their formulas in knetflow ops, so
`step_graph` can make the update part of a training plan through
`Graph.updates`: optimizer state arrays become params of the plan named
`"<param>:<slot>"` (e.g. `"w:velocity"`), and one training step is one plan
run. `MultiOptimizer` routes parameters to optimizers by name or kind.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from knetflow.graph.autodiff import backward
from knetflow.graph.build import param as _param
from knetflow.graph.node import Graph
from knetflow.graph.symbol import Symbol
from knetflow.ops.binary import maximum
from knetflow.ops.elementwise import sqrt
from knetflow.ops.reduce import sum as _sum
from knetflow.train.optimizers import (
    OPTIMIZERS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Momentum,
    Nesterov,
    Optimizer,
    Rmsprop,
    clip_norm,
    clip_value,
)

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "Momentum",
    "MultiOptimizer",
    "Nesterov",
    "Optimizer",
    "Rmsprop",
    "clip_norm",
    "clip_value",
    "create",
    "norm_scales",
    "apply_updates",
    "resolve",
    "state_from_plan",
    "step_graph",
]


# MXNet's optimizer keyword names -> ours
_MXNET_NAMES = {"learning_rate": "lr", "wd": "wdecay", "clip_gradient": "gradient_clip_value",
                "epsilon": "eps"}


def create(name, **kwargs) -> Optimizer:
    """An optimizer by name: 'sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adadelta',
    'adam' (MXNet `optimizer.create`); MXNet keywords (learning_rate, wd, clip_gradient,
    epsilon, momentum for 'sgd') are accepted.

    Example: `kf.optim.create("sgd", learning_rate=0.1, momentum=0.9)` -> a Momentum.
    """
    if isinstance(name, (Optimizer, MultiOptimizer)):
        return name
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    kwargs = {_MXNET_NAMES.get(k, k): v for k, v in kwargs.items()}
    if key == "sgd" and kwargs.get("momentum"):
        key, kwargs["gamma"] = "momentum", kwargs.pop("momentum")
    kwargs.pop("momentum", None)
    return OPTIMIZERS[key](**kwargs)


class MultiOptimizer:
    """Different optimizers for different parameters (neon `MultiOptimizer`).

    Keys are `'default'`, a layer kind (e.g. `'bias'`, `'FullyConnected'`) or a
    parameter-name pattern (`'fc2'` matches `fc2_weight` and `fc2_bias`; glob
    patterns such as `'fc*_weight'` work too). A name match beats a kind match,
    which beats `'default'`; among name patterns the exact name wins, then the
    first match in mapping order. A parameter's kinds are its `kind` (given by
    layer symbols or `kinds=`) and its name's last `_` part (`fc1_bias` -> `bias`).

    Example:
        >>> import knetflow as kf
        >>> opt = kf.optim.MultiOptimizer({"default": kf.optim.SGD(),
        ...                                "bias": kf.optim.Adam(), "fc2": kf.optim.Momentum()})
        >>> [type(opt.resolve(n)).__name__ for n in ("fc1_weight", "fc1_bias", "fc2_bias")]
        ['SGD', 'Adam', 'Momentum']
    """

    def __init__(self, mapping: dict):
        for key, opt in mapping.items():
            if not isinstance(opt, Optimizer):
                raise TypeError(f"MultiOptimizer: {key!r} maps to {type(opt).__name__}, "
                                "not an optimizer")
        self.mapping = dict(mapping)

    def resolve(self, name, kind=None) -> Optimizer:
        """The optimizer for the parameter `name` (of layer kind `kind`)."""
        name = "" if name is None else str(name)
        if name in self.mapping and name != "default":
            return self.mapping[name]
        for key, opt in self.mapping.items():
            if key != "default" and name and (fnmatch.fnmatchcase(name, key)
                                              or name.startswith(key + "_")):
                return opt
        kinds = {k.lower() for k in _kinds(name, kind)}
        for key, opt in self.mapping.items():
            if key.lower() in kinds:
                return opt
        if "default" in self.mapping:
            return self.mapping["default"]
        raise ValueError(f"MultiOptimizer has no optimizer for param {name!r} "
                         f"(kinds {sorted(kinds)}); keys: {list(self.mapping)}; "
                         "add a 'default'")

    def for_param(self, name=None, kind=None) -> Optimizer:
        """A copy of the optimizer for this parameter (for `Param.opt`)."""
        return self.resolve(name, kind).copy()

    def state_dict(self) -> dict:
        """Every mapped optimizer's state_dict, by key."""
        return {"type": "MultiOptimizer",
                "optimizers": {k: o.state_dict() for k, o in self.mapping.items()}}

    def load_state_dict(self, data: dict) -> None:
        """Restore what `state_dict()` returned."""
        missing = set(self.mapping) ^ set(data.get("optimizers", {}))
        if missing:
            raise ValueError(f"MultiOptimizer keys {sorted(self.mapping)} do not match the "
                             f"saved keys {sorted(data.get('optimizers', {}))}")
        for key, opt in self.mapping.items():
            opt.load_state_dict(data["optimizers"][key])

    def optimizers(self) -> list:
        """The distinct optimizers, in mapping order."""
        out: list = []
        for opt in self.mapping.values():
            if all(opt is not o for o in out):
                out.append(opt)
        return out

    def __repr__(self) -> str:
        return f"MultiOptimizer({self.mapping!r})"


def _kinds(name, kind) -> list:
    out = [kind] if kind else []
    if "_" in name:
        out.append(name.rsplit("_", 1)[1])
    return out


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
    for k, (opt, g) in enumerate(items):
        if opt.gradient_clip_norm is not None:
            groups.setdefault(id(opt._group), []).append(k)
    scales: list = [None] * len(items)
    for members in groups.values():
        total = None
        for k in members:
            opt, g = items[k]
            g = g * opt.rescale_grad if opt.rescale_grad != 1.0 else g
            sq = _sum(g * g)
            total = sq if total is None else total + sq
        norm = sqrt(total)
        for k in members:
            limit = items[k][0].gradient_clip_norm
            scales[k] = limit / maximum(norm, limit)
    return scales


# ---- compiled training ----


def step_graph(graph, optimizers=None, wrt=None, kinds=None) -> Graph:
    """A Graph whose run is one training step: same outputs, and updates that apply
    the optimizer to every trainable param (its first output is the loss).

    Trainable params: `wrt` (names or nodes), by default every float param the
    graph does not already update. Optimizer state becomes params named
    `"<param>:<slot>"`, starting from the optimizer's state for that param
    when it has one (so training resumes), else zeros. `optimizers` is one
    Optimizer (state kept per param name), a MultiOptimizer or a dict of them;
    `kinds` maps param names to layer kinds for MultiOptimizer.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = kf.param("w", value=np.array([1.0, -2.0]))
        >>> plan = kf.compile(kf.optim.step_graph(kf.Graph([kf.sum(w * w)]), kf.optim.SGD()))
        >>> plan.run({})[0], plan.params["w"]
        (array(5., dtype=float32), array([ 0.8, -1.6], dtype=float32))
    """
    optimizers = SGD() if optimizers is None else optimizers
    if not isinstance(graph, Graph):
        graph = Graph(graph)
    targets = _trainable(graph, wrt)
    derived = backward(graph, wrt=targets)
    grads = derived.outputs[len(graph.outputs):]
    updates = dict(graph.updates)
    updates.update(apply_updates(optimizers, targets, [Symbol(g) for g in grads], kinds))
    return Graph(list(graph.outputs), inputs=graph.inputs, updates=updates)


def apply_updates(optimizers, params, grads, kinds=None) -> dict:
    """{name: new value} of each param (node) and its optimizer state, given its gradient
    (a Symbol): the one wiring every compiled training step uses.

    Optimizer state becomes params `"<name>:<slot>"` starting from the optimizer's state
    for that param (so training resumes), else zeros; gradient-norm clipping groups and
    MultiOptimizer resolution (name, then `kinds` or the param's `kind` attribute) apply.
    """
    kinds = kinds or {}
    opts = [resolve(optimizers, p.attrs["name"],
                    kinds.get(p.attrs["name"], p.attrs.get("kind"))) for p in params]
    scales = norm_scales(list(zip(opts, grads)))
    updates = {}
    for p, g, opt, scale in zip(params, grads, opts, scales):
        name, spec = p.attrs["name"], p.spec
        start = opt.state.get(name) or opt.init_state(spec.shape, spec.dtype)
        state = {slot: _param(f"{name}:{slot}", value=np.asarray(start[slot]), dtype=spec.dtype)
                 for slot in opt.all_slots()}
        new_w, new_state = opt.apply(Symbol(p), g, state, scale)
        updates[name] = new_w
        updates.update((f"{name}:{slot}", value) for slot, value in new_state.items())
    return updates


def _trainable(graph, wrt) -> list:
    if wrt is not None:
        wanted = [w if isinstance(w, str) else _node_name(w) for w in wrt]
        return [graph.param(name) for name in wanted]
    return [p for p in graph.params
            if p.attrs["name"] not in graph.updates and np.dtype(p.spec.dtype).kind == "f"]


def _node_name(x) -> str:
    node = x.node if isinstance(x, Symbol) else x
    return node.attrs["name"]


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
            opt.state.setdefault(name, {})[slot] = np.array(value)


def _plan_kind(plan, name):
    try:
        return plan.source.param(name).attrs.get("kind")
    except (AttributeError, KeyError):
        return None
