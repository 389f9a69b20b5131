"""nll, bce, logistic, accuracy and their building blocks: cases, Knet examples, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

import knetflow as kf
from knetflow.ops.loss import (
    CorrectLabel, Log1pExp, PickLabel, UnpickLabel, accuracy, bce, log1pexp, logistic, nll,
    nll_terms, pick_label, unpick_label)
from knetflow.ops.softmax import LogSoftmax
from tests.ops.harness import Arg, Case, check


# ---- NumPy references ----


def ref_nll(scores, labels, axis=-1, average=True, ignore_index=-1):
    logp = special.log_softmax(scores, axis=axis)
    logp = np.moveaxis(logp, axis, -1).reshape(-1, scores.shape[axis])
    labels = labels.reshape(-1)
    keep = labels != ignore_index
    total = -logp[np.arange(len(labels))[keep], labels[keep]].sum()
    return (total / keep.sum()) if average else (total, keep.sum())


def ref_pick(x, labels, axis=-1):
    return np.squeeze(np.take_along_axis(x, np.expand_dims(labels, axis), axis), axis)


def ref_unpick(g, like, labels, axis=-1):
    out = np.zeros(like.shape)
    np.put_along_axis(out, np.expand_dims(labels, axis), np.expand_dims(g, axis), axis)
    return out


def ref_nll_terms(x, labels):
    """(-log softmax at each label, softmax - onehot) per row; zeros for label -1."""
    keep = labels >= 0
    logp = special.log_softmax(x, axis=-1)
    onehot = ref_unpick(np.ones(len(labels)), x, np.maximum(labels, 0))
    terms = np.where(keep, -ref_pick(logp, np.maximum(labels, 0)), 0)
    return terms, keep[:, None] * (np.exp(logp) - onehot)


def ref_bce(scores, labels):
    p = 1 / (1 + np.exp(-scores))
    return np.mean(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def ref_logistic(scores, labels):
    return np.mean(np.log(1 + np.exp(-labels * scores)))


def ref_accuracy(scores, labels, axis=-1):
    return np.mean(np.argmax(scores, axis=axis) == labels)


SIGNS = np.array([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0]])

CASES = [
    Case("nll", lambda s, y: nll(s, y), ref_nll, [Arg((4, 5)), Arg((4,), "label", high=5)],
         second=True),
    Case("nll_axis0", lambda s, y: nll(s, y, axis=0), lambda s, y: ref_nll(s, y, axis=0),
         [Arg((5, 4)), Arg((4,), "label", high=5)]),
    Case("nll_3d_axis1", lambda s, y: nll(s, y, axis=1), lambda s, y: ref_nll(s, y, axis=1),
         [Arg((2, 3, 4)), Arg((2, 4), "label", high=3)]),
    Case("nll_total_count", lambda s, y: nll(s, y, average=False),
         lambda s, y: ref_nll(s, y, average=False), [Arg((4, 3)), Arg((4,), "label", high=3)]),
    Case("nll_ignore", lambda s, y: nll(s, y), ref_nll,
         [Arg((4, 3)), Arg((4,), "label", value=np.array([2, -1, 0, -1]))]),
    Case("pick_label", lambda x, y: pick_label(x, y), ref_pick,
         [Arg((3, 4)), Arg((3,), "label", high=4)], second=True),
    Case("pick_label_axis0", lambda x, y: pick_label(x, y, axis=0),
         lambda x, y: ref_pick(x, y, axis=0), [Arg((4, 2, 3)), Arg((2, 3), "label", high=4)]),
    Case("unpick_label", lambda g, x, y: unpick_label(g, x, y),
         lambda g, x, y: ref_unpick(g, x, y),
         [Arg((3,)), Arg((3, 4)), Arg((3,), "label", high=4)], second=True),
    Case("nll_terms", lambda x, y: nll_terms(x, y), ref_nll_terms,
         [Arg((4, 5)), Arg((4,), "label", high=5)], second=True),
    Case("nll_terms_axis0_ignore", lambda x, y: nll_terms(x, y, axis=0),
         lambda x, y: tuple(np.moveaxis(v, -1, 0) if v.ndim == 2 else v
                            for v in ref_nll_terms(x.T, y)),
         [Arg((4, 3)), Arg((3,), "label", value=np.array([2, -1, 0]))], second=True),
    Case("log1pexp", log1pexp, lambda x: np.logaddexp(0, x), [Arg((3, 4))], second=True),
    Case("bce", lambda s, y: bce(s, y), ref_bce, [Arg((2, 3)), Arg((2, 3), "bool")],
         second=True),
    Case("bce_total", lambda s, y: bce(s, y, average=False)[0],
         lambda s, y: ref_bce(s, y) * s.size, [Arg((5,)), Arg((5,), "bool")]),
    Case("logistic", lambda s, y: logistic(s, y), ref_logistic,
         [Arg((2, 3)), Arg((2, 3), value=SIGNS)], second=True),
    Case("accuracy", lambda s, y: accuracy(s, y), ref_accuracy,
         [Arg((6, 4)), Arg((6,), "label", high=4)], grad=False),
    Case("accuracy_axis0", lambda s, y: accuracy(s, y, axis=0),
         lambda s, y: ref_accuracy(s, y, axis=0), [Arg((4, 6)), Arg((6,), "label", high=4)],
         grad=False),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- the seed's worked example ----

SCORES = np.array([[12.2, 0.3], [2.0, 21.5], [0.0, -21.0]])  # 3 classes x 2 instances (Knet)
# The seed prints 2.1657e-5, but its own formula (probabilities = exp.(scores) ./ sum(...);
# -(log(p[1,1]) + log(p[2,2]))/2) evaluates to 2.11003e-5, in Float64 and in Float32 alike;
# an exact decimal computation gives 2.1100252335577e-5. We test the formula's value.
SEED_NLL = 2.1100252335577e-5


def test_seed_example_classes_on_axis0():
    assert float(nll(SCORES, np.array([0, 1]), axis=0)) == pytest.approx(SEED_NLL, rel=1e-9)


def test_seed_example_transposed_default_axis():
    assert float(nll(SCORES.T, np.array([0, 1]))) == pytest.approx(SEED_NLL, rel=1e-9)
    got = nll(SCORES.T.astype("float32"), np.array([0, 1]))
    assert got.dtype == np.float32 and float(got) == pytest.approx(SEED_NLL, rel=1e-3)


def test_seed_example_formula():
    probabilities = np.exp(SCORES) / np.sum(np.exp(SCORES), axis=0)
    formula = -(np.log(probabilities[0, 0]) + np.log(probabilities[1, 1])) / 2
    assert float(nll(SCORES, [0, 1], axis=0)) == pytest.approx(formula, rel=1e-9)


def test_seed_example_in_a_graph():
    s = kf.placeholder("s", (None, 3), "float64")
    y = kf.placeholder("y", (None,), "int64")
    loss = nll(s, y)
    assert loss.shape == () and loss.dtype == np.float64
    out = kf.compile(loss, optimize_graph=False).run({"s": SCORES.T, "y": np.array([0, 1])})
    assert float(out[0]) == pytest.approx(SEED_NLL, rel=1e-9)


# ---- ignore_index and average=False ----


def test_ignored_instances_are_skipped():
    rng = np.random.default_rng(3)
    scores, labels = rng.normal(size=(5, 4)), np.array([3, -1, 0, -1, 2])
    keep = labels != -1
    assert float(nll(scores, labels)) == pytest.approx(float(nll(scores[keep], labels[keep])))
    total, count = nll(scores, labels, average=False)
    assert float(count) == 3
    assert float(total) == pytest.approx(3 * float(nll(scores[keep], labels[keep])))
    ncorrect, count = accuracy(scores, labels, average=False)
    assert float(count) == 3
    assert float(ncorrect) == np.sum(np.argmax(scores[keep], axis=1) == labels[keep])


def test_custom_ignore_index():
    scores = np.array([[0.0, 5.0], [5.0, 0.0], [1.0, 2.0]])
    labels = np.array([1, 0, 0])
    total, count = nll(scores, labels, average=False, ignore_index=0)
    assert float(count) == 1
    assert float(total) == pytest.approx(-special.log_softmax([0.0, 5.0])[1])
    assert float(accuracy(scores, labels, ignore_index=0)) == 1.0
    assert float(accuracy(scores, np.array([99, 1, 99]), ignore_index=99)) == 0.0


def test_all_ignored_gives_nan_average_and_zero_count():
    scores, labels = np.zeros((2, 3)), np.array([-1, -1])
    total, count = nll(scores, labels, average=False)
    assert float(total) == 0.0 and float(count) == 0.0
    with np.errstate(invalid="ignore"):
        assert np.isnan(nll(scores, labels))


def test_average_false_returns_two_symbols():
    s, y = kf.placeholder("s", (None, 4)), kf.placeholder("y", (None,), "int32")
    for fn in (nll, accuracy):
        total, count = fn(s, y, average=False)
        assert isinstance(total, kf.Symbol) and isinstance(count, kf.Symbol)
        assert total.shape == () and count.shape == ()
    total, count = bce(s, kf.placeholder("t", (None, 4)), average=False)
    assert total.shape == () and count.shape == ()


# ---- accuracy ----


def test_accuracy_ties_go_to_the_first_maximum():
    scores = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert float(accuracy(scores, np.array([0, 1]))) == 0.5


def test_accuracy_example():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert float(accuracy(scores, np.array([1, 1, -1]))) == 0.5


def test_accuracy_has_no_gradient():
    assert PickLabel.nondiff == (1,)
    assert CorrectLabel.nondiff == (0, 1)
    w = kf.param("w", value=np.ones((2, 3)), dtype="float64")
    g = kf.backward(kf.Graph([accuracy(w, np.array([0, 1]))]))
    out = kf.compile(g, optimize_graph=False).run({})
    np.testing.assert_array_equal(out[1], np.zeros((2, 3)))


# ---- stability ----


def test_nll_large_scores():
    scores = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    total, _ = nll(scores, np.array([1, 0]), average=False)
    assert float(total) == pytest.approx(1e4 + 1e4 + np.log(2.0))
    assert float(nll(scores, np.array([0, 1]))) == pytest.approx(np.log(2.0) / 2)
    assert np.isfinite(nll(scores.astype("float32"), np.array([2, 0])))


def test_bce_logistic_large_scores_no_log_of_zero():
    scores = np.array([1e4, -1e4, 1e4, -1e4])
    with np.errstate(divide="raise", over="raise", invalid="raise"):
        assert float(bce(scores, np.array([1, 0, 0, 1]), average=False)[0]) == 2e4
        assert float(logistic(scores, np.array([1, -1, -1, 1]), average=False)[0]) == 2e4
        assert float(bce(scores, np.array([1, 0, 1, 0]))) == 0.0
        np.testing.assert_allclose(log1pexp(np.array([-800.0, 0.0, 800.0])),
                                   [0.0, np.log(2.0), 800.0])
        assert log1pexp(np.array([-50.0]))[0] == pytest.approx(np.exp(-50.0), rel=1e-12)


def test_bce_equals_logistic_with_signed_labels():
    rng = np.random.default_rng(4)
    scores, labels = rng.normal(size=(3, 5)), rng.integers(0, 2, (3, 5))
    assert float(bce(scores, labels)) == pytest.approx(float(logistic(scores, 2 * labels - 1)))
    assert float(bce(scores, labels)) == pytest.approx(ref_bce(scores, labels))


def test_bce_soft_labels_match_formula():
    scores, labels = np.array([0.5, -2.0, 3.0]), np.array([0.2, 0.9, 0.5])
    assert float(bce(scores, labels)) == pytest.approx(ref_bce(scores, labels))


def test_log1pexp_grad_is_sigm():
    x = np.array([-3.0, 0.0, 2.0])
    (g,) = Log1pExp.grad(np.ones(3), log1pexp(x), x)
    np.testing.assert_allclose(g, special.expit(x))


# ---- gradient rules, eagerly ----


def test_nll_gradient_is_softmax_minus_onehot():
    rng = np.random.default_rng(5)
    scores, labels = rng.normal(size=(4, 3)), np.array([2, -1, 0, 1])
    logp = LogSoftmax.forward(np, scores, axis=(1,))
    (g_picked, _) = (np.full(4, -1.0 / 3), None)
    g_logp, none = PickLabel.grad(g_picked, None, logp, labels, axis=1, ignore_index=-1)
    assert none is None
    (g_scores,) = LogSoftmax.grad(g_logp, logp, scores, axis=(1,))
    want = special.softmax(scores, axis=1)
    want[[0, 2, 3], [2, 0, 1]] -= 1
    want[1] = 0
    np.testing.assert_allclose(g_scores, want / 3, atol=1e-12)


def test_unpick_grad_is_pick():
    rng = np.random.default_rng(6)
    gout, like, labels = rng.normal(size=(3, 4)), np.zeros((3, 4)), np.array([1, -1, 3])
    g, a, b = UnpickLabel.grad(gout, None, np.zeros(3), like, labels, axis=1, ignore_index=-1)
    assert a is None and b is None
    np.testing.assert_allclose(g, [gout[0, 1], 0.0, gout[2, 3]])


def test_pick_and_unpick_mask_ignored():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(pick_label(x, np.array([2, -1])), [2.0, 0.0])
    np.testing.assert_array_equal(unpick_label(np.array([5.0, 7.0]), x, np.array([2, -1])),
                                  [[0, 0, 5.0], [0, 0, 0]])


# ---- errors ----


def test_labels_shape_mismatch_names_both_shapes():
    with pytest.raises(kf.ShapeError, match=r"nll: labels shape \(3,\) does not match "
                                            r"scores shape \(2, 3\)"):
        nll(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(kf.ShapeError, match=r"accuracy: labels shape \(\?, 2\).*\(\?, 4\)"):
        accuracy(kf.placeholder("s", (None, 4)), kf.placeholder("y", (None, 2), "int64"))
    assert nll(kf.placeholder("s2", (None, 4)), kf.placeholder("y2", (5,), "int64")).shape == ()
    with pytest.raises(kf.ShapeError, match=r"expected labels of shape \(3,\)"):
        nll(np.zeros((2, 3)), np.array([0, 1]), axis=0)


def test_labels_must_be_integers():
    with pytest.raises(kf.ShapeError, match="nll: labels must be integer class indices, "
                                            r"got float64 \(2,\)"):
        nll(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(kf.ShapeError, match="accuracy: labels must be integer"):
        accuracy(kf.placeholder("s", (None, 3)), kf.placeholder("y", (None,)))


def test_bce_shape_mismatch():
    with pytest.raises(kf.ShapeError, match=r"bce: labels shape \(3,\) does not match "
                                            r"scores shape \(3, 1\)"):
        bce(np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(kf.ShapeError, match="logistic: labels shape"):
        logistic(kf.placeholder("s", (None,)), np.zeros((2, 2)))


def test_scalar_scores_and_bad_axis():
    with pytest.raises(kf.ShapeError, match="nll: scores must have a class axis"):
        nll(np.float64(1.0), np.int64(0))
    with pytest.raises(kf.ShapeError, match="nll: axis 2 is out of range"):
        nll(np.zeros((2, 3)), np.array([0, 1]), axis=2)


def test_out_of_range_label():
    with pytest.raises(IndexError, match="label 3 is out of range for 3 classes"):
        nll(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(IndexError, match="label -2 is out of range"):
        nll(np.zeros((2, 3)), np.array([-2, 0]))


# ---- properties ----


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
def test_nll_matches_reference_over_shapes_and_axes(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    scores = rng.normal(size=shape) * data.draw(st.sampled_from([1.0, 30.0]))
    lshape = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    labels = rng.integers(-1, shape[axis], lshape)
    total, count = nll(scores, labels, axis=axis, average=False)
    want_total, want_count = ref_nll(scores, labels, axis=axis, average=False)
    assert float(count) == want_count
    assert float(total) == pytest.approx(want_total, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "uint8"])
def test_a_plan_checks_labels_and_skips_ignored_ones_as_eager_calls_do(dtype):
    # plans run pick_label/unpick_label kernels bound to (N, C) shapes: a fast path when
    # every label is a class, the general forward for skipped rows and bad labels
    scores = kf.placeholder("s", (4, 3), "float64")
    labels = kf.placeholder("y", (4,), dtype)
    graph = kf.backward(kf.Graph([kf.nll(scores, labels)]), wrt=["s"])
    plan = kf.compile(graph)
    s = np.random.RandomState(0).randn(4, 3)
    cases = [[0, 2, 2, 1]] + ([[0, 2, -1, 1]] if dtype[0] == "i" else [])
    for y in (np.array(c, dtype) for c in cases):
        loss, grad = plan.run({"s": s, "y": y})
        want = kf.grad(lambda s: kf.nll(s, y))(s)
        assert float(loss) == pytest.approx(float(kf.nll(s, y)), rel=1e-12)
        np.testing.assert_allclose(grad, want, rtol=1e-12)
    assert not grad[2].any() or dtype[0] == "u"  # the ignored row gets no gradient
    with pytest.raises(kf.ExecutionError, match="label 3 is out of range for 3 classes"):
        plan.run({"s": s, "y": np.array([0, 3, 1, 1], dtype)})
    if dtype[0] == "i":
        with pytest.raises(kf.ExecutionError, match="label -2 is out of range"):
            plan.run({"s": s, "y": np.array([0, -2, 1, 1], dtype)})


@pytest.mark.parametrize("fn", [nll, kf.accuracy])
def test_unsigned_labels_work_and_none_is_skipped(fn):
    # -1 (the default ignore_index) is no uint8 value: every instance counts
    s = np.random.RandomState(4).randn(5, 4)
    y = np.array([0, 3, 2, 1, 3])
    got = fn(s, y.astype("uint8"), average=False)
    want = fn(s, y, average=False)
    assert [float(v) for v in got] == pytest.approx([float(v) for v in want], rel=1e-12)
    assert float(got[1]) == 5


def test_nll_in_a_plan_gives_the_eager_values_and_gradients_at_infinities_and_nan():
    # the plan's nll_terms kernel (row max by argmax, BLAS sums) against its forward
    s = np.array([[1.0, 2.0, 3.0], [-np.inf] * 3, [np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0],
                  [1e30, -1e30, 0.0], [-np.inf, 0.0, 1.0]])
    y = np.array([2, 0, 1, 1, 0, 2])
    ph, labels = kf.placeholder("s", s.shape, "float64"), kf.placeholder("y", y.shape, "int64")
    with np.errstate(all="ignore"):
        planned = kf.compile(list(nll_terms(ph, labels))).run({"s": s, "y": y})
        eager = nll_terms(s, y)
    np.testing.assert_array_equal(planned[0], eager[0])
    np.testing.assert_allclose(planned[1], eager[1], rtol=1e-15, atol=1e-15)


def test_nll_terms_export_their_terms_and_refuse_the_gradient_output(tmp_path):
    pytest.importorskip("onnx")
    s, y = kf.placeholder("s", (None, 3), "float32"), kf.placeholder("y", (None,), "int64")
    terms, grad = nll_terms(s, y)
    kf.export_onnx(kf.Graph([terms]), str(tmp_path / "terms.onnx"))
    with pytest.raises(kf.onnx.ExportError, match="output 1 of nll_terms"):
        kf.export_onnx(kf.Graph([grad]), str(tmp_path / "grad.onnx"))


def test_nll_of_log_probabilities_with_a_dynamic_batch_trains():
    # a model ending in logsoftmax (PyTorch's log_softmax exports) with a dynamic batch:
    # the backward holds a sum_to that sums nothing once the plan knows the batch; it
    # must give a new array, not its input, whose buffer the plan hands on
    x, y = kf.placeholder("x", (None, 24)), kf.placeholder("y", (3,), "int64")
    w = kf.param("w", value=np.random.RandomState(0).randn(24, 5).astype("float32"))
    logp = kf.logsoftmax(x @ w, axis=1)
    xv, yv = np.random.RandomState(1).randn(3, 24).astype("float32"), np.array([1, 4, 2])
    got = kf.compile(kf.backward(kf.Graph([kf.nll(logp, y)]))).run({"x": xv, "y": yv})[1]
    want = kf.grad(lambda w: kf.nll(kf.logsoftmax(xv @ w, axis=1), yv))(w.node.attrs["value"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(got).sum() > 0.1
