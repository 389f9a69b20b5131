"""The per-signature cache behind `kf.diff`, `kf.grad` and `kf.gradloss`.

A call is looked up by `graph.capture`'s key (the function's code, the
structure, shapes and dtypes of everything it reads, static values by value);
a miss traces the function into a Graph, derives its backward graph and
compiles a Plan. Each entry says where every plan input comes from at a call:

- ("walk", i): the i-th array or Param the capture walk finds at this call;
- ("obj", obj): an object the trace reached past the walk (library objects,
  past its budget): its value now, fed from that same object;
- ("state", slot, k): a state attribute (graph/state.py), read from its owner:
  the k-th object of this call's walk (another instance of the same structure
  gets its own state), or the slot's own owner when k is None.

A call of a structure seen before is recognized by a guard compiled from its walk
(graph/capture_guard.py; see `find`), which gives the same leaves as the walk
without walking; the entry then runs the program that the guard's shapes select.

State the function sets, and list or dict items and attributes it replaces
(graph/trace_python.py), flow out of the plan as extra outputs and are stored
back after every call (see `TraceEntry.store_states`). A call where a state
attribute holds another kind of value than when traced traces again; a few
traces are kept per key.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections import OrderedDict

import numpy as np

from knetflow.devices import discovery, transfers
from knetflow.errors import ShapeError, TracingError
from knetflow.graph import capture_guard, state, trace_python
from knetflow.graph.autodiff import backward
from knetflow.graph.capture import Capture, capture, is_param, substitution_sites
from knetflow.graph.node import Graph
from knetflow.graph.symbol import Symbol
from knetflow.scheduler.plan import Plan

_CACHE_SIZE = 256
_VARIANTS = 4     # traces kept per key, e.g. r.h = 0 at the first call, an array later
_WARN_AFTER = 64  # traces of one function's code before a warning says why it retraces
_GUARDS_PER_CODE = 4  # compiled guards kept per function (signatures in use at once)
_GUARD_COMPILES = 16  # guards compiled per function at most: a function whose key keeps
                      # changing gains nothing from them
_cache: OrderedDict = OrderedDict()
_traces: dict = {}  # code object -> number of traces (for the warning)
_guards: OrderedDict = OrderedDict()  # function's code -> [(guard, entry)], newest first
_compiled: dict = {}  # function's code -> guards compiled


class TraceEntry:
    """A traced function: its plan, where each graph input's value comes from, its state."""

    def __init__(self, plan, sources, param_sources, states, guards, keep, param_names):
        self.param_names = param_names  # names of the inputs fed from Params
        self.sources = sources              # [(input name, source)]
        self.param_sources = param_sources  # sources of the differentiated Params, in order
        self.states = states    # [(slot, ("out", k) | ("value", v))]: what a call leaves in it
        self.guards = guards    # [(slot, kind)]: the state values the trace read, by kind
        self.keep = keep        # objects whose ids are in the key stay alive with the entry
        self.first_grad = 1 + sum(how == "out" for _, (how, _), _ in states)
        self.steps: dict = {}   # fused training-step plans built on this trace (fused_step)
        self._others = [(name, src) for name, src in sources if src[0] != "walk"]
        self.plan = plan  # sets inputs and on_device too
        self._pick_params = _lister(
            [f"leaves[{s[1]}]" if s[0] == "walk" else f"p{k}"
             for k, s in enumerate(param_sources)],
            {f"p{k}": s[1] for k, s in enumerate(param_sources) if s[0] != "walk"})
        spec = {name: plan.source.input(name).spec for name, _ in sources}
        # objects fed past the walk are keyed by identity: their shape is checked here
        self.checks = [(src[1], spec[name].shape, np.dtype(spec[name].dtype))
                       for name, src in sources if src[0] == "obj"]
        self.plain = not (guards or self.checks)  # fits every call of its key

    @property
    def plan(self):
        """The compiled plan of the traced function's value and gradients."""
        return self._plan

    @plan.setter
    def plan(self, plan):
        self._plan = plan
        self.direct: dict = {}  # a guard's token -> the program its shapes select
        self.inputs = _feeder(plan.input_names, dict(self.sources), self.param_names)
        self.on_device = plan.device.kind != "cpu"  # gradients stay where their Params live

    def run(self, cap) -> tuple:
        """The plan's outputs for a call whose capture is `cap` (left on the plan's device
        when that is not the host)."""
        program = self.direct.get(cap.token)
        if program is None:
            return self._plan.run_inputs(self.inputs(cap.leaves, cap), self.on_device)
        # the guard checked the shapes and dtypes that selected this program
        return self._plan.run_program(program, self.inputs(cap.leaves, cap))

    def program_for(self, cap):
        """The plan's program a guard of this call may run directly (`Plan.direct_program`),
        when every input is a walked value, which the guard checks; else None."""
        if self._others:
            return None
        return self._plan.direct_program(self.inputs(cap.leaves, cap))

    def params(self, cap) -> list:
        """The differentiated Params of a call, in the order of the plan's gradients."""
        return self._pick_params(cap.leaves, cap)

    def fits(self, cap) -> bool:
        """Whether state attributes hold the kinds of value traced, and objects fed past
        the walk still hold values of the traced shape, float precision and device."""
        for slot, token, at in self.guards:
            if state.kind(slot.read(cap.owner(at, slot.owner))) != token:
                return False
        device = self.plan.device
        for obj, shape, want in self.checks:
            value = obj.value if is_param(obj) else obj
            dtype = getattr(value, "dtype", None)
            if np.shape(value) != shape:
                return False
            if dtype is not None and dtype != want and dtype.kind == "f":
                return False
            if transfers.device_of(value) not in (None, device):
                return False
        return True

    def rebound(self, cap, other):
        """This entry with inputs looked up in the walk `other` instead of `cap` (matched
        by identity), or None when `other` lacks one of them."""
        def leaf(i):
            return other.index.get(id(cap.leaves[i]))

        def owner(at):
            return None if at is None else other.seen.get(id(cap.objects[at]), -1)

        sources = []
        for name, src in self.sources:
            if src[0] == "walk":
                src = ("walk", leaf(src[1]))
            elif src[0] == "state":
                src = ("state", src[1], owner(src[2]))
            if None in src[1:2] or -1 in src[2:]:
                return None
            sources.append((name, src))
        param_sources = [("walk", leaf(s[1])) if s[0] == "walk" else s for s in self.param_sources]
        if any(s[1] is None for s in param_sources):
            return None
        states = [(slot, how, owner(at)) for slot, how, at in self.states]
        guards = [(slot, token, owner(at)) for slot, token, at in self.guards]
        if any(at == -1 for *_, at in states + guards):
            return None
        return TraceEntry(self.plan, sources, param_sources, states, guards, self.keep + other.keep,
                     self.param_names)

    def store_states(self, cap, outs, device=None) -> None:
        """Write what this call left in each state attribute back into its object.

        With `device` (outputs left there), a state that held a host array gets one back.
        """
        for slot, (how, v), at in self.states:
            owner = cap.owner(at, slot.owner)
            value = outs[v] if how == "out" else v
            if device is not None and how == "out" and isinstance(slot.read(owner), np.ndarray):
                value = device.get(value)
            slot.write(owner, value)


def _feeder(names, sources, param_names):
    """A function (leaves, cap) -> the plan's inputs in the order of `names`, made once
    per entry: the leaves (their `.value` for Params), and the rest looked up by
    `_value`."""
    items, env = [], {"_value": _value}
    for k, name in enumerate(names):
        src = sources[name]
        if src[0] == "walk":
            items.append(f"leaves[{src[1]}]" + (".value" if name in param_names else ""))
        else:
            env[f"s{k}"] = src
            items.append(f"_value(s{k}, cap)")
    return _lister(items, env)


def _lister(items, env):
    """`lambda leaves, cap: [items...]` compiled from the item expressions over `env`: a
    list display costs a call's time less than a loop over sources at every step."""
    src = f"def made(leaves, cap):\n    return [{', '.join(items)}]\n"
    env = dict(env)
    exec(compile(src, "<knetflow trace cache list>", "exec"), env)  # noqa: S102 - our own source
    return env["made"]


def _value(src, cap):
    where, obj = src[0], src[1]
    if where == "walk":
        obj = cap.leaves[obj]
    elif where == "state":
        obj = obj.read(cap.owner(src[2], obj.owner))
    return obj.value if is_param(obj) else obj


class Replay:
    """What a compiled guard gives for a call: the parts of its `Capture` that running a
    cached entry reads (the key, the leaves and the walked objects), and the guard's
    token, under which the entry keeps the program the guard's shapes select."""

    __slots__ = ("key", "token", "leaves", "objects")
    owner = Capture.owner
    symbol = None

    def __init__(self, key, token, leaves, objects):
        self.key, self.token, self.leaves, self.objects = key, token, leaves, objects


def find(f, args, kwargs) -> tuple:
    """(entry, capture, traced now) for the call f(*args, **kwargs); entry is None when
    an argument is a Symbol (`capture.symbol`): such a call builds a graph instead.

    A call that a compiled guard of f recognizes (graph/capture_guard.py) skips the
    capture walk and the key lookup; any other call walks, and a cached entry found by
    its key gets a guard for the next calls of that structure.
    """
    records = _guards.get(_code_of(f))
    if records is not None:
        for guard, entry in records:
            cap = guard(f, args, kwargs)
            if cap is not None and (entry.plain or entry.fits(cap)):
                if capture_guard.VERIFY:
                    _verify(f, args, kwargs, cap)
                return entry, cap, False
    cap = capture(f, args, kwargs)
    if cap.symbol is not None:
        return None, cap, False
    entry, traced = lookup(f, args, kwargs, cap)
    return entry, cap, traced


def _code_of(f):
    """What a function's guards are filed under: its code (a method's function's), else
    its type."""
    t = type(f)
    if t is types.FunctionType:
        return f.__code__
    if t is types.MethodType and type(f.__func__) is types.FunctionType:
        return f.__func__.__code__
    return t


def _add_guard(f, args, kwargs, cap, entry) -> None:
    code = _code_of(f)
    n = _compiled.get(code, 0)
    if n >= _GUARD_COMPILES:
        return
    _compiled[code] = n + 1
    token = object()
    guard = capture_guard.compile_guard(f, args, kwargs, cap,
                                        functools.partial(Replay, cap.key, token))
    if guard is None:
        return
    program = entry.program_for(cap)
    if program is not None:
        entry.direct[token] = program
    records = [(guard, entry)] + _guards.pop(code, [])[:_GUARDS_PER_CODE - 1]
    _guards[code] = records
    if len(_guards) > _CACHE_SIZE:
        _guards.popitem(last=False)


def _verify(f, args, kwargs, cap) -> None:
    """The walk's answer for a call a guard recognized (capture_guard.VERIFY, in tests)."""
    walked = capture(f, args, kwargs)
    if (walked.key != cap.key or len(walked.leaves) != len(cap.leaves)
            or any(a is not b for a, b in zip(walked.leaves, cap.leaves))
            or len(walked.objects) != len(cap.objects)
            or any(a is not b for a, b in zip(walked.objects, cap.objects))):
        raise AssertionError(f"a compiled capture guard of {name_of(f)} disagrees with the "
                             f"walk")


def lookup(f, args, kwargs, cap) -> tuple:
    """(the cached entry for this call, whether it was traced now); `cap`: its capture."""
    for entry in _cache.get(cap.key, ()):
        if entry.fits(cap):
            _cache.move_to_end(cap.key)
            _add_guard(f, args, kwargs, cap, entry)
            return entry, False
    entry = trace_call(f, args, kwargs, cap)
    _store(cap.key, entry)
    _count_trace(f)
    return entry, True


def _store(key, entry):
    _cache[key] = [entry] + list(_cache.get(key, ())[:_VARIANTS - 1])
    _cache.move_to_end(key)
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)


def remember_after(entry, cap, after) -> None:
    """Also file a new trace under the key of the call made after it (`after`).

    A function may change what it captures when it runs: it sets a state attribute
    itself (`r.h = 0`), or appends to a list it holds. The next call then has
    another key though the trace fits it; filing the entry under that key too
    (with its inputs found by identity in the new walk) saves a trace.
    """
    if after.key == cap.key:
        return
    moved = entry.rebound(cap, after)
    if moved is not None:
        _store(after.key, moved)


def _count_trace(f):
    code = getattr(getattr(f, "__func__", f), "__code__", None) or type(f)
    n = _traces[code] = _traces.get(code, 0) + 1
    if n == _WARN_AFTER:
        warnings.warn(
            f"kf.diff/kf.grad traced {name_of(f)} {n} times. A new shape, dtype or structure, "
            f"or a new value of a Python number, string or other static value among its "
            f"arguments and captured variables traces again; feed a number that changes at "
            f"every call as an array (np.asarray(v))", RuntimeWarning, stacklevel=4)


def trace_call(f, args, kwargs, cap) -> TraceEntry:
    """Trace f(*args, **kwargs) into a compiled plan of its value and gradients."""
    watch = [o for o in cap.objects if type(o) is list or type(o) is dict]
    sites = substitution_sites(f, args, kwargs)
    out, tracer = trace_python.trace_function(f, args, kwargs, watch, sites)
    check_loss(out, f)
    slots = list(tracer.slots.values()) + [slot for slot, _ in tracer.items]
    at = {id(slot): cap.seen.get(id(slot.owner)) for slot in slots}
    states, state_outputs = _states(tracer, at)
    fed = {slot.input.node.id: slot for slot in tracer.slots.values() if slot.input is not None}
    sources, param_nodes, param_sources, param_names = [], [], [], set()
    for obj, sym in tracer.leaves.values():
        if sym.node.id in fed:
            slot = fed[sym.node.id]
            src = ("state", slot, at[id(slot)])
        elif id(obj) in cap.index:
            src = ("walk", cap.index[id(obj)])
        else:
            src = ("obj", obj)
        sources.append((sym.node.attrs["name"], src))
        if is_param(obj):
            param_nodes.append(sym.node)
            param_sources.append(src)
            param_names.add(sources[-1][0])
    leaves = [s.node for _, s in tracer.leaves.values()]
    graph = Graph([out] + state_outputs, inputs=leaves)
    _check_inputs(graph, leaves, f)
    guards = [(slot, slot.token, at[id(slot)]) for slot in tracer.slots.values()
              if slot.token is not None]
    device = _device_of_values([_value(src, cap) for _, src in sources], f)
    plan = Plan(backward(graph, wrt=param_nodes), devices=[device], training=True)
    keep = list(cap.keep) + [src[1] for _, src in sources if src[0] in ("obj", "state")]
    return TraceEntry(plan, sources, param_sources, states, guards, keep, param_names)


def check_loss(out, f) -> None:
    """A function to differentiate returns a scalar Symbol."""
    if not isinstance(out, Symbol):
        raise TracingError(f"{name_of(f)} returned {type(out).__name__}, not a value computed "
                           "from its Params; nothing to differentiate")
    if out.shape != ():
        raise ShapeError(f"{name_of(f)} must return a scalar to differentiate, got shape "
                         f"{out.shape} (at {out.node.where}); reduce it, e.g. with kf.sum")


def _device_of_values(values, f):
    """The device holding the device arrays among `values` (cpu:0 if none); one at most."""
    found = {}
    for v in values:
        d = transfers.device_of(v)
        if d is not None:
            found.setdefault(d.name, d)
    if len(found) > 1:
        raise TracingError(f"{name_of(f)} reads arrays on several devices {sorted(found)}; "
                           f"kf.diff runs on one: move them to one device first")
    return next(iter(found.values()), None) or discovery.cpu(0)


def _states(tracer, at) -> tuple:
    """([(slot, ("out", k) | ("value", v), owner position)], symbols to make outputs 1, 2,
    ... of the plan)."""
    states, outputs = [], []
    for slot, final in tracer.finals + tracer.items:
        if isinstance(final, Symbol):
            outputs.append(final)
            states.append((slot, ("out", len(outputs)), at[id(slot)]))
        else:  # the function assigned a plain value: every call leaves that value
            states.append((slot, ("value", final), at[id(slot)]))
    return states, outputs


def _check_inputs(graph, leaves, f):
    """Every input of the traced graph is fed by the trace; a stray placeholder is not."""
    known = {n.id for n in leaves}
    for n in graph.inputs:
        if n.id not in known:
            raise TracingError(
                f"{name_of(f)} uses {n.attrs['name']!r} (built at {n.where}), an input of a "
                f"graph built outside this kf.diff/kf.grad call, which nothing feeds; use "
                f"arrays or Params inside a differentiated function")


def name_of(f) -> str:
    return getattr(f, "__qualname__", None) or repr(f)


def clear() -> None:
    """Forget every cached trace (the next call of each function traces again)."""
    _cache.clear()
    _traces.clear()
    _guards.clear()
    _compiled.clear()
