"""Class labels: checking them against scores, counting the ones kept, and picking
each label's entry along the class axis (the losses' building blocks, Knet's indexing
by labels).

Labels are 0-based integer class indices shaped like the scores without their class
axis; a label equal to `ignore_index` (default -1) skips its instance. `pick_label`
takes each label's entry along the class axis, 0 for skipped instances; its gradient
`unpick_label` scatters back. In a plan both bind to (N, C) scores with one `take` or
`put` at row * C + label when every label is a class (`label_offsets`, which the nll
kernels of `loss` share).
"""

from __future__ import annotations

import numpy as np

from knetflow.ops.base import (
    INT_DTYPES, Op, Spec, apply, fail, fmt, norm_axis, register, spec_of)
from knetflow.ops.binary import ne
from knetflow.ops.elementwise import cast
from knetflow.ops.reduce import count, mean_dtype, sum

# the losses' building blocks: reached as knetflow.ops.loss's names, not as kf.*
__all__: list = []


# ---- shape rules ----


def same_dims(a: tuple, b: tuple) -> bool:
    """Equal shapes, a dynamic dim (None) matching anything."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def check_labels(opname: str, scores: Spec, labels: Spec, axis: int) -> None:
    """ShapeError unless labels are integers shaped like scores without `axis`."""
    if labels.dtype not in INT_DTYPES:
        fail(opname, f"labels must be integer class indices, got {labels.dtype} {fmt(labels)}")
    want = Spec(scores.shape[:axis] + scores.shape[axis + 1:], labels.dtype)
    if not same_dims(labels.shape, want.shape):
        fail(opname, f"labels shape {fmt(labels)} does not match scores shape {fmt(scores)} "
                     f"without its class axis {axis}: expected labels of shape {fmt(want)}")


def arg_spec(x) -> Spec:
    """The Spec of an op argument: a Symbol's, a traced object's value's, or an array's."""
    spec = getattr(x, "spec", None)
    if isinstance(spec, Spec):
        return spec
    if hasattr(x, "__knetflow_trace__") and getattr(x, "value", None) is not None:
        x = x.value
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        x = np.asarray(x)
    return spec_of(x)


def class_axis(opname: str, scores, labels, axis) -> tuple:
    """(canonical class axis, scores spec) after checking the labels against the scores."""
    spec = arg_spec(scores)
    if spec.ndim == 0:
        fail(opname, f"scores must have a class axis, got a scalar {fmt(spec)}")
    (ax,) = norm_axis(opname, axis, spec.ndim)
    check_labels(opname, spec, arg_spec(labels), ax)
    return ax, spec


# ---- counting the labels kept ----


def kept_ones(labels, ignore_index, dtype):
    """1 for the instances not skipped (label != ignore_index), 0 for the others, as
    `dtype`; None when no label can equal ignore_index (unsigned labels and -1)."""
    kind = np.dtype(arg_spec(labels).dtype)
    if not np.iinfo(kind).min <= ignore_index <= np.iinfo(kind).max:
        return None
    return cast(ne(labels, ignore_index), dtype)


def count_kept(labels, ignore_index, dtype):
    """Number of instances not skipped, as a 0-d value of `mean_dtype(dtype)`: float32
    for float16, which counts exactly only to 2048, and to 65504 at all."""
    acc = mean_dtype(dtype)
    kept = kept_ones(labels, ignore_index, acc)
    if kept is None:
        return cast(count(labels), acc)  # e.g. uint8 labels: no label can be -1
    return sum(kept)


# ---- picking by label ----


@register
class PickLabel(Op):
    """x's entry at each label along `axis`; 0 where the label is `ignore_index`."""
    name, nondiff = "pick_label", (1,)
    saves = (0, 1)

    def infer(x: Spec, labels: Spec, axis=-1, ignore_index=-1) -> Spec:
        check_labels("pick_label", x, labels, axis)
        return Spec(labels.shape, x.dtype)

    def forward(xp, x, labels, axis=-1, ignore_index=-1):
        keep = labels != ignore_index
        idx = xp.where(keep, labels, 0)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= x.shape[axis]):
            bad = idx[(idx < 0) | (idx >= x.shape[axis])].ravel()[0]
            raise IndexError(
                f"pick_label: label {int(bad)} is out of range for {x.shape[axis]} classes "
                f"(valid labels are 0..{x.shape[axis] - 1}; {ignore_index} skips an instance)")
        got = xp.take_along_axis(x, xp.expand_dims(idx, axis), axis=axis)
        return xp.where(keep, xp.squeeze(got, axis=axis), 0).astype(x.dtype, copy=False)

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan, for (N, C) scores with classes last: when every label is a class
        (one unsigned comparison), one `take` at row * C + label; otherwise the general
        forward (skipped instances, and the error for labels out of range)."""
        at = label_offsets(xp, in_specs[0], in_specs[1], attrs)
        if at is None:
            return None
        forward, ignore = PickLabel.forward, attrs.get("ignore_index", -1)

        def pick_label(x, labels):
            idx = at(labels)
            if idx is None:
                return forward(np, x, labels, axis=1, ignore_index=ignore)
            return x.take(idx)  # the method: np.take's Python wrapper costs about 1 us

        return pick_label

    def grad(g, out, x, labels, axis=-1, ignore_index=-1):
        return unpick_label(g, x, labels, axis=axis, ignore_index=ignore_index), None


@register
class UnpickLabel(Op):
    """Zeros shaped like `like` holding g at each label along `axis` (pick_label's gradient)."""
    name, nondiff = "unpick_label", (1, 2)
    saves = (2,)

    def infer(g: Spec, like: Spec, labels: Spec, axis=-1, ignore_index=-1) -> Spec:
        check_labels("unpick_label", like, labels, axis)
        if not same_dims(g.shape, labels.shape):
            fail("unpick_label", f"g shape {fmt(g)} differs from labels shape {fmt(labels)}")
        return Spec(like.shape, g.dtype)

    def forward(xp, g, like, labels, axis=-1, ignore_index=-1):
        shape = [1] * like.ndim
        shape[axis] = like.shape[axis]
        classes = xp.arange(like.shape[axis]).reshape(shape)
        kept = xp.expand_dims(labels != ignore_index, axis)
        hit = (xp.expand_dims(labels, axis) == classes) & kept
        return xp.where(hit, xp.expand_dims(g, axis), 0).astype(g.dtype, copy=False)

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan, for (N, C) with classes last: zeros, and g put at row * C + label
        when every label is a class; otherwise the general forward."""
        at = label_offsets(xp, in_specs[1], in_specs[2], attrs)
        if at is None:
            return None
        shape, dtype = out_spec.shape, np.dtype(out_spec.dtype)
        forward, ignore, zeros = UnpickLabel.forward, attrs.get("ignore_index", -1), np.zeros

        def unpick_label(g, like, labels):
            idx = at(labels)
            if idx is None:
                return forward(np, g, like, labels, axis=1, ignore_index=ignore)
            out = zeros(shape, dtype)
            out.put(idx, g)
            return out

        return unpick_label

    def grad(gout, out, g, like, labels, axis=-1, ignore_index=-1):
        return pick_label(gout, labels, axis=axis, ignore_index=ignore_index), None, None


def label_offsets(xp, scores: Spec, labels: Spec, attrs):
    """For (N, C) scores with classes on the last axis and N > 0 integer labels, on
    NumPy: a function labels -> the flat offsets row * C + label, or None when a label
    is not a class (skipped instances, labels out of range: the general forward's
    cases). None instead of the function for any other shape or device, and when
    `ignore_index` is itself a class (0..C-1): a label in range may then be skipped,
    which only the general forward sees."""
    if (xp is not np or scores.ndim != 2 or labels.ndim != 1 or not scores.is_static
            or attrs.get("axis", -1) not in (-1, 1) or not scores.shape[0]):
        return None
    classes = scores.shape[1]
    if 0 <= attrs.get("ignore_index", -1) < classes:
        return None
    starts = np.arange(0, scores.shape[0] * classes, classes)
    kind, size = np.dtype(labels.dtype).kind, np.dtype(labels.dtype).itemsize
    # a negative label viewed unsigned is at least 2**(bits - 1), so one test rejects it
    # while every class lies below that; more classes than that (int8 labels, 300
    # classes: -1 viewed is 255, a class) is the general forward's case
    if kind not in "iu" or (kind == "i" and classes > 2 ** (8 * size - 1)):
        return None
    unsigned = np.dtype(f"u{size}")
    top, add, intp = np.maximum.reduce, np.add, np.intp

    def offsets(labels):
        if top(labels.view(unsigned) if kind == "i" else labels) >= classes:
            return None
        # as intp: int64 starts and uint64 labels would otherwise add up to float64
        return add(starts, labels, dtype=intp)

    return offsets


def pick_label(x, labels, axis=-1, ignore_index=-1):
    """x's entry at each label along `axis` (0 where label == ignore_index); nll's building block.

    Example:
        >>> import numpy as np; from knetflow.ops.loss import pick_label
        >>> pick_label(np.array([[1., 2.], [3., 4.]]), np.array([1, -1]))
        array([2., 0.])
    """
    ax, _ = class_axis("pick_label", x, labels, axis)
    return apply(PickLabel, x, labels, axis=ax, ignore_index=int(ignore_index))


def unpick_label(g, like, labels, axis=-1, ignore_index=-1):
    """Zeros shaped like `like` with g scattered to each label along `axis` (pick_label's grad)."""
    ax, _ = class_axis("unpick_label", like, labels, axis)
    return apply(UnpickLabel, g, like, labels, axis=ax, ignore_index=int(ignore_index))
