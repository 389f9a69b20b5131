"""Binary elementwise ops with NumPy broadcasting: arithmetic, max/min, comparisons, where.

Gradients are written at the broadcast shape; autodiff sums them back to each
input's shape once, centrally.
"""

from __future__ import annotations

from knetflow.ops.base import Op, Spec, apply, broadcast_shapes, register, result_dtype

_COMPARE_DTYPE = "bool"


def _binary_infer(name):
    def infer(x: Spec, y: Spec) -> Spec:
        return Spec(broadcast_shapes(name, x, y), result_dtype(x, y))

    return staticmethod(infer)


@register
class Add(Op):
    """x + y."""
    name, ufunc, elementwise = "add", "add", True
    infer = _binary_infer("add")

    def grad(g, out, x, y):
        return g, g


@register
class Sub(Op):
    """x - y."""
    name, ufunc, elementwise = "sub", "subtract", True
    infer = _binary_infer("sub")

    def grad(g, out, x, y):
        return g, neg(g)


@register
class Mul(Op):
    """x * y."""
    name, ufunc, elementwise = "mul", "multiply", True
    saves = (0, 1)
    infer = _binary_infer("mul")

    def grad(g, out, x, y):
        return g * y, g * x


@register
class Div(Op):
    """x / y (true division: integers give float64)."""
    name, ufunc, elementwise = "div", "divide", True
    saves = ("out", 1)

    def infer(x: Spec, y: Spec) -> Spec:
        dtype = result_dtype(x, y)
        if dtype not in ("float16", "float32", "float64"):
            dtype = "float64"
        return Spec(broadcast_shapes("div", x, y), dtype)

    def grad(g, out, x, y):
        gx = g / y
        return gx, neg(gx * out)


@register
class Pow(Op):
    """x ** y (Knet `^`)."""
    name, ufunc, elementwise = "pow", "power", True
    saves = ("out", 0, 1)
    infer = _binary_infer("pow")

    def grad(g, out, x, y):
        from knetflow.ops.elementwise import log

        return g * y * x ** (y - 1), g * out * log(x)


@register
class Maximum(Op):
    """Elementwise max(x, y) (Knet `max.(x, y)`); ties send the gradient to x."""
    name, ufunc, elementwise = "maximum", "maximum", True
    saves = (0, 1)
    infer = _binary_infer("maximum")

    def grad(g, out, x, y):
        return where(ge(x, y), g, 0), where(ge(x, y), 0, g)


@register
class Minimum(Op):
    """Elementwise min(x, y); ties send the gradient to x."""
    name, ufunc, elementwise = "minimum", "minimum", True
    saves = (0, 1)
    infer = _binary_infer("minimum")

    def grad(g, out, x, y):
        return where(le(x, y), g, 0), where(le(x, y), 0, g)


def _comparison(opname, ufunc_name, doc):
    def infer(x: Spec, y: Spec) -> Spec:
        return Spec(broadcast_shapes(opname, x, y), _COMPARE_DTYPE)

    cls = type(opname.capitalize(), (Op,), {
        "__doc__": doc, "name": opname, "ufunc": ufunc_name, "elementwise": True,
        "infer": staticmethod(infer), "nondiff": (0, 1),
    })
    return register(cls)


Lt = _comparison("lt", "less", "x < y (bool).")
Le = _comparison("le", "less_equal", "x <= y (bool).")
Gt = _comparison("gt", "greater", "x > y (bool).")
Ge = _comparison("ge", "greater_equal", "x >= y (bool).")
Eq = _comparison("eq", "equal", "x == y (bool).")
Ne = _comparison("ne", "not_equal", "x != y (bool).")


@register
class Neg(Op):
    """-x."""
    name, ufunc, elementwise = "neg", "negative", True

    def infer(x: Spec) -> Spec:
        return x

    def grad(g, out, x):
        return (neg(g),)


@register
class Where(Op):
    """where(cond, x, y): x where cond holds, else y (broadcasting)."""
    name, elementwise, out_arg = "where", True, True
    nondiff = (0,)
    saves = (0,)

    def infer(c: Spec, x: Spec, y: Spec) -> Spec:
        return Spec(broadcast_shapes("where", c, x, y), result_dtype(x, y))

    def forward(xp, c, x, y, out=None):
        if out is None:
            return xp.where(c, x, y)
        xp.copyto(out, y)
        xp.copyto(out, x, where=c)
        return out

    def grad(g, out, c, x, y):
        return None, where(c, g, 0), where(c, 0, g)


def add(x, y):
    """x + y with broadcasting."""
    return apply(Add, x, y)


def sub(x, y):
    """x - y with broadcasting."""
    return apply(Sub, x, y)


def mul(x, y):
    """x * y with broadcasting."""
    return apply(Mul, x, y)


def div(x, y):
    """x / y with broadcasting."""
    return apply(Div, x, y)


def pow(x, y):  # noqa: A001 - Knet/NumPy name
    """x ** y with broadcasting."""
    return apply(Pow, x, y)


def maximum(x, y):
    """Elementwise maximum of x and y."""
    return apply(Maximum, x, y)


def minimum(x, y):
    """Elementwise minimum of x and y."""
    return apply(Minimum, x, y)


def lt(x, y):
    return apply(Lt, x, y)


def le(x, y):
    return apply(Le, x, y)


def gt(x, y):
    return apply(Gt, x, y)


def ge(x, y):
    return apply(Ge, x, y)


def eq(x, y):
    return apply(Eq, x, y)


def ne(x, y):
    return apply(Ne, x, y)


def neg(x):
    """-x."""
    return apply(Neg, x)


def where(cond, x, y):
    """x where cond is true, else y (NumPy `where`); use it instead of Python `if`.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.where(np.array([True, False]), np.array([1., 2.]), 0.0)
        array([1., 0.])
    """
    return apply(Where, cond, x, y)
