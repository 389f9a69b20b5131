"""Knet-style automatic differentiation by tracing: Param, diff, grad, gradloss.

`kf.diff(f, *args)` traces `f` into a Graph once per signature, derives the
backward graph with `kf.backward`, compiles it (training mode: dropout on) and
runs the cached plan (train/knet/trace_cache.py). There is one engine: no separate
eager tape.

What a call feeds and what traces again is said by graph/capture.py: arrays
and Params the function reads (as arguments, in containers, captured, global,
defaults, attributes) are fed at every call; shapes, dtypes, the structure and
static values (Python numbers, strings) are the cache key.

Called inside a function that is itself being traced, `diff`, `grad` and
`gradloss` trace into the outer graph and return symbols, so gradients of
gradients (any order) are ordinary graphs.

State of Python objects (an RNN's `h`/`c`, batchnorm's running moments; see
graph/state.py) flows through the plan as data, so it works on any device: the
state the function reads is fed from the object's attribute at each call, the
state it sets comes back as extra outputs of the plan, and after every call,
traced or cached, those values are stored back into the objects.
"""

from __future__ import annotations

import numpy as np

from knetflow.devices.base import is_device_array
from knetflow.errors import TracingError
from knetflow.graph import pytree, trace
from knetflow.graph.autodiff import gradients
from knetflow.graph.build import const
from knetflow.graph.capture import capture
from knetflow.graph.param import Param
from knetflow.graph.symbol import Symbol
from knetflow.ops.array import reshape
from knetflow.train.knet import trace_cache


class DiffResult:
    """What `kf.diff` returns: the value and the gradient of each Param (Knet's Tape)."""

    def __init__(self, value, grads: dict, params: list):
        self.value = value
        self._grads = grads
        self.params = params

    def __repr__(self) -> str:
        return f"DiffResult(value={self.value!r}, {len(self.params)} params)"


def diff(f, /, *args, **kwargs) -> DiffResult:
    """Run `f(*args)` (a scalar) and its gradient w.r.t. every Param it uses (Knet `@diff`).

    State the function sets (an RNN's `r.h`/`r.c`, batchnorm's running moments)
    holds its new values after the call, whether `f` was traced or a cached plan ran.

    The plan runs where the arrays live: Params and arguments on a GPU (CuPy
    arrays) or a sim device run there, and their gradients stay there, as Knet's
    KnetArrays do; `kf.update` then updates them in place on that device. Arrays
    on two devices at once are refused.

    Inside a function being differentiated (or traced by `kf.diff`/`kf.grad`),
    `diff` traces into the outer graph and its value and gradients are symbols,
    so they can be differentiated again (see docs/TRACING.md).

    Example:
        >>> import knetflow as kf
        >>> w = kf.Param([1., 2.])
        >>> r = kf.diff(lambda x: kf.sum(w * x), [3., 4.])
        >>> kf.value(r), kf.grad(r, w)
        (11.0, array([3., 4.]))
    """
    if trace.current() is not None:
        return _diff_inside(f, args, kwargs)
    entry, cap, traced = trace_cache.find(f, args, kwargs)
    if entry is None:
        raise TracingError(
            f"kf.diff({trace_cache.name_of(f)}, ...) was given {cap.symbol!r} outside a traced "
            "function; build gradients of symbolic graphs with kf.grad(f)(symbol) or "
            "kf.backward(graph)")
    outs = entry.run(cap)  # gradients stay where their Params live (Knet's KnetArray)
    device = entry.plan.device if entry.on_device else None
    if entry.states:
        entry.store_states(cap, outs, device)
    if traced:
        trace_cache.remember_after(entry, cap, capture(f, args, kwargs))
    params = entry.params(cap)
    grads = dict(zip(map(id, params), outs[entry.first_grad:]))
    loss = outs[0] if device is None else device.get(outs[0])
    return DiffResult(_scalar(loss), grads, params)


def _diff_inside(f, args, kwargs) -> DiffResult:
    """`diff` called while another function is traced: symbols in the outer graph."""
    inner = trace.Tracer(parent=trace.current(), wrap=_fresh)
    with trace.tracing(inner):
        out = f(*args, **kwargs)
    trace_cache.check_loss(out, f)
    found = list(inner.targets.values())
    nodes = gradients(out.node, [sym.node for _, sym in found])
    grads = {id(p): Symbol(g) for (p, _), g in zip(found, nodes)}
    return DiffResult(out, grads, [p for p, _ in found])


def _fresh(sym: Symbol) -> Symbol:
    """A new node with sym's value: differentiating w.r.t. it follows only its own uses."""
    return reshape(sym, sym.shape)


def grad(f_or_result, param=None, argnum=0):
    """`grad(result, param)`: the gradient in a diff result (None if unused);
    `grad(f, argnum=0)`: a function returning df/d(args[argnum]).

    `argnum` may be a tuple of positions (a tuple of gradients comes back). An
    argument may be a container (list, tuple, dict, any nesting) of arrays,
    numbers and Params: its gradient has the same structure, a float for a
    Python number (the seeds' `w = [W, 0]`: an int weight too), None for a leaf that
    is not differentiated (bools, strings, None).
    Called inside a traced function, the gradient is a symbol of the outer
    graph, so gradients of gradients work to any order.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.grad(lambda x: kf.sum(x * x))(np.array([1., 2., 3.]))
        array([2., 4., 6.])
        >>> kf.grad(lambda w, x: kf.sum(w[0] * x + w[1]))([np.ones(2), 0.0], np.array([3., 4.]))
        [array([3., 4.]), 2.0]
        >>> f = lambda x: kf.sum(x ** 3)
        >>> kf.grad(lambda x: kf.sum(kf.grad(f)(x)))(np.array([1., 2.]))   # 6x
        array([ 6., 12.])
    """
    if isinstance(f_or_result, DiffResult):
        return f_or_result._grads.get(id(param))
    if param is not None:
        raise TypeError("grad(f, argnum=k): give argnum by keyword")
    f = f_or_result
    loss_and_grad = gradloss(f, argnum)

    def gradfun(*args, **kwargs):
        return loss_and_grad(*args, **kwargs)[0]

    gradfun.__doc__ = f"The gradient of {trace_cache.name_of(f)} w.r.t. argument(s) {argnum}."
    return gradfun


def gradloss(f, argnum=0):
    """A function returning (df/d(args[argnum]), f(args)) (Knet `gradloss`).

    `argnum` and containers as in `grad`.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.gradloss(lambda x: kf.sum(x * x))(np.array([1., 2., 3.]))
        (array([2., 4., 6.]), 14.0)
    """
    nums = argnum if isinstance(argnum, tuple) else (argnum,)
    if not nums or not all(isinstance(k, int) for k in nums):
        raise TypeError(f"gradloss: argnum must be an int or a tuple of ints, got {argnum!r}")

    plans: dict = {}  # argument structure -> its _Shallow plan, or None: flatten it

    def gradlossfun(*args, **kwargs):
        for k in nums:
            if not -len(args) <= k < len(args):
                raise TypeError(f"{trace_cache.name_of(f)} was called with {len(args)} "
                                f"positional argument(s); argnum {k} is not one of them")
        if trace.current() is None:
            shallow = [_shallow(args[k], plans) for k in nums]
            if None not in shallow:
                grads, loss = _shallow_call(f, nums, args, kwargs, shallow)
                return (grads if isinstance(argnum, tuple) else grads[0]), loss
        args = list(args)
        flat = {k: pytree.flatten(args[k]) for k in nums}
        symbolic = trace.current() is not None or any(
            isinstance(v, Symbol) for leaves, _ in flat.values() for v in leaves)
        targets = {}
        for k in nums:
            leaves, tree = flat[k]
            made = [_target(v, k, symbolic) for v in leaves]
            if all(m is None for m in made):
                raise _nothing_to_differentiate(f, k, args[k])
            args[k] = tree.rebuild([v if m is None else m for v, m in zip(leaves, made)])
            targets[k] = (tree, leaves, made)
        if symbolic:
            out = f(*args, **kwargs)
            trace_cache.check_loss(out, f)
            wanted = [m for k in nums for m in targets[k][2] if m is not None]
            nodes = iter(gradients(out.node, [m.node for m in wanted]))
            found = {id(m): Symbol(next(nodes)) for m in wanted}
            loss = out
        else:
            result = diff(f, *args, **kwargs)
            found = {id(m): _grad_value(result, m) for k in nums for m in targets[k][2]
                     if m is not None}
            loss = result.value
        grads = tuple(_rebuild(targets[k], found) for k in nums)
        return (grads if isinstance(argnum, tuple) else grads[0]), loss

    return gradlossfun


def _nothing_to_differentiate(f, k, arg) -> TracingError:
    return TracingError(
        f"argument {k} of {trace_cache.name_of(f)} holds nothing to differentiate "
        f"({_describe(arg)}): differentiable leaves are float arrays, floats and Params")


# ---- one level of structure, planned once per structure ----
#
# The seeds pass w = [W, b] (a list of arrays and numbers; tuples and dicts alike): one
# level of container around the leaves. For those, the leaves' types say everything the
# general path decides leaf by leaf (what stands for each leaf, how its gradient comes
# back, whether the argument must be flattened), so a call looks the types up in a dict
# of plans instead of flattening, making Trees and dispatching on each leaf twice.

_MAX_PLANS = 64  # structures remembered per gradient function; others take the general path


def _shallow(arg, plans: dict):
    """(plan, leaves) for an argument that is a leaf or a list, tuple or dict of leaves
    (none a container or a Symbol), or None: the general path flattens it."""
    kind, leaves = pytree.one_level(arg)
    key = (kind, tuple(map(type, leaves)))
    plan = plans.get(key, _UNSEEN)
    if plan is _UNSEEN:
        plan = _Shallow.make(kind, key[1])
        if len(plans) < _MAX_PLANS:
            plans[key] = plan
    return None if plan is None else (plan, leaves)


_UNSEEN = object()
_NONE = type(None)


class _Shallow:
    """How gradloss treats an argument of one structure: one level of container (`kind`,
    None for a bare leaf) around leaves of known types; for each leaf what stands for it
    (`makers`) and what its gradient becomes (`finishing`: the conversions of those not
    handed back as they are)."""

    __slots__ = ("kind", "makers", "finishing")

    def __init__(self, kind, makers, finishers):
        self.kind, self.makers = kind, makers
        # (position, function) for the leaves whose gradient is converted
        self.finishing = tuple((i, g) for i, g in enumerate(finishers) if g is not None)

    @staticmethod
    def make(kind, types):
        """The plan for leaves of `types`, or None when one may be a container or is a
        Symbol (tracing into an outer graph)."""
        if any(pytree.may_be_container(t) or issubclass(t, Symbol) for t in types):
            return None
        return _Shallow(kind, tuple(map(_maker, types)), tuple(map(_finisher, types)))

    def rebuild(self, like, items):
        """The argument's structure (`like`'s keys for a dict) around `items`."""
        return pytree.rebuild_level(self.kind, like, items)


def _maker(t):
    """What makes the stand-in of a leaf of type t outside a trace: the leaf itself for a
    Param, a new Param for numbers and numeric arrays, else None (a constant)."""
    if issubclass(t, Param):
        return _itself
    if t is int:
        return _from_int
    if t is float or issubclass(t, np.floating):
        return _from_float
    if t is np.ndarray:
        return _from_array
    return _from_other


def _itself(v):
    return v


def _from_int(v):
    return Param(np.asarray(v, dtype=np.float64))


def _from_float(v):
    return Param(np.asarray(v))


def _from_array(v):
    return Param(v) if v.dtype.kind in "biuf" else None


def _from_other(v):  # a device's array, or a constant (bools, strings, None, objects)
    return Param(v) if is_device_array(v) else None


def _finisher(t):
    """What the gradient of a leaf of type t becomes: a float for a Python number, the
    same NumPy scalar type for one, else the gradient itself (None)."""
    if t is float or t is int:
        return float
    if issubclass(t, np.floating):
        return t
    return None


def _shallow_call(f, nums, args, kwargs, shallow) -> tuple:
    """gradloss's call when every differentiated argument has a plan: (gradients, loss)."""
    originals, args, made_by_arg = args, list(args), []
    for k, (plan, leaves) in zip(nums, shallow):
        made = [make(v) for make, v in zip(plan.makers, leaves)]
        # counted by type: `None in made` would compare each Param with None, elementwise
        kinds = list(map(type, made))
        if _NONE in kinds:  # constants pass through
            if kinds.count(_NONE) == len(made):
                raise _nothing_to_differentiate(f, k, args[k])
            args[k] = plan.rebuild(args[k], [v if m is None else m
                                             for v, m in zip(leaves, made)])
        else:
            args[k] = plan.rebuild(args[k], made)
        made_by_arg.append((made, kinds.count(_NONE)))
    result = diff(f, *args, **kwargs)
    found, grads = result._grads, []
    for k, (plan, _), (made, constants) in zip(nums, shallow, made_by_arg):
        out = [None if m is None else found.get(id(m)) for m in made]
        if list(map(type, out)).count(_NONE) != constants:
            # a leaf the loss does not use: zeros, as `_grad_value` gives
            out = [np.zeros_like(m.value) if g is None and m is not None else g
                   for g, m in zip(out, made)]
        for i, finish in plan.finishing:
            if out[i] is not None:
                out[i] = finish(out[i])
        grads.append(plan.rebuild(originals[k], out))
    return tuple(grads), result.value


def _target(v, k, symbolic):
    """What stands for leaf v of a differentiated argument: a Param (a Symbol when
    tracing into an outer graph), or None for a leaf passed through as a constant."""
    if isinstance(v, Symbol):
        return _fresh(v) if v.spec.is_float else None
    target = _maker(type(v))(v)  # None for bools, strings, None, objects: constants
    if target is None or not symbolic:
        return target
    tracer = trace.current()
    if tracer is None:  # building a graph: the value is a constant of it
        return _fresh(const(np.asarray(target.value)))
    return _fresh(target.__knetflow_trace__(tracer))


def _grad_value(result, target):
    g = grad(result, target)
    return np.zeros_like(target.value) if g is None else g


def _rebuild(target, found):
    """The gradient of one argument, in the structure of the argument."""
    tree, leaves, made = target
    out = []
    for v, m in zip(leaves, made):
        g = None if m is None else found[id(m)]
        finish = _finisher(type(v))
        if g is not None and finish is not None and not isinstance(g, Symbol):
            g = finish(g)
        out.append(g)
    return tree.rebuild(out)


def _describe(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


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


def _scalar(x):
    if type(x) is np.ndarray:  # the common case, without np.ndim's dispatch
        return float(x) if x.ndim == 0 else x
    return float(x) if np.ndim(x) == 0 else x
