"""Tests of knetflow/ops/conv.py: conv4, deconv4 and their gradient ops.

The references below are slow loops written from the definitions (seed 001's
Convolution chapter): conv4 sums w times the patch of padded x at each output
position; deconv4 and conv4_data scatter each input element times w back into
a padded output (the adjoint); conv4_filter correlates dy with x's patches.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.conv import conv4, conv4_data, conv4_filter, deconv4, deconv_size
from tests.ops.harness import Arg, Case, check, check_into_planned_buffers


def _tup(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _geometry(x, w, padding, stride, dilation):
    nd = x.ndim - 2
    return nd, _tup(padding, nd), _tup(stride, nd), _tup(dilation, nd)


def _flip(w, mode):
    return np.flip(w, axis=tuple(range(2, w.ndim))) if mode == 0 else w


def _pos(p, k, s, d):
    """Index of the padded input read by output position p and kernel offset k."""
    return tuple(pi * si + ki * di for pi, ki, si, di in zip(p, k, s, d))


def ref_conv(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    _nd, pad, st_, dil = _geometry(x, w, padding, stride, dilation)
    w = _flip(w, mode)
    xpad = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    n, c = x.shape[:2]
    og, cg = w.shape[0] // group, c // group
    ks = w.shape[2:]
    ys = tuple(1 + (xi + 2 * p - (k - 1) * d - 1) // s
               for xi, k, p, s, d in zip(x.shape[2:], ks, pad, st_, dil))
    y = np.zeros((n, w.shape[0]) + ys)
    for p in np.ndindex(*ys):
        for k in np.ndindex(*ks):
            xv = xpad[(slice(None), slice(None)) + _pos(p, k, st_, dil)]   # (n, c)
            for g in range(group):
                wk = w[(slice(g * og, (g + 1) * og), slice(None)) + k]    # (og, cg)
                xg = xv[:, g * cg:(g + 1) * cg]
                y[(slice(None), slice(g * og, (g + 1) * og)) + p] += xg @ wk.T
    return alpha * y


def _scatter(w, x, out_spatial, padding, stride, dilation, mode, alpha, group):
    """out[:, cy, q*s + k*d] += x[:, cx, q] * w[cx, cy, k] over a padded output, then cropped."""
    nd = x.ndim - 2
    pad, st_, dil = _tup(padding, nd), _tup(stride, nd), _tup(dilation, nd)
    w = _flip(w, mode)
    n = x.shape[0]
    cxg, cyg = w.shape[0] // group, w.shape[1]
    ypad = np.zeros((n, cyg * group) + tuple(o + 2 * p for o, p in zip(out_spatial, pad)))
    for q in np.ndindex(*x.shape[2:]):
        for k in np.ndindex(*w.shape[2:]):
            idx = _pos(q, k, st_, dil)
            for g in range(group):
                xv = x[(slice(None), slice(g * cxg, (g + 1) * cxg)) + q]        # (n, cxg)
                wk = w[(slice(g * cxg, (g + 1) * cxg), slice(None)) + k]        # (cxg, cyg)
                ypad[(slice(None), slice(g * cyg, (g + 1) * cyg)) + idx] += xv @ wk
    crop = (Ellipsis,) + tuple(slice(p, p + o) for p, o in zip(pad, out_spatial))
    return alpha * ypad[crop]


def ref_deconv(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    _nd, pad, st_, dil = _geometry(x, w, padding, stride, dilation)
    ys = tuple((xi - 1) * s + (k - 1) * d + 1 - 2 * p
               for xi, k, p, s, d in zip(x.shape[2:], w.shape[2:], pad, st_, dil))
    return _scatter(w, x, ys, padding, stride, dilation, mode, alpha, group)


def ref_data(w, dy, x, **kw):
    return _scatter(w, dy, x.shape[2:], **{"padding": 0, "stride": 1, "dilation": 1, "mode": 0,
                                           "alpha": 1, "group": 1, **kw})


def ref_filter(x, dy, w, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    _nd, pad, st_, dil = _geometry(x, w, padding, stride, dilation)
    xpad = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    og, cg = w.shape[0] // group, w.shape[1]
    dw = np.zeros(w.shape)
    for p in np.ndindex(*dy.shape[2:]):
        for k in np.ndindex(*w.shape[2:]):
            xv = xpad[(slice(None), slice(None)) + _pos(p, k, st_, dil)]
            for g in range(group):
                dyv = dy[(slice(None), slice(g * og, (g + 1) * og)) + p]       # (n, og)
                xg = xv[:, g * cg:(g + 1) * cg]
                dw[(slice(g * og, (g + 1) * og), slice(None)) + k] += dyv.T @ xg
    return alpha * _flip(dw, mode)


# ---- harness cases ----


def _conv_case(ws, xs, second=False, **kw):
    name = f"conv4 w{ws} x{xs} " + " ".join(f"{k}={v}" for k, v in kw.items())
    return Case(name, lambda w, x: conv4(w, x, **kw), lambda w, x: ref_conv(w, x, **kw),
                [Arg(ws), Arg(xs)], second=second)


def _deconv_case(ws, xs, second=False, **kw):
    name = f"deconv4 w{ws} x{xs} " + " ".join(f"{k}={v}" for k, v in kw.items())
    return Case(name, lambda w, x: deconv4(w, x, **kw), lambda w, x: ref_deconv(w, x, **kw),
                [Arg(ws), Arg(xs)], second=second)


def _data_case(ws, dys, xs, second=False, **kw):
    name = f"conv4_data w{ws} dy{dys} x{xs} " + " ".join(f"{k}={v}" for k, v in kw.items())
    return Case(name, lambda w, dy, x: conv4_data(w, dy, x, **kw),
                lambda w, dy, x: ref_data(w, dy, x, **kw),
                [Arg(ws), Arg(dys), Arg(xs)], second=second)


def _filter_case(xs, dys, ws, second=False, **kw):
    name = f"conv4_filter x{xs} dy{dys} w{ws} " + " ".join(f"{k}={v}" for k, v in kw.items())
    return Case(name, lambda x, dy, w: conv4_filter(x, dy, w, **kw),
                lambda x, dy, w: ref_filter(x, dy, w, **kw),
                [Arg(xs), Arg(dys), Arg(ws)], second=second)


CASES = [
    # 1-D
    _conv_case((3, 2, 3), (2, 2, 7)),
    _conv_case((2, 2, 3), (2, 2, 8), mode=1, padding=1, stride=2),
    _conv_case((2, 2, 2), (1, 2, 9), dilation=3, alpha=0.5),
    # 2-D
    _conv_case((4, 3, 3, 2), (2, 3, 6, 5), padding=(1, 0), stride=(2, 1), second=True),
    _conv_case((2, 2, 2, 3), (1, 2, 7, 7), dilation=(2, 1), mode=1),
    _conv_case((4, 2, 3, 3), (2, 4, 5, 5), group=2, padding=1, second=True),
    _conv_case((3, 2, 3, 3), (1, 2, 8, 7), stride=3, padding=1, alpha=2.5),  # floor remainder
    _conv_case((6, 1, 2, 2), (1, 3, 4, 5), group=3, mode=1, dilation=2),
    _conv_case((4, 1, 1, 3), (2, 1, 3, 40), padding=(0, 1)),      # batch before the pixels
    # 3-D
    _conv_case((2, 2, 2, 2, 2), (1, 2, 4, 3, 4), padding=(1, 0, 1), stride=(1, 2, 1)),
    _conv_case((4, 1, 2, 1, 2), (1, 2, 3, 3, 5), group=2, dilation=(1, 1, 2), mode=1),
    # deconv4
    _deconv_case((2, 3, 3), (2, 2, 4), stride=2, padding=1),
    _deconv_case((4, 1, 2, 3), (1, 4, 3, 3), group=2, dilation=(2, 1), mode=1, alpha=2.0,
                 second=True),
    _deconv_case((2, 2, 3, 3), (1, 2, 2, 3), stride=(2, 3), padding=(1, 0)),
    _deconv_case((2, 1, 2, 2, 2), (1, 2, 2, 2, 2), stride=2),
    # the gradient ops, directly
    _data_case((3, 2, 3, 3), (1, 3, 3, 3), (1, 2, 8, 7), stride=3, padding=1, second=True),
    _data_case((4, 1, 2, 2), (2, 4, 4, 3), (2, 2, 5, 4), group=2, mode=1),
    _filter_case((1, 2, 8, 7), (1, 3, 3, 3), (3, 2, 3, 3), stride=3, padding=1, second=True),
    _filter_case((2, 4, 5, 5), (2, 4, 3, 3), (4, 2, 3, 2), group=2, dilation=(1, 2), mode=1),
    _filter_case((3, 2, 12), (3, 2, 10), (2, 2, 3)),   # batch-split filter GEMM
    _filter_case((2, 8, 4, 4), (2, 64, 2, 2), (64, 8, 3, 3)),   # one filter GEMM
    _filter_case((2, 1, 3, 40), (2, 4, 3, 40), (4, 1, 1, 3), padding=(0, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_into_planned_buffers(case):
    """Inside a graph the op writes into a planned buffer that later runs reuse."""
    check_into_planned_buffers(case)


# ---- the seed's worked examples (seed 001, Convolution), in NCHW ----


def _seed_1d():
    return np.array([1., 2, 3]).reshape(1, 1, 3), np.arange(1., 8).reshape(1, 1, 7)


def test_seed_1d_convolution():
    w, x = _seed_1d()
    assert kf.conv4(w, x).ravel().tolist() == [10, 16, 22, 28, 34]
    # Knet's 4-D form: (7,1,1,1) in Julia is (1,1,1,7) here, padding=(1,0) becomes (0,1)
    w4, x4 = w.reshape(1, 1, 1, 3), x.reshape(1, 1, 1, 7)
    assert kf.conv4(w4, x4).ravel().tolist() == [10, 16, 22, 28, 34]
    assert kf.conv4(w4, x4, padding=(0, 1)).ravel().tolist() == [4, 10, 16, 22, 28, 34, 32]


def test_seed_padding_and_stride():
    w, x = _seed_1d()
    assert kf.conv4(w, x, padding=1).ravel().tolist() == [4, 10, 16, 22, 28, 34, 32]
    assert kf.conv4(w, x, padding=1, stride=3).ravel().tolist() == [4, 22, 32]
    # Knet's 4-D call conv4(w, x; padding=(1,0), stride=3): the stride applies to the
    # dimension of size 1 too, which keeps its size 1
    w4, x4 = w.reshape(1, 1, 1, 3), x.reshape(1, 1, 1, 7)
    y = kf.conv4(w4, x4, padding=(0, 1), stride=3)
    assert y.shape == (1, 1, 1, 3) and y.ravel().tolist() == [4, 22, 32]


def test_seed_cross_correlation():
    w, x = _seed_1d()
    # no flip: [1,2,3] . [1,2,3] = 14, then steps of 6
    assert kf.conv4(w, x, mode=1).ravel().tolist() == [14, 20, 26, 32, 38]
    assert kf.conv4(w[..., ::-1], x, mode=1).ravel().tolist() == [10, 16, 22, 28, 34]


def test_seed_2d():
    # Julia's reshape(1:4, (2,2,1,1)) and reshape(1:9, (3,3,1,1)) are row-major here
    w = np.arange(1., 5).reshape(1, 1, 2, 2)
    x = np.arange(1., 10).reshape(1, 1, 3, 3)
    y = kf.conv4(w, x)[0, 0]
    # the seed shows [[23, 53], [33, 63]] column-major: its transpose in row-major
    assert y.T.tolist() == [[23, 53], [33, 63]]


def test_seed_fully_connected_as_convolution():
    x = np.arange(1., 4).reshape(1, 1, 1, 3)                     # Julia (3,1,1,1)
    w = np.array([[1., 3, 5], [2, 4, 6]]).reshape(2, 1, 1, 3)    # Julia (3,1,1,2)
    y = kf.conv4(w, x, mode=1)
    assert y.shape == (1, 2, 1, 1)
    assert y.ravel().tolist() == [22, 28]


def test_deconv_undoes_conv_shapes():
    w = np.ones((3, 2, 3, 3))
    x = np.ones((1, 2, 9, 9))
    y = kf.conv4(w, x, padding=1, stride=2)
    assert y.shape == (1, 3, 5, 5)
    assert kf.deconv4(w, y, padding=1, stride=2).shape == (1, 2, 9, 9)


def test_float32_stays_float32_and_dynamic_batch():
    w = kf.placeholder("w", (4, 2, 3, 3))
    x = kf.placeholder("x", (None, 2, 8, 8))
    y = kf.conv4(w, x, padding=1)
    assert y.shape == (None, 4, 8, 8) and y.dtype == np.float32
    rs = np.random.RandomState(0)
    feed = {"w": rs.randn(4, 2, 3, 3).astype("f4"), "x": rs.randn(5, 2, 8, 8).astype("f4")}
    got = kf.compile([y]).run(feed)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref_conv(feed["w"], feed["x"], padding=1), rtol=1e-4,
                               atol=1e-4)


def test_knet_style_training_gradient():
    rs = np.random.RandomState(1)
    w = kf.Param(rs.randn(3, 2, 3, 3))
    x = rs.randn(2, 2, 6, 6)
    r = kf.diff(lambda: kf.sum(kf.conv4(w, x, padding=1) ** 2))
    y = ref_conv(w.value, x, padding=1)
    np.testing.assert_allclose(kf.grad(r, w), ref_filter(x, 2 * y, w.value, padding=1),
                               rtol=1e-10)


# ---- errors ----


def _sym(shape, name="s"):
    return kf.placeholder(name, shape)


@pytest.mark.parametrize("ws,xs,kw,match", [
    ((4, 2, 3, 3), (1, 3, 5, 5), {}, r"x \(1, 3, 5, 5\) has 3 channels but w \(4, 2, 3, 3\)"),
    ((4, 2, 3), (1, 2, 5, 5), {}, r"same rank"),
    ((4, 2, 7, 7), (1, 2, 5, 5), {}, r"empty output"),
    ((4, 2, 3, 3), (1, 2, 5, 5), {"mode": 2}, r"mode=2"),
    ((3, 2, 3, 3), (1, 4, 5, 5), {"group": 2}, r"not a multiple of group=2"),
    ((4, 2, 3, 3), (1, 2, 5, 5), {"padding": (1, 1, 1)}, r"padding=\(1, 1, 1\) needs 2"),
    ((4, 2, 3, 3), (1, 2, 5, 5), {"stride": 0}, r"stride=\(0, 0\) must be >= 1"),
    ((4, 2), (1, 2), {}, r"1 to 3 spatial dims"),
])
def test_conv4_shape_errors(ws, xs, kw, match):
    with pytest.raises(kf.ShapeError, match=match):
        kf.conv4(_sym(ws, "w"), _sym(xs, "x"), **kw)


def test_conv4_needs_floats():
    with pytest.raises(kf.ShapeError, match="floating-point"):
        kf.conv4(np.ones((1, 1, 2), int), np.ones((1, 1, 4), int))


def test_deconv4_errors():
    with pytest.raises(kf.ShapeError, match=r"deconv4: x \(1, 3, 4, 4\) has 3 channels"):
        kf.deconv4(_sym((2, 2, 3, 3), "w"), _sym((1, 3, 4, 4), "x"))
    with pytest.raises(kf.ShapeError, match="empty output"):
        kf.deconv4(_sym((2, 2, 1, 1), "w"), _sym((1, 2, 1, 1), "x"), padding=1)


def test_gradient_op_errors():
    w, x = _sym((4, 2, 3, 3), "w"), _sym((1, 2, 5, 5), "x")
    with pytest.raises(kf.ShapeError, match=r"conv4_data: dy \(1, 4, 2, 2\) does not match"):
        kf.conv4_data(w, _sym((1, 4, 2, 2), "dy"), x)
    with pytest.raises(kf.ShapeError, match=r"conv4_filter: dy \(1, 3, 3, 3\) does not match"):
        kf.conv4_filter(x, _sym((1, 3, 3, 3), "dy"), w)


# ---- properties over varying shapes ----


@st.composite
def _problems(draw):
    nd = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 2]))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ks = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    kw = {"padding": tuple(draw(st.integers(0, 2)) for _ in range(nd)),
              "stride": tuple(draw(st.integers(1, 3)) for _ in range(nd)),
              "dilation": tuple(draw(st.integers(1, 2)) for _ in range(nd)),
              "mode": draw(st.sampled_from([0, 1])), "group": group}
    span = [(k - 1) * d + 1 for k, d in zip(ks, kw["dilation"])]
    xs = tuple(draw(st.integers(max(1, s - 2 * p), s + 4))
               for s, p in zip(span, kw["padding"]))
    n = draw(st.integers(1, 2))
    return (og * group, cg) + ks, (n, cg * group) + xs, kw


@settings(max_examples=30, deadline=None)
@given(_problems())
def test_conv4_matches_reference_and_adjoints(problem):
    ws, xs, kw = problem
    rs = np.random.RandomState(0)
    w, x = rs.randn(*ws), rs.randn(*xs)
    y = kf.conv4(w, x, **kw)
    np.testing.assert_allclose(y, ref_conv(w, x, **kw), rtol=1e-10, atol=1e-12)
    dy = rs.randn(*y.shape)
    dx = kf.conv4_data(w, dy, x, **kw)
    dw = kf.conv4_filter(x, dy, w, **kw)
    # <conv4(w, x), dy> = <x, conv4_data(w, dy)> = <w, conv4_filter(x, dy)>
    np.testing.assert_allclose(np.sum(dx * x), np.sum(y * dy), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.sum(dw * w), np.sum(y * dy), rtol=1e-9, atol=1e-10)
    # deconv4 gives the smallest x that conv4 maps to dy's shape (when that is not empty)
    sizes = [deconv_size(y, k, p, s, d) for y, k, p, s, d in
             zip(y.shape[2:], ws[2:], kw["padding"], kw["stride"], kw["dilation"])]
    if min(sizes) >= 1:
        y2 = kf.deconv4(w, dy, **kw)
        assert all(a <= b < a + s for a, b, s in zip(y2.shape[2:], xs[2:], kw["stride"]))
        np.testing.assert_allclose(y2, ref_deconv(w, dy, **kw), rtol=1e-10, atol=1e-12)


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
    rs = np.random.RandomState(3)
    w, x = rs.randn(4, 1, 3, 3), rs.randn(2, 2, 7, 6)
    kw = {"padding": 1, "stride": (2, 1), "group": 2}
    # float64 sums of O(1) terms in cuDNN's order: an absolute bound too, for outputs near 0
    tol = {"rtol": 1e-10, "atol": 1e-10}
    y = kf.conv4(cp.asarray(w), cp.asarray(x), **kw)
    np.testing.assert_allclose(cp.asnumpy(y), ref_conv(w, x, **kw), **tol)
    dy = rs.randn(*y.shape)
    got = kf.conv4_data(cp.asarray(w), cp.asarray(dy), cp.asarray(x), **kw)
    np.testing.assert_allclose(cp.asnumpy(got), ref_data(w, dy, x, **kw), **tol)
    got = kf.conv4_filter(cp.asarray(x), cp.asarray(dy), cp.asarray(w), **kw)
    np.testing.assert_allclose(cp.asnumpy(got), ref_filter(x, dy, w, **kw), **tol)


def test_empty_batch():
    w, x = np.ones((3, 2, 3, 3)), np.ones((0, 2, 5, 5))
    y = kf.conv4(w, x, padding=1)
    assert y.shape == (0, 3, 5, 5)
    assert kf.conv4_data(w, y, x, padding=1).shape == x.shape
    np.testing.assert_array_equal(kf.conv4_filter(x, y, w, padding=1), np.zeros(w.shape))
    assert kf.deconv4(w, np.ones((0, 3, 4, 4))).shape == (0, 2, 6, 6)


def test_dynamic_spatial_dims():
    x = kf.placeholder("x", (None, 2, None, None))
    w = kf.placeholder("w", (3, 2, 3, 3))
    y = kf.conv4(w, x, stride=2)
    assert y.shape == (None, 3, None, None)
    z = kf.deconv4(w, y, stride=2)   # back to 2 channels and x's size
    assert z.shape == (None, 2, None, None)
    rs = np.random.RandomState(5)
    feed = {"x": rs.randn(2, 2, 9, 7).astype("f4"), "w": rs.randn(3, 2, 3, 3).astype("f4")}
    got_y, got_z = kf.compile([y, z]).run(feed)
    assert got_y.shape == (2, 3, 4, 3) and got_z.shape == (2, 2, 9, 7)
    np.testing.assert_allclose(got_y, ref_conv(feed["w"], feed["x"], stride=2), rtol=1e-4,
                               atol=1e-4)
