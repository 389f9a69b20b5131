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
from knetflow.train import autograd


@contextlib.contextmanager
def one_sim_device():
    """sim:0 while the block runs."""
    kf.set_sim_devices(1)
    try:
        yield "sim:0"
    finally:
        kf.set_sim_devices(0)


def trace_on(device, f, *args, **kwargs):
    """Trace f(*args) as `kf.diff` would, and make its cached plan run on `device`.

    Returns the cache entry; later `kf.diff(f, *args)` calls of the same
    signature and state kinds run its plan.
    """
    entry = autograd._entry(f, args, kwargs)
    entry.plan = Plan(entry.plan.source, devices=[device], training=True)
    return entry


def feed_of(entry, *args) -> dict:
    """The feed `kf.diff(f, *args)` gives the entry's plan now."""
    return {name: autograd._fed_value(src, args) for name, src in entry.sources}
