"""Tracing a Python function into a graph: the one tracer.

Every front end that turns Python code into graphs goes through
`trace_function`: `kf.diff`/`kf.grad` (train/knet/trace_cache.py) and Knet-style
losses trained on Dask (distributed/traced_loss.py). graph/trace.py holds the
context it runs in; graph/capture.py says which of the function's inputs are
fed and which are part of a cache key.
"""

from __future__ import annotations

import numpy as np

from knetflow.devices import transfers
from knetflow.graph import capture, pytree
from knetflow.graph.build import placeholder
from knetflow.graph.trace import ItemSlot, Slot, Tracer, tracing


def trace_function(f, args=(), kwargs=None, watch=(), sites=()):
    """Run `f(*args, **kwargs)` under a new Tracer: (what f returned, the tracer).

    Arrays (of any dimension) and Params in the arguments, inside lists, tuples
    and dicts too, are lifted to leaf symbols first; symbols are passed as they
    are. The tracer's `leaves` map each object the trace read to its symbol, and
    `finals` hold what the trace left in each state attribute it set (the
    attributes themselves get their values back).

    A list or dict item the function replaces (Knet's `s[1] = h` on a state list
    passed as an argument, or in a captured list among `watch`) is noted in
    `tracer.items` as (ItemSlot, new value) and the watched container gets its
    old item back, so no symbol is left in user data; callers carry the value out
    of every call. Appends and new keys are left as the function made them.

    `sites` (graph/capture.substitution_sites) say where captured arrays live:
    while f runs they hold leaf symbols, so NumPy work f does on them is traced
    (and fed again at every call) rather than computed once; then they get their
    arrays back.

    Example:
        >>> import numpy as np, knetflow as kf
        >>> out, tracer = trace_function(lambda x: kf.sum(x * 2), (np.ones(3),))
        >>> out.shape, len(tracer.leaves)
        ((), 1)
    """
    tracer = Tracer()
    pairs: list = []
    with tracing(tracer):  # state attributes get their values back when it ends
        sym_args = [lift(a, tracer, pairs) for a in args]
        sym_kwargs = {k: lift(v, tracer, pairs) for k, v in (kwargs or {}).items()}
        originals = []
        try:
            for holder, key, kind in sites:
                value = _get(holder, key, kind)
                stand_in = lift(value, tracer)
                tracer.substituted[id(stand_in)] = value
                _set(holder, key, kind, stand_in)
                originals.append((holder, key, kind, value, stand_in))
            snapshots = [(c, _items(c)) for c in watch]
            out = f(*sym_args, **sym_kwargs)
            for container, before in snapshots:
                tracer.items.extend(_replaced(container, container, before, restore=True))
        finally:
            _restore(originals, tracer)
    for original, lifted, before in pairs:
        tracer.items.extend(_replaced(original, lifted, before, restore=False))
    return out, tracer


def _get(holder, key, kind):
    if kind == "cell":
        return holder.cell_contents
    if kind == "defaults":
        return holder.__defaults__
    if kind == "attr":
        return vars(holder)[key]
    if kind == "slot":
        return getattr(holder, key)
    return holder[key]


def _set(holder, key, kind, value) -> None:
    if kind == "cell":
        holder.cell_contents = value
    elif kind == "defaults":
        holder.__defaults__ = value
    elif kind == "attr":
        vars(holder)[key] = value
    elif kind == "slot":
        setattr(holder, key, value)
    else:
        holder[key] = value


def _restore(originals, tracer) -> None:
    """Give captured arrays back to their holders after a trace.

    An attribute the function set meanwhile is carried out of each call (a state
    attribute's slot does that itself); a rebound closure cell or global is not.
    """
    for holder, key, kind, value, stand_in in reversed(originals):
        now = _get(holder, key, kind)
        if now is not stand_in and kind in ("attr", "slot"):
            if (id(holder), key) in tracer.slots:
                continue  # a state attribute: its slot restores it when the trace ends
            tracer.items.append((Slot(holder, key, f"{type(holder).__name__}.{key}"), now))
        _set(holder, key, kind, value)


def lift(x, tracer, pairs=None):
    """An argument for tracing: arrays and Params (inside containers too) become leaves.

    Lists and dicts are copied, and (original, copy, copy's items) go to `pairs`.
    """
    t = type(x)
    if t is list or t is dict:
        keys = range(len(x)) if t is list else list(x)
        lifted = [lift(x[k], tracer, pairs) for k in keys]
        copy = lifted if t is list else dict(zip(keys, lifted))
        if pairs is not None:
            pairs.append((x, copy, _items(copy)))
        return copy
    if pytree.is_container(x):  # tuples and namedtuples: immutable
        leaves, tree = pytree.flatten(x)
        return tree.rebuild([lift(v, tracer, pairs) for v in leaves])
    if capture.is_param(x):
        return x.__knetflow_trace__(tracer)
    if (t is np.ndarray and x.dtype.kind in "biuf") or transfers.device_of(x) is not None:
        return tracer.leaf(x, lambda: placeholder(f"t{len(tracer.leaves)}", x.shape, x.dtype))
    return x


def _items(container) -> dict:
    return dict(enumerate(container)) if type(container) is list else dict(container)


def _replaced(original, now, before, restore) -> list:
    """(ItemSlot of original, new value) for each item of `before` that `now` replaced."""
    found = []
    for key, old in before.items():
        try:
            new = now[key]
        except (IndexError, KeyError):
            continue  # removed: nothing to carry
        if new is not old:
            label = f"{type(original).__name__}[{key!r}]"
            found.append((ItemSlot(original, key, label), new))
            if restore:
                now[key] = old
    return found
