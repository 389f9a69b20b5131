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
product. The gradient outputs are differentiable, so second derivatives work. The
labels' checks, counts and `pick_label`/`unpick_label` are in `labels`. `bce` and
`logistic` use `log1pexp(x) = log(1 + exp(x))`, computed without overflow or log(0).
"""

from __future__ import annotations

import math

import numpy as np

from knetflow.ops.array import expand_dims
from knetflow.ops.base import (
    Op, Spec, TupleSpec, apply, apply_multi, fail, float_dtype, fmt, register)
from knetflow.ops.binary import div, mul, neg, sub
from knetflow.ops.elementwise import cast
from knetflow.ops.labels import (  # noqa: F401  (pick_label ... were first defined here)
    PickLabel, UnpickLabel, arg_spec, check_labels, class_axis, count_kept, kept_ones,
    label_offsets, pick_label, same_dims, unpick_label)
from knetflow.ops.reduce import count, in_dtype, mean, mean_dtype, sum
from knetflow.ops.small_reduce import dot_sum
from knetflow.ops.softmax import LogSoftmax, shift_kernel, softmax

__all__ = ["accuracy", "bce", "logistic", "nll"]


# ---- ops ----


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
        at = label_offsets(xp, x, in_specs[1], attrs)
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
            kept = kept_ones(labels, ignore_index, float_dtype(arg_spec(x)))
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
        # float16 sums and counts pass 65504 (a batch of 128 x 512 tokens): in float32, as
        # np.mean sums float16, the results cast back
        acc = mean_dtype(terms.dtype)
        count = xp.asarray(xp.count_nonzero(labels != ignore_index), dtype=acc)
        mean = xp.sum(terms, dtype=acc) / count
        return mean.astype(terms.dtype, copy=False), (d / count).astype(d.dtype, copy=False)

    def bind(xp, attrs, in_specs, out_spec):
        """In a plan, for (N, C) float32 or float64 scores with classes last and N, C >= 2,
        when every label is a class (so the count is N): each row shifted by its label's
        score, not its maximum, so exp(z) at the label is 1, every row sum s >= 1 and the
        terms are log(s); their mean as one BLAS dot with 1/N; 1 - s put at the labels,
        every row divided by s, then everything by N: the gradient, divided by N (s N
        itself may overflow where s does not: a label's score 85 below its row's
        maximum in float32, N = 128).

        The label's score costs one `take` where the maximum cost four calls, and a sum
        of at least 1 cannot underflow; a row that overflows (a score more than about 88
        above its label's in float32), or holds an infinity or NaN, makes the mean
        non-finite, and then the general forward (shifted by the maximum, as eager calls
        are) gives the values, and whatever NumPy says of them. Otherwise, and for
        skipped labels, the general forward."""
        x = in_specs[0]
        at = label_offsets(xp, x, in_specs[1], attrs)  # None unless (N, C) of known shape
        total = dot_sum(x, (1,), (x.shape[0],)) if at is not None and x.is_float else None
        if total is None:
            return None
        rows, n = (x.shape[0], 1), np.dtype(x.dtype).type(x.shape[0])
        weights = np.full(x.shape[0], np.dtype(x.dtype).type(1) / n, x.dtype)
        weights.flags.writeable = False
        forward, ignore = NllMean.forward, attrs.get("ignore_index", -1)
        sub, exp, log, divide = np.subtract, np.exp, np.log, np.divide
        finite, errstate = math.isfinite, np.errstate

        def nll_mean(x, labels):
            idx = at(labels)
            if idx is None:
                return forward(np, x, labels, axis=1, ignore_index=ignore)
            with errstate(over="ignore", invalid="ignore"):  # rows the forward redoes
                e = sub(x, x.take(idx).reshape(rows))
                s = total(exp(e, out=e))
                mean = log(s).dot(weights)
            if not finite(mean):
                return forward(np, x, labels, axis=1, ignore_index=ignore)
            # e is 1 at each label: 1 - s there, then / s / N, is softmax - 1 over N
            # with the difference 1 - s exact where s is near 1
            e.put(idx, sub(1, s))
            divide(e, s.reshape(rows), out=e)
            return mean, divide(e, n, out=e)

        return nll_mean

    def grad(gs, outs, x, labels, axis=-1, ignore_index=-1):
        gmean, gd = gs
        dx = None
        if gmean is not None:
            dx = mul(outs[1], gmean)
        if gd is not None:  # through the gradient output: rows kept / count, softmax's
            dtype = float_dtype(arg_spec(x))
            kept = kept_ones(labels, ignore_index, mean_dtype(dtype))  # counted as np.mean
            if kept is None:
                gd = in_dtype(div(gd, count_kept(labels, ignore_index, dtype)), dtype)
            else:
                gd = mul(gd, in_dtype(expand_dims(div(kept, sum(kept)), axis), dtype))
            term = _through_softmax(gd, x, axis)
            dx = term if dx is None else dx + term
        return dx, None


def _through_softmax(gd, x, axis):
    """gd times the Jacobian of softmax(x) along `axis`: the gradient reaching x through
    a gradient output of nll_terms or nll_mean (onehot and the count are constants)."""
    p = softmax(x, axis=axis)
    return mul(p, sub(gd, sum(mul(gd, p), axis=(axis,), keepdims=True)))


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
    ax, _ = class_axis("nll_terms", x, labels, axis)
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
    ax, _ = class_axis("nll_mean", x, labels, axis)
    return apply_multi(NllMean, x, labels, axis=ax, ignore_index=int(ignore_index))


def log1pexp(x):
    """log(1 + exp(x)), elementwise and stable (softplus); bce and logistic use it."""
    return apply(Log1pExp, x)


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
    ax, spec = class_axis("nll", scores, labels, axis)
    ignore_index = int(ignore_index)
    if average:
        return apply_multi(NllMean, scores, labels, axis=ax, ignore_index=ignore_index)[0]
    total = sum(nll_terms(scores, labels, axis=ax, ignore_index=ignore_index)[0])
    return total, count_kept(labels, ignore_index, float_dtype(spec))


def accuracy(scores, labels, axis=-1, average=True, ignore_index=-1):
    """Fraction of instances whose label has the maximum score (Knet `accuracy`).

    Same conventions as `nll`; skipped instances count neither way. Returns
    ncorrect/count, or `(ncorrect, count)` with `average=False`. No gradient.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> float(kf.accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, -1])))
        0.5
    """
    ax, spec = class_axis("accuracy", scores, labels, axis)
    ignore_index = int(ignore_index)
    hits = apply(CorrectLabel, scores, labels, axis=ax, ignore_index=ignore_index)
    dtype = float_dtype(spec)
    ncorrect = sum(in_dtype(hits, mean_dtype(dtype)))  # float16 counts exactly to 2048
    count = count_kept(labels, ignore_index, dtype)
    return in_dtype(div(ncorrect, count), dtype) if average else (ncorrect, count)


def _binary_inputs(opname, scores, labels):
    """scores and labels as the scores' float dtype, after checking their shapes agree."""
    s, y = arg_spec(scores), arg_spec(labels)
    if not same_dims(s.shape, y.shape):
        fail(opname, f"labels shape {fmt(y)} does not match scores shape {fmt(s)}")
    dtype = float_dtype(s)
    if s.dtype != dtype:
        scores = cast(scores, dtype)
    if y.dtype != dtype:
        labels = cast(labels, dtype)
    return scores, labels


def _reduce(loss, average):
    # the count as np.mean would count: float16 counts exactly only to 2048
    return mean(loss) if average else (sum(loss), count(loss, dtype=mean_dtype(
        arg_spec(loss).dtype)))


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
