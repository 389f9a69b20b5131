"""One compiled plan per training step for Knet's iterators (`kf.minimize`, `kf.sgd` ...).

Unfused, a step is `kf.diff` (one plan: forward and backward) and then an
eager `kf.update` of each Param (a few NumPy calls per Param, each through
the op dispatcher). Fused, the Params' optimizer formulas, written in knetflow
ops (train/optimizers.py), are added to the traced graph: one plan run
computes the loss, the gradients and every Param's new value and optimizer
state, which are then written back (the Param's array in place, as
`kf.update` does; the state into `p.opt.state`).

The traced graph comes from the `kf.diff` cache (train/knet/trace_cache.py), so
everything said there about what is fed and what traces again holds; a step
plan is kept per traced entry and per optimizer signature (the optimizers'
types and hyperparameters, and which share a gradient-norm group).

Example:
    >>> import knetflow as kf, numpy as np
    >>> w = kf.Param(np.array([3.0]), opt=kf.optim.SGD(lr=0.25))
    >>> step(lambda: kf.sum(w * w), ())
    9.0
    >>> w.value
    array([1.5])
"""

from __future__ import annotations

import operator

import numpy as np

from knetflow.graph import trace
from knetflow.graph.build import placeholder
from knetflow.graph.capture import capture
from knetflow.graph.node import Graph
from knetflow.graph.symbol import Symbol
from knetflow.scheduler.plan import Plan
from knetflow.train.knet import trace_cache
from knetflow.train.optimizers import Optimizer
from knetflow.train.step import optimizer_updates, take_optimizers

__all__ = ["step"]


def step(f, args, params=None, optimizer=None):
    """One training step of `f(*args)` as one plan run; the loss, or None when the step
    cannot run fused (inside a trace, symbolic arguments, an optimizer that is not a
    `kf.optim` optimizer): the caller then runs `kf.diff` and `kf.update`.

    Each Param the function uses (or those in `params`) whose `.opt` is unset gets
    `optimizer.for_param(name)`, as `kf.minimize` does.
    """
    if trace.current() is not None:
        return None
    entry, cap, traced = trace_cache.find(f, args, {})
    if entry is None:
        return None
    found = entry.params(cap)
    wanted = None if params is None else {id(p) for p in take_optimizers(params, optimizer)}
    targets = [k for k, p in enumerate(found) if wanted is None or id(p) in wanted]
    take_optimizers([found[k] for k in targets], optimizer)  # as the unfused step does
    opts = [found[k].opt for k in targets]
    if not all(isinstance(o, Optimizer) for o in opts):
        return None
    plan, slots, order = _step_plan(entry, targets, opts)
    states = []
    for k, o in zip(targets, opts):
        state = o.state.get("")
        states.append(_fresh_state(o, found[k].value) if state is None else state)
    values = entry.inputs(cap.leaves, cap) + [states[k][slot] for _, k, slot in slots]
    outs = plan.run_inputs(values if order is None else [values[i] for i in order],
                           entry.on_device)
    device = plan.device if entry.on_device else None
    if entry.states:
        entry.store_states(cap, outs, device)
    if traced:
        trace_cache.remember_after(entry, cap, capture(f, args, {}))
    _write_back(outs, entry.first_grad, [found[k] for k in targets], opts, states)
    loss = outs[0] if device is None else device.get(outs[0])
    return float(loss) if np.ndim(loss) == 0 else loss


def _signature(targets, opts) -> tuple:
    """What a step plan is specialized to: the Params updated, each optimizer's type and
    hyperparameters (constants of the plan), and which share a gradient-norm group."""
    groups: dict = {}
    return (tuple(targets),) + tuple(
        (type(o), _hyper(o), groups.setdefault(id(o._group), len(groups))) for o in opts)


def _hyper(opt) -> tuple:
    """The optimizer's hyperparameter values, in its `_names` order."""
    getter = _GETTERS.get(opt._names)
    if getter is None:  # one C-level getter per set of names: a few getattr calls less
        getter = _GETTERS[opt._names] = operator.attrgetter(*opt._names)
    return getter(opt)


_GETTERS: dict = {}


def _step_plan(entry, targets, opts) -> tuple:
    """(the entry's graph with each target Param's optimizer update added, the state
    inputs as (input name, target position, slot), the order of the plan's inputs in
    the entry's inputs followed by the state (None: that order)); made once per
    signature."""
    key = _signature(targets, opts)
    found = entry.steps.get(key)
    if found is None:
        slots = [(f"opt{k}:{slot}", k, slot) for k, o in enumerate(opts)
                 for slot in o.all_slots()]
        plan = Plan(_step_graph(entry, targets, opts), devices=[entry.plan.device],
                    training=True)
        given = entry.plan.input_names + [name for name, _, _ in slots]
        position = {name: i for i, name in enumerate(given)}
        order = [position[name] for name in plan.input_names]
        found = entry.steps[key] = (plan, slots,
                                    None if order == list(range(len(given))) else order)
    return found


def _step_graph(entry, targets, opts) -> Graph:
    """outputs: the traced outputs (loss, state), each target's new value, then its new
    optimizer state slot by slot; inputs: the traced inputs and the state fed."""
    source = entry.plan.source
    first = entry.first_grad
    kept = list(source.outputs[:first])
    # the Params' inputs, in the order of their gradients (param_sources' order)
    param_inputs = [source.input(name) for name, _ in entry.sources
                    if name in entry.param_names]
    grads = [Symbol(source.outputs[first + k]) for k in targets]
    weights = [Symbol(param_inputs[k]) for k in targets]
    states, fed = [], []
    for k, (o, w) in enumerate(zip(opts, weights)):
        spec = w.node.spec
        start = o.init_state(spec.shape, spec.dtype)
        state = {slot: placeholder(f"opt{k}:{slot}", start[slot].shape, start[slot].dtype)
                 for slot in o.all_slots()}
        states.append(state)
        fed.extend(s.node for s in state.values())
    updated = optimizer_updates(opts, weights, grads, states)
    new_values = [new_w for new_w, _ in updated]
    new_states = [new_state[slot] for o, (_, new_state) in zip(opts, updated)
                  for slot in o.all_slots()]
    return Graph(kept + new_values + new_states, inputs=list(source.inputs) + fed)


def _fresh_state(opt, value) -> dict:
    return opt.init_state(value.shape, value.dtype)


def _write_back(outs, first, params, opts, states) -> None:
    """New values into the Params' arrays (in place, as kf.update) and the optimizers'
    state."""
    k = first
    for p in params:
        p.value = _kept(p.value, outs[k])
        k += 1
    for o, state in zip(opts, states):
        new = {}
        for slot in o.all_slots():
            new[slot] = _kept(state[slot], outs[k])
            k += 1
        o.state[""] = new


def _kept(old, value):
    """`old` holding `value` (written in place, so references to it see the update), or
    `value` in old's dtype where old cannot take it (read-only, another shape, a device's)."""
    if isinstance(old, np.ndarray) and old.flags.writeable and old.shape == np.shape(value):
        old[...] = value
        return old
    return value.astype(old.dtype, copy=False)
