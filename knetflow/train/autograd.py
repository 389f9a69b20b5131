"""Knet-style automatic differentiation by tracing: Param, diff, grad, gradloss.

`kf.diff(f, *args)` traces `f` into a Graph once per signature, derives the
backward graph with `kf.backward`, compiles it (training mode: dropout on) and
runs the cached plan. There is one engine: no separate eager tape.

What is fed at each call, never frozen: arrays and Params passed as arguments,
Params and arrays the function reaches (captured or global), read through their
current `.value`. A function is traced again when its arguments' shapes or
dtypes, the contents of its closure, or the global names it reads change.

State of Python objects (an RNN's `h`/`c`, batchnorm's running moments; see
graph/state.py) flows through the plan as data, so it works on any device: the
state the function reads is fed from the object's attribute at each call, the
state it sets comes back as extra outputs of the plan, and after every call,
traced or cached, those values are stored back into the objects. A call where
a state attribute holds another kind of value than when traced (None, 0, an
array, another shape) traces again; a few traces are kept per signature.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from knetflow.devices.base import is_device_array
from knetflow.errors import ShapeError, TracingError
from knetflow.graph import state, trace
from knetflow.graph.autodiff import backward
from knetflow.graph.build import placeholder
from knetflow.graph.node import Graph
from knetflow.graph.symbol import Operators, Symbol
from knetflow.scheduler.plan import Plan

_CACHE_SIZE = 256
_VARIANTS = 4  # traces kept per call signature, e.g. r.h = 0 at the first call, an array later
_cache: OrderedDict = OrderedDict()


class Param(Operators):
    """A value to differentiate with respect to (Knet `Param`), with its optimizer in `.opt`.

    Example:
        >>> import knetflow as kf
        >>> x = kf.Param([1., 2., 3.])
        >>> kf.grad(kf.diff(lambda: kf.sum(x * x)), x)
        array([2., 4., 6.])
    """

    __slots__ = ("value", "opt", "name")
    __hash__ = object.__hash__
    __array_priority__ = 1000

    def __init__(self, value, opt=None, name=None):
        if not is_device_array(value):  # a GPU's (or sim device's) array stays there
            value = np.asarray(value)
        if value.dtype.kind in "iub":
            value = value.astype("float64")
        self.value = value
        self.opt = opt
        self.name = name

    def __knetflow_trace__(self, tracer):
        return tracer.leaf(self, lambda: placeholder(f"t{len(tracer.leaves)}", self.value.shape,
                                                     self.value.dtype))

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        return self.value.size

    def __array__(self, dtype=None, copy=None):
        return self.value if dtype is None else self.value.astype(dtype)

    def __len__(self):
        return len(self.value)

    def __repr__(self) -> str:
        return f"Param({self.value!r})"


class DiffResult:
    """What `kf.diff` returns: the value and the gradient of each Param (Knet's Tape)."""

    def __init__(self, value, grads: dict, params: list):
        self.value = value
        self._grads = grads
        self.params = params

    def __repr__(self) -> str:
        return f"DiffResult(value={self.value!r}, {len(self.params)} params)"


def diff(f, *args, **kwargs) -> DiffResult:
    """Run `f(*args)` (a scalar) and its gradient w.r.t. every Param it uses (Knet `@diff`).

    State the function sets (an RNN's `r.h`/`r.c`, batchnorm's running moments)
    holds its new values after the call, whether `f` was traced or a cached plan ran.

    The plan runs where the arrays live: Params and arguments on a GPU (CuPy
    arrays) or a sim device run there, and their gradients stay there, as Knet's
    KnetArrays do; `kf.update` then updates them in place on that device. Arrays
    on two devices at once are refused.
    """
    entry = _entry(f, args, kwargs)
    feed = {name: _fed_value(src, args) for name, src in entry.sources}
    device = entry.plan.device
    on_device = device.kind != "cpu"  # gradients stay where their Params live (KnetArray)
    outs = entry.plan.run(feed, keep_on_device=on_device)
    entry.store_states(outs, device if on_device else None)
    params = entry.params(args)
    grads = {id(p): g for p, g in zip(params, outs[entry.first_grad:])}
    loss = device.get(outs[0]) if on_device else outs[0]
    return DiffResult(_scalar(loss), grads, params)


def grad(f_or_result, param=None, argnum=0):
    """`grad(result, param)`: the gradient in a diff result (None if unused);
    `grad(f, argnum=0)`: a function returning df/d(args[argnum]).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.grad(lambda x: kf.sum(x * x))(np.array([1., 2., 3.]))
        array([2., 4., 6.])
    """
    if isinstance(f_or_result, DiffResult):
        return f_or_result._grads.get(id(param))
    if param is not None:
        raise TypeError("grad(f, argnum=k): give argnum by keyword")
    f = f_or_result

    def gradfun(*args, **kwargs):
        return gradloss(f, argnum)(*args, **kwargs)[0]

    return gradfun


def gradloss(f, argnum=0):
    """A function returning (df/d(args[argnum]), f(args)) (Knet `gradloss`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.gradloss(lambda x: kf.sum(x * x))(np.array([1., 2., 3.]))
        (array([2., 4., 6.]), 14.0)
    """

    def gradlossfun(*args, **kwargs):
        args = list(args)
        target = args[argnum] if isinstance(args[argnum], Param) else Param(args[argnum])
        args[argnum] = target
        result = diff(f, *args, **kwargs)
        g = grad(result, target)
        return (np.zeros_like(target.value) if g is None else g), result.value

    return gradlossfun


def value(x):
    """The plain value of a Param or a diff result; anything else as it is (Knet `value`)."""
    if isinstance(x, (Param, DiffResult)):
        return x.value
    return x


def params(obj) -> list:
    """Every Param found by a recursive search of obj (Knet `params`)."""
    found, seen = [], set()

    def walk(x):
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, Param):
            found.append(x)
        elif isinstance(x, DiffResult):
            for p in x.params:
                walk(p)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple, set)):
            for v in x:
                walk(v)
        elif hasattr(x, "__dict__") and not isinstance(x, type):
            for v in vars(x).values():
                walk(v)

    walk(obj)
    return found


# ---- tracing and the per-signature cache ----


class _Entry:
    """A traced function: its plan, where each graph input's value comes from, its state."""

    def __init__(self, plan, sources, param_sources, states, guards):
        self.plan = plan
        # [(input name, ("arg", i) | ("obj", obj) | ("state", slot))]
        self.sources = sources
        self.param_sources = param_sources  # sources of the differentiated Params, in order
        self.states = states    # [(slot, ("out", k) | ("value", v))]: what a call leaves in it
        self.guards = guards    # [(slot, kind)]: the state values the trace read, by kind
        self.first_grad = 1 + sum(how == "out" for _, (how, _) in states)
        self.keep = None        # objects whose ids are in the cache key
        specs = [plan.source.input(name).spec for name, _ in sources]
        # (shape, dtype) pairs, with NumPy dtype objects: comparing them is cheap
        self.specs = [(spec.shape, np.dtype(spec.dtype)) for spec in specs]

    def params(self, args):
        return [args[s[1]] if s[0] == "arg" else s[1] for s in self.param_sources]

    def fits(self, args) -> bool:
        """Whether state attributes hold the kinds of value traced, and every value fed
        still fits its traced shape and float dtype.

        Captured Params and arrays are keyed by identity, so a new `.value` of another
        shape or float precision is only seen here; it needs a new trace. (Other dtypes
        are cast to the traced one, as before: an int value of a float Param stays float.)
        """
        for slot, token in self.guards:
            if state.kind(slot.value()) != token:
                return False
        device = self.plan.device
        for (_, src), (shape, want) in zip(self.sources, self.specs):
            value = _fed_value(src, args)
            dtype = getattr(value, "dtype", None)
            if dtype is None:
                if np.shape(value) != shape:
                    return False
            elif value.shape != shape or (dtype != want and dtype.kind == "f"):
                return False
            elif is_device_array(value) and _device_of(value) is not device:
                return False  # an array on another device than the plan's: trace there
        return True

    def store_states(self, outs, device=None) -> None:
        """Write what this call left in each state attribute back into its object.

        With `device` (outputs left there), a state that held a host array gets one back.
        """
        for slot, (how, v) in self.states:
            value = outs[v] if how == "out" else v
            if device is not None and how == "out" and isinstance(slot.value(), np.ndarray):
                value = device.get(value)
            (slot.store or setattr)(slot.owner, slot.attr, value)


def _fed_value(src, args):
    where, obj = src
    if where == "arg":
        obj = args[obj]
    elif where == "state":
        obj = obj.value()
    return obj.value if isinstance(obj, Param) else obj


def _entry(f, args, kwargs) -> _Entry:
    key, keep = _key(f, args, kwargs)
    entries = _cache.get(key, [])
    for entry in entries:
        if entry.fits(args):
            _cache.move_to_end(key)
            return entry
    entry = _trace(f, args, kwargs)
    entry.keep = keep
    _cache[key] = [entry] + entries[:_VARIANTS - 1]
    _cache.move_to_end(key)
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return entry


def _trace(f, args, kwargs) -> _Entry:
    tracer = trace.Tracer()
    with trace.tracing(tracer):  # state attributes get their values back when it ends
        sym_args = [_lift_arg(a, tracer) for a in args]
        out = f(*sym_args, **kwargs)
    if not isinstance(out, Symbol):
        raise TracingError(f"{_name(f)} returned {type(out).__name__}, not a value computed "
                           "from its Params; nothing to differentiate")
    if out.shape != ():
        raise ShapeError(f"{_name(f)} must return a scalar to differentiate, got shape "
                         f"{out.shape} (at {out.node.where}); reduce it, e.g. with kf.sum")
    states, state_outputs = _states(tracer)
    fed = {slot.input.node.id: slot for slot in tracer.slots.values() if slot.input is not None}
    sources, param_nodes, param_sources = [], [], []
    for obj, sym in tracer.leaves.values():
        if sym.node.id in fed:
            src = ("state", fed[sym.node.id])
        else:
            src = next((("arg", i) for i, a in enumerate(args) if a is obj), ("obj", obj))
        sources.append((sym.node.attrs["name"], src))
        if isinstance(obj, Param):
            param_nodes.append(sym.node)
            param_sources.append(src)
    leaves = [s.node for _, s in tracer.leaves.values()]
    graph = Graph([out] + state_outputs, inputs=leaves)
    _check_inputs(graph, leaves, f)
    guards = [(slot, slot.token) for slot in tracer.slots.values() if slot.token is not None]
    device = _device_of_values([_fed_value(src, args) for _, src in sources], f)
    plan = Plan(backward(graph, wrt=param_nodes), devices=[device], training=True)
    return _Entry(plan, sources, param_sources, states, guards)


def _device_of_values(values, f):
    """The device holding the device arrays among `values` (cpu:0 if none); one at most."""
    from knetflow.devices import discovery, transfers

    found = {}
    for v in values:
        d = transfers.device_of(v)
        if d is not None:
            found.setdefault(d.name, d)
    if len(found) > 1:
        raise TracingError(f"{_name(f)} reads arrays on several devices {sorted(found)}; "
                           f"kf.diff runs on one: move them to one device first")
    return next(iter(found.values()), None) or discovery.cpu(0)


def _states(tracer) -> tuple:
    """([(slot, ("out", k) | ("value", v))], symbols to make outputs 1, 2, ... of the plan)."""
    states, outputs = [], []
    for slot, final in tracer.finals:
        if isinstance(final, Symbol):
            outputs.append(final)
            states.append((slot, ("out", len(outputs))))
        else:  # the function assigned a plain value: every call leaves that value
            states.append((slot, ("value", final)))
    return states, outputs


def _check_inputs(graph, leaves, f):
    """Every input of the traced graph is fed by the trace; a stray placeholder is not."""
    known = {n.id for n in leaves}
    for n in graph.inputs:
        if n.id not in known:
            raise TracingError(
                f"{_name(f)} uses {n.attrs['name']!r} (built at {n.where}), an input of a graph "
                f"built outside this kf.diff/kf.grad call, which nothing feeds; use arrays or "
                f"Params inside a differentiated function")


def _lift_arg(a, tracer):
    if isinstance(a, Param):
        return a.__knetflow_trace__(tracer)
    if (isinstance(a, np.ndarray) or is_device_array(a)) and a.ndim:
        return tracer.leaf(a, lambda: placeholder(f"t{len(tracer.leaves)}", a.shape, a.dtype))
    return a


def _key(f, args, kwargs):
    """A hashable signature of a call, and the objects whose ids it uses."""
    keep = [f]
    parts = [getattr(f, "__code__", None) or id(f), id(getattr(f, "__self__", None))]
    # a model object (or a bound method's object): its attributes are read from when traced
    owner = getattr(f, "__self__", None) if hasattr(f, "__code__") or hasattr(f, "__func__") else f
    if owner is not None and hasattr(owner, "__dict__") and not isinstance(owner, type):
        parts.extend((k, _ident(v, keep)) for k, v in sorted(vars(owner).items()))
    for cell in getattr(f, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:
            content = None
        parts.append(_ident(content, keep))
    fglobals = getattr(f, "__globals__", None)
    code = getattr(f, "__code__", None)
    if fglobals is not None and code is not None:
        parts.extend(_ident(fglobals.get(n), keep) for n in code.co_names if n in fglobals)
    parts.extend(_part(a, keep) for a in args)
    parts.extend((k, _part(v, keep)) for k, v in sorted(kwargs.items()))
    return tuple(parts), keep


def _ident(x, keep):
    """Captured objects are fed from the object seen at trace time: key them by identity."""
    if isinstance(x, (int, float, str, bool, type(None), np.generic)):
        return ("value", type(x), x)
    keep.append(x)
    return ("id", id(x))


def _part(x, keep):
    """Arguments are fed by position: arrays and Params key by shape and dtype."""
    if isinstance(x, Param) and is_device_array(x.value):
        return ("array", x.shape, x.dtype, _device_name(x.value))
    if isinstance(x, (Param, np.ndarray)) and (not isinstance(x, np.ndarray) or x.ndim):
        return ("array", x.shape, x.dtype)
    if is_device_array(x) and x.ndim:  # the plan runs on the array's device
        return ("array", x.shape, x.dtype, _device_name(x))
    if isinstance(x, (int, float, str, bool, type(None), np.generic)):
        return ("value", type(x), x)
    keep.append(x)
    return ("id", id(x))


def _device_of(x):
    from knetflow.devices import transfers

    return transfers.device_of(x)


def _device_name(x):
    return _device_of(x).name


def _scalar(x):
    return float(x) if np.ndim(x) == 0 else x


def _name(f):
    return getattr(f, "__qualname__", None) or repr(f)
