"""Binary elementwise ops with NumPy broadcasting: arithmetic, max/min, comparisons, where.

Gradients are written at the broadcast shape; autodiff sums them back to each
input's shape once, centrally.
"""

from __future__ import annotations

from knetflow.ops.base import Op, Spec, apply, broadcast_shapes, get_op, register, result_dtype

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
    """x ** y (Knet `^`).

    Gradients at the edges, as HIPS autograd and JAX define them: d/dx x**0 is 0
    everywhere (also at x = 0, where y * x**(y-1) would be 0 * inf), and d/dy x**y
    is 0 at x = 0 (where x**y log x would be 0 * -inf). The guards replace the
    operands there, so no inf or NaN is formed on the way.
    """
    name, ufunc, elementwise = "pow", "power", True
    saves = ("out", 0, 1)
    infer = _binary_infer("pow")

    def grad(g, out, x, y):
        log = get_op("log")  # by name: elementwise.py imports this module
        # where y == 0 the factor y is 0 already; exponent 1 keeps x**(...) finite
        gx = g * y * x ** where(eq(y, 0), 1, y - 1)
        gy = g * out * apply(log, where(eq(x, 0), 1, x))
        return gx, gy


def _tie_split(g, wins, ties):
    """g where `wins`, half of g where `ties`, else 0."""
    return where(wins, g, where(ties, g * 0.5, 0))


@register
class Maximum(Op):
    """Elementwise max(x, y) (Knet `max.(x, y)`).

    Where x == y the gradient is split evenly, half to each operand (HIPS autograd's
    and JAX's choice), so maximum(x, y) and maximum(y, x) have the same gradients.
    """
    name, ufunc, elementwise = "maximum", "maximum", True
    saves = (0, 1)
    infer = _binary_infer("maximum")

    def grad(g, out, x, y):
        ties = eq(x, y)
        return _tie_split(g, gt(x, y), ties), _tie_split(g, lt(x, y), ties)


@register
class Minimum(Op):
    """Elementwise min(x, y); where x == y the gradient is split evenly between x and y."""
    name, ufunc, elementwise = "minimum", "minimum", True
    saves = (0, 1)
    infer = _binary_infer("minimum")

    def grad(g, out, x, y):
        ties = eq(x, y)
        return _tie_split(g, lt(x, y), ties), _tie_split(g, gt(x, y), ties)


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
    """Elementwise maximum of x and y; where x == y each gets half of the gradient."""
    return apply(Maximum, x, y)


def minimum(x, y):
    """Elementwise minimum of x and y; where x == y each gets half of the gradient."""
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
