"""Loss functions and accuracy with Knet's semantics: nll, bce, logistic, accuracy.

Python conventions replace Julia's (see DESIGN.md): class scores lie on
`axis=-1` by default (Knet's `dims=1` on column-major instances), labels are
0-based class indices, and a label equal to `ignore_index` (default -1, Knet's
label 0) skips its instance. `average=True` returns total/count,
`average=False` the pair `(total, count)`.

`nll` with `average=False` sums `nll_terms`: per instance -logsoftmax(scores)[label]
and, as a second output, its gradient softmax(scores) - onehot(label), made in one
pass (0 for skipped instances). The average is one op, `nll_mean`: the mean over
the instances kept and, as a second output, its gradient (the same rows divided by
their count), so a training step's loss and its backward cost one kernel and one
product. The gradient outputs are differentiable, so second derivatives work.
`pick_label` takes each label's entry along the class axis; its gradient
`unpick_label` scatters back. `bce` and `logistic` use `log1pexp(x) = log(1 +
exp(x))`, computed without overflow or log(0).
"""

from __future__ import annotations

import numpy as np

from knetflow.ops.array import expand_dims
from knetflow.ops.base import (
    INT_DTYPES, Op, Spec, TupleSpec, apply, apply_multi, fail, float_dtype, fmt, norm_axis,
    register, spec_of)
from knetflow.ops.binary import div, mul, ne, neg, sub
from knetflow.ops.elementwise import cast
from knetflow.ops.reduce import count, mean, sum
from knetflow.ops.small_reduce import dot_sum
from knetflow.ops.softmax import LogSoftmax, shift_kernel, softmax

__all__ = ["accuracy", "bce", "logistic", "nll"]


# ---- shape rules ----


def _same_dims(a: tuple, b: tuple) -> bool:
    """Equal shapes, a dynamic dim (None) matching anything."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def check_labels(opname: str, scores: Spec, labels: Spec, axis: int) -> None:
    """ShapeError unless labels are integers shaped like scores without `axis`."""
    if labels.dtype not in INT_DTYPES:
        fail(opname, f"labels must be integer class indices, got {labels.dtype} {fmt(labels)}")
    want = Spec(scores.shape[:axis] + scores.shape[axis + 1:], labels.dtype)
    if not _same_dims(labels.shape, want.shape):
        fail(opname, f"labels shape {fmt(labels)} does not match scores shape {fmt(scores)} "
                     f"without its class axis {axis}: expected labels of shape {fmt(want)}")


def _spec(x) -> Spec:
    """The Spec of an op argument: a Symbol's, a traced object's value's, or an array's."""
    spec = getattr(x, "spec", None)
    if isinstance(spec, Spec):
        return spec
    if hasattr(x, "__knetflow_trace__") and getattr(x, "value", None) is not None:
        x = x.value
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        x = np.asarray(x)
    return spec_of(x)


def _class_axis(opname: str, scores, labels, axis) -> tuple:
    """(canonical class axis, scores spec) after checking the labels against the scores."""
    spec = _spec(scores)
    if spec.ndim == 0:
        fail(opname, f"scores must have a class axis, got a scalar {fmt(spec)}")
    (ax,) = norm_axis(opname, axis, spec.ndim)
    check_labels(opname, spec, _spec(labels), ax)
    return ax, spec


# ---- ops ----


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
        at = _label_offsets(xp, in_specs[0], in_specs[1], attrs)
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
        if not _same_dims(g.shape, labels.shape):
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
        at = _label_offsets(xp, in_specs[1], in_specs[2], attrs)
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


def _label_offsets(xp, scores: Spec, labels: Spec, attrs):
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
    unsigned = np.dtype(f"u{size}")  # a negative label viewed unsigned is huge: one test
    top, add = np.maximum.reduce, np.add

    def offsets(labels):
        if top(labels.view(unsigned) if kind == "i" else labels) >= classes:
            return None
        return add(starts, labels)

    return offsets


@register
class NllTerms(Op):
    """Per instance, -logsoftmax(x)[label] along `axis` and its gradient with respect to
    x, softmax(x) - onehot(label); both 0 for instances whose label is `ignore_index`.

    nll's forward and backward in one op: the softmax is computed once, with the
    log-likelihood, and the backward only scales it by the incoming gradient (the
    chain logsoftmax, pick_label, unpick_label and logsoftmax's gradient made a dozen
    more NumPy calls per step). The gradient output is differentiable too, so second
    derivatives of nll work.
    """
    name, nondiff = "nll_terms", (1,)
    saves = ("out", 0, 1)

    def infer(x: Spec, labels: Spec, axis=-1, ignore_index=-1) -> TupleSpec:
        check_labels("nll_terms", x, labels, axis)
        dtype = float_dtype(x)
        return TupleSpec((Spec(labels.shape, dtype), Spec(x.shape, dtype)))

    def forward(xp, x, labels, axis=-1, ignore_index=-1):
        logp = LogSoftmax.forward(xp, x, axis=(axis,))
        # 0 - picked, not -picked: skipped instances give 0, not -0
        terms = 0 - PickLabel.forward(xp, logp, labels, axis=axis, ignore_index=ignore_index)
        kept = xp.expand_dims(labels != ignore_index, axis)
        ones = xp.ones(labels.shape, logp.dtype)
        onehot = UnpickLabel.forward(xp, ones, logp, labels, axis=axis, ignore_index=ignore_index)
        return terms, xp.where(kept, xp.exp(logp), 0).astype(logp.dtype, copy=False) - onehot

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan, for (N, C) float scores with classes last and N, C >= 2, when every
        label is a class: z = x - max per row, s = sum(exp(z)) per row (BLAS), the terms
        log(s) - z at the labels, and exp(z) / s - 1 at the labels; otherwise forward."""
        x = in_specs[0]
        at = _label_offsets(xp, x, in_specs[1], attrs)
        if at is None:
            return None
        shifted, total = shift_kernel(x, (1,)), dot_sum(x, (1,), (x.shape[0],))
        if shifted is None or total is None:
            return None
        rows = (x.shape[0], 1)
        forward, ignore = NllTerms.forward, attrs.get("ignore_index", -1)
        sub, exp, log, divide = np.subtract, np.exp, np.log, np.divide

        def nll_terms(x, labels):
            idx = at(labels)
            if idx is None:
                return forward(np, x, labels, axis=1, ignore_index=ignore)
            z = shifted(x)  # as logsoftmax's kernel: the same NaNs for +-inf rows
            picked = z.take(idx)
            e = exp(z, out=z)
            s = total(e)
            terms = sub(log(s), picked, out=picked)
            divide(e, s.reshape(rows), out=e)  # softmax
            e.put(idx, e.take(idx) - 1)
            return terms, e

        return nll_terms

    def grad(gs, outs, x, labels, axis=-1, ignore_index=-1):
        gterms, gd = gs
        dx = None
        if gterms is not None:
            dx = mul(outs[1], expand_dims(gterms, axis))
        if gd is not None:  # through the gradient output: rows kept, softmax's Jacobian
            kept = _kept(labels, ignore_index, float_dtype(_spec(x)))
            if kept is not None:
                gd = mul(gd, expand_dims(kept, axis))
            term = _through_softmax(gd, x, axis)
            dx = term if dx is None else dx + term
        return dx, None


@register
class NllMean(Op):
    """The mean of -logsoftmax(x)[label] along `axis` over the instances whose label is
    not `ignore_index`, and its gradient with respect to x: (softmax(x) - onehot(label))
    / count, 0 for the skipped instances. No instance kept: NaN for both (0 / 0), as
    `nll_terms`' sum divided by a count of 0 gives.

    `nll`'s average as one op: the count of kept labels is folded into the kernel (in a
    plan, every label a class means the count is the batch), so the chain that counted
    them (ne, cast, sum, the division and the backward's 1/count) is gone, and the
    backward is one product of the gradient output with the incoming scalar.
    """
    name, nondiff = "nll_mean", (1,)
    saves = ("out", 0, 1)

    def infer(x: Spec, labels: Spec, axis=-1, ignore_index=-1) -> TupleSpec:
        check_labels("nll_mean", x, labels, axis)
        dtype = float_dtype(x)
        return TupleSpec((Spec((), dtype), Spec(x.shape, dtype)))

    def forward(xp, x, labels, axis=-1, ignore_index=-1):
        terms, d = NllTerms.forward(xp, x, labels, axis=axis, ignore_index=ignore_index)
        count = xp.asarray(xp.count_nonzero(labels != ignore_index), dtype=terms.dtype)
        return xp.sum(terms) / count, d / count

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan, for (N, C) float scores with classes last and N, C >= 2, when every
        label is a class (so the count is N): nll_terms' kernel with the terms summed and
        divided by N, and the row sums scaled by N before the softmax's division, so the
        gradient comes out divided by N; otherwise the general forward."""
        x = in_specs[0]
        at = _label_offsets(xp, x, in_specs[1], attrs)
        if at is None:
            return None
        shifted, total = shift_kernel(x, (1,)), dot_sum(x, (1,), (x.shape[0],))
        if shifted is None or total is None:
            return None
        rows, n = (x.shape[0], 1), np.dtype(x.dtype).type(x.shape[0])
        inv = np.dtype(x.dtype).type(1) / n
        forward, ignore = NllMean.forward, attrs.get("ignore_index", -1)
        sub, exp, log, divide, scale = np.subtract, np.exp, np.log, np.divide, np.multiply
        add = np.add.reduce

        def nll_mean(x, labels):
            idx = at(labels)
            if idx is None:
                return forward(np, x, labels, axis=1, ignore_index=ignore)
            z = shifted(x)  # as logsoftmax's kernel: the same NaNs for +-inf rows
            picked = z.take(idx)
            e = exp(z, out=z)
            s = total(e)
            mean = add(sub(log(s), picked, out=picked)) / n
            divide(e, scale(s, n, out=s).reshape(rows), out=e)  # softmax / N
            e.put(idx, e.take(idx) - inv)
            return mean, e

        return nll_mean

    def grad(gs, outs, x, labels, axis=-1, ignore_index=-1):
        gmean, gd = gs
        dx = None
        if gmean is not None:
            dx = mul(outs[1], gmean)
        if gd is not None:  # through the gradient output: rows kept / count, softmax's
            kept = _kept(labels, ignore_index, float_dtype(_spec(x)))
            if kept is None:
                gd = div(gd, _count(labels, ignore_index, float_dtype(_spec(x))))
            else:
                gd = mul(gd, expand_dims(div(kept, sum(kept)), axis))
            term = _through_softmax(gd, x, axis)
            dx = term if dx is None else dx + term
        return dx, None


def _through_softmax(gd, x, axis):
    """gd times the Jacobian of softmax(x) along `axis`: the gradient reaching x through
    a gradient output of nll_terms or nll_mean (onehot and the count are constants)."""
    p = softmax(x, axis=axis)
    return mul(p, sub(gd, sum(mul(gd, p), axis=(axis,), keepdims=True)))


def _kept(labels, ignore_index, dtype):
    """1 for the instances not skipped (label != ignore_index), 0 for the others, as
    `dtype`; None when no label can equal ignore_index (unsigned labels and -1)."""
    kind = np.dtype(_spec(labels).dtype)
    if not np.iinfo(kind).min <= ignore_index <= np.iinfo(kind).max:
        return None
    return cast(ne(labels, ignore_index), dtype)


@register
class Log1pExp(Op):
    """log(1 + exp(x)) (softplus) without overflow; its derivative is sigm(x)."""
    name, elementwise = "log1pexp", True
    saves = (0,)

    def infer(x: Spec) -> Spec:
        return x.with_dtype(float_dtype(x))

    def forward(xp, x):
        if x.dtype.kind != "f":
            x = x.astype("float64")
        # exp of a non-positive number lies in (0, 1]: no overflow, and log1p keeps the tail
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def grad(g, out, x):
        from knetflow.ops.elementwise import sigm

        return (g * sigm(x),)


@register
class CorrectLabel(Op):
    """1 where the label has the maximum score along `axis` (the first on ties), else 0.

    0 also for skipped instances (label == ignore_index). Not differentiable.
    """
    name, nondiff = "correct_label", (0, 1)

    def infer(x: Spec, labels: Spec, axis=-1, ignore_index=-1) -> Spec:
        check_labels("correct_label", x, labels, axis)
        return Spec(labels.shape, float_dtype(x))

    def forward(xp, x, labels, axis=-1, ignore_index=-1):
        hit = (xp.argmax(x, axis=axis) == labels) & (labels != ignore_index)
        return hit.astype(x.dtype if x.dtype.kind == "f" else "float64")

    def grad(g, out, x, labels, axis=-1, ignore_index=-1):
        return None, None


# ---- public functions ----


def pick_label(x, labels, axis=-1, ignore_index=-1):
    """x's entry at each label along `axis` (0 where label == ignore_index); nll's building block.

    Example:
        >>> import numpy as np; from knetflow.ops.loss import pick_label
        >>> pick_label(np.array([[1., 2.], [3., 4.]]), np.array([1, -1]))
        array([2., 0.])
    """
    ax, _ = _class_axis("pick_label", x, labels, axis)
    return apply(PickLabel, x, labels, axis=ax, ignore_index=int(ignore_index))


def unpick_label(g, like, labels, axis=-1, ignore_index=-1):
    """Zeros shaped like `like` with g scattered to each label along `axis` (pick_label's grad)."""
    ax, _ = _class_axis("unpick_label", like, labels, axis)
    return apply(UnpickLabel, g, like, labels, axis=ax, ignore_index=int(ignore_index))


def nll_terms(x, labels, axis=-1, ignore_index=-1):
    """(-logsoftmax(x)[label], softmax(x) - onehot(label)) per instance along `axis`,
    both 0 where label == ignore_index: nll's terms and their gradient, as one op.

    Example:
        >>> import numpy as np; from knetflow.ops.loss import nll_terms
        >>> terms, grad = nll_terms(np.array([[0., 0.], [0., 5.]]), np.array([0, -1]))
        >>> terms.round(4), grad
        (array([0.6931, 0.    ]), array([[-0.5,  0.5],
               [ 0. ,  0. ]]))
    """
    ax, _ = _class_axis("nll_terms", x, labels, axis)
    return apply_multi(NllTerms, x, labels, axis=ax, ignore_index=int(ignore_index))


def nll_mean(x, labels, axis=-1, ignore_index=-1):
    """(mean of -logsoftmax(x)[label], its gradient (softmax(x) - onehot(label)) / count)
    over the instances along `axis` whose label is not ignore_index (gradient rows 0 for
    the others): `nll`'s average and its gradient, as one op.

    Example:
        >>> import numpy as np; from knetflow.ops.loss import nll_mean
        >>> mean, grad = nll_mean(np.array([[0., 0.], [0., 5.]]), np.array([0, -1]))
        >>> round(float(mean), 4), grad
        (0.6931, array([[-0.5,  0.5],
               [ 0. ,  0. ]]))
    """
    ax, _ = _class_axis("nll_mean", x, labels, axis)
    return apply_multi(NllMean, x, labels, axis=ax, ignore_index=int(ignore_index))


def log1pexp(x):
    """log(1 + exp(x)), elementwise and stable (softplus); bce and logistic use it."""
    return apply(Log1pExp, x)


def _count(labels, ignore_index, dtype):
    """Number of instances not skipped, as a 0-d `dtype` value."""
    kept = _kept(labels, ignore_index, dtype)
    if kept is None:
        return cast(count(labels), dtype)  # e.g. uint8 labels: no label can be -1
    return sum(kept)


def nll(scores, labels, axis=-1, average=True, ignore_index=-1):
    """Negative log likelihood of the labels under softmax(scores) (Knet `nll`).

    `scores` are unnormalized with classes on `axis` (default: last); `labels`
    are integer class indices 0..C-1 shaped like scores without `axis`;
    instances whose label is `ignore_index` are skipped. Returns total/count,
    or `(total, count)` with `average=False`.

    Example (Knet's: 3 classes, 2 instances in columns, so classes on axis 0;
    Knet's page prints 2.1657e-5, but its own formula gives 2.1100e-5):
        >>> import knetflow as kf, numpy as np
        >>> scores = np.array([[12.2, 0.3], [2.0, 21.5], [0.0, -21.0]])
        >>> print(f"{float(kf.nll(scores, np.array([0, 1]), axis=0)):.4e}")
        2.1100e-05
    """
    ax, spec = _class_axis("nll", scores, labels, axis)
    ignore_index = int(ignore_index)
    if average:
        return apply_multi(NllMean, scores, labels, axis=ax, ignore_index=ignore_index)[0]
    total = sum(nll_terms(scores, labels, axis=ax, ignore_index=ignore_index)[0])
    return total, _count(labels, ignore_index, float_dtype(spec))


def accuracy(scores, labels, axis=-1, average=True, ignore_index=-1):
    """Fraction of instances whose label has the maximum score (Knet `accuracy`).

    Same conventions as `nll`; skipped instances count neither way. Returns
    ncorrect/count, or `(ncorrect, count)` with `average=False`. No gradient.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> float(kf.accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, -1])))
        0.5
    """
    ax, spec = _class_axis("accuracy", scores, labels, axis)
    ignore_index = int(ignore_index)
    hits = apply(CorrectLabel, scores, labels, axis=ax, ignore_index=ignore_index)
    ncorrect = sum(hits)
    count = _count(labels, ignore_index, float_dtype(spec))
    return div(ncorrect, count) if average else (ncorrect, count)


def _binary_inputs(opname, scores, labels):
    """scores and labels as the scores' float dtype, after checking their shapes agree."""
    s, y = _spec(scores), _spec(labels)
    if not _same_dims(s.shape, y.shape):
        fail(opname, f"labels shape {fmt(y)} does not match scores shape {fmt(s)}")
    dtype = float_dtype(s)
    if s.dtype != dtype:
        scores = cast(scores, dtype)
    if y.dtype != dtype:
        labels = cast(labels, dtype)
    return scores, labels


def _reduce(loss, average):
    return mean(loss) if average else (sum(loss), count(loss))


def bce(scores, labels, average=True):
    """Binary cross entropy of {0,1} labels given unnormalized scores (Knet `bce`).

    The loss per instance is -(y log p + (1-y) log(1-p)) with p = sigm(score),
    computed stably as log1pexp(score) - y*score. Returns the mean loss, or
    `(total, count)` with `average=False`.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> float(kf.bce(np.array([0.0]), np.array([1.0])))  # log 2
        0.6931471805599453
    """
    scores, labels = _binary_inputs("bce", scores, labels)
    return _reduce(sub(log1pexp(scores), mul(labels, scores)), average)


def logistic(scores, labels, average=True):
    """Logistic loss log(1 + exp(-y*score)) of {-1,1} labels (Knet `logistic`).

    Returns the mean loss, or `(total, count)` with `average=False`; the same
    loss as `bce` with labels (y+1)/2.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> float(kf.logistic(np.array([0.0]), np.array([-1.0])))  # log 2
        0.6931471805599453
    """
    scores, labels = _binary_inputs("logistic", scores, labels)
    return _reduce(log1pexp(neg(mul(labels, scores))), average)
