"""Tests of knetflow/ops/conv_cpu.py: the chunked NumPy kernels plans bind for 2-D
convolutions give the general kernels' values (float64) in both layouts, with and
without `out=`, over odd sizes, padding, stride, dilation, both modes and alpha;
ops the kernels do not take fall back to the general forward (bind gives None);
and a compiled plan's gradients still match central differences.
"""

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops import conv_cpu
from knetflow.ops.base import Spec, get_op
from knetflow.ops.conv import conv_size

Conv4, Conv4Data, Conv4Filter = get_op("conv4"), get_op("conv4_data"), get_op("conv4_filter")


def _attrs(padding=(0, 0), stride=(1, 1), dilation=(1, 1), mode=0, alpha=1.0, group=1):
    return {"padding": padding, "stride": stride, "dilation": dilation, "mode": mode,
            "alpha": alpha, "group": group}


def _spec(a):
    return Spec(tuple(a.shape), str(a.dtype))


def _problem(rs, xshape, wshape, attrs, dtype="float64"):
    x, w = rs.randn(*xshape).astype(dtype), rs.randn(*wshape).astype(dtype)
    ys = tuple(conv_size(*a) for a in zip(xshape[2:], wshape[2:], attrs["padding"],
                                          attrs["stride"], attrs["dilation"]))
    dy = rs.randn(xshape[0], wshape[0], *ys).astype(dtype)
    return x, w, dy


def _check_all(x, w, dy, attrs, last=None):
    """Every kernel (layout `last`, or the one bind picks) against the general forward."""
    general = {"conv4": Conv4.forward(np, w, x, **attrs),
               "conv4_data": Conv4Data.forward(np, w, dy, x, **attrs),
               "conv4_filter": Conv4Filter.forward(np, x, dy, w, **attrs)}
    args = {"conv4": (w, x), "conv4_data": (w, dy, x), "conv4_filter": (x, dy, w)}
    for kind, want in general.items():
        if last is None:
            op = get_op(kind)
            fn = op.bind(np, attrs, [_spec(a) for a in args[kind]], _spec(want))
        else:
            fn = conv_cpu.bind_conv(kind, x.shape, w.shape, x.dtype, attrs["padding"],
                                    attrs["stride"], attrs["dilation"], attrs["mode"],
                                    attrs["alpha"], last)
        assert fn is not None, kind
        np.testing.assert_allclose(fn(*args[kind]), want, rtol=1e-10, atol=1e-10)
        out = np.full_like(want, np.nan)
        assert fn(*args[kind], out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)
        # a second run into the same buffer (scratch reused) gives the same values
        np.testing.assert_allclose(fn(*args[kind], out=out), want, rtol=1e-10, atol=1e-10)


PROBLEMS = [
    ((100, 1, 28, 28), (20, 1, 5, 5), _attrs()),                     # LeNet's first layer
    ((100, 20, 12, 12), (50, 20, 5, 5), _attrs()),                   # and its second
    ((3, 2, 7, 6), (4, 2, 3, 2), _attrs((1, 2), (2, 1), (1, 2), mode=1)),
    ((5, 3, 9, 9), (2, 3, 3, 3), _attrs((2, 2), (1, 1), (2, 2), alpha=0.5)),
    ((33, 6, 5, 5), (7, 6, 2, 2), _attrs((0, 1))),
    ((1, 1, 1, 1), (1, 1, 1, 1), _attrs()),
    ((2, 3, 4, 11), (5, 3, 4, 3), _attrs((3, 0), (3, 4), (1, 3), mode=1, alpha=-2.0)),
]


@pytest.mark.parametrize("last", [None, False, True])
@pytest.mark.parametrize("xshape, wshape, attrs", PROBLEMS)
def test_kernels_match_the_general_forward(xshape, wshape, attrs, last):
    rs = np.random.RandomState(sum(xshape) + sum(wshape))
    _check_all(*_problem(rs, xshape, wshape, attrs), attrs, last=last)


def test_chunks_cover_the_batch_evenly(monkeypatch):
    monkeypatch.setattr(conv_cpu, "CHUNK_BYTES", 3000)   # a few images per chunk
    rs = np.random.RandomState(7)
    attrs = _attrs((1, 0), (1, 2))
    x, w, dy = _problem(rs, (13, 3, 6, 7), (4, 3, 3, 2), attrs)
    g = conv_cpu._Geometry(x.shape, w.shape, (1, 0), (1, 2), (1, 1), 8)
    sizes = [b - a for a, b in g.spans]
    assert len(sizes) > 2 and sum(sizes) == 13 and max(sizes) - min(sizes) <= len(sizes)
    for last in (False, True):
        _check_all(x, w, dy, attrs, last=last)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_shapes_match(data):
    draw = data.draw
    n, c, co = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # big enough for a non-empty output
    hw = tuple(draw(st.integers(max(1, (kk - 1) * d + 1 - 2 * p), 9))
               for kk, d, p in zip(k, dil, pad))
    attrs = _attrs(pad, stride, dil, mode=draw(st.integers(0, 1)),
                   alpha=draw(st.sampled_from([1.0, 0.5])))
    rs = np.random.RandomState(draw(st.integers(0, 1000)))
    problem = _problem(rs, (n, c) + hw, (co, c) + k, attrs)
    _check_all(*problem, attrs, last=draw(st.booleans()))


def test_float32_kernels_agree_to_rounding():
    rs = np.random.RandomState(3)
    attrs = _attrs()
    x, w, dy = _problem(rs, (10, 4, 9, 9), (6, 4, 3, 3), attrs, dtype="float32")
    fn = Conv4.bind(np, attrs, [_spec(w), _spec(x)], Spec((10, 6, 7, 7), "float32"))
    got = fn(w, x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, Conv4.forward(np, w, x, **attrs), rtol=1e-5, atol=1e-5)


class _OtherXp:
    """Stands for CuPy: bind keeps its kernels for NumPy."""


@pytest.mark.parametrize("xp, xs, ws, dtypes, attrs", [
    (_OtherXp, (2, 2, 5, 5), (2, 2, 3, 3), ("float32",) * 3, _attrs()),
    (np, (2, 4, 5, 5), (2, 2, 3, 3), ("float64",) * 3, _attrs(group=2)),
    (np, (2, 2, 5), (2, 2, 3), ("float64",) * 3, _attrs((0,), (1,), (1,))),
    (np, (2, 2, 5, 5, 5), (2, 2, 3, 3, 3), ("float64",) * 3,
     _attrs((0,) * 3, (1,) * 3, (1,) * 3)),
    (np, (2, 2, 5, 5), (2, 2, 3, 3), ("float32", "float64", "float64"), _attrs()),
    (np, (2, 2, 5, 5), (2, 2, 3, 3), ("float16",) * 3, _attrs()),
    (np, (None, 2, 5, 5), (2, 2, 3, 3), ("float64",) * 3, _attrs()),
    (np, (0, 2, 5, 5), (2, 2, 3, 3), ("float64",) * 3, _attrs()),
])
def test_what_the_kernels_do_not_take_falls_back(xp, xs, ws, dtypes, attrs):
    x, w = Spec(xs, dtypes[0]), Spec(ws, dtypes[1])
    y = Conv4.infer(w, x, **attrs)
    out = Spec(y.shape, dtypes[2])
    assert Conv4.bind(xp, attrs, [w, x], out) is None
    assert Conv4Data.bind(xp, attrs, [w, y, x], Spec(xs, dtypes[2])) is None
    assert Conv4Filter.bind(xp, attrs, [x, y, w], Spec(ws, dtypes[2])) is None


def test_plan_gradients_match_central_differences(monkeypatch):
    """A compiled loss through both convolutions (bound kernels) differentiated."""
    conv = importlib.import_module("knetflow.ops.conv")
    bound = []
    monkeypatch.setattr(conv, "bind_conv", lambda kind, *a: bound.append(kind)
                        or conv_cpu.bind_conv(kind, *a))
    rs = np.random.RandomState(5)
    x = rs.randn(4, 2, 7, 6)
    w1, w2 = rs.randn(3, 2, 3, 2), rs.randn(2, 3, 2, 2)

    def loss(w1, w2):
        h = kf.conv4(w1, x, padding=(1, 0), stride=(1, 2))
        return kf.sum(kf.conv4(w2, h * h, dilation=(2, 1), mode=1) ** 2)

    grads = kf.grad(loss, argnum=(0, 1))(w1, w2)    # traced: a plan with bound kernels
    for k, (w, g) in enumerate(zip((w1, w2), grads)):
        num = np.zeros_like(w)
        for i in np.ndindex(*w.shape):
            step = np.zeros_like(w)
            step[i] = 1e-6
            args = [w1, w2]
            args[k] = w + step
            hi = float(loss(*args))
            args[k] = w - step
            num[i] = (hi - float(loss(*args))) / 2e-6
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-6)
    assert {"conv4", "conv4_data", "conv4_filter"} <= set(bound)


def test_workspace_is_shared_and_reported():
    rs = np.random.RandomState(1)
    attrs = _attrs()
    x, w, dy = _problem(rs, (6, 3, 8, 8), (4, 3, 3, 3), attrs)
    fn = conv_cpu.bind_conv("conv4", x.shape, w.shape, x.dtype, (0, 0), (1, 1), (1, 1), 0,
                            1.0, last=True)
    fn(w, x)
    assert conv_cpu.workspace_bytes() >= x.nbytes
