"""Ops that rearrange the elements of an array: `repeat`, `roll` and `split`, with
NumPy's semantics (`axis=None` works on the flattened array, as in NumPy).

`repeat` and its adjoint `repeat_sum` (the sum of each group of repeats) are each
other's gradients, and `roll`'s gradient is a roll back, so every gradient here
differentiates again. `split` is slicing (`getitem`), whose gradient is a
scatter-add into zeros.
"""

from __future__ import annotations

import numpy as np

from knetflow.ops.array import _shape, reshape
from knetflow.ops.base import Op, Spec, apply, fail, fmt, register
from knetflow.ops.index import _add_at, getitem, zeros_like

__all__ = ["repeat", "roll", "split"]


def _check_axis(opname, x: Spec, axis):
    if not 0 <= axis < x.ndim:
        fail(opname, f"axis {axis} is out of range for {fmt(x)}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _one_axis(opname, x, axis) -> int:
    """axis as a non-negative int for x's rank; a clear error when it is not an axis of x."""
    ndim = len(_shape(x))
    if not _is_int(axis):
        fail(opname, f"axis must be an int or None, got {axis!r}")
    if not -ndim <= axis < ndim:
        fail(opname, f"axis {axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def _ints(opname, what, value) -> tuple:
    """An int or a sequence of ints as a tuple of Python ints (static values only)."""
    if _is_int(value):
        return (int(value),)
    items = None
    if isinstance(value, (list, tuple, np.ndarray)):
        items = tuple(np.asarray(value, dtype=object).reshape(-1).tolist())
    if items is None or not all(_is_int(v) for v in items):
        fail(opname, f"{what} must be an int or a sequence of ints known when the graph is "
                     f"built, got {value!r}")
    return tuple(int(v) for v in items)  # attributes hold Python ints, never NumPy's


# ---- repeat ----


def _group_count(opname, d, repeats, x: Spec, axis):
    """The length of `axis` before repeating, from its length d after (None if unknown)."""
    if isinstance(repeats, int):
        if d is not None and d % repeats:
            fail(opname, f"axis {axis} of {fmt(x)} is not a multiple of repeats={repeats}")
        return None if d is None else d // repeats
    if d is not None and d != sum(repeats):
        fail(opname, f"axis {axis} of {fmt(x)} is not the {sum(repeats)} elements of "
                     f"repeats {tuple(repeats)}")
    return len(repeats)


@register
class Repeat(Op):
    """Each element of x along `axis` repeated `repeats` times (NumPy `repeat`).

    `repeats` is one int for every element or a tuple with one int per element.
    """
    name = "repeat"

    def infer(x: Spec, repeats=1, axis=0) -> Spec:
        _check_axis("repeat", x, axis)
        d = x.shape[axis]
        if isinstance(repeats, int):
            new = None if d is None else d * repeats
        else:
            if d is not None and len(repeats) != d:
                fail("repeat", f"{len(repeats)} repeats for axis {axis} of length {d} "
                               f"in {fmt(x)}")
            new = sum(repeats)
        return x.with_shape(x.shape[:axis] + (new,) + x.shape[axis + 1:])

    def forward(xp, x, repeats=1, axis=0):
        return xp.repeat(x, repeats if isinstance(repeats, int) else list(repeats), axis=axis)

    def grad(g, out, x, repeats=1, axis=0):
        if repeats == 0:  # nothing of x is in the output
            return (zeros_like(x, dtype=g.dtype),)
        return (apply(RepeatSum, g, repeats=repeats, axis=axis),)


@register
class RepeatSum(Op):
    """The sum of each group of elements that `repeat(x, repeats, axis)` made (its adjoint)."""
    name = "repeat_sum"

    def infer(g: Spec, repeats=1, axis=0) -> Spec:
        _check_axis("repeat_sum", g, axis)
        if repeats == 0:
            fail("repeat_sum", "repeats=0 leaves no groups to sum")
        n = _group_count("repeat_sum", g.shape[axis], repeats, g, axis)
        return g.with_shape(g.shape[:axis] + (n,) + g.shape[axis + 1:])

    def forward(xp, g, repeats=1, axis=0):
        if isinstance(repeats, int):
            split = g.shape[:axis] + (g.shape[axis] // repeats, repeats) + g.shape[axis + 1:]
            return g.reshape(split).sum(axis=axis + 1)
        groups = xp.asarray(np.repeat(np.arange(len(repeats)), repeats))
        moved = xp.moveaxis(g, axis, 0)
        sums = xp.zeros((len(repeats),) + moved.shape[1:], dtype=g.dtype)
        _add_at(xp, sums, groups, moved)
        return xp.ascontiguousarray(xp.moveaxis(sums, 0, axis))

    def grad(gout, out, g, repeats=1, axis=0):
        return (apply(Repeat, gout, repeats=repeats, axis=axis),)


def repeat(x, repeats, axis=None):
    """Each element of x repeated `repeats` times along `axis` (NumPy `repeat`).

    `repeats` is an int or a sequence of ints, one per element along the axis (a
    sequence of one int counts for all); `axis=None` repeats the flattened x.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.repeat(np.array([[1.0, 2.0], [3.0, 4.0]]), (1, 2), axis=0)
        array([[1., 2.],
               [3., 4.],
               [3., 4.]])
    """
    counts = _ints("repeat", "repeats", repeats)
    if any(r < 0 for r in counts):
        fail("repeat", f"repeats must not be negative, got {repeats!r}")
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    axis = _one_axis("repeat", x, axis)
    # one count, given alone or as a sequence of one, counts for every element
    return apply(Repeat, x, repeats=counts[0] if len(counts) == 1 else counts, axis=axis)


def repeat_sum(g, repeats, axis=0):
    """The sums of the groups of `repeats` elements along `axis` of g (the adjoint of repeat)."""
    counts = _ints("repeat_sum", "repeats", repeats)
    axis = _one_axis("repeat_sum", g, axis)
    return apply(RepeatSum, g, repeats=counts[0] if len(counts) == 1 else counts, axis=axis)


# ---- roll ----


@register
class Roll(Op):
    """x with its elements shifted by `shift` along `axis`, wrapping around (NumPy `roll`).

    `axis=None` rolls the flattened x by the int `shift`; otherwise `shift` and
    `axis` are tuples of the same length with distinct axes.
    """
    name = "roll"

    def infer(x: Spec, shift=0, axis=None) -> Spec:
        for a in axis or ():
            _check_axis("roll", x, a)
        return x

    def forward(xp, x, shift=0, axis=None):
        if axis is None:
            return xp.roll(x, shift)
        return xp.roll(x, tuple(shift), axis=tuple(axis))

    def grad(g, out, x, shift=0, axis=None):
        back = -shift if axis is None else tuple(-s for s in shift)
        return (apply(Roll, g, shift=back, axis=axis),)


def roll(x, shift, axis=None):
    """x with elements shifted along `axis` by `shift`, wrapping around (NumPy `roll`).

    `shift` and `axis` may be ints or tuples; an int pairs with every element of
    the other, and shifts of a repeated axis add up. `axis=None` rolls the
    flattened array and restores the shape.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.roll(np.arange(5.0), 2)
        array([3., 4., 0., 1., 2.])
    """
    shifts = _ints("roll", "shift", shift)
    if axis is None:
        return apply(Roll, x, shift=sum(shifts), axis=None)
    axes = _ints("roll", "axis", axis)
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    elif len(axes) == 1:
        axes = axes * len(shifts)
    if len(shifts) != len(axes):
        fail("roll", f"shift {shift!r} and axis {axis!r} must have the same length "
                     "(or one of them be an int)")
    totals: dict = {}
    for s, a in zip(shifts, axes):
        a = _one_axis("roll", x, a)
        totals[a] = totals.get(a, 0) + s
    return apply(Roll, x, shift=tuple(totals.values()), axis=tuple(totals))


# ---- split ----


def _bounds(x, sections, axis) -> list:
    """(start, stop) of each piece along `axis` for `indices_or_sections`."""
    if _is_int(sections):
        n, d = int(sections), _shape(x)[axis]
        if n <= 0:
            fail("split", f"the number of sections must be larger than 0, got {n}")
        if d is None:
            fail("split", f"cannot split the dynamic axis {axis} of "
                          f"{fmt(Spec(_shape(x), 'float32'))} into {n} equal sections; "
                          "give the split indices instead")
        if d % n:
            fail("split", f"array split does not result in an equal division: axis {axis} "
                          f"of length {d} into {n} sections")
        step = d // n
        return [(k * step, (k + 1) * step) for k in range(n)]
    indices = list(_ints("split", "indices_or_sections", sections))
    return list(zip([0] + indices, indices + [None]))


def split(x, indices_or_sections, axis=0) -> list:
    """x cut along `axis` into a list of pieces (NumPy `split`).

    An int n cuts into n equal pieces (the axis length must be a multiple of n); a
    sequence of indices cuts before each index, as NumPy's `x[:i0], x[i0:i1], ...`.
    Each piece is a slice of x, so gradients flow back into place.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> [p.tolist() for p in kf.split(np.arange(5.0), [1, 3])]
        [[0.0], [1.0, 2.0], [3.0, 4.0]]
    """
    if len(_shape(x)) == 0:
        fail("split", "a zero-dimensional array cannot be split")
    axis = _one_axis("split", x, axis)
    lead = (slice(None),) * axis
    return [getitem(x, lead + (slice(start, stop),))
            for start, stop in _bounds(x, indices_or_sections, axis)]
