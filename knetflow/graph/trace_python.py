"""Tracing a Python function into a graph: the one tracer.

Every front end that turns Python code into graphs goes through
`trace_function`: `kf.diff`/`kf.grad` (train/trace_cache.py) and Knet-style
losses trained on Dask (distributed/knet.py). graph/trace.py holds the
context it runs in; graph/capture.py says which of the function's inputs are
fed and which are part of a cache key.
"""

from __future__ import annotations

import numpy as np

from knetflow.devices import transfers
from knetflow.graph import capture, pytree
from knetflow.graph.build import placeholder
from knetflow.graph.trace import Tracer, tracing


def trace_function(f, args=(), kwargs=None):
    """Run `f(*args, **kwargs)` under a new Tracer: (what f returned, the tracer).

    Arrays (of any dimension) and Params in the arguments, inside lists, tuples
    and dicts too, are lifted to leaf symbols first; symbols are passed as they
    are. The tracer's `leaves` map each object the trace read to its symbol, and
    `finals` hold what the trace left in each state attribute it set (the
    attributes themselves get their values back).

    Example:
        >>> import numpy as np, knetflow as kf
        >>> out, tracer = trace_function(lambda x: kf.sum(x * 2), (np.ones(3),))
        >>> out.shape, len(tracer.leaves)
        ((), 1)
    """
    tracer = Tracer()
    with tracing(tracer):  # state attributes get their values back when it ends
        sym_args = [lift(a, tracer) for a in args]
        sym_kwargs = {k: lift(v, tracer) for k, v in (kwargs or {}).items()}
        out = f(*sym_args, **sym_kwargs)
    return out, tracer


def lift(x, tracer):
    """An argument for tracing: arrays and Params (inside containers too) become leaves."""
    if pytree.is_container(x):
        leaves, tree = pytree.flatten(x)
        return tree.rebuild([lift(v, tracer) for v in leaves])
    if capture.is_param(x):
        return x.__knetflow_trace__(tracer)
    if (type(x) is np.ndarray and x.dtype.kind in "biuf") or transfers.device_of(x) is not None:
        return tracer.leaf(x, lambda: placeholder(f"t{len(tracer.leaves)}", x.shape, x.dtype))
    return x
