"""What the client shows: metrics summed over workers, a progress bar per epoch.

Each replica updates its own copy of the evaluation metric on its local
batches and returns the metric's counters (the attributes its `reset()`
sets: `sum_metric`, `num_inst`, F1's `tp/fp/fn`, ...). The client adds the
counters of all replicas into its metric, so `get()` reports the metric over
the whole global batch, as single-process training would.
"""

from __future__ import annotations

import logging

__all__ = ["LOGGER", "add_counters", "counters"]

LOGGER = logging.getLogger("knetflow.distributed")


def _reset_names(metric) -> list:
    """Names of the attributes `metric.reset()` assigns: its accumulated counters."""
    names: list = []

    class Recorder(type(metric)):
        def __setattr__(self, name, value):
            names.append(name)
            object.__setattr__(self, name, value)

    probe = object.__new__(Recorder)
    probe.__dict__.update(vars(metric))
    Recorder.reset(probe)
    return list(dict.fromkeys(names))


def counters(metric) -> list:
    """The metric's counters as plain values (children of a composite in order)."""
    if metric is None:
        return []
    children = getattr(metric, "metrics", None)
    if isinstance(children, list):
        return [counters(m) for m in children]
    return {name: getattr(metric, name) for name in _reset_names(metric)}


def add_counters(metric, values) -> None:
    """Add counters (from `counters` on another copy of the metric) into `metric`."""
    if metric is None or values is None:
        return
    if isinstance(values, list):
        for child, part in zip(metric.metrics, values):
            add_counters(child, part)
        return
    for name, value in values.items():
        setattr(metric, name, getattr(metric, name) + value)


class _Counter:
    """range(steps) with a length, advanced one step at a time by the driver."""

    def __init__(self, steps):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter(range(self.steps))
