"""nll_mean, the averaged nll as one op: harness cases, the composition it replaced
(the sum of nll_terms over the count of labels kept), ignored labels, the plan's bound
kernel, gradients by central differences, properties, export and save/load."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

import knetflow as kf
from knetflow.ops.loss import NllMean, count_kept, nll, nll_mean, nll_terms
from tests.ops.harness import Arg, Case, check


def ref_nll_mean(x, labels, axis=-1, ignore_index=-1):
    """(mean of -log softmax at the kept labels, (softmax - onehot) / count, rows of the
    skipped labels 0) with classes moved last and back."""
    xl = np.moveaxis(x, axis, -1)
    keep = labels != ignore_index
    safe = np.where(keep, labels, 0)
    logp = special.log_softmax(xl, axis=-1)
    picked = np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    onehot = np.arange(xl.shape[-1]) == safe[..., None]
    count = keep.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = -picked[keep].sum() / count
        grad = keep[..., None] * (np.exp(logp) - onehot) / count
    return mean, np.moveaxis(grad, -1, axis)


def composed(scores, labels, axis=-1, ignore_index=-1):
    """What nll's average was before nll_mean: sum(nll_terms) / count of kept labels."""
    terms = nll_terms(scores, labels, axis=axis, ignore_index=ignore_index)[0]
    spec = scores.dtype if isinstance(scores, kf.Symbol) else np.asarray(scores).dtype
    dtype = "float64" if np.dtype(spec) == np.float64 else "float32"
    return kf.sum(terms) / count_kept(labels, ignore_index, dtype)


CASES = [
    Case("nll_mean", lambda x, y: nll_mean(x, y), ref_nll_mean,
         [Arg((4, 5)), Arg((4,), "label", high=5)], second=True),
    Case("nll_mean_axis0_ignore", lambda x, y: nll_mean(x, y, axis=0),
         lambda x, y: ref_nll_mean(x, y, axis=0),
         [Arg((4, 3)), Arg((3,), "label", value=np.array([2, -1, 0]))], second=True),
    Case("nll_mean_3d_axis1", lambda x, y: nll_mean(x, y, axis=1),
         lambda x, y: ref_nll_mean(x, y, axis=1),
         [Arg((2, 3, 4)), Arg((2, 4), "label", high=3)]),
    Case("nll_mean_ignore_a_class", lambda x, y: nll_mean(x, y, ignore_index=1),
         lambda x, y: ref_nll_mean(x, y, ignore_index=1),
         [Arg((5, 3)), Arg((5,), "label", value=np.array([1, 0, 2, 1, 2]))], second=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


def test_nll_averages_with_one_op_and_its_backward_is_one_product():
    s, y = kf.placeholder("s", (None, 4)), kf.placeholder("y", (None,), "int64")
    graph = kf.Graph([nll(s, y)])
    assert [n.op for n in graph.nodes if n.op not in ("input", "get")] == ["nll_mean"]
    backward = kf.backward(graph, wrt=["s"])
    derived = [n.op for n in backward.nodes[len(graph.nodes):] if n.op not in ("get", "const")]
    assert derived == ["mul"]
    total, count = nll(s, y, average=False)  # the pair still comes from nll_terms
    assert "nll_terms" in {n.op for n in kf.Graph([total, count]).nodes}


# ---- against the composition it replaced ----

LABELS = {
    "every label a class": np.array([0, 3, 2, 1, 3, 0]),
    "some skipped": np.array([0, -1, 2, 1, -1, 3]),
    "all skipped": np.array([-1] * 6),
}


def _values_and_gradient(loss_fn, s, y, dtype, ignore_index=-1):
    """(loss, d loss / d scores) eagerly, and from a compiled plan (the bound kernel)."""
    ph = kf.placeholder("s", s.shape, dtype)
    yl = kf.placeholder("y", y.shape, y.dtype.name)
    plan = kf.compile(kf.backward(kf.Graph([loss_fn(ph, yl, ignore_index=ignore_index)]),
                                  wrt=["s"]))
    with np.errstate(all="ignore"):
        eager = loss_fn(s.astype(dtype), y, ignore_index=ignore_index)
        planned = plan.run({"s": s.astype(dtype), "y": y})
    return eager, planned


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", list(LABELS))
def test_values_and_gradients_are_the_composition_s(dtype, which):
    s = np.random.RandomState(1).randn(6, 4) * 3
    y = LABELS[which]
    new_eager, new = _values_and_gradient(nll, s, y, dtype)
    old_eager, old = _values_and_gradient(composed, s, y, dtype)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == "float32" else dict(rtol=1e-13, atol=1e-15)
    for got, want in ((new_eager, old_eager), (new[0], old[0]), (new[1], old[1])):
        assert np.asarray(got).dtype == np.asarray(want).dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, **tol)
    if which == "all skipped":  # 0 / 0, as the composition gave: NaN loss and gradient
        assert np.isnan(new_eager) and np.isnan(new[0]) and np.isnan(new[1]).all()


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32"])
def test_label_dtypes_and_an_ignore_index_that_is_a_class(dtype):
    # ignore_index 2 is a class: the plan must not take its fast path (every label a
    # class, the count the batch) when a label equals it
    s = np.random.RandomState(2).randn(5, 3)
    y = np.array([0, 2, 1, 2, 1], dtype)
    for ignore in (-1, 2):
        new_eager, new = _values_and_gradient(nll, s, y, "float64", ignore)
        old_eager, old = _values_and_gradient(composed, s, y, "float64", ignore)
        want_loss, want_grad = ref_nll_mean(s, y.astype("int64"), ignore_index=ignore)
        for got in (new_eager, new[0], old_eager, old[0]):
            assert float(got) == pytest.approx(want_loss, rel=1e-12)
        np.testing.assert_allclose(new[1], want_grad, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(old[1], want_grad, rtol=1e-12, atol=1e-15)


def test_a_plan_switches_between_its_kernel_and_the_general_forward():
    # one plan, fed a batch of classes (the bound kernel) then one with skipped labels
    ph, yl = kf.placeholder("s", (4, 3), "float64"), kf.placeholder("y", (4,), "int64")
    plan = kf.compile(kf.backward(kf.Graph([nll(ph, yl)]), wrt=["s"]))
    s = np.random.RandomState(3).randn(4, 3)
    for y in ([0, 1, 2, 1], [0, -1, 2, -1], [2, 2, 0, 1]):
        y = np.array(y)
        loss, grad = plan.run({"s": s, "y": y})
        want_loss, want_grad = ref_nll_mean(s, y)
        assert float(loss) == pytest.approx(want_loss, rel=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
    with pytest.raises(kf.ExecutionError, match="label 3 is out of range for 3 classes"):
        plan.run({"s": s, "y": np.array([0, 3, 1, 1])})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_the_kernel_cannot_shift_by_their_label_take_the_forward(dtype):
    # the kernel shifts each row by its label's score: a score far above it overflows
    # exp, and infinities or NaN make the mean non-finite; then the general forward
    # (shifted by the maximum, as eager calls are) gives the values, bit for bit, and
    # the overflow the kernel met raises no floating-point error
    far = 100.0 if dtype == "float32" else 1000.0
    finite = np.array([[0.0, far, 1.0], [2.0, 0.5, -1.0], [1.0, 2.0, 3.0]])
    bad = np.array([[1.0, 2.0, 3.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0]])
    nan = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 1, 2])
    ph, yl = kf.placeholder("s", (3, 3), dtype), kf.placeholder("y", (3,), "int64")
    plan = kf.compile(list(nll_mean(ph, yl)))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = plan.run({"s": finite.astype(dtype), "y": y})
    want = nll_mean(finite.astype(dtype), y)
    assert np.isfinite(got[0]) and float(got[0]) > far / 3 - 1
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    for s in (bad, nan):
        with np.errstate(all="ignore"):
            got, want = plan.run({"s": s.astype(dtype), "y": y}), nll_mean(s.astype(dtype), y)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_the_kernel_takes_the_forward_only_for_those_rows(monkeypatch):
    calls = []
    forward = NllMean.forward
    monkeypatch.setattr(NllMean, "forward",
                        staticmethod(lambda *a, **k: calls.append(1) or forward(*a, **k)))
    ph, yl = kf.placeholder("s", (4, 3), "float32"), kf.placeholder("y", (4,), "int64")
    plan = kf.compile(list(nll_mean(ph, yl)))
    s = np.random.RandomState(9).randn(4, 3).astype("float32")
    plan.run({"s": s, "y": np.array([0, 1, 2, 0])})
    assert calls == []
    s[2, 0] = 500.0
    plan.run({"s": s, "y": np.array([0, 1, 2, 0])})  # row 2: 500 above its label's
    plan.run({"s": s, "y": np.array([0, -1, 2, 0])})  # a skipped label
    assert calls == [1, 1]


def test_the_gradient_in_float64_matches_central_differences():
    rng = np.random.default_rng(4)
    s, y = rng.normal(size=(5, 4)) * 2, np.array([3, -1, 0, 2, -1])
    got = kf.grad(lambda s: nll(s, y))(s)
    eps, num = 1e-6, np.zeros_like(s)
    for idx in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[idx] += eps
        down[idx] -= eps
        num[idx] = (float(nll(up, y)) - float(nll(down, y))) / (2 * eps)
    np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-9)
    assert not got[[1, 4]].any()


def test_the_grad_rule_scales_the_gradient_output_by_the_incoming_scalar():
    s, y = np.random.RandomState(5).randn(3, 4), np.array([1, -1, 3])
    mean, d = nll_mean(s, y)
    dx, none = NllMean.grad((np.float64(2.5), None), (mean, d), s, y, axis=1, ignore_index=-1)
    assert none is None
    np.testing.assert_allclose(dx, 2.5 * ref_nll_mean(s, y)[1], rtol=1e-12)


# ---- properties ----


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
def test_mean_and_gradient_match_the_reference_over_shapes_axes_and_skipped_labels(shape,
                                                                                  data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    scores = rng.normal(size=shape) * data.draw(st.sampled_from([1.0, 30.0]))
    lshape = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    low = data.draw(st.sampled_from([-1, 0]))  # -1: some labels may be skipped
    labels = rng.integers(low, shape[axis], lshape)
    want_mean, want_grad = ref_nll_mean(scores, labels, axis=axis)
    with np.errstate(all="ignore"):
        mean, grad = nll_mean(scores, labels, axis=axis)
        got = kf.grad(lambda s: nll(s, labels, axis=axis))(scores)
    if not (labels != -1).any():
        assert np.isnan(mean) and np.isnan(grad).all() and np.isnan(got).all()
        return
    assert float(mean) == pytest.approx(want_mean, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, want_grad, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(2, 5), st.data())
def test_the_bound_kernel_gives_the_forward_s_values(rows, classes, data):
    # (N, C) in a plan: the kernel when every label is a class, else the forward
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    scores = (rng.normal(size=(rows, classes)) * 10).astype(dtype)
    labels = rng.integers(data.draw(st.sampled_from([-1, 0])), classes, rows)
    ph, yl = kf.placeholder("s", scores.shape, dtype), kf.placeholder("y", (rows,), "int64")
    plan = kf.compile(list(nll_mean(ph, yl)))
    with np.errstate(all="ignore"):
        planned, eager = plan.run({"s": scores, "y": labels}), nll_mean(scores, labels)
    # a loss log(s) with s near 1 (a confident row) is off the truth by up to float32's
    # spacing at 1 (1.2e-7) along either path, so the two may differ by twice that
    tol = dict(rtol=2e-6, atol=3e-7) if dtype == "float32" else dict(rtol=1e-13, atol=1e-15)
    for p, e in zip(planned, eager):
        assert np.asarray(p).dtype == np.asarray(e).dtype == np.dtype(dtype)
        np.testing.assert_allclose(p, e, **tol)


# ---- export and save/load ----


def test_export_gives_the_mean_and_refuses_the_gradient_output(tmp_path):
    pytest.importorskip("onnx")
    from tests.onnx.common import assert_matches, export_plan

    s, y = kf.placeholder("s", (None, 3), "float32"), kf.placeholder("y", (None,), "int64")
    for ignore, labels in ((-1, [0, 2, -1, 1, 0]), (0, [1, 2, 0, 1, 0])):
        loss = nll(s, y, ignore_index=ignore)
        plan, path = export_plan(kf.Graph([loss]), tmp_path / f"nll{ignore}.onnx")
        feeds = [{"s": np.random.RandomState(n).randn(n, 3).astype("float32"),
                  "y": np.array(labels[:n])} for n in (2, 5)]
        assert_matches(path, plan, feeds)
    with pytest.raises(kf.onnx.ExportError, match="output 1 of nll_mean"):
        kf.export_onnx(kf.Graph([nll_mean(s, y)[1]]), str(tmp_path / "grad.onnx"))


def test_a_saved_graph_with_the_mean_loads_and_trains(tmp_path):
    x, y = kf.placeholder("x", (None, 5)), kf.placeholder("y", (None,), "int64")
    w = kf.param("w", value=np.random.RandomState(6).randn(5, 3).astype("float32"))
    graph = kf.backward(kf.Graph([nll(x @ w, y)]))
    loaded = kf.load(kf.save(tmp_path / "nll.kf", graph)).graph
    assert "nll_mean" in {n.op for n in loaded.nodes}
    feed = {"x": np.random.RandomState(7).randn(4, 5).astype("float32"),
            "y": np.array([2, -1, 0, 1])}
    for got, want in zip(kf.compile(loaded).run(feed), kf.compile(graph).run(feed)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype, gap, rows", [("float32", 85.0, 128), ("float32", 88.0, 8),
                                              ("float64", 708.0, 8)])
def test_the_plan_s_gradient_stays_right_where_the_row_sum_times_the_batch_overflows(
        dtype, gap, rows):
    # the kernel shifts each row by its label's score: the row sum s reaches exp(gap),
    # finite, but s * rows is not; the gradient was 0 there (x / inf)
    x = np.zeros((rows, 2), dtype)
    x[0, 1] = gap                    # row 0's label (0) lies `gap` below its maximum
    y = np.zeros(rows, np.int64)
    ph, yl = kf.placeholder("x", x.shape, dtype), kf.placeholder("y", y.shape, "int64")
    mean, grad = kf.compile(list(nll_mean(ph, yl))).run({"x": x, "y": y})
    want_mean, want_grad = ref_nll_mean(x.astype(np.float64), y)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == "float32" else dict(rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, want_grad, **tol)
    np.testing.assert_allclose(mean, want_mean, rtol=tol["rtol"])
    assert grad[0, 0] == pytest.approx(-1 / rows, rel=1e-5)


@pytest.mark.parametrize("dtype, classes", [("int8", 300), ("int16", 40000), ("uint64", 3),
                                            ("uint8", 300), ("int8", 100)])
def test_labels_of_every_integer_dtype_are_checked_and_skipped_as_eager_calls_are(
        dtype, classes):
    # a negative int8 label viewed unsigned (-1 as 255) is a class once there are more
    # than 128 classes: the plan then took the previous row's last score for a skipped
    # instance; uint64 labels added to int64 offsets gave float64 ones that take refused
    rs = np.random.RandomState(3)
    x = rs.randn(3, classes).astype(np.float32)
    skipped = np.iinfo(dtype).min < 0
    y = np.array([classes - 1 if classes <= np.iinfo(dtype).max else 5, 0,
                  -1 if skipped else 1], dtype)
    ph, yl = kf.placeholder("x", x.shape, "float32"), kf.placeholder("y", y.shape, dtype)
    outs = [nll(ph, yl), nll_terms(ph, yl)[0], kf.ops.loss.pick_label(ph, yl)]
    got = kf.compile(outs).run({"x": x, "y": y})
    want = [nll(x, y), nll_terms(x, y)[0], kf.ops.loss.pick_label(x, y)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    if skipped:
        assert got[1][2] == 0 and got[2][2] == 0


def test_an_invalid_negative_int8_label_raises_in_a_plan_as_in_an_eager_call():
    x = np.random.RandomState(4).randn(2, 200).astype(np.float32)
    y = np.array([3, -60], np.int8)
    with pytest.raises(IndexError, match="label -60 is out of range for 200 classes"):
        nll(x, y)
    ph, yl = kf.placeholder("x", x.shape, "float32"), kf.placeholder("y", y.shape, "int8")
    with pytest.raises(kf.ExecutionError, match="label -60 is out of range for 200 classes"):
        kf.compile([nll(ph, yl)]).run({"x": x, "y": y})
