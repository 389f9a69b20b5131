"""The compiled pieces of a replica: a gradient plan and an update plan.

A replica computes its local gradients with one plan (the loss and its
gradients, `knetflow.train.step.gradient_graph`), the gradients of every
replica are summed (reduce.py), and the same update is applied everywhere
with a second plan, `knetflow.train.step.update_graph`: the optimizer's
formulas applied to gradients fed as inputs, wired as every compiled step
wires them (the same trainable params, state names such as `"w:velocity"`,
clipping groups and resumption from saved state as single-process training).

Gradients travel in one flat buffer: each trainable param's gradient times
the replica's rows (for a mean loss), then the running values of auxiliary
params (those the graph updates itself, e.g. batchnorm moments) times rows,
then the row count. After the sum, dividing by the total count gives the
whole batch's mean gradient, whatever the split, empty replicas included.
Replicas sharing memory (shm.py) skip the separate sum: the update plan
takes every replica's buffer and adds them, in rank order, inside its fused
update kernel (`set_parts`).
"""

from __future__ import annotations

import numpy as np

from knetflow.graph.node import Graph
from knetflow.scheduler.plan import Plan
from knetflow.train import step as _step
from knetflow.train.optimizers import SGD

__all__ = ["ReplicaStep"]


class _Layout:
    """Where each named array lies in a flat buffer."""

    def __init__(self, shapes: dict):
        self.slices, start = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape, dtype=np.int64))
            self.slices[name] = (slice(start, start + size), tuple(shape))
            start += size
        self.size = start


class ReplicaStep:
    """Gradient and update plans of one replica, and the flat buffers between them.

    `graph`'s first output is the loss (mean over the batch when
    `loss_reduction="mean"`, else a sum); `inputs` names the graph inputs fed
    from the data, in the order of the arrays given to `gradients`.
    """

    def __init__(self, graph: Graph, optimizer=None, inputs=("x", "y"), loss_reduction="mean",
                 pred_output=None, update=True):
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        self.graph, self.inputs = graph, [i for i in inputs if i is not None]
        self.mean = loss_reduction == "mean"
        self.pred_output = pred_output
        self.names = _step.trainable_names(graph)
        self.aux = list(graph.updates)
        self.grad_plan = Plan(_step.gradient_graph(graph, wrt=self.names), training=True)
        params = self.grad_plan.params
        self.dtype = np.result_type(*[params[n].dtype for n in self.names + self.aux])
        self.layout = _Layout({n: params[n].shape for n in self.names + self.aux})
        self.optimizer, self.parts, self.update_plan = optimizer or SGD(), 1, None
        if update:
            self.update_plan = Plan(_step.update_graph(graph, self.optimizer, self.names))
            self.update_plan.set_params({n: params[n] for n in self.names})
        self._forward = None

    def set_parts(self, parts: int) -> None:
        """Take gradients as `parts` buffers summed inside the update (see `apply`);
        the params and optimizer state carry over."""
        if self.update_plan is None or parts == self.parts:
            return
        plan = Plan(_step.update_graph(self.graph, self.optimizer, self.names, parts))
        plan.set_params(self.update_plan.params)
        self.update_plan, self.parts = plan, parts

    # -- one local step --
    def gradients(self, *arrays) -> tuple:
        """(loss, prediction or None, gradients by name) of one local batch."""
        outs = self.grad_plan.run(dict(zip(self.inputs, arrays)))
        n_out = len(self.graph.outputs)
        pred = outs[self.pred_output] if self.pred_output is not None else None
        return float(outs[0]), pred, dict(zip(self.names, outs[n_out:]))

    def new_buffer(self) -> np.ndarray:
        """A zeroed flat buffer: gradients, auxiliary values, then the row count."""
        return np.zeros(self.layout.size + 1, self.dtype)

    def accumulate(self, buf: np.ndarray, grads: dict, rows: int, fresh=False) -> None:
        """Add one local batch's gradients (weighted by its rows) and its aux values;
        `fresh` overwrites what buf holds instead (saves zeroing it)."""
        weight = rows if self.mean else 1
        params = self.grad_plan.params
        parts = [(name, np.ravel(g), weight) for name, g in grads.items()]
        parts += [(name, np.ravel(params[name]), rows) for name in self.aux]
        for name, flat, w in parts:
            view = buf[self.layout.slices[name][0]]
            if fresh:
                np.multiply(flat, w, out=view, casting="unsafe")
            else:
                view += flat * w if w != 1 else flat
        buf[-1] = rows if fresh else buf[-1] + rows

    def apply(self, *bufs: np.ndarray) -> None:
        """Apply the update of summed buffers (every replica holds the same sums): one
        buffer, or `parts` buffers whose sum, in the order given, is the update's
        gradient. The buffers are only read.
        """
        if len(bufs) != self.parts:
            raise ValueError(f"apply got {len(bufs)} buffers for an update of {self.parts}")
        total = float(_ordered_sum([b[-1] for b in bufs]))
        if total == 0:
            return
        feed = {"grad:scale": np.asarray(1.0 / total if self.mean else 1.0, self.dtype)}
        for name in self.names:
            where, shape = self.layout.slices[name]
            for k, buf in enumerate(bufs):
                feed[_step.grad_name(name, k)] = buf[where].reshape(shape)
        self.update_plan.run(feed)
        new = {n: self.update_plan.params[n] for n in self.names}
        for name in self.aux:
            where, shape = self.layout.slices[name]
            new[name] = (_ordered_sum([b[where] for b in bufs]) / total).reshape(shape)
        self.grad_plan.set_params(new)

    # -- parameters and state --
    def params(self) -> dict:
        return dict(self.grad_plan.params)

    def set_params(self, values: dict) -> None:
        self.grad_plan.set_params(values)
        if self.update_plan is not None:
            self.update_plan.set_params({n: v for n, v in values.items() if n in self.names})

    def flat_params(self) -> np.ndarray:
        """Trainable and aux params in one flat buffer (the layout of gradients)."""
        out = np.empty(self.layout.size, self.dtype)
        params = self.grad_plan.params
        for name, (where, _) in self.layout.slices.items():
            out[where] = np.ravel(params[name])
        return out

    def set_flat_params(self, flat: np.ndarray) -> None:
        self.set_params({name: flat[where].reshape(shape)
                         for name, (where, shape) in self.layout.slices.items()})

    def state(self) -> dict:
        """Params and optimizer slots (`"w:velocity"`), as arrays by name."""
        out = self.params()
        if self.update_plan is not None:
            out.update(self.update_plan.params)
        return {k: np.array(v) for k, v in out.items()}

    def load_state(self, state: dict) -> None:
        self.grad_plan.set_params({k: v for k, v in state.items()
                                   if k in self.grad_plan.param_names})
        if self.update_plan is not None:
            self.update_plan.set_params({k: v for k, v in state.items()
                                         if k in self.update_plan.param_names})

    def optimizer_state(self, optimizer) -> object:
        """`optimizer.state_dict()` after copying the slots this replica holds into it."""
        _step.state_from_plan(optimizer, self.update_plan)
        return optimizer.state_dict()

    # -- evaluation --
    def evaluate(self, *arrays) -> tuple:
        """(loss, prediction or None) of a batch with the current params, no training."""
        if self._forward is None:
            self._forward = Plan(Graph(list(self.graph.outputs), inputs=self.graph.inputs))
        names = set(self._forward.param_names)
        self._forward.set_params({k: v for k, v in self.params().items() if k in names})
        outs = self._forward.run(dict(zip(self.inputs, arrays)))
        pred = outs[self.pred_output] if self.pred_output is not None else None
        return float(outs[0]), pred


def _ordered_sum(parts: list):
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
