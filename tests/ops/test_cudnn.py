"""Tests of knetflow/ops/cudnn.py: cuDNN kernels for the heavy ops on a GPU.

Without a GPU: the selection (`pick`, `base.kernel`, through the device
registry) with a module standing in for CuPy (put in sys.modules, where the
GPU device kind finds CuPy); the translation, by running the cuDNN kernels on
NumPy arrays against `NumpyCudnn` (tests/ops/cudnn_fake.py, cuDNN's semantics)
and comparing with each op's xp forward, and a plan generated with NumPy under
CuPy's name. With a GPU: cuDNN against the xp path on CuPy arrays, and the
gradients of a plan compiled for the GPU. The CuPy calls themselves are tested
in tests/devices/test_gpu_cudnn.py.
"""

import sys
import types

import numpy as np
import pytest

import knetflow as kf
from knetflow.devices import gpu_cudnn
from knetflow.graph.node import Graph
from knetflow.ops import cudnn
from knetflow.ops.base import get_op, kernel
from knetflow.scheduler.codegen import generate
from tests.ops.cudnn_fake import NumpyCudnn

# stands in for CuPy where only which module it is matters
FAKE_CUPY = types.ModuleType("cupy")
# runs plans with NumPy as CuPy, so that they pick cuDNN kernels
NUMPY_AS_CUPY = types.ModuleType("cupy")
NUMPY_AS_CUPY.__getattr__ = lambda name: getattr(np, name)


def as_cupy(monkeypatch, module):
    """Make `module` what `import cupy` gives: the GPU device kind's array module."""
    monkeypatch.setitem(sys.modules, "cupy", module)

CONV2 = {"padding": (1, 0), "stride": (1, 2), "dilation": (1, 1), "mode": 0, "alpha": 1.0,
         "group": 1}
POOL2 = {"window": (2, 2), "padding": (0, 0), "stride": (2, 2), "mode": 0,
         "maxpoolingNanOpt": 1, "alpha": 1.0}


@pytest.fixture
def fake(monkeypatch):
    """cuDNN modelled in NumPy as the library, enabled whatever the environment says."""
    lib = NumpyCudnn()
    as_cupy(monkeypatch, FAKE_CUPY)
    monkeypatch.setattr(cudnn, "_library", lib)
    monkeypatch.delenv("KNETFLOW_CUDNN", raising=False)
    monkeypatch.setattr(cudnn, "_override", None)
    return lib


# ---- selection ----


def test_numpy_and_sim_devices_never_pick_cudnn(fake):
    conv = get_op("conv4")
    assert kernel(conv, np, CONV2) == (conv.forward, True)
    (sim,) = kf.set_sim_devices(1)
    assert kernel(conv, sim.xp, CONV2) == (conv.forward, True)
    assert cudnn.pick("conv4", np, CONV2) is None
    assert fake.calls == []


@pytest.mark.parametrize("opname, attrs", [
    ("conv4", CONV2), ("conv4", {**CONV2, "padding": (2,), "stride": (1,), "dilation": (3,)}),
    ("conv4_data", {**CONV2, "padding": (0, 1, 1), "stride": (1,) * 3, "dilation": (1,) * 3}),
    ("conv4_filter", {**CONV2, "mode": 1, "group": 2}), ("deconv4", CONV2),
    ("pool", POOL2), ("pool", {**POOL2, "mode": 2, "window": (3,), "padding": (1,),
                               "stride": (1,)}),
    ("pool_grad", {**POOL2, "mode": 3}), ("pool_grad", {**POOL2, "mode": 1, "alpha": 2.0}),
    ("pool_select", {**POOL2, "mode": 1}), ("batchnorm", {"eps": 1e-5}),
    ("batchnorm_grad", {"eps": 1e-3}),
])
def test_cupy_picks_the_cudnn_kernel_for_supported_attributes(fake, opname, attrs):
    fn, takes_xp = kernel(get_op(opname), FAKE_CUPY, attrs)
    assert fn is cudnn.KERNELS[opname][1] and takes_xp
    assert fn.__name__ == opname


@pytest.mark.parametrize("opname, attrs", [
    ("pool_grad", {**POOL2, "alpha": 2.0}),       # max modes read alpha * max: xp path
    ("pool_select", {**POOL2, "mode": 3}),        # max modes: no cuDNN counterpart
    ("unpool", {"window": (2,), "padding": (0,), "stride": (2,), "alpha": 1.0}),
    ("softmax", {"axis": (1,)}),
])
def test_unsupported_attributes_and_other_ops_keep_the_xp_forward(fake, opname, attrs):
    op = get_op(opname)
    assert kernel(op, FAKE_CUPY, attrs) == (op.forward, True)


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_KNETFLOW_CUDNN_0_turns_cudnn_off_and_set_enabled_overrides_it(fake, monkeypatch, value):
    conv = get_op("conv4")
    monkeypatch.setenv("KNETFLOW_CUDNN", value)
    assert not cudnn.enabled()
    assert kernel(conv, FAKE_CUPY, CONV2) == (conv.forward, True)
    cudnn.set_enabled(True)
    assert kernel(conv, FAKE_CUPY, CONV2)[0] is cudnn.KERNELS["conv4"][1]
    cudnn.set_enabled(None)
    assert not cudnn.enabled()
    monkeypatch.setenv("KNETFLOW_CUDNN", "1")
    assert cudnn.enabled()
    cudnn.set_enabled(False)
    assert kernel(conv, FAKE_CUPY, CONV2) == (conv.forward, True)


def test_without_the_library_the_xp_forward_runs_and_the_reason_is_kept(monkeypatch):
    as_cupy(monkeypatch, FAKE_CUPY)
    monkeypatch.setattr(cudnn, "_library", cudnn._UNSET)
    monkeypatch.setattr(cudnn, "_override", None)
    looks = []

    def load():
        looks.append(1)
        return None, "CuPy is not installed"

    monkeypatch.setattr(gpu_cudnn, "load", load)
    conv = get_op("conv4")
    assert kernel(conv, FAKE_CUPY, CONV2) == (conv.forward, True)
    assert cudnn.pick("pool", FAKE_CUPY, POOL2) is None
    assert looks == [1], "availability is decided once"
    assert cudnn.unavailable_reason() == "CuPy is not installed"


# ---- translation: cuDNN kernels (modelled in NumPy) against the xp forwards ----


def _run(opname, *arrays, **attrs):
    """(cuDNN kernel's result, xp forward's result) on the same NumPy arrays."""
    got = cudnn.KERNELS[opname][1](np, *arrays, **attrs)
    want = get_op(opname).forward(np, *arrays, **attrs)
    return got, want


def _close(got, want, rtol=1e-12):
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)


def _conv_attrs(nd, padding=0, stride=1, dilation=1, mode=0, alpha=1.0, group=1):
    return {"padding": (padding,) * nd, "stride": (stride,) * nd, "dilation": (dilation,) * nd,
            "mode": mode, "alpha": alpha, "group": group}


CONV_CASES = [  # (spatial dims, x spatial size, kernel size, attributes)
    (1, (9,), (3,), _conv_attrs(1, padding=1, stride=2)),
    (1, (7,), (2,), _conv_attrs(1, dilation=2, mode=1, alpha=0.5)),
    (2, (6, 5), (3, 2), _conv_attrs(2, padding=1)),
    (2, (7, 7), (3, 3), _conv_attrs(2, padding=2, stride=2, dilation=2, group=2)),
    (2, (5, 6), (2, 3), _conv_attrs(2, stride=3, mode=1, alpha=-2.0, group=2)),
    (3, (4, 5, 4), (2, 3, 2), _conv_attrs(3, padding=1, stride=2)),
    (3, (5, 4, 4), (3, 2, 2), _conv_attrs(3, dilation=2, mode=1, group=2)),
]


@pytest.mark.parametrize("nd, xs, ks, attrs", CONV_CASES)
def test_conv_ops_equal_the_xp_path(fake, nd, xs, ks, attrs):
    rs = np.random.RandomState(nd + len(fake.calls))
    g = attrs["group"]
    x, w = rs.randn(2, 4, *xs), rs.randn(6, 4 // g, *ks)
    y, want = _run("conv4", w, x, **attrs)
    _close(y, want)
    dy = rs.randn(*y.shape)
    _close(*_run("conv4_data", w, dy, x, **attrs))
    _close(*_run("conv4_filter", x, dy, w, **attrs))
    wt = rs.randn(4, 6 // g, *ks)   # deconv4 maps 4 channels to 6
    _close(*_run("deconv4", wt, x, **attrs))
    assert fake.calls == ["convolution_forward", "convolution_backward_data",
                          "convolution_backward_filter", "convolution_backward_data"]


@pytest.mark.parametrize("opname", ["conv4", "conv4_filter"])
@pytest.mark.parametrize("contiguous", [True, False])
def test_conv_writes_into_the_plans_buffer(fake, opname, contiguous):
    rs = np.random.RandomState(1)
    x, w = rs.randn(2, 3, 6, 6), rs.randn(4, 3, 3, 3)
    args = (w, x) if opname == "conv4" else (x, rs.randn(2, 4, 4, 4), w)
    shape = (2, 4, 4, 4) if opname == "conv4" else w.shape
    out = np.empty(shape) if contiguous else np.empty(shape[::-1]).T
    attrs = _conv_attrs(2, alpha=3.0)
    got = cudnn.KERNELS[opname][1](np, *args, out=out, **attrs)
    assert got is out
    _close(out, get_op(opname).forward(np, *args, **attrs))


def _pool_attrs(nd, window=2, padding=0, stride=None, mode=0, nanopt=1, alpha=1.0):
    return {"window": (window,) * nd, "padding": (padding,) * nd,
            "stride": (window if stride is None else stride,) * nd, "mode": mode,
            "maxpoolingNanOpt": nanopt, "alpha": alpha}


POOL_CASES = [  # (x spatial size, attributes)
    ((7,), _pool_attrs(1, window=3, padding=1, stride=2)),
    ((6, 5), _pool_attrs(2, mode=1, alpha=2.0)),
    ((6, 7), _pool_attrs(2, window=3, padding=1, stride=2, mode=2)),
    ((5, 5), _pool_attrs(2, window=3, padding=2, stride=1, mode=3)),
    ((4, 5, 4), _pool_attrs(3, mode=0, padding=1)),
    ((5, 4, 6), _pool_attrs(3, window=3, stride=2, mode=2, alpha=0.5)),
]


@pytest.mark.parametrize("xs, attrs", POOL_CASES)
def test_pool_ops_equal_the_xp_path(fake, xs, attrs):
    rs = np.random.RandomState(len(xs))
    x = rs.randn(2, 3, *xs)
    y, want = _run("pool", x, **attrs)
    _close(y, want)
    _close(*_run("pool_grad", x, y, rs.randn(*y.shape), **attrs))
    assert fake.calls == ["pooling_forward", "pooling_backward"]
    if attrs["mode"] in (1, 2):   # pool_select of the average modes is pool(g)
        _close(*_run("pool_select", x, y, rs.randn(*x.shape), **attrs))
        assert fake.calls[-1] == "pooling_forward"


@pytest.mark.parametrize("nanopt", [0, 1])
def test_max_pool_nan_option_is_cudnns(fake, nanopt):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    got, want = _run("pool", x, **_pool_attrs(2, nanopt=nanopt))
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0, 0, 0, 0]) == bool(nanopt)


def test_translation_helpers():
    w = np.arange(12.0).reshape(1, 1, 3, 4)
    flipped = cudnn.flip(np, w, 0)
    np.testing.assert_array_equal(flipped, w[..., ::-1, ::-1])
    assert flipped.flags.c_contiguous and cudnn.flip(np, w, 1) is w
    assert cudnn.spatial((3,), 0) == (0, 3) and cudnn.spatial((2, 3), 1) == (2, 3)
    assert cudnn.lift(np, np.zeros((2, 3, 5))).shape == (2, 3, 1, 5)
    assert cudnn.lift(np, np.zeros((4, 4, 3, 2)).T).flags.c_contiguous
    out = np.zeros((2, 3, 5))
    assert cudnn.lifted(out).shape == (2, 3, 1, 5) and cudnn.lifted(out).base is out
    assert cudnn.pool_args((3,), (1,), (2,), 2, 0) == (
        (1, 3), (0, 1), (1, 2), "CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING",
        "CUDNN_NOT_PROPAGATE_NAN")
    assert [cudnn.POOL_MODES[m] for m in (0, 3)] == ["CUDNN_POOLING_MAX",
                                                     "CUDNN_POOLING_MAX_DETERMINISTIC"]
    assert cudnn.bn_view(np, np.zeros((2, 3, 4, 5, 6))).shape == (2, 3, 120, 1)
    assert cudnn.bn_param_dtype(np.float16) == "float32"
    np.testing.assert_allclose(cudnn.bn_variance(np, np.array([2.0, 1 / np.sqrt(1e-5)]), 1e-5),
                               [0.25 - 1e-5, 0.0], atol=1e-18)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("affine", [False, True])
def test_batchnorm_equals_the_xp_path(fake, shape, affine):
    rs = np.random.RandomState(len(shape))
    x = rs.randn(*shape) * 2 + 1
    params = (rs.rand(3) + 0.5, rs.randn(3)) if affine else ()
    out, want = _run("batchnorm", x, *params, eps=1e-5)
    _close(out, want, rtol=1e-9)
    gy = rs.randn(*shape)
    _close(*_run("batchnorm_grad", gy, x, out[1], out[2], *params[:1], eps=1e-5), rtol=1e-9)
    assert fake.calls == ["batchnorm_forward", "batchnorm_backward"]


def test_float16_batchnorm_keeps_float32_per_channel_values_and_gives_float16(fake):
    x = np.random.RandomState(0).randn(4, 3, 2, 2).astype(np.float16)
    got, want = _run("batchnorm", x, eps=1e-3)
    assert [a.dtype for a in got] == [np.dtype(np.float16)] * 3
    _close(got, want, rtol=2e-3)


@pytest.mark.parametrize("opname, arrays, attrs", [
    ("conv4", (((3, 2, 2, 2), "float32"), ((1, 2, 4, 4), "float64")), _conv_attrs(2)),
    ("conv4", (((3, 2, 2, 2), "float64"), ((0, 2, 4, 4), "float64")), _conv_attrs(2)),
    ("pool", (((0, 2, 4, 4), "float64"),), _pool_attrs(2)),
    ("batchnorm", (((5, 3), "float64"),), {"eps": 1e-6}),   # below cuDNN's minimum eps
])
def test_what_cudnn_cannot_take_runs_the_xp_forward(fake, opname, arrays, attrs):
    """Mixed dtypes, empty arrays, a batchnorm eps cuDNN refuses."""
    rs = np.random.RandomState(0)
    values = [rs.randn(*shape).astype(dtype) for shape, dtype in arrays]
    got, want = _run(opname, *values, **attrs)
    _close(got, want)
    assert fake.calls == []


def test_a_cudnn_error_warns_and_runs_the_xp_forward(fake):
    fake.fail_with = "CUDNN_STATUS_NOT_SUPPORTED"
    rs = np.random.RandomState(0)
    w, x = rs.randn(3, 2, 2, 2), rs.randn(1, 2, 4, 4)
    with pytest.warns(RuntimeWarning, match=r"cuDNN failed in conv4 \(CUDNN_STATUS_NOT_SUPPORTED"
                                            r"\); running its xp kernel instead"):
        got, want = _run("conv4", w, x, **_conv_attrs(2))
    _close(got, want)


def test_a_compiled_plan_on_cupy_runs_the_cudnn_kernels(fake, monkeypatch):
    """conv -> pool -> batchnorm -> loss and its backward, generated with xp named cupy."""
    x = kf.placeholder("x", (4, 2, 8, 8), dtype="float64")
    w = kf.param("w", value=np.random.RandomState(1).randn(3, 2, 3, 3), dtype="float64")
    h = kf.pool(kf.conv4(w, x, padding=1), mode=1)
    y, _, _ = kf.batchnorm_train(h)
    graph = kf.backward(Graph([kf.sum(y * y * h)]))
    feeds = [np.random.RandomState(2).randn(4, 2, 8, 8)]
    params = [w.node.attrs["value"]]
    as_cupy(monkeypatch, NUMPY_AS_CUPY)
    got = generate(graph, NUMPY_AS_CUPY).fn(feeds, params)
    assert {"convolution_forward", "pooling_forward", "batchnorm_forward",
            "batchnorm_backward", "pooling_backward",
            "convolution_backward_filter"} <= set(fake.calls)
    want = generate(graph, np).fn(feeds, params)
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=1e-9, atol=1e-9)


# ---- on a GPU: cuDNN against the xp path on CuPy arrays ----


@pytest.fixture
def gpu(monkeypatch):
    """CuPy, with cuDNN looked for afresh; skips, saying what is missing, without them."""
    from knetflow.devices import gpu as gpu_devices

    if not gpu_devices.discover():
        pytest.skip(f"needs a GPU that CuPy can see; {gpu_devices.unavailable_reason()}")
    api, reason = gpu_cudnn.load()
    if api is None:
        pytest.skip(f"needs cuDNN through CuPy: {reason}")
    monkeypatch.setattr(cudnn, "_library", api)
    monkeypatch.setattr(cudnn, "_override", True)
    return api.cupy


def _on_gpu(cp, opname, *arrays, rtol, **attrs):
    """The cuDNN kernel and the xp forward agree on CuPy arrays; returns the cuDNN result.

    Agreement is up to `rtol` of each value and of the result's largest magnitude (a sum's
    rounding scales with its terms, so values that cancel to near 0 keep an absolute error).
    """
    arrays = [cp.asarray(a) for a in arrays]
    got = cudnn.KERNELS[opname][1](cp, *arrays, **attrs)
    want = get_op(opname).forward(cp, *arrays, **attrs)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert g.dtype == w.dtype
        w = cp.asnumpy(w)
        scale = float(np.max(np.abs(w))) if w.size else 1.0
        np.testing.assert_allclose(cp.asnumpy(g), w, rtol=rtol, atol=rtol * max(scale, 1.0))
    return got


# float32: cuDNN's default math lets float32 convolutions run as TF32 on Ampere and later
# GPUs (10-bit mantissas, unit roundoff 2**-11), and may pick FFT or Winograd algorithms: a
# sum of k products is then off by up to about 2**-10 * sum(|w x|), some 1e-3 of the result
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 5e-3)])
@pytest.mark.parametrize("nd, xs, ks, attrs", CONV_CASES)
def test_gpu_conv_ops_equal_the_xp_path(gpu, dtype, rtol, nd, xs, ks, attrs):
    rs = np.random.RandomState(nd)
    g = attrs["group"]
    x, w = rs.randn(2, 4, *xs).astype(dtype), rs.randn(6, 4 // g, *ks).astype(dtype)
    y = _on_gpu(gpu, "conv4", w, x, rtol=rtol, **attrs)
    dy = rs.randn(*y.shape).astype(dtype)
    _on_gpu(gpu, "conv4_data", w, dy, x, rtol=rtol, **attrs)
    _on_gpu(gpu, "conv4_filter", x, dy, w, rtol=rtol, **attrs)
    _on_gpu(gpu, "deconv4", rs.randn(4, 6 // g, *ks).astype(dtype), x, rtol=rtol, **attrs)


@pytest.mark.parametrize("xs, attrs", POOL_CASES)
def test_gpu_pool_ops_equal_the_xp_path(gpu, xs, attrs):
    rs = np.random.RandomState(len(xs))
    x = rs.randn(2, 3, *xs)   # continuous values: no tied maxima
    y = _on_gpu(gpu, "pool", x, rtol=1e-12, **attrs)
    _on_gpu(gpu, "pool_grad", x, gpu.asnumpy(y), rs.randn(*y.shape), rtol=1e-12, **attrs)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 2)])
def test_gpu_batchnorm_equals_the_xp_path(gpu, shape):
    rs = np.random.RandomState(len(shape))
    x, gamma, beta = rs.randn(*shape) * 2 + 1, rs.rand(3) + 0.5, rs.randn(3)
    _, mean, var = _on_gpu(gpu, "batchnorm", x, gamma, beta, rtol=1e-8, eps=1e-5)
    _on_gpu(gpu, "batchnorm_grad", rs.randn(*shape), x, gpu.asnumpy(mean), gpu.asnumpy(var),
            gamma, rtol=1e-8, eps=1e-5)


def test_gpu_plan_gradients_match_the_cpu_and_central_differences(gpu):
    x = kf.placeholder("x", (4, 2, 9, 9), dtype="float64")
    w = kf.param("w", value=np.random.RandomState(1).randn(3, 2, 3, 3), dtype="float64")
    h = kf.pool(kf.relu(kf.conv4(w, x, padding=1, stride=2)), window=3, padding=1, stride=2)
    y, _, _ = kf.batchnorm_train(h)
    graph = kf.backward(Graph([kf.sum(y * y * h) + kf.sum(kf.deconv4(w, h, mode=1))]))
    feed = {"x": np.random.RandomState(2).randn(4, 2, 9, 9)}
    on_gpu, on_cpu = kf.compile(graph, devices=["gpu:0"]), kf.compile(graph)
    (loss, dw), (loss_cpu, dw_cpu) = on_gpu.run(feed), on_cpu.run(feed)
    np.testing.assert_allclose(loss, loss_cpu, rtol=1e-10)
    np.testing.assert_allclose(dw, dw_cpu, rtol=1e-8, atol=1e-10)
    v, h_ = np.random.RandomState(3).randn(*dw.shape), 1e-6
    w0 = np.random.RandomState(1).randn(3, 2, 3, 3)
    up = on_gpu.run({**feed, "w": w0 + h_ * v})[0]
    down = on_gpu.run({**feed, "w": w0 - h_ * v})[0]
    np.testing.assert_allclose((up - down) / (2 * h_), np.sum(dw * v), rtol=1e-5)


def test_eager_calls_on_cupy_arrays_use_cudnn_too(fake, monkeypatch):
    from knetflow.graph import build

    rs = np.random.RandomState(0)
    w, x = rs.randn(3, 2, 3, 3), rs.randn(2, 2, 6, 5)
    want = kf.conv4(w, x, padding=1)
    as_cupy(monkeypatch, NUMPY_AS_CUPY)
    monkeypatch.setattr(build, "array_module", lambda arrays: NUMPY_AS_CUPY)
    got = kf.conv4(w, x, padding=1)
    assert fake.calls == ["convolution_forward"]
    np.testing.assert_allclose(got, want, rtol=1e-10)
