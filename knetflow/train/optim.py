"""`kf.optim`: optimizers, MultiOptimizer, and compiled training steps.

The optimizers (`SGD, Momentum, Nesterov, Adagrad, Rmsprop, Adadelta, Adam`)
and `MultiOptimizer` are defined in `knetflow.train.optimizers`; how they are
wired to params, eagerly or as graph updates, in `knetflow.train.step`, whose
public pieces this namespace shows: `step_graph` makes the update part of a
training plan through `Graph.updates` (optimizer state arrays become params of
the plan named `"<param>:<slot>"`, e.g. `"w:velocity"`), so one training step
is one plan run. Here too: `create`, an optimizer by name (MXNet's
`optimizer.create`), and, for FeedForward's checkpoints,
`optimizer_from_state`.
"""

from __future__ import annotations

from knetflow.train.optimizers import (
    OPTIMIZERS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Momentum,
    MultiOptimizer,
    Nesterov,
    Optimizer,
    Rmsprop,
    clip_norm,
    clip_value,
)
from knetflow.train.step import apply_updates, norm_scales, resolve, state_from_plan, step_graph

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
    "apply_updates",
    "clip_norm",
    "clip_value",
    "create",
    "norm_scales",
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


def optimizer_from_state(state: dict):
    """A new optimizer of the type and hyperparameters a `state_dict()` holds, with its state
    (a MultiOptimizer's too)."""
    if state.get("type") == "MultiOptimizer":
        return MultiOptimizer({k: optimizer_from_state(v)
                               for k, v in state["optimizers"].items()})
    classes = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    if state.get("type") not in classes:
        raise ValueError(f"saved optimizer state of unknown type {state.get('type')!r}; "
                         f"known: {sorted(classes)}")
    opt = classes[state["type"]]()
    opt.load_state_dict(state)
    return opt
