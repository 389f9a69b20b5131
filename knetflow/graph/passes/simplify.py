"""Algebraic simplification: powers with a constant exponent of 1 or 2, products and
quotients by a constant 1, and single values spread to a whole array before an
arithmetic op.

Gradients of `x ** 2` come out as `2 * x ** 1`, and a squared error is a `pow` whose
result other nodes read: `x ** 1` is x itself, and `x ** 2` is `x * x` (NumPy's power
squares a float the same way), an op the fusion pass can join to its neighbours.

Backward graphs start from the loss's gradient, a constant 1, which the first
gradient rule multiplies in: `x * 1`, `1 * x` and `x / 1` are x itself (also
for -0, inf and NaN) when the result has x's shape and dtype.

The gradient of a mean or of a sum spreads one number over the array it came from
(`broadcast_like`, then perhaps `expand_dims` or `reshape`) and multiplies it in: the
product can read the number itself, which NumPy broadcasts for free, and each
spreading op was a call per step.

Example:
    >>> import knetflow as kf
    >>> x = kf.placeholder("x", (3,))
    >>> [n.op for n in simplify_powers(kf.Graph([x ** 2])).nodes]
    ['input', 'mul']
"""

from __future__ import annotations

import numpy as np

from knetflow.graph.node import Graph
from knetflow.graph.passes.dce import eliminate_dead_code
from knetflow.graph.passes.rewrite import rewrite


def simplify_powers(graph: Graph) -> Graph:
    """pow(x, c) with c a constant 1 or 2 of one value: x, or mul(x, x), where the result
    has x's shape and dtype (otherwise the node stays)."""

    def visit(node):
        if node.op != "pow" or node.inputs[1].op != "const":
            return node
        x, c = node.inputs
        value = np.asarray(c.attrs["value"])
        if node.spec != x.spec or value.size != 1 or x.spec.dtype != node.spec.dtype:
            return node
        exponent = value.item()
        if exponent == 1:
            return x
        if exponent == 2:
            return node.replace(op="mul", inputs=(x, x), attrs={})
        return node

    return rewrite(graph, visit)


def _is_one(node) -> bool:
    """A constant holding the single value 1."""
    if node.op != "const":
        return False
    value = np.asarray(node.attrs["value"])
    return value.size == 1 and value.dtype != np.bool_ and value.item() == 1


def simplify_units(graph: Graph) -> Graph:
    """mul(x, 1), mul(1, x) and div(x, 1), with 1 a constant of one value: x, where the
    result has x's shape and dtype (otherwise the node stays).

    Example:
        >>> import knetflow as kf
        >>> x = kf.placeholder("x", (3,))
        >>> [n.op for n in simplify_units(kf.Graph([kf.exp(x * kf.const(1.0))])).nodes]
        ['input', 'exp']
    """

    def visit(node):
        if node.op not in ("mul", "div") or node.attrs:
            return node
        a, b = node.inputs
        for x, one in ((a, b), (b, a)) if node.op == "mul" else ((a, b),):
            if _is_one(one) and x.spec == node.spec:
                return x
        return node

    new = rewrite(graph, visit)
    return graph if new is graph else eliminate_dead_code(new)  # the constants left unread


# arithmetic whose kernels broadcast as NumPy does, whatever the shapes
_ARITHMETIC = frozenset(("add", "sub", "mul", "div"))
# ops that only spread or rearrange their first input: from one value, all elements equal it
_SPREADING = frozenset(("broadcast_like", "broadcast_to", "expand_dims", "reshape",
                        "squeeze", "transpose"))


def simplify_broadcasts(graph: Graph) -> Graph:
    """add, sub, mul or div reading a single value spread to an array (through
    `broadcast_like`, `expand_dims`, `reshape` ...) read the value itself, when the other
    input already has the result's shape and every shape is known, and the value has
    the result's dtype: the result is the same array.

    Example:
        >>> import knetflow as kf
        >>> x, s = kf.placeholder("x", (4, 3)), kf.placeholder("s", ())
        >>> spread = kf.expand_dims(kf.broadcast_like(s, kf.sum(x, axis=1)), 1)
        >>> [n.op for n in simplify_broadcasts(kf.Graph([x * spread])).nodes]
        ['input', 'input', 'mul']
    """

    def visit(node):
        if node.op not in _ARITHMETIC or node.attrs or not node.spec.is_static:
            return node
        inputs = list(node.inputs)
        for k, x in enumerate(inputs):
            other, source = inputs[1 - k], x
            while source.op in _SPREADING:
                source = source.inputs[0]
            if (source is not x and source.spec.is_static and source.spec.size == 1
                    and source.spec.ndim <= node.spec.ndim
                    and source.spec.dtype == node.spec.dtype == other.spec.dtype
                    and other.spec.shape == node.spec.shape):
                inputs[k] = source
                return node.replace(inputs=tuple(inputs))
        return node

    new = rewrite(graph, visit)
    return graph if new is graph else eliminate_dead_code(new)  # the spreads left unread
