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
- inside each, lists, tuples, dicts and object attributes (`vars(obj)`).

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
- modules, classes and objects of library code are keyed by identity and not
  walked; arrays the trace reaches only through them (or past the walk's
  budget) are fed from the object seen when tracing (mutate them in place).

Example:
    >>> import numpy as np
    >>> c = capture(lambda x, k=2: x * k, (np.ones(3),), {})
    >>> len(c.leaves), c.where
    (1, ['argument 0'])
"""

from __future__ import annotations

import functools
import sys
import types

import numpy as np

from knetflow.devices.base import is_device_array

_STATIC = (int, float, complex, bool, str, bytes, type(None), type(Ellipsis), range)
_MAX_ITEMS = 256    # longer containers are keyed by identity, not walked
_BUDGET = 4096      # objects walked per call, at most
# code of these packages is not walked (it holds no user weights); keyed by identity
_LIBRARIES = frozenset(("knetflow", "numpy", "scipy", "dask", "distributed", "msgpack", "tqdm",
                        "cupy", "cupyx", "torch", "jax", "hypothesis", "pytest", "_pytest"))
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


class Capture:
    """What one call reads: `key` (hashable), `leaves` (arrays and Params in walk order),
    `where` (a readable path per leaf), `keep` (objects whose ids are in the key),
    `objects` (the containers, functions and objects walked, in order; `seen` maps
    their ids to positions)."""

    __slots__ = ("key", "leaves", "where", "keep", "index", "objects", "seen")

    def __init__(self):
        self.key = None
        self.leaves: list = []
        self.where: list = []
        self.keep: list = []
        self.index: dict = {}  # id(leaf) -> its first position in leaves
        self.objects: list = []
        self.seen: dict = {}   # id(walked object) -> its position in objects

    def owner(self, position, default):
        """The object at `position` of this call's walk (`default` when None)."""
        return default if position is None else self.objects[position]


def capture(f, args, kwargs) -> Capture:
    """Walk `f`, `args` and `kwargs`: see the module docstring for the rule."""
    walk = _Walk()
    walk.visit(f, "the function")
    for i, a in enumerate(args):
        walk.visit(a, f"argument {i}")
    for k in sorted(kwargs):
        walk.parts.append(k)
        walk.visit(kwargs[k], f"argument {k}=")
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
    def __init__(self):
        self.cap = Capture()
        self.parts: list = []
        self.seen = self.cap.seen  # id(walked object) -> order of its first visit
        self.budget = _BUDGET

    def opaque(self, x):
        self.parts.append(("id", id(x)))
        self.cap.keep.append(x)

    def leaf(self, x, kind, where):
        cap = self.cap
        first = cap.index.get(id(x))
        if first is not None:  # the same object twice: keyed as an alias, fed once
            self.parts.append(("alias", first))
            return
        cap.index[id(x)] = len(cap.leaves)
        cap.leaves.append(x)
        cap.where.append(where)
        self.parts.append(kind)

    def visit(self, x, where):
        t = type(x)
        if t in _STATIC or isinstance(x, np.generic):
            self.parts.append((t, x))
            return
        if t is np.ndarray:
            if x.dtype.kind in "biuf":
                self.leaf(x, ("A", x.shape, x.dtype.char), where)
            else:
                self.opaque(x)
            return
        if is_param(x):
            value = x.value
            kind = ("P", value.shape, float_dtype(value.dtype).char, _device(value))
            self.leaf(x, kind, where)
            return
        if is_device_array(x):
            self.leaf(x, ("A", x.shape, x.dtype.char, _device(x)), where)
            return
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
        self._compound(x, t, where)

    def _compound(self, x, t, where):
        if t is list or t is tuple or (isinstance(x, tuple) and hasattr(x, "_fields")):
            if len(x) > _MAX_ITEMS:
                self.opaque(x)
                return
            self.parts.append((t, len(x)))
            for i, v in enumerate(x):
                self.visit(v, f"{where}[{i}]")
        elif t is dict:
            if len(x) > _MAX_ITEMS or not all(type(k) in _STATIC for k in x):
                self.opaque(x)
                return
            self.parts.append((dict, tuple(x)))
            for k, v in x.items():
                self.visit(v, f"{where}[{k!r}]")
        elif t is types.FunctionType:
            self._function(x, where)
        elif t is types.MethodType:
            self.parts.append("method")
            self.visit(x.__func__, where)
            self.visit(x.__self__, f"{where}.__self__")
        elif t is functools.partial:
            self.parts.append("partial")
            self.visit(x.func, where)
            self.visit(x.args, where)
            self.visit(x.keywords, where)
        elif isinstance(x, type):
            self._class(x, where)
        elif isinstance(x, types.ModuleType):
            self.opaque(x)
        elif hasattr(x, "__dict__"):
            self.parts.append(("obj", t))
            self.visit(t, f"{where} (class)")  # its methods, unless library code
            attrs = vars(x)
            self.parts.append(tuple(attrs))
            for k, v in attrs.items():
                self.visit(v, f"{where}.{k}")
        else:
            self.opaque(x)

    def _function(self, fn, where):
        if _library(fn.__module__):
            self.opaque(fn)
            return
        code = fn.__code__
        self.parts.append(code)
        name = fn.__qualname__
        for k, cell in enumerate(fn.__closure__ or ()):
            try:
                content = cell.cell_contents
            except ValueError:  # a cell not yet bound
                self.parts.append("empty cell")
                continue
            self.visit(content, f"{code.co_freevars[k]} (captured by {name})")
        if fn.__defaults__:
            self.visit(fn.__defaults__, f"defaults of {name}")
        if fn.__kwdefaults__:
            self.visit(fn.__kwdefaults__, f"keyword defaults of {name}")
        fglobals = fn.__globals__
        for n in _global_names(code):
            if n in fglobals:
                self.visit(fglobals[n], f"global {n} (read by {name})")

    def _class(self, cls, where):
        """A user class: its functions (methods read globals too) and class attributes."""
        if _library(cls.__module__):
            self.opaque(cls)
            return
        self.parts.append(("class", id(cls)))
        self.cap.keep.append(cls)
        for k, v in vars(cls).items():
            if k.startswith("__") and k != "__call__":
                continue
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            elif isinstance(v, property):
                v = v.fget
            if type(v) is types.FunctionType or type(v) is np.ndarray or is_param(v):
                self.visit(v, f"{cls.__qualname__}.{k}")


@functools.lru_cache(maxsize=4096)
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
    from knetflow.devices import transfers

    d = transfers.device_of(x)
    return None if d is None else d.name
