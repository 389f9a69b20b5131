"""Matrix products: `matmul` (NumPy's `@`, Knet's `*` on matrices), Knet's `bmm`, and
NumPy's `tensordot` and `outer` built from them.

Both ops work on stacks of matrices in row-major layout: the last two axes are the
matrix, the leading axes the batch. `matmul` broadcasts batch axes and takes
1-D operands as NumPy does; `bmm` wants equal batch axes and can transpose
either operand. Gradients are matrix products again, so they differentiate.
`tensordot` and `outer` are compositions of transpose, reshape, matmul and
mul, so they need no op (and no gradient rule) of their own.
"""

from __future__ import annotations

import math

import numpy as np

from knetflow.errors import ShapeError
from knetflow.ops.base import Op, Spec, apply, broadcast_shapes, fail, fmt, register, result_dtype

__all__ = ["bmm", "matmul", "outer", "tensordot"]


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

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan, matrix by matrix of one BLAS dtype is `np.dot` (the same BLAS call
        as np.matmul, without the ufunc machinery: about 0.3 us less per product)."""
        a, b = in_specs
        if (xp is not np or a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype
                or np.dtype(a.dtype) not in (np.float32, np.float64)):
            return None
        return np.dot  # dot(a, b, out=None): the kernel itself, no Python frame around it

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


# ---- compositions: tensordot, outer ----


def _shape_text(shape: tuple) -> str:
    return fmt(Spec(shape, "float32"))


def _tensordot_axes(axes, sa: tuple, sb: tuple) -> tuple:
    """NumPy's `axes` of tensordot as two equally long lists of non-negative axes."""
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        n = int(axes)
        if not 0 <= n <= min(len(sa), len(sb)):
            fail("tensordot", f"axes={n} needs 0 <= axes <= the rank of both "
                              f"{_shape_text(sa)} and {_shape_text(sb)}")
        return list(range(len(sa) - n, len(sa))), list(range(n))
    try:
        first, second = axes
    except (TypeError, ValueError):
        fail("tensordot", f"axes must be an int or a pair of sequences of axes, got {axes!r}")
    lists = []
    for given, shape in ((first, sa), (second, sb)):
        seq = [given] if isinstance(given, (int, np.integer)) else list(given)
        out = []
        for a in seq:
            if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
                fail("tensordot", f"axes must hold ints, got {a!r}")
            if not -len(shape) <= int(a) < len(shape):
                fail("tensordot", f"axis {a} is out of range for {_shape_text(shape)}")
            out.append(int(a) % len(shape))
        if len(set(out)) != len(out):
            fail("tensordot", f"repeated axis in {tuple(seq)}")
        lists.append(out)
    if len(lists[0]) != len(lists[1]):
        fail("tensordot", f"shape-mismatch for sum: {len(lists[0])} axes of a against "
                          f"{len(lists[1])} axes of b")
    return lists[0], lists[1]


def _joined(dims: list):
    """The product of dims as a reshape target: -1 when one of them is dynamic."""
    return -1 if None in dims else math.prod(dims)


def _check_dynamic(rows, summed, cols, shapes: str):
    """Fail unless the three reshapes of tensordot can each infer their one dynamic dim."""
    free = (rows + cols).count(None)
    if free > 1 or (free and None in summed):
        fail("tensordot", f"{shapes} have too many dynamic dims: tensordot supports one "
                          "dynamic dim among the axes it keeps, or dynamic summed axes only")


def tensordot(a, b, axes=2):
    """Sum of products over the given axes of a and b (NumPy `tensordot`).

    `axes=n` contracts the last n axes of a with the first n of b; a pair
    `(axes_a, axes_b)` contracts axes_a[i] of a with axes_b[i] of b. The result
    has a's remaining axes, then b's. Built from transpose, reshape and matmul.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.tensordot(np.ones((2, 3, 4)), np.ones((4, 3, 5)), axes=([1, 2], [1, 0])).shape
        (2, 5)
    """
    from knetflow.ops.array import _shape, reshape, transpose

    sa, sb = _shape(a), _shape(b)
    axes_a, axes_b = _tensordot_axes(axes, sa, sb)
    summed = []
    for i, j in zip(axes_a, axes_b):
        if sa[i] is not None and sb[j] is not None and sa[i] != sb[j]:
            fail("tensordot", f"shape-mismatch for sum: axis {i} of {_shape_text(sa)} "
                              f"has {sa[i]} elements, axis {j} of {_shape_text(sb)} "
                              f"has {sb[j]}")
        summed.append(sa[i] if sa[i] is not None else sb[j])
    free_a = [i for i in range(len(sa)) if i not in axes_a]
    free_b = [j for j in range(len(sb)) if j not in axes_b]
    rows, cols = [sa[i] for i in free_a], [sb[j] for j in free_b]
    _check_dynamic(rows, summed, cols, f"{_shape_text(sa)} and {_shape_text(sb)}")
    if free_a + axes_a != list(range(len(sa))):
        a = transpose(a, free_a + axes_a)
    if axes_b + free_b != list(range(len(sb))):
        b = transpose(b, axes_b + free_b)
    product = matmul(reshape(a, (_joined(rows), _joined(summed))),
                     reshape(b, (_joined(summed), _joined(cols))))
    return reshape(product, tuple(-1 if d is None else d for d in rows + cols))


def outer(a, b):
    """The outer product of the flattened a and b (NumPy `outer`): out[i, j] = a[i] * b[j].

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.outer(np.array([1.0, 2.0]), np.array([[1.0, 10.0, 100.0]]))
        array([[  1.,  10., 100.],
               [  2.,  20., 200.]])
    """
    from knetflow.ops.array import reshape

    return reshape(a, (-1, 1)) * reshape(b, (1, -1))
