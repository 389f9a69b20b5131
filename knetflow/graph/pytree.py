"""Containers of values: lists, tuples, dicts and any nesting of them.

`kf.grad(loss)(w, x, y)` with `w = [W, b]` differentiates every number in
`w` and returns gradients of the same structure (Knet, HIPS autograd and JAX
accept the same containers). `flatten` lists a container's leaves and gives a
`Tree` that rebuilds the same structure around new leaves. The most common
argument, one list, tuple or dict of leaves, has a shortcut: `one_level` lists
its leaves without building a Tree, `may_be_container` tells from a leaf's type
alone whether `flatten` might walk it (a caller keying on the leaves' types then
knows the structure), and `rebuild_level` puts new leaves back.

Example:
    >>> leaves, tree = flatten({"w": [1.0, 2.0], "b": (3.0,)})
    >>> leaves
    [1.0, 2.0, 3.0]
    >>> tree.rebuild([10.0, 20.0, 30.0])
    {'w': [10.0, 20.0], 'b': (30.0,)}
"""

from __future__ import annotations

from knetflow.errors import TracingError

_MAX_DEPTH = 64  # deeper nesting is refused rather than recursing without bound


class Tree:
    """The structure of a flattened container: rebuilds it around new leaves."""

    __slots__ = ("kind", "keys", "children", "count")

    def __init__(self, kind, keys=None, children=()):
        self.kind = kind          # None for a leaf, else list / tuple (or a namedtuple) / dict
        self.keys = keys          # a dict's keys, in order
        self.children = children  # sub-trees
        self.count = 1 if kind is None else sum(c.count for c in children)

    def rebuild(self, leaves):
        """The structure with `leaves` (in flatten's order) in place of the old ones."""
        it = iter(leaves)
        out = self._build(it)
        if next(it, _END) is not _END:
            raise ValueError(f"rebuild: more leaves than the {self.count} of the structure")
        return out

    def _build(self, it):
        if self.kind is None:
            leaf = next(it, _END)
            if leaf is _END:
                raise ValueError(f"rebuild: fewer leaves than the {self.count} of the structure")
            return leaf
        items = [c._build(it) for c in self.children]
        if self.kind is dict:
            return dict(zip(self.keys, items))
        if self.kind is list:
            return items
        if self.kind is tuple:
            return tuple(items)
        return self.kind(*items)  # a namedtuple

    def __repr__(self) -> str:
        if self.kind is None:
            return "*"
        return f"{getattr(self.kind, '__name__', self.kind)}{list(self.children)}"


_END = object()
_LEAF = Tree(None)


def is_container(x) -> bool:
    """Whether `x` is a list, tuple (namedtuples too) or dict, whose items are walked."""
    return type(x) in (list, tuple, dict) or (isinstance(x, tuple) and hasattr(x, "_fields"))


def flatten(x) -> tuple:
    """(leaves in order, Tree) of a container; anything else is one leaf."""
    leaves: list = []
    return leaves, _flatten(x, leaves, 0)


def _flatten(x, leaves, depth):
    if not is_container(x):
        leaves.append(x)
        return _LEAF
    if depth >= _MAX_DEPTH:
        raise TracingError(f"a container nested more than {_MAX_DEPTH} levels deep cannot be "
                           "differentiated")
    if type(x) is dict:
        keys = tuple(x)
        return Tree(dict, keys, tuple(_flatten(x[k], leaves, depth + 1) for k in keys))
    kind = list if type(x) is list else type(x)
    return Tree(kind, None, tuple(_flatten(v, leaves, depth + 1) for v in x))


def one_level(x) -> tuple:
    """(kind, leaves): list, tuple or dict (exactly those types) and its items (a dict's
    values), or None and (x,) for anything else. The leaves may be containers too: see
    `may_be_container`.

    Example:
        >>> one_level({"w": 1.0, "b": [2.0]})
        (<class 'dict'>, (1.0, [2.0]))
    """
    kind = type(x)
    if kind is list or kind is tuple:
        return kind, x
    if kind is dict:
        return kind, tuple(x.values())
    return None, (x,)


def may_be_container(t: type) -> bool:
    """Whether a value of type t may be a container `flatten` walks: lists, dicts, and
    tuples with their subclasses (namedtuples are walked, other subclasses not: `flatten`
    looks at the value to say which)."""
    return t is list or t is dict or issubclass(t, tuple)


def rebuild_level(kind, like, items):
    """`one_level`'s structure around new `items`: a list (`items` itself), a tuple, a
    dict with `like`'s keys in order, or for kind None the one item."""
    if kind is list:
        return items
    if kind is tuple:
        return tuple(items)
    if kind is dict:
        return dict(zip(like, items))
    return items[0]
