"""Tests of knetflow/ops/pool.py: pool, pool_grad, pool_select and unpool.

References are loops over output positions written from the definitions in
seed 001's Pooling chapter: each output is the max (padding never wins), the
sum over the window divided by its size (mode 1), or by its number of real
elements (mode 2); max gradients go to the first maximum of each window. The
number of windows is Knet's 1 + (X + 2P - W) / S rounded toward zero, and a
window longer than the padded input is cut to it (slicing the padded input
cuts it here).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops import cudnn
from knetflow.ops.pool import pool, pool_grad, pool_select, unpool
from tests.ops.cudnn_fake import NumpyCudnn
from tests.ops.harness import Arg, Case, check, check_into_planned_buffers
from tests.ops.threads import force_split, needs_pool


def _tup(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _geometry(x, window, padding, stride):
    nd = x.ndim - 2
    window = _tup(window, nd)
    stride = window if stride is None else _tup(stride, nd)
    padding = _tup(padding, nd)
    # int() of the quotient rounds toward zero, as Knet's div does
    ys = tuple(1 + int((n + 2 * p - w) / s)
               for n, w, p, s in zip(x.shape[2:], window, padding, stride))
    return window, padding, stride, ys


def _window(p, window, stride):
    return (Ellipsis,) + tuple(slice(i * s, i * s + w) for i, w, s in zip(p, window, stride))


def _pad(x, padding, fill):
    lead = [(0, 0)] * (x.ndim - len(padding))
    return np.pad(x, lead + [(q, q) for q in padding], constant_values=fill)


def ref_pool(x, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1, alpha=1):
    window, padding, stride, ys = _geometry(x, window, padding, stride)
    is_max = mode in (0, 3)
    xpad = _pad(x, padding, -np.inf if is_max else 0)
    real = _pad(np.ones(x.shape[2:]), padding, 0)
    y = np.zeros(x.shape[:2] + ys)
    for p in np.ndindex(*ys):
        win = xpad[_window(p, window, stride)].reshape(x.shape[:2] + (-1,))
        if is_max:
            y[(Ellipsis,) + p] = win.max(-1) if maxpoolingNanOpt else np.nanmax(win, -1)
        elif mode == 1:   # the window as cut to the padded input
            y[(Ellipsis,) + p] = win.sum(-1) / math.prod(xpad[_window(p, window, stride)].shape[2:])
        else:
            y[(Ellipsis,) + p] = win.sum(-1) / real[_window(p, window, stride)[1:]].sum()
    return alpha * y


def _first_max_mask(x, window, padding, stride, p):
    """One-hot (N, C, window...) of each window's first maximum at output position p."""
    win = _pad(x, padding, -np.inf)[_window(p, window, stride)]
    flat = win.reshape(x.shape[:2] + (-1,))
    onehot = np.zeros_like(flat)
    np.put_along_axis(onehot, flat.argmax(-1)[..., None], 1.0, axis=-1)
    return onehot.reshape(win.shape)


def ref_pool_grad(x, dy, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1, alpha=1):
    window, padding, stride, ys = _geometry(x, window, padding, stride)
    dx = np.zeros(x.shape[:2] + tuple(n + 2 * q for n, q in zip(x.shape[2:], padding)))
    real = _pad(np.ones(x.shape[2:]), padding, 0)
    for p in np.ndindex(*ys):
        sl, g = _window(p, window, stride), dy[(Ellipsis,) + p]
        lift = g.reshape(g.shape + (1,) * len(window))
        if mode in (0, 3):
            dx[sl] += _first_max_mask(x, window, padding, stride, p) * lift
        else:
            count = math.prod(dx[sl].shape[2:]) if mode == 1 else real[sl[1:]].sum()
            dx[sl] += lift / count
    crop = (Ellipsis,) + tuple(slice(q, q + n) for q, n in zip(padding, x.shape[2:]))
    return alpha * dx[crop]


def ref_pool_select(x, g, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1, alpha=1):
    if mode not in (0, 3):
        return ref_pool(g, window, padding, stride, mode, maxpoolingNanOpt, alpha)
    window, padding, stride, ys = _geometry(x, window, padding, stride)
    gpad = _pad(g, padding, 0)
    out = np.zeros(x.shape[:2] + ys)
    for p in np.ndindex(*ys):
        mask = _first_max_mask(x, window, padding, stride, p)
        out[(Ellipsis,) + p] = (mask * gpad[_window(p, window, stride)]).reshape(
            x.shape[:2] + (-1,)).sum(-1)
    return alpha * out


def ref_unpool(x, window=2, padding=0, stride=None, alpha=1):
    nd = x.ndim - 2
    window = _tup(window, nd)
    stride = window if stride is None else _tup(stride, nd)
    padding = _tup(padding, nd)
    ys = tuple((n - 1) * s + w - 2 * q for n, w, q, s in zip(x.shape[2:], window, padding, stride))
    ypad = np.zeros(x.shape[:2] + tuple(y + 2 * q for y, q in zip(ys, padding)))
    for p in np.ndindex(*x.shape[2:]):
        ypad[_window(p, window, stride)] += x[(Ellipsis,) + p].reshape(
            x.shape[:2] + (1,) * nd) / alpha
    return ypad[(Ellipsis,) + tuple(slice(q, q + y) for q, y in zip(padding, ys))]


# ---- harness cases ----


def _label(kw):
    return " ".join(f"{k}={v}" for k, v in kw.items())


def _pool_case(xs, second=False, **kw):
    return Case(f"pool x{xs} {_label(kw)}", lambda x: pool(x, **kw),
                lambda x: ref_pool(x, **kw), [Arg(xs)], second=second)


def _grad_case(xs, ys, **kw):
    return Case(f"pool_grad x{xs} {_label(kw)}",
                lambda x, dy: pool_grad(x, pool(x, **kw), dy, **kw),
                lambda x, dy: ref_pool_grad(x, dy, **kw), [Arg(xs), Arg(ys)], second=True)


def _select_case(xs, **kw):
    return Case(f"pool_select x{xs} {_label(kw)}",
                lambda x, g: pool_select(x, pool(x, **kw), g, **kw),
                lambda x, g: ref_pool_select(x, g, **kw), [Arg(xs), Arg(xs)], second=True)


def _unpool_case(xs, **kw):
    return Case(f"unpool x{xs} {_label(kw)}", lambda x: unpool(x, **kw),
                lambda x: ref_unpool(x, **kw), [Arg(xs)], second=True)


CASES = [
    _pool_case((2, 3, 6)),
    _pool_case((2, 2, 7, 6), window=3, stride=2, padding=1, second=True),
    _pool_case((1, 2, 5, 6), mode=1, padding=1, second=True),
    _pool_case((1, 2, 7, 5), mode=2, window=(3, 2), padding=(1, 0), stride=(2, 1)),
    _pool_case((1, 2, 4, 4, 4), mode=3),
    _pool_case((1, 2, 5, 4, 3), mode=2, window=2, padding=1, stride=(1, 2, 2)),
    _pool_case((2, 2, 6, 6), alpha=2.0, maxpoolingNanOpt=0, stride=1),
    _pool_case((2, 2, 9), mode=1, window=4, stride=3, alpha=0.5),
    _pool_case((2, 2, 1, 6), second=True),                  # Knet's (6,1,1,1): H=1 stays 1
    _pool_case((1, 2, 1, 5), mode=1, window=(4, 3), padding=1),  # cut to 1 + 2 rows
    _pool_case((1, 2, 2, 5), mode=2, window=(4, 2), stride=(3, 2)),
    _grad_case((2, 2, 1, 6), (2, 2, 1, 3)),
    _grad_case((1, 2, 1, 5), (1, 2, 1, 2), mode=1, window=(4, 3), padding=1),
    _select_case((1, 2, 1, 6), mode=3),
    _select_case((1, 2, 2, 5), mode=2, window=(4, 2), stride=(3, 2)),
    _grad_case((2, 2, 6, 5), (2, 2, 3, 2)),
    _grad_case((1, 2, 7, 6), (1, 2, 4, 3), window=3, stride=2, padding=1, alpha=2.0),
    _grad_case((1, 2, 5, 6), (1, 2, 3, 4), mode=2, padding=1),
    _select_case((2, 2, 6, 5)),
    _select_case((1, 2, 7, 6), window=3, stride=2, padding=1, mode=3, alpha=1.5),
    _select_case((1, 2, 6), mode=1, padding=1),
    _unpool_case((2, 2, 3)),
    _unpool_case((1, 2, 3, 2), window=3, stride=2, padding=1, alpha=2.0),
    _unpool_case((1, 1, 2, 2, 2), window=(2, 1, 2)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_into_planned_buffers(case):
    """Inside a graph the op writes into a planned buffer that later runs reuse."""
    check_into_planned_buffers(case)


# ---- the seed's worked examples (seed 001, Pooling), in NCHW ----


def _row(values):
    return np.asarray(values, dtype=float).reshape(1, 1, -1)


def test_seed_1d_pooling():
    x = _row(range(1, 7))
    assert kf.pool(x).ravel().tolist() == [2, 4, 6]
    assert kf.pool(x, window=3).ravel().tolist() == [3, 6]
    assert kf.pool(x, padding=1).ravel().tolist() == [1, 3, 5, 6]
    assert kf.pool(_row(range(1, 11)), stride=4).ravel().tolist() == [2, 6, 10]


def _knet4(values):
    """Knet's reshape(values, (X,1,1,1)): (1, 1, 1, X) here."""
    return np.asarray(values, dtype=float).reshape(1, 1, 1, -1)


def test_seed_1d_pooling_on_knets_4d_arrays():
    # the seed's own calls, keywords as written: windows and strides apply to the
    # dimension of size 1 too, which keeps its size 1
    x = _knet4(range(1, 7))
    for y, want in [(kf.pool(x), [2, 4, 6]), (kf.pool(x, window=3), [3, 6]),
                    (kf.pool(x, padding=(0, 1)), [1, 3, 5, 6]),  # Knet's padding=(1,0)
                    (kf.pool(_knet4(range(1, 11)), stride=4), [2, 6, 10])]:
        assert y.shape == (1, 1, 1, len(want)) and y.ravel().tolist() == want
    assert kf.pool(x, window=(1, 2), padding=(0, 1)).ravel().tolist() == [1, 3, 5, 6]


def test_seed_pooling_modes_on_knets_4d_arrays():
    # x = [1..6], window = stride = 2, padding 1 on the long dimension (the seed's list);
    # the window over the dimension of size 1 is cut to that one row for every mode
    x = _knet4(range(1, 7))
    for mode, want in [(0, [1, 3, 5, 6]), (1, [0.5, 2.5, 4.5, 3.0]), (2, [1.0, 2.5, 4.5, 6.0]),
                       (3, [1, 3, 5, 6])]:
        assert kf.pool(x, padding=(0, 1), mode=mode).ravel().tolist() == want


def test_a_window_longer_than_the_padded_input_is_cut_to_it():
    x = np.arange(1., 7).reshape(1, 1, 2, 3)
    # rows: 2 + 2*1 padded = 4 < window 5; columns 3 < 4: one window each way, cut
    y = kf.pool(x, window=(5, 4), padding=(1, 0), mode=1)
    assert y.shape == (1, 1, 1, 1) and y.ravel().tolist() == [21 / (4 * 3)]
    assert kf.pool(x, window=(5, 4), padding=(1, 0), mode=2).ravel().tolist() == [21 / 6]
    assert kf.pool(x, window=(5, 4), padding=(1, 0)).ravel().tolist() == [6]
    g = kf.pool_grad(x, kf.pool(x, window=3, mode=1), np.ones((1, 1, 1, 1)), window=3, mode=1)
    np.testing.assert_allclose(g, np.full((1, 1, 2, 3), 1 / 6))  # the cut window's 6 elements


def test_knets_output_size_rounds_toward_zero():
    x = kf.placeholder("x", (None, 1, 1, 10))
    assert kf.pool(x).shape == (None, 1, 1, 5)
    assert kf.pool(x, stride=4).shape == (None, 1, 1, 3)            # 1 + (1 - 2) / 4 -> 1
    assert kf.pool(x, window=3).shape == (None, 1, 1, 3)             # 1 + (1 - 3) / 3 -> 1
    assert kf.pool(x, window=(2, 3), padding=(1, 1)).shape == (None, 1, 1, 4)
    with pytest.raises(kf.ShapeError, match=r"empty output \(0, 5\)"):  # 1 + (-2) / 2 -> 0
        kf.pool(x, window=(3, 2), stride=(2, 2))


def test_seed_pooling_modes():
    x = _row(range(1, 7))
    assert kf.pool(x, padding=1, mode=0).ravel().tolist() == [1, 3, 5, 6]
    assert kf.pool(x, padding=1, mode=1).ravel().tolist() == [0.5, 2.5, 4.5, 3.0]
    assert kf.pool(x, padding=1, mode=2).ravel().tolist() == [1.0, 2.5, 4.5, 6.0]
    assert kf.pool(x, padding=1, mode=3).ravel().tolist() == [1, 3, 5, 6]


def test_seed_2d_pooling():
    x = np.arange(1., 17).reshape(1, 1, 4, 4)
    # the seed shows [[6, 14], [8, 16]] column-major
    assert kf.pool(x)[0, 0].T.tolist() == [[6, 14], [8, 16]]


def test_channels_and_instances_pool_independently():
    x = np.random.RandomState(0).rand(3, 2, 4, 4)
    y = kf.pool(x)
    for n in range(3):
        for c in range(2):
            np.testing.assert_array_equal(y[n, c], kf.pool(x[n:n + 1, c:c + 1])[0, 0])


def test_padding_never_wins_a_max():
    x = -np.arange(1., 7).reshape(1, 1, 6)
    assert kf.pool(x, padding=1).ravel().tolist() == [-1, -2, -4, -6]


def test_nan_option():
    x = _row([1, np.nan, 3, 4])
    assert np.isnan(kf.pool(x)[0, 0, 0])
    assert kf.pool(x, maxpoolingNanOpt=0).ravel().tolist() == [1, 4]


def test_ties_go_to_the_first_maximum():
    x = _row([5, 5, 2, 2])
    g = kf.pool_grad(x, kf.pool(x), _row([1, 10]))
    assert g.ravel().tolist() == [1, 0, 10, 0]


def test_unpool_inverts_average_pooling():
    x = np.random.RandomState(1).rand(2, 3, 3, 4)
    assert kf.unpool(x).shape == (2, 3, 6, 8)
    np.testing.assert_allclose(kf.pool(kf.unpool(x), mode=1), x)
    np.testing.assert_allclose(kf.pool(kf.unpool(x, alpha=2.0), mode=1, alpha=2.0), x)
    assert kf.unpool(_row([1, 2])).ravel().tolist() == [1, 1, 2, 2]


def test_maxpool_gradient_in_a_knet_style_loop():
    rs = np.random.RandomState(2)
    x = kf.Param(rs.randn(2, 3, 4, 4))
    r = kf.diff(lambda: kf.sum(kf.pool(x) * 2.0))
    np.testing.assert_allclose(kf.grad(r, x), ref_pool_grad(x.value, np.full((2, 3, 2, 2), 2.0)))


# ---- errors ----


@pytest.mark.parametrize("xs,kw,match", [
    ((1, 2, 1, 1), {"window": 3, "stride": 1},   # 1 + (1 - 3) / 1: a whole stride over
     r"pool: x \(1, 2, 1, 1\) with window=\(3, 3\), padding=\(0, 0\), stride=\(1, 1\) gives "
     r"an empty output \(0, 0\)"),
    ((1, 2, 1, 6), {"window": (4, 2), "stride": (3, 2)},   # 1 + (1 - 4) / 3 -> 0
     r"window=\(4, 2\), padding=\(0, 0\), stride=\(3, 2\) gives an empty output \(0, 3\)"),
    ((1, 2, 4, 4), {"padding": 2}, r"padding=\(2, 2\) must be smaller than window=\(2, 2\)"),
    ((1, 2, 4, 4), {"mode": 4}, r"mode=4"),
    ((1, 2, 4, 4), {"window": (2, 2, 2)}, r"window=\(2, 2, 2\) needs 2 entries"),
    ((4, 4), {}, r"1 to 3 spatial dims"),
    ((1, 2, 4, 4), {"stride": 0}, r"stride=\(0, 0\) must be >= 1"),
])
def test_pool_shape_errors(xs, kw, match):
    with pytest.raises(kf.ShapeError, match=match):
        kf.pool(kf.placeholder("x", xs), **kw)


def test_pool_errors_on_ints_and_mismatched_gradients():
    with pytest.raises(kf.ShapeError, match="floating-point"):
        kf.pool(np.ones((1, 1, 4), int))
    x = kf.placeholder("x", (1, 2, 4, 4))
    with pytest.raises(kf.ShapeError, match=r"pool_grad: dy \(1, 2, 3, 3\) does not match"):
        kf.pool_grad(x, kf.pool(x), kf.placeholder("dy", (1, 2, 3, 3)))
    with pytest.raises(kf.ShapeError, match=r"unpool: .*padding=\(2,\) must be smaller"):
        kf.unpool(kf.placeholder("u", (1, 2, 3)), padding=2)


# ---- properties over varying shapes ----


@st.composite
def _problems(draw):
    nd = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, w - 1)) for w in window)
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    # windows may be longer than the padded input: then one window, cut, unless that is
    # a whole stride too long (an empty output; see test_pool_shape_errors)
    xs = tuple(draw(st.integers(max(1, w - 2 * p - s + 1), 6))
               for w, p, s in zip(window, padding, stride))
    mode = draw(st.sampled_from([0, 1, 2, 3]))
    return (draw(st.integers(1, 2)), 2) + xs, {"window": window, "padding": padding,
                                                     "stride": stride, "mode": mode}


@settings(max_examples=40, deadline=None)
@given(_problems())
def test_pool_matches_reference_and_adjoint(problem):
    xs, kw = problem
    rs = np.random.RandomState(0)
    x = rs.randn(*xs)
    y = kf.pool(x, **kw)
    np.testing.assert_allclose(y, ref_pool(x, **kw), rtol=1e-12, atol=1e-12)
    dy, g = rs.randn(*y.shape), rs.randn(*xs)
    dx = kf.pool_grad(x, y, dy, **kw)
    np.testing.assert_allclose(dx, ref_pool_grad(x, dy, **kw), rtol=1e-12, atol=1e-12)
    # pool_select is the adjoint of pool_grad in dy
    np.testing.assert_allclose(np.sum(kf.pool_select(x, y, g, **kw) * dy), np.sum(g * dx),
                               rtol=1e-9, atol=1e-12)


# ---- on a GPU: the same xp code with CuPy ----


def _cupy():
    """CuPy when it is installed and sees a CUDA device, else None."""
    try:
        import cupy
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - not installed, no driver, no device
        return None


@pytest.mark.skipif(_cupy() is None, reason="no GPU: CuPy with a CUDA device is needed")
def test_cupy_runs_the_same_kernels():
    cp = _cupy()
    rs = np.random.RandomState(4)
    x, row = rs.randn(2, 3, 7, 6), rs.randn(2, 3, 1, 6)
    for x, kw in ((x, {"padding": 1}), (x, {"mode": 2, "window": 3, "stride": 2, "padding": 1}),
                  (row, {}), (row, {"mode": 1, "window": (4, 3), "padding": 1})):  # cut windows
        # cuDNN averages in its own order: float64 rounding, absolute for averages near 0
        y = kf.pool(cp.asarray(x), **kw)
        np.testing.assert_allclose(cp.asnumpy(y), ref_pool(x, **kw), rtol=1e-12, atol=1e-14)
        dx = kf.pool_grad(cp.asarray(x), y, y, **kw)
        np.testing.assert_allclose(cp.asnumpy(dx), ref_pool_grad(x, cp.asnumpy(y), **kw),
                                   rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cp.asnumpy(kf.unpool(cp.asarray(x))), ref_unpool(x))


# ---- the cuDNN kernels (knetflow/ops/cudnn.py) on cut windows, against cuDNN modelled in NumPy


@pytest.fixture
def fake_cudnn(monkeypatch):
    lib = NumpyCudnn()
    monkeypatch.setattr(cudnn, "_library", lib)
    monkeypatch.setattr(cudnn, "_override", True)
    return lib


@pytest.mark.parametrize("xs, kw", [
    ((1, 1, 6), {}),
    ((1, 6), {"mode": 1, "padding": (0, 1)}),
    ((1, 5), {"mode": 1, "window": (4, 3), "padding": 1}),
    ((2, 5), {"mode": 2, "window": (4, 2), "stride": (3, 2)}),
    ((2, 3), {"mode": 3, "window": (5, 4), "padding": (1, 0)}),
])
def test_cudnn_kernels_take_the_cut_window(fake_cudnn, xs, kw):
    rs = np.random.RandomState(len(xs))
    x = rs.randn(2, 3, *xs)
    attrs = kf.pool(kf.placeholder("x", x.shape, "float64"), **kw).node.attrs  # as plans do
    y = cudnn.KERNELS["pool"][1](np, x, **attrs)
    np.testing.assert_allclose(y, ref_pool(x, **kw), rtol=1e-12, atol=1e-12)
    dy = rs.randn(*y.shape)
    dx = cudnn.KERNELS["pool_grad"][1](np, x, y, dy, **attrs)
    np.testing.assert_allclose(dx, ref_pool_grad(x, dy, **kw), rtol=1e-12, atol=1e-12)
    assert fake_cudnn.calls == ["pooling_forward", "pooling_backward"]  # no xp fallback


def test_empty_batch():
    x = np.ones((0, 2, 4, 4))
    y = kf.pool(x, mode=2, padding=1)
    assert y.shape == (0, 2, 3, 3)
    assert kf.pool_grad(x, y, y, mode=2, padding=1).shape == x.shape
    assert kf.unpool(y).shape == (0, 2, 6, 6)


def test_dynamic_spatial_dims():
    x = kf.placeholder("x", (None, 3, None, None))
    y = kf.pool(x, window=3, stride=2, mode=2, padding=1)
    assert y.shape == (None, 3, None, None)
    assert kf.unpool(y).shape == (None, 3, None, None)
    value = np.random.RandomState(6).randn(2, 3, 7, 6).astype("f4")
    got = kf.compile([y]).run({"x": value})[0]
    np.testing.assert_allclose(got, ref_pool(value, window=3, stride=2, mode=2, padding=1),
                               rtol=1e-5, atol=1e-6)


# ---- the kernel plans bind for tiling 2-D max pooling's gradient ----


def _bound_grad(x, y, dy, **attrs):
    from knetflow.ops.base import Spec, get_op

    specs = [Spec(a.shape, str(a.dtype)) for a in (x, y, dy)]
    return get_op("pool_grad").bind(np, attrs, specs, specs[0])


def _grad_attrs(window, mode=0, nanopt=1, alpha=1.0, padding=(0, 0), stride=None):
    return {"window": window, "padding": padding, "stride": stride or window, "mode": mode,
            "maxpoolingNanOpt": nanopt, "alpha": alpha}


def _draw_max_pool_grad_problem(draw, batches, kinds):
    """(x, attrs, rs): a random max pooling of non-overlapping windows that tile x, x of
    one of `kinds` of values: "distinct", "ties" (equal maxima: the first one in the
    window gets dy), "relu" (windows of zeros), "nan" or "nan in one part" (the last
    image only)."""
    window = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    xs = (draw(batches), draw(st.integers(1, 3)),
          window[0] * draw(st.integers(1, 4)), window[1] * draw(st.integers(1, 4)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    attrs = _grad_attrs(window, mode=draw(st.sampled_from([0, 3])),
                        nanopt=draw(st.integers(0, 1)))
    rs = np.random.RandomState(draw(st.integers(0, 100)))
    x = rs.randn(*xs).astype(dtype)
    values = draw(st.sampled_from(kinds))
    if values == "ties":
        x = np.round(x)
    elif values == "relu":
        x = np.maximum(x, 0)
    elif values == "nan":
        x.flat[::3] = np.nan
    elif values == "nan in one part":
        x[-1].flat[::3] = np.nan
    return x, attrs, rs


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_bound_max_pool_grad_matches_the_general_kernel(data):
    x, attrs, rs = _draw_max_pool_grad_problem(data.draw, st.integers(1, 3),
                                               ["distinct", "ties", "nan"])
    dtype = x.dtype
    y, dy = kf.pool(x, **attrs), rs.randn(*kf.pool(x, **attrs).shape).astype(dtype)
    fn = _bound_grad(x, y, dy, **attrs)
    assert fn is not None
    want = kf.pool_grad(x, y, dy, **attrs)
    np.testing.assert_array_equal(fn(x, y, dy), want)
    out = np.full_like(x, 7.0)
    assert fn(x, y, dy, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_lenet_sized_max_pool_grad_binds_and_matches():
    rs = np.random.RandomState(1)
    x = rs.randn(10, 20, 24, 24).astype("float32")
    attrs = _grad_attrs((2, 2))
    y = kf.pool(x, **attrs)
    dy = rs.randn(*y.shape).astype("float32")
    np.testing.assert_array_equal(_bound_grad(x, y, dy, **attrs)(x, y, dy),
                                  ref_pool_grad(x, dy, **attrs).astype("float32"))


@pytest.mark.parametrize("xs, attrs, dtype", [
    ((2, 2, 6, 6), _grad_attrs((2, 2), mode=1), "float64"),            # average
    ((2, 2, 6, 6), _grad_attrs((2, 2), alpha=2.0), "float64"),
    ((2, 2, 6, 6), _grad_attrs((2, 2), padding=(1, 1)), "float64"),
    ((2, 2, 6, 6), _grad_attrs((2, 2), stride=(1, 1)), "float64"),     # overlapping
    ((2, 2, 7, 6), _grad_attrs((2, 2)), "float64"),                    # not a multiple
    ((2, 2, 1, 6), _grad_attrs((2, 2)), "float64"),                    # a cut window
    ((2, 2, 6), _grad_attrs((2,), padding=(0,)), "float64"),           # 1-D
    ((2, 2, 6, 6), _grad_attrs((2, 2)), "float16"),
])
def test_bound_max_pool_grad_falls_back(xs, attrs, dtype):
    x = np.ones(xs, dtype)
    y = kf.pool(x, **attrs)
    assert _bound_grad(x, y, y, **attrs) is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bound_2x2_max_pool_grad_settles_ties_itself(dtype, monkeypatch):
    # after a relu many windows are all zeros: the first zero gets dy (row-major within the
    # window, as the general kernel does) without falling back to the general kernel
    import importlib

    pool_module = importlib.import_module("knetflow.ops.pool")  # ops.pool is the function
    rs = np.random.RandomState(2)
    x = np.maximum(rs.randn(4, 3, 8, 6), 0).astype(dtype)
    x[0, 0, :2, :2] = [[1.0, 1.0], [1.0, 0.0]]          # a tie of three, not of zeros
    attrs = _grad_attrs((2, 2))
    y = kf.pool(x, **attrs)
    dy = rs.randn(*y.shape).astype(dtype)
    want = kf.pool_grad(x, y, dy, **attrs)
    calls = []
    general = pool_module.PoolGrad.forward
    monkeypatch.setattr(pool_module.PoolGrad, "forward",
                        staticmethod(lambda *a, **k: calls.append(1) or general(*a, **k)))
    got = _bound_grad(x, y, dy, **attrs)(x, y, dy)
    assert not calls
    np.testing.assert_array_equal(got, want)
    assert got[0, 0, 0, 0] == dy[0, 0, 0, 0] and not got[0, 0, :2, :2].ravel()[1:].any()


# ---- big pooling kernels split between threads (knetflow/ops/cpu_threads.py) ----


def _bound(opname, arrays, out, **attrs):
    from knetflow.ops.base import Spec, get_op

    specs = [Spec(a.shape, str(a.dtype)) for a in arrays]
    return get_op(opname).bind(np, attrs, specs, Spec(out.shape, str(out.dtype)))


@needs_pool
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_split_pool_matches_one_thread(data):
    """Every mode, padding and stride, odd batches (parts of unequal size), ties and NaN:
    the batch pooled in parts on two threads gives the one-thread values exactly."""
    draw = data.draw
    nd = draw(st.integers(1, 2))
    window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, w - 1)) for w in window)
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    xs = (draw(st.integers(2, 7)), draw(st.integers(1, 3))) + tuple(
        draw(st.integers(max(1, w - 2 * p), 7)) for w, p in zip(window, padding))
    attrs = _grad_attrs(window, mode=draw(st.integers(0, 3)), nanopt=draw(st.integers(0, 1)),
                        alpha=draw(st.sampled_from([1.0, 0.5])), padding=padding,
                        stride=stride)
    dtype = draw(st.sampled_from(["float32", "float64"]))
    rs = np.random.RandomState(draw(st.integers(0, 100)))
    x = np.round(rs.randn(*xs) * draw(st.sampled_from([1.0, 3.0]))).astype(dtype)   # ties
    if draw(st.booleans()):
        x.flat[::5] = np.nan
    want = kf.pool(x, **attrs)
    with pytest.MonkeyPatch.context() as m:
        force_split(m, 2)
        fn = _bound("pool", [x], want, **attrs)
        assert fn is not None
        np.testing.assert_array_equal(fn(x), want)
        out = np.full_like(want, 7.0)
        assert fn(x, out=out) is out
        np.testing.assert_array_equal(out, want)


@needs_pool
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_split_max_pool_grad_matches_one_thread(data):
    """Odd batches (two part kernels), ties and NaN (each part may fall back alone)."""
    x, attrs, rs = _draw_max_pool_grad_problem(
        data.draw, st.integers(2, 7), ["distinct", "ties", "relu", "nan in one part"])
    y = kf.pool(x, **attrs)
    dy = rs.randn(*y.shape).astype(x.dtype)
    want = kf.pool_grad(x, y, dy, **attrs)
    with pytest.MonkeyPatch.context() as m:
        force_split(m, 2)
        fn = _bound("pool_grad", [x, y, dy], x, **attrs)
        np.testing.assert_array_equal(fn(x, y, dy), want)
        out = np.full_like(x, 7.0)
        assert fn(x, y, dy, out=out) is out
        np.testing.assert_array_equal(out, want)


def test_pool_binds_only_arrays_big_enough_to_split(monkeypatch):
    from knetflow.ops import cpu_threads

    attrs = _grad_attrs((2, 2))
    x = np.zeros((4, 2, 8, 8), "float32")
    y = kf.pool(x, **attrs)
    assert _bound("pool", [x], y, **attrs) is None          # below SPLIT_BYTES
    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 0)
    assert _bound("pool", [x], y, **attrs) is not None
    from knetflow.ops.base import Spec, get_op

    dynamic = Spec((None, 2, 8, 8), "float32")
    assert get_op("pool").bind(np, attrs, [dynamic], Spec((None, 2, 4, 4), "float32")) is None


@pytest.mark.parametrize("opname", ["pool", "pool_grad"])
def test_a_blas_budget_of_one_thread_keeps_pooling_on_this_thread(opname, monkeypatch):
    # thread budget 1 (a CPU device's share, or WORKERS=1): no part goes to another thread
    from knetflow.ops import cpu_threads

    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 0)
    monkeypatch.setattr(cpu_threads, "WORKERS", 1)
    monkeypatch.setattr(cpu_threads, "run", lambda jobs: pytest.fail("split on 1 thread"))
    rs = np.random.RandomState(5)
    attrs = _grad_attrs((2, 2))
    x = rs.randn(6, 2, 4, 4).astype("float32")
    y = kf.pool(x, **attrs)
    dy = rs.randn(*y.shape).astype("float32")
    if opname == "pool":
        np.testing.assert_array_equal(_bound("pool", [x], y, **attrs)(x), y)
    else:
        np.testing.assert_array_equal(_bound("pool_grad", [x, y, dy], x, **attrs)(x, y, dy),
                                      kf.pool_grad(x, y, dy, **attrs))


@pytest.mark.parametrize("window", [(3, 3), (1, 2), (2, 2), (2, 3)])
def test_bound_max_pool_grad_matches_the_general_kernel_for_any_y(window):
    """kf.pool_grad takes any y: one window may hold y twice and another not at all, as
    many hits as windows in all. The bound kernel must still route dy as the general
    kernel does (to each window's first hit, none where there is none)."""
    attrs = _grad_attrs(window)
    x = np.zeros((2, 1) + tuple(3 * k for k in window), "float32")
    x[:] = np.arange(x[0, 0].size).reshape(x.shape[2:])
    x[0, 0, 0, :2] = 100.0                    # window (0, 0): two hits
    y = kf.pool(x, **attrs)
    y[0, 0, 0, 1] = -5.0                      # window (0, 1): no hit
    dy = np.arange(1.0, y.size + 1, dtype="float32").reshape(y.shape)
    fn = _bound_grad(x, y, dy, **attrs)
    assert fn is not None
    np.testing.assert_array_equal(fn(x, y, dy), kf.pool_grad(x, y, dy, **attrs))
