"""Matrix products: `matmul` (NumPy's `@`, Knet's `*` on matrices) and Knet's `bmm`.

Both work on stacks of matrices in row-major layout: the last two axes are the
matrix, the leading axes the batch. `matmul` broadcasts batch axes and takes
1-D operands as NumPy does; `bmm` wants equal batch axes and can transpose
either operand. Gradients are matrix products again, so they differentiate.
"""

from __future__ import annotations

from knetflow.errors import ShapeError
from knetflow.ops.base import Op, Spec, apply, broadcast_shapes, fail, fmt, register, result_dtype

__all__ = ["bmm", "matmul"]


def _same(d1, d2) -> bool:
    """Two dims agree (a dynamic dim agrees with anything)."""
    return d1 is None or d2 is None or d1 == d2


def _matmul_shape(a: Spec, b: Spec) -> tuple:
    if a.ndim == 0 or b.ndim == 0:
        fail("matmul", f"operands must have at least one dimension, got {fmt(a)} @ {fmt(b)}; "
                       "use mul for scalars")
    a_shape = (1,) + a.shape if a.ndim == 1 else a.shape
    b_shape = b.shape + (1,) if b.ndim == 1 else b.shape
    if not _same(a_shape[-1], b_shape[-2]):
        fail("matmul", f"inner dimensions differ: {fmt(a)} @ {fmt(b)} "
                       f"({a_shape[-1]} != {b_shape[-2]})")
    try:
        batch = broadcast_shapes("matmul", Spec(a_shape[:-2], a.dtype), Spec(b_shape[:-2], b.dtype))
    except ShapeError:
        fail("matmul", f"batch dimensions of {fmt(a)} @ {fmt(b)} do not broadcast")
    # the axis a 1-D operand was given is removed again
    rows = (a_shape[-2],) if a.ndim > 1 else ()
    cols = (b_shape[-1],) if b.ndim > 1 else ()
    return batch + rows + cols


def _swap_last(x):
    """x with its last two axes exchanged (a view)."""
    from knetflow.ops.array import transpose

    axes = list(range(x.ndim))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return transpose(x, axes)


@register
class Matmul(Op):
    """Matrix product with NumPy's rules: batch axes broadcast, 1-D operands are vectors."""
    name, out_arg = "matmul", True
    saves = (0, 1)

    def infer(a: Spec, b: Spec) -> Spec:
        return Spec(_matmul_shape(a, b), result_dtype(a, b))

    def forward(xp, a, b, out=None):
        out = xp.matmul(a, b, out=out)
        return out if out.ndim else xp.asarray(out)  # vector . vector gives a NumPy scalar

    def grad(g, out, a, b):
        from knetflow.ops.array import expand_dims, squeeze

        if a.ndim == 1 and b.ndim == 1:
            return g * b, g * a
        if a.ndim == 1:
            # a is the row vector a[None, :]; the output lost that row axis
            g2 = expand_dims(g, -2)
            ga = squeeze(matmul(g2, _swap_last(b)), -2)
            gb = matmul(expand_dims(a, -1), g2)
            return ga, gb
        if b.ndim == 1:
            # b is the column vector b[:, None]; the output lost that column axis
            g2 = expand_dims(g, -1)
            ga = matmul(g2, expand_dims(b, 0))
            gb = squeeze(matmul(_swap_last(a), g2), -1)
            return ga, gb
        return matmul(g, _swap_last(b)), matmul(_swap_last(a), g)


@register
class Bmm(Op):
    """Batched matrix product with equal batch axes; transA/transB transpose the matrices."""
    name, out_arg = "bmm", True
    saves = (0, 1)

    def infer(a: Spec, b: Spec, transA=False, transB=False) -> Spec:
        if a.ndim < 2 or b.ndim < 2 or a.ndim != b.ndim:
            fail("bmm", f"operands must be stacks of matrices of the same rank, got "
                        f"{fmt(a)} and {fmt(b)}")
        if not all(_same(x, y) for x, y in zip(a.shape[:-2], b.shape[:-2])):
            fail("bmm", f"batch dimensions differ: {fmt(a)} and {fmt(b)}")
        m, n = (a.shape[-1], a.shape[-2]) if transA else a.shape[-2:]
        n2, k = (b.shape[-1], b.shape[-2]) if transB else b.shape[-2:]
        if not _same(n, n2):
            fail("bmm", f"inner dimensions differ: {fmt(a)} and {fmt(b)} with "
                        f"transA={transA}, transB={transB} ({n} != {n2})")
        batch = tuple(x if x is not None else y for x, y in zip(a.shape[:-2], b.shape[:-2]))
        return Spec(batch + (m, k), result_dtype(a, b))

    def forward(xp, a, b, transA=False, transB=False, out=None):
        if transA:
            a = xp.swapaxes(a, -1, -2)
        if transB:
            b = xp.swapaxes(b, -1, -2)
        return xp.matmul(a, b, out=out)

    def grad(g, out, a, b, transA=False, transB=False):
        # out = op(a) @ op(b); each gradient is again a bmm, with flags chosen so
        # that no explicit transpose of a result is needed
        if not transA and not transB:
            return bmm(g, b, transB=True), bmm(a, g, transA=True)
        if transA and not transB:
            return bmm(b, g, transB=True), bmm(a, g)
        if not transA and transB:
            return bmm(g, b), bmm(g, a, transA=True)
        return bmm(b, g, transA=True, transB=True), bmm(g, a, transA=True, transB=True)


def matmul(a, b):
    """Matrix product a @ b with NumPy's rules (Knet `*` on matrices).

    Leading (batch) axes broadcast; a 1-D `a` is a row vector and a 1-D `b` a
    column vector, and the axis they add is removed from the result.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.matmul(np.ones((4, 2, 3)), np.ones(3)).shape
        (4, 2)
    """
    return apply(Matmul, a, b)


def bmm(a, b, transA=False, transB=False):
    """Batched matrix product (Knet `bmm`) in row-major layout.

    `a` is (..., m, n) and `b` is (..., n, k) with the same batch axes; the
    result is (..., m, k). `transA`/`transB` transpose the last two axes of an
    operand first.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.bmm(np.ones((5, 3, 2)), np.ones((5, 3, 4)), transA=True).shape
        (5, 2, 4)
    """
    return apply(Bmm, a, b, transA=bool(transA), transB=bool(transB))
