"""A capture walk compiled into a guard: the same answer as the walk, without the walk.

`graph/capture.py` walks everything a traced function reads at every call, so
that a cached plan never answers for other inputs. For the common call, the
same function called with the same structure again, most of that walk checks
what has not changed. `compile_guard(f, args, kwargs, cap)` turns one call's
walk into a straight-line Python function specialized to that structure:

    guard(f, args, kwargs) -> make(leaves, objects) or None

It reads the same places in the same order (arguments, closure cells,
defaults, the globals the code names, attributes, items) and checks what the
walk would put in the key: the types, code objects, container lengths and
keys, array shapes and dtypes, static values, which objects are the same and
which differ. It returns the call's leaves and walked objects exactly as
`capture` would (same objects, same order) only when the walk would give the
same key; any difference, and anything that raises, gives None, and the
caller walks as before. A walk the guard cannot mirror exactly (device
arrays, symbols, unbound cells, a walk past its budget) gets no guard.

Example:
    >>> import numpy as np
    >>> from knetflow.graph.capture import capture
    >>> f = lambda x: x * 2.0
    >>> args = (np.ones(3),)
    >>> guard = compile_guard(f, args, {}, capture(f, args, {}))
    >>> x = np.zeros(3)
    >>> leaves, objects = guard(f, (x,), {})
    >>> leaves[0] is x
    True
    >>> guard(f, (np.zeros(4),), {}) is None   # another shape: another key
    True
"""

from __future__ import annotations

import types

import numpy as np

from knetflow.graph import capture as walk_rules
from knetflow.graph.capture import _BUDGET, _GLOBALS, _HOW, _MAX_ITEMS, _STATIC

VERIFY = False  # tests set this: every guard hit is checked against a full walk


class _Unsupported(Exception):
    """The walk holds something a guard does not mirror exactly."""


def compile_guard(f, args, kwargs, cap, make=None):
    """The guard of the call `f(*args, **kwargs)` whose capture is `cap`, or None.

    What it returns for a call it recognizes is `make(leaves, objects)` (by default the
    pair itself): the caller's own record of a capture, made inside the guard."""
    rec = _Recorder()
    try:
        rec.visit(f, "f")
        rec.visit(args, "args")
        if kwargs:
            names = sorted(kwargs)
            rec.line(f"if sorted(kwargs) != {rec.const(names)}: return None")
            for k in names:
                v = rec.var()
                rec.line(f"{v} = kwargs[{rec.const(k)}]")
                rec.visit(kwargs[k], v)
        else:
            rec.line("if kwargs: return None")
    except _Unsupported:
        return None
    # the recorder must have found what the walk found, and the code it wrote must give
    # that back for this very call: else no guard, rather than a wrong one
    if not (_same(rec.leaf_values, cap.leaves) and _same(rec.walked_values, cap.objects)):
        return None
    found = rec.build(_pair)(f, args, kwargs)
    if found is None or not (_same(found[0], cap.leaves) and _same(found[1], cap.objects)):
        return None
    return rec.build(make or _pair)


def _pair(leaves, objects):
    return leaves, objects


def _same(xs, ys) -> bool:
    return len(xs) == len(ys) and all(map(_is, xs, ys))


def _is(a, b) -> bool:
    return a is b


class _Recorder:
    """Walks like `capture._Walk` and writes the checks that walk implies, as code."""

    def __init__(self):
        self.lines: list = []
        self.names: dict = {"ndarray": np.ndarray, "ModuleType": types.ModuleType,
                            "class_members": walk_rules._class_members}
        self.consts: dict = {}   # id(obj) -> its name in the guard's namespace
        self.count = 0
        self.budget = _BUDGET
        self.leaf_vars: list = []     # per leaf: the local holding it
        self.leaf_values: list = []
        self.leaf_index: dict = {}    # id(leaf) -> position
        self.walked_vars: list = []
        self.walked_values: list = []
        self.seen: dict = {}          # id(walked object) -> position

    # -- writing code --
    def line(self, text):
        self.lines.append(text)

    def var(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def const(self, obj) -> str:
        name = self.consts.get(id(obj))
        if name is None:
            name = self.consts[id(obj)] = f"k{len(self.consts)}"
            self.names[name] = obj
        return name

    def build(self, make):
        body = ["try:"] + ["    " + s for s in self.lines] + [
            "except Exception:", "    return None"]
        body += self._distinct(self.leaf_vars, self.leaf_values)
        body += self._distinct(self.walked_vars, self.walked_values)
        body.append(f"return make([{', '.join(self.leaf_vars)}], "
                    f"[{', '.join(self.walked_vars)}])")
        src = "def guard(f, args, kwargs):\n" + "".join(f"    {s}\n" for s in body)
        namespace = dict(self.names, make=make)
        exec(compile(src, "<knetflow capture guard>", "exec"), namespace)  # noqa: S102 - our own source
        guard = namespace["guard"]
        guard.source = src
        return guard

    def _distinct(self, names, values) -> list:
        """Lines checking that objects the walk found distinct still are: an object seen
        twice is keyed as such. Only objects of one type can be the same object."""
        groups: dict = {}
        for name, value in zip(names, values):
            groups.setdefault(type(value), []).append(name)
        out = []
        for group in groups.values():
            if len(group) == 2:
                out.append(f"if {group[0]} is {group[1]}: return None")
            elif len(group) > 2:
                out.append(f"if len({{{', '.join(f'id({n})' for n in group)}}}) != "
                           f"{len(group)}: return None")
        return out

    # -- the walk, as capture._Walk does it --
    def leaf(self, x, v):
        if id(x) in self.leaf_index:
            raise _Unsupported  # aliased leaves: the walk keys them; rare, walked instead
        self.leaf_index[id(x)] = len(self.leaf_vars)
        self.leaf_vars.append(v)
        self.leaf_values.append(x)

    def opaque(self, x, v):
        self.line(f"if {v} is not {self.const(x)}: return None")

    def array_checks(self, a, v) -> str:
        return (f"type({v}) is not ndarray or {v}.shape != {self.const(a.shape)} "
                f"or {v}.dtype.char != {self.const(a.dtype.char)}")

    def visit(self, x, v):
        t = type(x)
        if t is np.ndarray:
            if x.dtype.kind not in "biuf":
                self.opaque(x, v)
            else:
                self.line(f"if {self.array_checks(x, v)}: return None")
                self.leaf(x, v)
            return
        how = _HOW.get(t)
        if how is None:
            how = _HOW[t] = walk_rules._how(t)
        if how == "static":
            self.line(f"if type({v}) is not {self.const(t)} or not ({v} == "
                      f"{self.const(x)}): return None")
        elif how == "param":
            value = x.value
            if type(value) is not np.ndarray:
                raise _Unsupported  # a device's array: keyed by its device
            a = self.var()
            self.line(f"if type({v}) is not {self.const(t)}: return None")
            self.line(f"{a} = {v}.value")
            self.line(f"if {self.array_checks(value, a)}: return None")
            self.leaf(x, v)
        elif how == "opaque":
            self.opaque(x, v)
        elif how in ("device", "symbol"):
            raise _Unsupported
        else:
            self.budget -= 1
            if self.budget < 0:
                raise _Unsupported
            first = self.seen.get(id(x))
            if first is not None:  # the walk keys the repeat by position: same object
                self.line(f"if {v} is not {self.walked_vars[first]}: return None")
                return
            self.line(f"if type({v}) is not {self.const(t)}: return None")
            self.seen[id(x)] = len(self.walked_vars)
            self.walked_vars.append(v)
            self.walked_values.append(x)
            getattr(self, how.__name__)(x, t, v)

    def items(self, values, v):
        """Unpack a sequence of known length into fresh locals and visit them."""
        if not values:
            self.line(f"if len({v}): return None")
            return
        names = [self.var() for _ in values]
        self.line(f"{', '.join(names)}, = {v}")  # a length change raises: no guard
        for x, name in zip(values, names):
            self.visit(x, name)

    def sequence(self, x, t, v):
        if len(x) > _MAX_ITEMS:
            self.opaque(x, v)
            return
        self.items(list(x), v)

    def mapping(self, x, t, v):
        if len(x) > _MAX_ITEMS or not all(type(k) in _STATIC for k in x):
            self.opaque(x, v)
            return
        keys = tuple(x)
        self.line(f"if tuple({v}) != {self.const(keys)} or tuple(map(type, {v})) != "
                  f"{self.const(tuple(map(type, keys)))}: return None")
        for k, value in x.items():
            name = self.var()
            self.line(f"{name} = {v}[{self.const(k)}]")
            self.visit(value, name)

    def method(self, x, t, v):
        self.attribute(x, v, "__func__")
        self.attribute(x, v, "__self__")

    def partial(self, x, t, v):
        self.attribute(x, v, "func")
        self.attribute(x, v, "args")
        self.attribute(x, v, "keywords")

    def attribute(self, x, v, name):
        a = self.var()
        self.line(f"{a} = {v}.{name}")
        self.visit(getattr(x, name), a)

    def instance(self, x, t, v):
        self.visit(t, self.const(t))  # its class: checked by the type test just made
        self.attributes(x, t, v)

    def attributes(self, x, t, v):
        attrs = getattr(x, "__dict__", None)
        if attrs is not None:
            d = self.var()
            self.line(f"{d} = {v}.__dict__")
            self.line(f"if tuple({d}) != {self.const(tuple(attrs))}: return None")
            for k, value in attrs.items():
                name = self.var()
                self.line(f"{name} = {d}[{self.const(k)}]")
                self.visit(value, name)
        for k in walk_rules._slots(t):
            if not hasattr(x, k):
                raise _Unsupported  # an unset slot: keyed by the walk, rare, walked instead
            self.attribute(x, v, k)

    def sequence_object(self, x, t, v):
        self.sequence(x, t, v)
        self.attributes(x, t, v)

    def mapping_object(self, x, t, v):
        self.mapping(x, t, v)
        self.attributes(x, t, v)

    def function(self, fn, t, v):
        code = fn.__code__
        names = _GLOBALS.get(code)
        if names is None:
            names = _GLOBALS[code] = (None if walk_rules._library(fn.__module__)
                                      else walk_rules._global_names(code))
        if names is None:
            self.opaque(fn, v)
            return
        self.line(f"if {v}.__code__ is not {self.const(code)}: return None")
        cells = fn.__closure__ or ()
        if cells:
            names_cells = [self.var() for _ in cells]
            self.line(f"{', '.join(names_cells)}, = {v}.__closure__")
            for cell, c in zip(cells, names_cells):
                try:
                    content = cell.cell_contents
                except ValueError:
                    raise _Unsupported from None  # an unbound cell
                name = self.var()
                self.line(f"{name} = {c}.cell_contents")
                self.visit(content, name)
        for attr in ("__defaults__", "__kwdefaults__"):
            held = getattr(fn, attr)
            if held:
                self.attribute(fn, v, attr)
            else:
                self.line(f"if {v}.{attr}: return None")
        g = self.var()
        self.line(f"{g} = {v}.__globals__")
        fglobals = fn.__globals__
        for n in names:
            value = fglobals.get(n, _MISSING)
            if value is _MISSING or type(value) is types.ModuleType:
                # the walk passes over both alike
                self.line(f"if type({g}.get({self.const(n)})) is not ModuleType and "
                          f"{self.const(n)} in {g}: return None")
            else:
                name = self.var()
                self.line(f"{name} = {g}[{self.const(n)}]")
                self.visit(value, name)

    def klass(self, cls, t, v):
        if walk_rules._library(cls.__module__):
            self.opaque(cls, v)
            return
        self.line(f"if {v} is not {self.const(cls)}: return None")
        names, values = walk_rules._class_members(cls)
        members = self.var()
        self.line(f"{members} = class_members({v})")
        self.line(f"if {members}[0] != {self.const(names)}: return None")
        self.items(values, f"{members}[1]")


_MISSING = object()
