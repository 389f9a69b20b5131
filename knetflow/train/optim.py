"""`kf.optim`: the optimizers and the training step's optimizer wiring, by one name.

A namespace only. The optimizers (`SGD, Momentum, Nesterov, Adagrad, Rmsprop,
Adadelta, Adam`), `MultiOptimizer`, the table `OPTIMIZERS`, `create` (an
optimizer by name, MXNet's `optimizer.create`) and `optimizer_from_state` (for
FeedForward's checkpoints) are `knetflow.train.optimizers`. How they are wired
to params, eagerly or as graph updates, is `knetflow.train.step`, whose public
pieces show here too: `step_graph` makes the update part of a training plan
through `Graph.updates` (optimizer state arrays become params of the plan named
`"<param>:<slot>"`, e.g. `"w:velocity"`), so one training step is one plan run.
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
    create,
    optimizer_from_state,
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
    "optimizer_from_state",
    "resolve",
    "state_from_plan",
    "step_graph",
]
