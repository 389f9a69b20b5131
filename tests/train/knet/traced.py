"""Test helpers: run the traced plans of `kf.diff` on a strict simulated device.

`kf.diff` runs where its arrays live (host arrays: cpu:0); these helpers
trace a call on host arrays and recompile the cached plan for another device,
so the state written back after each call is shown to come from the plan's
outputs (fetched with `device.get`), never from arrays updated in place on the
host.
"""

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


class TraceLog(list):
    """A list for a traced function to log its traces in.

    The trace cache walks plain lists a function captures (their contents are part of
    its key); a subclass is an object whose attributes, not items, are walked, so a log
    that grows at each trace does not make the next call a new signature.
    """


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
