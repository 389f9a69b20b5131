"""Tests of pool_relu_grad (knetflow/ops/pool.py): pool_grad(x, y, dy) kept where x > 0,
the op the compiler makes of relu_grad(pool_grad(x, y, dy), x).

Its values are the unfused composition's exactly, bit for bit (signed zeros included),
in float32 and float64: the general kernel runs the two ops' own code, and the bound
tiled kernel masks dy at the pooled size, which gives the same products (see
`knetflow.ops.pool_cpu._max_grad_part`). NaN results are compared as NaN, not by
their bits.
"""

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.base import Spec, get_op
from knetflow.ops.elementwise import relu_grad
from knetflow.ops.pool import pool, pool_relu_grad
from tests.ops.harness import Arg, Case, check, check_into_planned_buffers
from tests.ops.test_pool import _draw_max_pool_grad_problem, _grad_attrs, ref_pool_grad
from tests.ops.threads import force_split, needs_pool

pool_module = importlib.import_module("knetflow.ops.pool")  # ops.pool is the function


def ref_pool_relu_grad(x, dy, **kw):
    return ref_pool_grad(x, dy, **kw) * (x > 0)


def _case(xs, ys, **kw):
    label = " ".join(f"{k}={v}" for k, v in kw.items())
    return Case(f"pool_relu_grad x{xs} {label}",
                lambda x, dy: pool_relu_grad(x, pool(x, **kw), dy, **kw),
                lambda x, dy: ref_pool_relu_grad(x, dy, **kw), [Arg(xs), Arg(ys)], second=True)


CASES = [
    _case((2, 2, 6, 4), (2, 2, 3, 2)),
    _case((1, 2, 7, 6), (1, 2, 4, 3), window=3, stride=2, padding=1, alpha=2.0),
    _case((1, 2, 5, 6), (1, 2, 3, 4), mode=2, padding=1),
    _case((2, 2, 10), (2, 2, 3), mode=1, window=4, stride=3),
    _case((1, 2, 4, 4, 2), (1, 2, 2, 2, 1), mode=3),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_into_planned_buffers(case):
    check_into_planned_buffers(case)


def assert_same_bits(got, want):
    """Equal arrays of one dtype, zeros of one sign, NaN where the other has NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(np.signbit(got[~nan]), np.signbit(want[~nan]))
    np.testing.assert_array_equal(got[~nan], want[~nan])


#: inf or NaN in dy times a False of a mask: NaN, in the composition and the fused op alike
special_values = pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")


def _unfused(x, y, dy, **attrs):
    return relu_grad(kf.pool_grad(x, y, dy, **attrs), x)


def test_the_example_masks_the_first_maximum_of_a_window_of_zeros():
    x = np.array([[[0.0, 0.0, 3.0, 1.0]]])
    got = pool_relu_grad(x, pool(x), np.array([[[5.0, -7.0]]]))
    assert_same_bits(got, np.array([[[0.0, 0.0, -7.0, -0.0]]]))   # -7 * False is -0.0


def test_shape_errors_name_the_op():
    x = np.ones((1, 2, 4, 4))
    with pytest.raises(kf.ShapeError, match="pool_relu_grad"):
        pool_relu_grad(x, np.ones((1, 2, 2, 2)), np.ones((1, 2, 3, 2)))


# ---- properties over shapes, strides, padding and modes ----


def _dy(rs, shape, dtype, special):
    """dy of random signs, with zeros of both signs, and inf and NaN when `special`."""
    dy = rs.randn(*shape).astype(dtype)
    dy.flat[::4] = 0.0
    dy.flat[1::4] = -0.0
    if special and dy.size > 3:
        dy.flat[2], dy.flat[3] = np.inf, np.nan
    return dy


@special_values
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_general_kernel_is_the_composition_bit_for_bit(data):
    draw = data.draw
    nd = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, w - 1)) for w in window)
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    xs = tuple(draw(st.integers(max(1, w - 2 * p - s + 1), 5))
               for w, p, s in zip(window, padding, stride))
    attrs = _grad_attrs(window, mode=draw(st.integers(0, 3)), nanopt=draw(st.integers(0, 1)),
                        alpha=draw(st.sampled_from([1.0, 2.0])), padding=padding, stride=stride)
    dtype = draw(st.sampled_from(["float32", "float64"]))
    rs = np.random.RandomState(draw(st.integers(0, 100)))
    x = np.round(rs.randn(draw(st.integers(1, 3)), 2, *xs)).astype(dtype)   # ties, zeros
    if draw(st.booleans()):
        x = np.maximum(x, 0)                                                # a relu's output
    y = kf.pool(x, **attrs)
    dy = _dy(rs, y.shape, dtype, draw(st.booleans()))
    assert_same_bits(pool_relu_grad(x, y, dy, **attrs), _unfused(x, y, dy, **attrs))


def _bound(x, y, dy, attrs):
    specs = [Spec(a.shape, str(a.dtype)) for a in (x, y, dy)]
    return get_op("pool_relu_grad").bind(np, attrs, specs, specs[0])


def _check_bound(x, attrs, rs, special):
    y = kf.pool(x, **attrs)
    dy = _dy(rs, y.shape, x.dtype, special)
    fn = _bound(x, y, dy, attrs)
    assert fn is not None
    want = _unfused(x, y, dy, **attrs)
    assert_same_bits(fn(x, y, dy), want)
    out = np.full_like(x, 7.0)
    assert fn(x, y, dy, out=out) is out
    assert_same_bits(out, want)


@special_values
@settings(max_examples=40, deadline=None)
@given(st.data(), st.booleans())
def test_bound_tiled_kernel_is_the_composition_bit_for_bit(data, special):
    x, attrs, rs = _draw_max_pool_grad_problem(data.draw, st.integers(1, 3),
                                               ["distinct", "ties", "relu", "nan"])
    _check_bound(x, attrs, rs, special)


@needs_pool
@special_values
@settings(max_examples=30, deadline=None)
@given(st.data(), st.booleans())
def test_split_bound_kernel_is_the_composition_bit_for_bit(data, special):
    x, attrs, rs = _draw_max_pool_grad_problem(
        data.draw, st.integers(2, 7), ["distinct", "ties", "relu", "nan in one part"])
    with pytest.MonkeyPatch.context() as m:
        force_split(m, 2)
        _check_bound(x, attrs, rs, special)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bound_kernel_masks_a_relu_output_without_the_general_kernel(dtype, monkeypatch):
    # LeNet's case: windows of zeros tie; the tiled kernel settles them and masks dy itself
    rs = np.random.RandomState(4)
    x = np.maximum(rs.randn(6, 3, 8, 6), 0).astype(dtype)
    attrs = _grad_attrs((2, 2))
    y = kf.pool(x, **attrs)
    dy = _dy(rs, y.shape, dtype, special=False)
    want = _unfused(x, y, dy, **attrs)
    calls = []
    general = pool_module.PoolReluGrad.forward
    monkeypatch.setattr(pool_module.PoolReluGrad, "forward",
                        staticmethod(lambda *a, **k: calls.append(1) or general(*a, **k)))
    got = _bound(x, y, dy, attrs)(x, y, dy)
    assert not calls
    assert_same_bits(got, want)


@pytest.mark.parametrize("xs, attrs, dtype", [
    ((2, 2, 6, 6), _grad_attrs((2, 2), mode=1), "float64"),            # average
    ((2, 2, 6, 6), _grad_attrs((2, 2), alpha=2.0), "float64"),
    ((2, 2, 6, 6), _grad_attrs((2, 2), padding=(1, 1)), "float64"),
    ((2, 2, 6, 6), _grad_attrs((2, 2), stride=(1, 1)), "float64"),     # overlapping
    ((2, 2, 6), _grad_attrs((2,), padding=(0,)), "float64"),           # 1-D
    ((2, 2, 6, 6), _grad_attrs((2, 2)), "float16"),
])
def test_bind_leaves_other_geometries_to_the_general_kernel(xs, attrs, dtype):
    x = np.ones(xs, dtype)
    y = kf.pool(x, **attrs)
    assert _bound(x, y, y, attrs) is None


def test_the_general_kernel_runs_pool_grads_kernel_for_the_arrays_module(monkeypatch):
    # on a GPU that is cuDNN's (registered per device kind); here a stand-in for NumPy
    from knetflow.devices import registry

    seen = []

    def fast(opname, xp, attrs):
        if opname != "pool_grad":
            return None
        return lambda xp, *a, **k: seen.append(1) or get_op("pool_grad").forward(xp, *a, **k)

    monkeypatch.setattr(registry, "fast_kernel", fast)
    rs = np.random.RandomState(6)
    x = rs.randn(2, 2, 4, 4)
    y = kf.pool(x)
    dy = rs.randn(*y.shape)
    got = pool_module.PoolReluGrad.forward(np, x, y, dy, **_grad_attrs((2, 2)))
    assert seen
    assert_same_bits(got, _unfused(x, y, dy))
