"""Everything a traced function reads, as a cache key and a list of values to feed.

`kf.diff`, `kf.grad` and `kf.gradloss` trace a Python function once and run
the compiled plan at later calls. A cached plan must never answer for other
inputs, so at every call `capture(f, args, kwargs)` walks what the function
can read:

- its positional and keyword arguments;
- what the function object holds: closure cells, default values
  (`__defaults__`, `__kwdefaults__`) and the module globals its code names;
  functions reached this way are walked the same way (helpers a loss calls),
  and so are bound methods (the function and its instance), `functools.partial`
  and the instances and classes of user code reached from there;
- inside each, lists, tuples, dicts (their subclasses too: OrderedDict,
  defaultdict, namedtuples), deques, sets and object attributes (`vars(obj)` and
  the slots of `__slots__` classes).

The rule, for what is found:
- arrays of any dimension (0-d included) and `kf.Param`s are *fed*: their
  value at this call is an input of the plan, looked up along the same path,
  so rebinding a name, an attribute or a list item is seen; only their
  shapes and dtypes are part of the key;
- Python numbers, strings, bytes, None, bools and NumPy scalars are *static*:
  part of the key by value, so a new value traces again (as JAX's
  `static_argnums`); pass `np.asarray(v)` to feed a number that changes;
- the structure itself (container kinds, lengths, dict keys, which leaves are
  the same object, the code of each function) is part of the key;
- modules, and functions and classes of library code, are keyed by identity and
  not walked (objects of library classes are: their attributes); arrays the
  trace reaches only past the walk (or its budget) are fed from the object seen
  when tracing.

`substitution_sites` says where the captured arrays live, so that tracing can
put symbols there while the function runs (graph/trace_python.py): NumPy work
on a captured array is then traced too. docs/TRACING.md states the rule for
users.

Example:
    >>> import numpy as np
    >>> c = capture(lambda x, k=2: x * k, (np.ones(3),), {})
    >>> len(c.leaves), c.leaves[0] is not None
    (1, True)
"""

from __future__ import annotations

import collections
import functools
import sys
import types

import numpy as np

from knetflow.devices import registry
from knetflow.graph import trace

_STATIC = (int, float, complex, bool, str, bytes, type(None), type(Ellipsis), range)
_MAX_ITEMS = 256    # longer containers are keyed by identity, not walked
_BUDGET = 4096      # objects walked per call, at most
# code of these packages is not walked (it holds no user weights); keyed by identity
_LIBRARIES = frozenset(("knetflow", "numpy", "scipy", "dask", "distributed", "msgpack", "tqdm",
                        "cupy", "cupyx", "torch", "jax", "hypothesis", "pytest", "_pytest"))
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


class Capture:
    """What one call reads: `key` (hashable), `leaves` (arrays and Params in walk order),
    `keep` (objects whose ids are in the key),
    `objects` (the containers, functions and objects walked, in order; `seen` maps
    their ids to positions), `symbol` (the first Symbol among the arguments, if any:
    such a call builds a graph instead)."""

    __slots__ = ("key", "leaves", "keep", "index", "objects", "seen", "symbol")
    token = None  # what a compiled guard's answer carries (train/knet/trace_cache.Replay)

    def __init__(self):
        self.key = None
        self.leaves: list = []
        self.keep: list = []
        self.index: dict = {}  # id(leaf) -> its first position in leaves
        self.objects: list = []
        self.seen: dict = {}   # id(walked object) -> its position in objects
        self.symbol = None

    def owner(self, position, default):
        """The object at `position` of this call's walk (`default` when None)."""
        return default if position is None else self.objects[position]


def capture(f, args, kwargs) -> Capture:
    """Walk `f`, `args` and `kwargs`: see the module docstring for the rule."""
    walk = _Walk()
    walk.visit(f)
    walk.in_args = True
    walk.visit(args)
    if kwargs:
        for k in sorted(kwargs):
            walk.parts.append(k)
            walk.visit(kwargs[k])
    cap = walk.cap
    cap.key = tuple(walk.parts)
    return cap


def is_param(x) -> bool:
    """A value that traces as itself (a `kf.Param`): it has `__knetflow_trace__` and a value."""
    return hasattr(x, "__knetflow_trace__") and hasattr(x, "value")


def float_dtype(dtype):
    """The dtype a Param of this dtype traces with: integers and bools become float64."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype("float64")


def _library(module_name) -> bool:
    root = (module_name or "").partition(".")[0]
    return root in _LIBRARIES or root in _STDLIB or root == "builtins"


class _Walk:
    def __init__(self, sites=None):
        self.cap = Capture()
        self.parts: list = []
        self.seen = self.cap.seen  # id(walked object) -> order of its first visit
        self.budget = _BUDGET
        self.in_args = False
        self.in_library = 0   # > 0 while walking a library object's attributes
        self.sites = sites    # a list to collect substitution sites into, or None

    def opaque(self, x):
        self.parts.append(("id", id(x)))
        self.cap.keep.append(x)

    def leaf(self, x, *kind):
        cap = self.cap
        first = cap.index.get(id(x))
        if first is not None:  # the same object twice: keyed as an alias, fed once
            self.parts.append(("alias", first))
            return
        cap.index[id(x)] = len(cap.leaves)
        cap.leaves.append(x)
        self.parts.extend(kind)

    def visit(self, x):
        t = type(x)
        if t is np.ndarray:
            if x.dtype.kind not in "biuf":
                self.opaque(x)
            else:
                self.leaf(x, x.shape, x.dtype.char)
            return
        how = _HOW.get(t)
        if how is None:
            how = _HOW[t] = _how(t)
        if how == "static":
            self.parts.append((t, x))
        elif how == "param":
            value = x.value
            dtype = value.dtype
            char = dtype.char if dtype.kind == "f" else "d"  # as float_dtype: ints train as f8
            if type(value) is np.ndarray:
                self.leaf(x, "P", value.shape, char)
            else:
                self.leaf(x, "P", value.shape, char, _device(value))
        elif how == "device":
            self.leaf(x, x.shape, x.dtype.char, _device(x))
        elif how == "opaque":
            self.opaque(x)
        elif how == "symbol":
            if self.in_args and self.cap.symbol is None:
                self.cap.symbol = x
            self.opaque(x)
        else:
            self.budget -= 1
            if self.budget < 0:
                self.opaque(x)
                return
            first = self.seen.get(id(x))
            if first is not None:
                self.parts.append(("seen", first))
                return
            self.seen[id(x)] = len(self.seen)
            self.cap.objects.append(x)
            how(self, x, t)

    def sequence(self, x, t):
        if len(x) > _MAX_ITEMS:
            self.opaque(x)
            return
        self.parts.append((t, len(x)))
        for v in x:
            self.visit(v)
        if self.sites is not None and t is list and not self.in_args and not self.in_library:
            self.sites.extend((x, k, "item") for k, v in enumerate(x) if _holds_arrays(v))

    def mapping(self, x, t):
        if len(x) > _MAX_ITEMS or not all(type(k) in _STATIC for k in x):
            self.opaque(x)
            return
        self.parts.append(tuple(x))
        for v in x.values():
            self.visit(v)
        if self.sites is not None and not self.in_args and not self.in_library:
            self.sites.extend((x, k, "item") for k, v in x.items() if _holds_arrays(v))

    def method(self, x, t):
        self.parts.append("method")
        self.visit(x.__func__)
        self.visit(x.__self__)

    def partial(self, x, t):
        self.parts.append("partial")
        self.visit(x.func)
        self.visit(x.args)
        self.visit(x.keywords)

    def instance(self, x, t):
        self.parts.append(t)
        self.visit(t)  # its methods, unless library code
        self.attributes(x, t)

    def attributes(self, x, t):
        """x's attributes: `vars(x)`, then the slots its classes declare (`__slots__`,
        `dataclass(slots=True)`); a slot not set is keyed as such."""
        attrs = getattr(x, "__dict__", None)
        attrs = {} if attrs is None else attrs
        self.parts.append(tuple(attrs))
        library = _library(t.__module__)
        self.in_library += library
        for v in attrs.values():
            self.visit(v)
        slots = []
        for k in _slots(t):
            v = getattr(x, k, _MISSING)
            if v is _MISSING:
                self.parts.append(("unset", k))
            else:
                slots.append((k, v))
                self.visit(v)
        self.in_library -= library
        if self.sites is not None and not library and not self.in_args and not self.in_library:
            # state attributes are fed through graph/state.py, not substituted
            self.sites.extend((x, k, "attr") for k, v in attrs.items()
                              if (t, k) not in trace.STATE_ATTRS and _holds_arrays(v))
            self.sites.extend((x, k, "slot") for k, v in slots if _holds_arrays(v))

    def sequence_object(self, x, t):
        """A list, tuple or deque of a subclass, or a set: its items in iteration order
        (a set's order is the one the function itself iterates in), then its attributes."""
        self.sequence(x, t)
        if (self.sites is not None and isinstance(x, (list, collections.deque))
                and len(x) <= _MAX_ITEMS and not self.in_args and not self.in_library):
            self.sites.extend((x, k, "item") for k, v in enumerate(x) if _holds_arrays(v))
        self.attributes(x, t)

    def mapping_object(self, x, t):
        """A dict of a subclass (OrderedDict, defaultdict, Counter, yours): its items as a
        dict's, then its attributes."""
        self.parts.append(t)
        self.mapping(x, t)
        self.attributes(x, t)

    def function(self, fn, t):
        code = fn.__code__
        names = _GLOBALS.get(code)
        if names is None:
            names = _GLOBALS[code] = None if _library(fn.__module__) else _global_names(code)
        if names is None:
            self.opaque(fn)
            return
        self.parts.append(id(code))
        self.cap.keep.append(code)
        sites = self.sites if not self.in_library else None
        for cell in fn.__closure__ or ():
            try:
                content = cell.cell_contents
            except ValueError:  # a cell not yet bound
                self.parts.append("empty cell")
                continue
            self.visit(content)
            if sites is not None and _holds_arrays(content):
                sites.append((cell, None, "cell"))
        if fn.__defaults__:
            self.visit(fn.__defaults__)
            if sites is not None and _holds_arrays(fn.__defaults__):
                sites.append((fn, "__defaults__", "defaults"))
        if fn.__kwdefaults__:
            self.visit(fn.__kwdefaults__)
        fglobals = fn.__globals__
        for n in names:
            v = fglobals.get(n, _MISSING)
            if v is not _MISSING and type(v) is not types.ModuleType:  # modules stay put
                self.visit(v)
                if sites is not None and _holds_arrays(v):
                    sites.append((fglobals, n, "item"))

    def klass(self, cls, t):
        """A user class: its functions (methods read globals too) and class attributes,
        its user base classes' too."""
        if _library(cls.__module__):
            self.opaque(cls)
            return
        self.parts.append(id(cls))
        self.cap.keep.append(cls)
        names, values = _class_members(cls)
        self.parts.append(names)
        for v in values:
            self.visit(v)


def _holds_arrays(v) -> bool:
    """Whether v is a NumPy array, or a tuple holding one (at any depth): what tracing
    substitutes with symbols. Lists and dicts are walked and substituted item by item."""
    if type(v) is np.ndarray:
        return v.dtype.kind in "biuf"
    if isinstance(v, tuple) and len(v) <= _MAX_ITEMS:
        return any(_holds_arrays(x) for x in v)
    return False


def substitution_sites(f, args, kwargs) -> list:
    """Where f's captured arrays live, as (holder, key, kind): (cell, None, "cell"),
    (function, "__defaults__", "defaults"), (object, name, "attr") or (dict or list,
    key, "item"), for closure cells, defaults, the globals it reads, attributes of
    user objects (`vars(obj)`; not state attributes, nor library objects') and the items
    of lists and dicts reached from them (not from arguments, which are lifted).
    Tracing puts symbols there, so NumPy work on a captured array is traced too, and
    then puts the arrays back (graph/trace_python.py)."""
    walk = _Walk(sites=[])
    walk.visit(f)
    walk.in_args = True
    walk.visit(args)
    for k in sorted(kwargs):
        walk.visit(kwargs[k])
    return walk.sites


def _how(t):
    """How values of type t are walked (computed once per type)."""
    if t in _STATIC or issubclass(t, np.generic):
        return "static"
    if t is np.ndarray:
        return "array"
    if hasattr(t, "__knetflow_trace__") and hasattr(t, "value"):
        return "param"
    if is_device_array_type(t):
        return "device"
    if hasattr(t, "node") and hasattr(t, "spec"):
        return "symbol"
    if t is list or t is tuple or (issubclass(t, tuple) and hasattr(t, "_fields")):
        return _Walk.sequence
    if t is dict:
        return _Walk.mapping
    if issubclass(t, dict):
        return _Walk.mapping_object
    if issubclass(t, (list, tuple, collections.deque, set, frozenset)):
        return _Walk.sequence_object
    if t is types.FunctionType:
        return _Walk.function
    if t is types.MethodType:
        return _Walk.method
    if t is functools.partial:
        return _Walk.partial
    if issubclass(t, type):
        return _Walk.klass
    if issubclass(t, types.ModuleType):
        return "opaque"
    if (not hasattr(t, "__dict__") or t.__dictoffset__ == 0) and not _slots(t):
        return "opaque"  # nothing to walk: keyed by identity
    return _Walk.instance


def _slots(t) -> tuple:
    """The slot attributes that the user classes among `t` and its bases declare
    (`__slots__`), base classes' first. Library classes' slots are their internals
    (`pathlib.Path` caches its string in one): not walked, as their code is not."""
    names = _SLOTS.get(t)
    if names is None:
        found = []
        for c in reversed(t.__mro__):
            if _library(c.__module__):
                continue
            declared = vars(c).get("__slots__", ())
            if isinstance(declared, str):
                declared = (declared,)
            for k in declared:
                if k in ("__dict__", "__weakref__"):
                    continue
                if k.startswith("__") and not k.endswith("__"):
                    k = f"_{c.__name__.lstrip('_')}{k}"  # a private slot's mangled name
                if k not in found:
                    found.append(k)
        names = _SLOTS[t] = tuple(found)
    return names


_HOW: dict = {}
_SLOTS: dict = {}   # class -> its slot names
_GLOBALS: dict = {}  # code -> the global names it may read; None for library code
_MISSING = object()


def is_device_array_type(t) -> bool:
    """Whether values of class `t` are device arrays (the device kinds' registry says)."""
    return registry.is_device_array_type(t)


def _class_members(cls) -> tuple:
    """(names, values): what a user class and its user base classes hold that a method
    may read, dunder names aside (but `__call__`): functions (a static or class method's,
    a property's getter) and every other attribute, walked as any value is, so that a
    class attribute a method reads through `self` (`scale = 2.0`) is keyed too."""
    names, values = [], []
    for c in cls.__mro__:
        if _library(c.__module__):
            continue
        for k, v in vars(c).items():
            if k.startswith("__") and k != "__call__":
                continue
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            elif isinstance(v, property):
                v = v.fget
            names.append(k)
            values.append(v)
    return tuple(names), values


def _global_names(code) -> tuple:
    """Names a code object (and the code nested in it: lambdas, comprehensions) may read
    as globals."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return tuple(dict.fromkeys(names))


def _device(x):
    if type(x) is np.ndarray:
        return None
    d = registry.device_of(x)
    return None if d is None else d.name
