"""dropout and its dropout_mask op: Knet semantics, statistics, seeds, graphs and training."""

import numpy as np
import pytest

import knetflow as kf
from knetflow import rng as kf_rng
from knetflow.layers.dropout import dropout
from knetflow.ops.random import DropoutMask
from tests.ops.harness import Arg, Case, check


def _seeded_mask(shape, p, seed, dtype="float64"):
    """The mask the op makes for `seed`, computed independently."""
    u = np.random.default_rng(seed).random(shape, dtype=dtype)
    return np.where(u >= p, 1.0 / (1.0 - p), 0.0).astype(dtype)


# Compiled with training=False (as the harness does) a drop=None mask becomes 1: y = x.
CASES = [
    Case("dropout_inference", lambda x: dropout(x, 0.5), lambda x: x, [Arg((3, 4))],
         second=True),
    Case("dropout_inference_p1", lambda x: dropout(x * 2, 1.0), lambda x: x * 2, [Arg((5,))]),
    # drop=True drops even when compiled for inference; the seed fixes the mask
    Case("dropout_seeded", lambda x: dropout(x, 0.5, drop=True, seed=3),
         lambda x: x * _seeded_mask(x.shape, 0.5, 3, x.dtype), [Arg((4, 5))], second=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- Knet semantics, eagerly ----


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_statistics(p):
    kf.seed(0)
    x = np.full(200_000, 3.0)
    y = dropout(x, p, drop=True)
    zeroed = np.mean(y == 0)
    assert zeroed == pytest.approx(p, abs=0.005)
    assert np.mean(y) == pytest.approx(3.0, abs=0.05)
    np.testing.assert_allclose(y[y != 0], 3.0 / (1.0 - p))


def test_kept_elements_are_scaled_copies():
    x = np.random.default_rng(1).normal(size=(50, 40))
    y = dropout(x, 0.25, drop=True, seed=7)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    np.testing.assert_array_equal(y, x * _seeded_mask(x.shape, 0.25, 7))


def test_seed_is_deterministic_and_leaves_the_shared_generator_alone():
    x = np.ones((20, 30))
    state = kf_rng.generator().bit_generator.state
    a = dropout(x, 0.5, drop=True, seed=3)
    b = dropout(x, 0.5, drop=True, seed=3)
    c = dropout(x, 0.5, drop=True, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert kf_rng.generator().bit_generator.state == state


def test_kf_seed_makes_unseeded_masks_reproducible():
    x = np.ones(1000)
    kf.seed(11)
    a = dropout(x, 0.5, drop=True)
    b = dropout(x, 0.5, drop=True)
    kf.seed(11)
    np.testing.assert_array_equal(dropout(x, 0.5, drop=True), a)
    assert not np.array_equal(a, b)


def test_returns_x_itself_when_not_dropping():
    x = np.ones(10)
    assert dropout(x, 0.0, drop=True) is x
    assert dropout(x, 0.5, drop=False) is x
    assert dropout(x, 0.5) is x  # eager calls are not training (Knet: drop=false outside @diff)
    s = kf.placeholder("s", (None, 3))
    assert dropout(s, 0) is s
    assert dropout(s, 0.5, drop=False) is s


def test_p_one_zeroes_everything_and_bad_p_is_rejected():
    np.testing.assert_array_equal(dropout(np.ones(5), 1.0, drop=True), np.zeros(5))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"dropout: probability p must lie in \[0, 1\]"):
            dropout(np.ones(3), p, drop=True)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtype_kept(dtype):
    y = dropout(np.ones((4, 4), dtype=dtype), 0.5, drop=True, seed=0)
    assert y.dtype == dtype
    assert set(np.unique(y).tolist()) <= {0.0, 2.0}


def test_integer_input_gives_float64():
    y = dropout(np.arange(6), 0.5, drop=True, seed=1)
    assert y.dtype == np.float64


def test_mask_op_flags_and_forward():
    assert DropoutMask.name == "dropout_mask"
    assert DropoutMask.random and not DropoutMask.pure and DropoutMask.nondiff == (0,)
    x = np.zeros((3, 4), dtype="float32")
    m1 = DropoutMask.forward(np, x, p=0.5, rng=np.random.default_rng(5))
    m2 = DropoutMask.forward(np, x, p=0.5, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(m1, m2)
    assert m1.dtype == np.float32 and m1.shape == (3, 4)
    assert DropoutMask.grad(None, m1, x, p=0.5) == (None,)


# ---- graphs ----


def test_graph_node_carries_p_for_the_compiler():
    x = kf.placeholder("x", (None, 8))
    y = dropout(x, 0.3)
    assert y.node.op == "mul" and y.shape == (None, 8)
    mask = y.node.inputs[1]
    assert mask.op == "dropout_mask"
    assert mask.attrs == {"p": 0.3, "seed": None, "training_only": True}
    assert mask.spec == kf.Spec((None, 8), "float32")
    assert dropout(x, 0.3, drop=True, seed=2).node.inputs[1].attrs == {
        "p": 0.3, "seed": 2, "training_only": False}


def test_compiled_inference_does_not_drop():
    x = kf.placeholder("x", (None, 5))
    feed = {"x": np.ones((4, 5), dtype="float32")}
    np.testing.assert_array_equal(kf.compile(dropout(x, 0.5)).run(feed)[0], feed["x"])


def test_compiled_training_drops_with_fresh_masks():
    x = kf.placeholder("x", (None, 50))
    plan = kf.compile(dropout(x, 0.5), training=True)
    feed = {"x": np.ones((40, 50), dtype="float32")}
    a, b = plan.run(feed)[0], plan.run(feed)[0]
    assert set(np.unique(a).tolist()) == {0.0, 2.0}
    assert not np.array_equal(a, b)
    assert np.mean(a == 0) == pytest.approx(0.5, abs=0.05)


def test_compiled_seeded_mask_matches_eager():
    x = kf.placeholder("x", (None, 6), "float64")
    value = np.random.default_rng(2).normal(size=(3, 6))
    got = kf.compile(dropout(x, 0.4, drop=True, seed=9), training=True).run({"x": value})[0]
    np.testing.assert_array_equal(got, dropout(value, 0.4, drop=True, seed=9))


def test_drop_true_survives_inference_compile():
    """Knet's drop=true drops even outside training (needs strip_dropout to keep
    masks whose `training_only` attribute is False)."""
    x = kf.placeholder("x", (None, 6), "float64")
    value = np.ones((3, 6))
    got = kf.compile(dropout(x, 0.5, drop=True, seed=1)).run({"x": value})[0]
    np.testing.assert_array_equal(got, value * _seeded_mask(value.shape, 0.5, 1))


def test_gradient_flows_through_the_mask():
    w = kf.param("w", value=np.random.default_rng(3).normal(size=(10, 10)), dtype="float64")
    loss = kf.sum(dropout(w, 0.5))
    plan = kf.compile(kf.backward(kf.Graph([loss])), training=True)
    total, grad = plan.run({})
    assert set(np.unique(grad).tolist()) == {0.0, 2.0}
    wv = plan.params["w"]
    assert float(total) == pytest.approx(float(np.sum(wv * grad)))


def test_drops_inside_diff():
    x = kf.Param(np.ones(1000))
    r = kf.diff(lambda: kf.sum(dropout(x, 0.5)))
    g = kf.grad(r, x)
    assert set(np.unique(g).tolist()) == {0.0, 2.0}
    assert float(kf.value(r)) == pytest.approx(float(np.sum(g)))
