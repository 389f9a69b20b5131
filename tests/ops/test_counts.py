"""Counts of elements (ops/reduce.py `count`, `per_count`) and the means built on them:
a count of float16 elements passes float16's largest value, 65504, so means, their
gradients, var, std and nll's average count in float32 and divide there, casting the
quotient back, as np.mean does."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.ops.reduce import count, mean_dtype, per_count

BIG = 70000  # more elements than float16 can count


@pytest.mark.parametrize("dtype, want", [("float16", "float32"), ("float32", "float32"),
                                         ("float64", "float64"), ("int32", "float64"),
                                         ("bool", "float64")])
def test_mean_dtype_is_the_dtype_np_mean_sums_in(dtype, want):
    assert mean_dtype(dtype) == want


def test_count_takes_a_dtype_that_holds_any_count():
    x = np.ones((BIG, 1), "float16")
    with pytest.warns(RuntimeWarning, match="overflow"):
        assert np.isinf(count(x))  # x's own dtype by default: what saved graphs hold
    n = count(x, dtype="float32")
    assert n.dtype == np.float32 and float(n) == BIG
    s = kf.placeholder("x", x.shape, "float16")
    (got,) = kf.compile([count(s, axis=0, dtype="float32")]).run({"x": x})
    assert got.dtype == np.float32 and float(got) == BIG


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_per_count_divides_in_the_dividends_dtype(dtype, ddof):
    a = np.full(3, 7.0, dtype)
    got = per_count(a, np.ones((BIG, 2), dtype), axis=(0,), ddof=ddof)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, 7.0 / (BIG - ddof), rtol=1e-3 if dtype == "float16" else 1e-7)


@pytest.mark.parametrize("compiled", [False, True])
def test_the_gradient_of_a_float16_mean_over_more_than_65504_elements_is_one_over_n(compiled):
    x = np.ones(BIG, "float16")
    if compiled:
        s = kf.placeholder("x", x.shape, "float16")
        (g,) = kf.compile([kf.grad(lambda v: kf.mean(v))(s)]).run({"x": x})
    else:
        g = kf.grad(lambda v: kf.mean(v))(x)
    assert g.dtype == np.float16
    np.testing.assert_allclose(g, np.float16(1 / BIG), rtol=0)  # was 0: 1 / inf


@pytest.mark.parametrize("compiled", [False, True])
def test_a_float16_nll_mean_over_more_than_65504_instances(compiled):
    """A float16 language model's batch (128 x 512 tokens) is past 65504 instances: the
    mean and its gradient were 0 (a sum and a count of inf)."""
    rs = np.random.RandomState(0)
    scores = rs.randn(BIG, 3).astype("float16")
    labels = rs.randint(0, 3, BIG)
    if compiled:
        s = kf.placeholder("s", scores.shape, "float16")
        y = kf.placeholder("y", labels.shape, "int64")
        loss = kf.nll(s, y)
        dloss = kf.grad(lambda t: kf.nll(t, y))(s)
        value, grad = kf.compile([loss, dloss]).run({"s": scores, "y": labels})
    else:
        value = kf.nll(scores, labels)
        grad = kf.grad(lambda t: kf.nll(t, labels))(scores)
    s64 = scores.astype("float64")
    logp = s64 - np.log(np.exp(s64).sum(axis=1, keepdims=True))
    want = -logp[np.arange(BIG), labels].mean()
    onehot = np.eye(3)[labels]
    assert np.asarray(value).dtype == grad.dtype == np.float16
    np.testing.assert_allclose(float(value), want, rtol=2e-3)
    np.testing.assert_allclose(grad.astype("float64"), (np.exp(logp) - onehot) / BIG,
                               rtol=2e-2, atol=1e-7)


def test_a_float16_variance_graph_saves_and_loads_its_float32_count(tmp_path):
    a = (np.random.RandomState(1).rand(BIG // 10, 10) * 10).astype("float16")
    x = kf.placeholder("x", (None, 10), "float16")
    out = kf.var(x, axis=1)
    want = kf.compile([out]).run({"x": a})[0]
    loaded = kf.load(kf.save(str(tmp_path / "var.kf"), kf.Graph([out])))
    counts = [n for n in loaded.graph.nodes if n.op == "count"]
    assert [(n.attrs.get("dtype"), n.spec.dtype) for n in counts] == [("float32", "float32")]
    (got,) = kf.compile(loaded.graph).run({"x": a})
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [3001, BIG])  # float16 counts exactly to 2048, at all to 65504
def test_float16_label_counts_are_exact_and_accuracy_right(n):
    rs = np.random.RandomState(2)
    scores, labels = rs.randn(n, 3).astype("float16"), rs.randint(0, 3, n)
    labels[::7] = -1  # skipped instances count neither way
    kept = labels != -1
    hits = (scores.argmax(axis=1) == labels)[kept].sum()
    with np.errstate(over="ignore"):  # the float16 sum of BIG terms is inf, as NumPy's
        _, count = kf.nll(scores, labels, average=False)
    ncorrect, count2 = kf.accuracy(scores, labels, average=False)
    assert count.dtype == count2.dtype == ncorrect.dtype == np.float32
    assert float(count) == float(count2) == kept.sum() and float(ncorrect) == hits
    s = kf.placeholder("s", scores.shape, "float16")
    y = kf.placeholder("y", labels.shape, "int64")
    (acc,) = kf.compile([kf.accuracy(s, y)]).run({"s": scores, "y": labels})
    assert acc.dtype == np.float16
    np.testing.assert_allclose(acc, hits / kept.sum(), rtol=1e-3)
    _, bce_count = kf.bce(scores[:, 0], (labels > 0).astype("float16"), average=False)
    assert bce_count.dtype == np.float32 and float(bce_count) == n


@pytest.mark.parametrize("skip_every", [None, 5])
def test_nlls_second_order_in_float16_divides_by_a_float32_count(skip_every):
    """The gradient through nll's gradient output (d/dx <g, dnll/dx>) scales by the kept
    share of each row: 1 / count, from a float32 count past 65504."""
    rs = np.random.RandomState(3)
    scores, labels = rs.randn(BIG, 3), rs.randint(0, 3, BIG)
    if skip_every:
        labels[::skip_every] = -1
    v = rs.randn(BIG, 3)

    def inner(t, y):
        return kf.sum(kf.grad(lambda u: kf.nll(u, y))(t) * v.astype(t.dtype))

    got = kf.grad(inner)(scores.astype("float16"), labels)
    want = kf.grad(inner)(scores, labels)
    assert got.dtype == np.float16 and np.abs(want).max() > 0
    np.testing.assert_allclose(got.astype("float64"), want, rtol=5e-2, atol=2e-7)
