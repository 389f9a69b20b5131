"""Ops on the structure of matrices, with NumPy's semantics: the triangles `tril` and
`triu`, `diag` (vector to diagonal matrix and back) and `trace`.

Their gradients are the same selections again (`tril`, `diag`), the adjoint that
puts a diagonal back into a matrix (`diag_scatter`), or a product with an
identity-like mask (`eye_like`), so every gradient here differentiates again.
"""

from __future__ import annotations

from knetflow.ops.base import Op, Spec, accumulate_dtype, apply, fail, fmt, register

__all__ = ["diag", "trace", "tril", "triu"]


def _tri_infer(opname, x: Spec, k) -> Spec:
    if x.ndim == 0:
        fail(opname, f"needs an array of at least one dimension, got {fmt(x)}")
    if x.ndim == 1:  # NumPy takes a vector as the rows of a square matrix
        return x.with_shape((x.shape[0], x.shape[0]))
    return x


@register
class Tril(Op):
    """The lower triangle of x's last two axes: zeros above diagonal k (NumPy `tril`).

    k = 0 is the main diagonal, k > 0 above it, k < 0 below. A 1-D x is taken, as
    in NumPy, as a square matrix whose rows are all x.
    """
    name = "tril"

    def infer(x: Spec, k=0) -> Spec:
        return _tri_infer("tril", x, k)

    def forward(xp, x, k=0):
        return xp.tril(x, k)

    def grad(g, out, x, k=0):
        return (tril(g, k),)


@register
class Triu(Op):
    """The upper triangle of x's last two axes: zeros below diagonal k (NumPy `triu`)."""
    name = "triu"

    def infer(x: Spec, k=0) -> Spec:
        return _tri_infer("triu", x, k)

    def forward(xp, x, k=0):
        return xp.triu(x, k)

    def grad(g, out, x, k=0):
        return (triu(g, k),)


def _diag_len(rows, cols, k):
    """Length of diagonal k of a rows x cols matrix (None when a dim is dynamic)."""
    if rows is None or cols is None:
        return None
    return max(0, min(rows, cols - k) if k >= 0 else min(rows + k, cols))


def _diag_index(xp, n, k):
    """Row and column indices of the n elements of diagonal k."""
    steps = xp.arange(n)
    return steps + max(-k, 0), steps + max(k, 0)


@register
class Diag(Op):
    """NumPy `diag`: a vector becomes a square matrix with it on diagonal k, a matrix
    gives its diagonal k as a vector."""
    name = "diag"

    def infer(x: Spec, k=0) -> Spec:
        if x.ndim == 1:
            n = x.shape[0]
            size = None if n is None else n + abs(k)
            return x.with_shape((size, size))
        if x.ndim == 2:
            return x.with_shape((_diag_len(x.shape[0], x.shape[1], k),))
        fail("diag", f"needs a 1-D or 2-D input, got {fmt(x)}")

    def forward(xp, x, k=0):
        out = xp.diag(x, k)
        return out.copy() if x.ndim == 2 else out  # NumPy's diagonal is a read-only view

    def grad(g, out, x, k=0):
        if x.ndim == 1:
            return (diag(g, k),)
        return (diag_scatter(g, x, k),)


@register
class DiagScatter(Op):
    """Zeros shaped like the matrix `like`, with the vector g on diagonal k (the adjoint of
    taking a matrix's diagonal); `like`'s values are not read."""
    name, nondiff = "diag_scatter", (1,)

    def infer(g: Spec, like: Spec, k=0) -> Spec:
        if g.ndim != 1 or like.ndim != 2:
            fail("diag_scatter", f"needs a vector and a matrix, got {fmt(g)} and {fmt(like)}")
        n = _diag_len(like.shape[0], like.shape[1], k)
        if n is not None and g.shape[0] is not None and n != g.shape[0]:
            fail("diag_scatter", f"diagonal {k} of {fmt(like)} has {n} elements, not "
                                 f"the {g.shape[0]} of {fmt(g)}")
        return Spec(like.shape, g.dtype)

    def forward(xp, g, like, k=0):
        out = xp.zeros(like.shape, dtype=g.dtype)
        out[_diag_index(xp, g.shape[0], k)] = g
        return out

    def grad(gout, out, g, like, k=0):
        return diag(gout, k), None


@register
class EyeLike(Op):
    """Ones where (column - row) == k over x's first two axes, zeros elsewhere, with size-1
    trailing axes so that it broadcasts against x; x's values are not read."""
    name, nondiff = "eye_like", (0,)

    def infer(x: Spec, k=0) -> Spec:
        if x.ndim < 2:
            fail("eye_like", f"needs at least two dimensions, got {fmt(x)}")
        return x.with_shape(x.shape[:2] + (1,) * (x.ndim - 2))

    def forward(xp, x, k=0):
        eye = xp.eye(x.shape[0], x.shape[1], k, dtype=x.dtype)
        return eye.reshape(eye.shape + (1,) * (x.ndim - 2))


@register
class Trace(Op):
    """Sum of diagonal `offset` over x's first two axes (NumPy `trace`, axis1=0, axis2=1).

    For a matrix this is a scalar; an N-D x gives an array of shape x.shape[2:].
    Bool and small integer inputs widen as in NumPy (int32 -> int64).
    """
    name = "trace"

    def infer(x: Spec, offset=0) -> Spec:
        if x.ndim < 2:
            fail("trace", f"needs an array of at least two dimensions, got {fmt(x)}")
        return Spec(x.shape[2:], accumulate_dtype(x.dtype))

    def forward(xp, x, offset=0):
        return xp.asarray(xp.trace(x, offset, dtype=accumulate_dtype(str(x.dtype))))

    def grad(g, out, x, offset=0):
        # g (shape x.shape[2:]) broadcasts against the mask's size-1 trailing axes
        return (eye_like(x, offset) * g,)


def _int(opname, what, value) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        fail(opname, f"{what} must be an int, got {value!r}")
    return int(value.__index__())


def tril(x, k=0):
    """The lower triangle of x (NumPy `tril`): zeros above diagonal k of the last two axes.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.tril(np.ones((3, 3)), -1)
        array([[0., 0., 0.],
               [1., 0., 0.],
               [1., 1., 0.]])
    """
    return apply(Tril, x, k=_int("tril", "k", k))


def triu(x, k=0):
    """The upper triangle of x (NumPy `triu`): zeros below diagonal k of the last two axes."""
    return apply(Triu, x, k=_int("triu", "k", k))


def diag(x, k=0):
    """NumPy `diag`: a 1-D x becomes a matrix with x on diagonal k; a 2-D x gives its
    diagonal k as a 1-D array.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.diag(np.array([1.0, 2.0]), 1)
        array([[0., 1., 0.],
               [0., 0., 2.],
               [0., 0., 0.]])
        >>> kf.diag(np.arange(6.0).reshape(2, 3))
        array([0., 4.])
    """
    return apply(Diag, x, k=_int("diag", "k", k))


def diag_scatter(g, like, k=0):
    """Zeros shaped like the matrix `like` with the vector g on diagonal k (diag's adjoint)."""
    return apply(DiagScatter, g, like, k=_int("diag_scatter", "k", k))


def eye_like(x, k=0):
    """The identity-like mask of x's first two axes (ones on diagonal k), broadcastable to x."""
    return apply(EyeLike, x, k=_int("eye_like", "k", k))


def trace(x, offset=0):
    """Sum of the diagonal `offset` of x (NumPy `trace` with axis1=0, axis2=1).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> float(kf.trace(np.arange(9.0).reshape(3, 3)))
        12.0
    """
    return apply(Trace, x, offset=_int("trace", "offset", offset))
