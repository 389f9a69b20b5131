"""Test helpers: run the traced plans of `kf.diff` on a strict simulated device.

`kf.diff` runs where its arrays live (host arrays: cpu:0); these helpers
trace a call on host arrays and recompile the cached plan for another device,
so the state written back after each call is shown to come from the plan's
outputs (fetched with `device.get`), never from arrays updated in place on the
host.
"""

import array
import contextlib

import knetflow as kf
from knetflow.scheduler.plan import Plan
from knetflow.graph.capture import capture
from knetflow.train.knet import trace_cache


@contextlib.contextmanager
def one_sim_device():
    """sim:0 while the block runs."""
    kf.set_sim_devices(1)
    try:
        yield "sim:0"
    finally:
        kf.set_sim_devices(0)


class TraceLog(array.array):
    """A log for a traced function to append to at each trace (`len` counts them).

    The trace cache walks the lists (of any class), tuples, dicts and sets a function
    captures, and their contents are part of its key, so a list that grows at each
    trace would make the next call a new signature. An `array.array` of a class with
    no attributes (no `__dict__`, no slots) is keyed by identity: its items are not read.
    """

    __slots__ = ()

    def __new__(cls):
        return super().__new__(cls, "b")


def counting(fn):
    """fn wrapped to count how often it runs (that is, how often it is traced).

    The count lives in an attribute of the wrapper, which the trace cache does not
    walk: a list captured by the closure would be part of the cache key, and growing
    it at each trace would make every call a new signature.
    """

    def f(*args, **kwargs):
        f.calls.append(1)
        return fn(*args, **kwargs)

    f.calls = []
    return f, f.calls


def trace_on(device, f, *args, **kwargs):
    """Trace f(*args) as `kf.diff` would, and make its cached plan run on `device`.

    Returns the cache entry; later `kf.diff(f, *args)` calls of the same
    signature and state kinds run its plan.
    """
    cap = capture(f, args, kwargs)
    entry, _ = trace_cache.lookup(f, args, kwargs, cap)
    entry.plan = Plan(entry.plan.source, devices=[device], training=True)
    # as kf.diff does after a trace: a function that changes what it captures (the test's
    # list of traces) finds this entry at its next call
    trace_cache.remember_after(entry, cap, capture(f, args, kwargs))
    return entry


def feed_of(entry, f, *args) -> dict:
    """The feed `kf.diff(f, *args)` gives the entry's plan now."""
    cap = capture(f, args, {})
    return dict(zip(entry.plan.input_names, entry.inputs(cap.leaves, cap)))
