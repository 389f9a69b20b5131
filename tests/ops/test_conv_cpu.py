"""Tests of knetflow/ops/conv_cpu.py: the chunked NumPy kernels plans bind for 2-D
convolutions give the general kernels' values (float64) in both layouts, with and
without `out=`, over odd sizes, padding, stride, dilation, both modes and alpha;
ops the kernels do not take fall back to the general forward (bind gives None);
and a compiled plan's gradients still match central differences.
"""

import importlib
import os
import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops import conv_cpu, cpu_threads
from knetflow.ops.base import Spec, get_op
from knetflow.ops.conv import conv_size
from tests.ops.threads import grow_pool, needs_pool

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


# ---- kernel calls split between threads ----

@pytest.fixture
def workers(monkeypatch):
    """Sets conv_cpu.WORKERS (the threads a kernel call splits its chunks between), with
    OpenBLAS's pool grown to that many."""
    def set_workers(n):
        grow_pool(n)
        monkeypatch.setattr(conv_cpu, "WORKERS", n)
        assert conv_cpu._workers() == n
    return set_workers


@needs_pool
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("xshape, wshape, attrs", PROBLEMS)
def test_split_kernels_match_the_general_forward(xshape, wshape, attrs, last, n, workers):
    workers(n)
    rs = np.random.RandomState(sum(xshape) + sum(wshape))
    _check_all(*_problem(rs, xshape, wshape, attrs), attrs, last=last)


@needs_pool
@pytest.mark.parametrize("last", [False, True])
def test_a_filter_gradient_s_shares_outlive_other_calls_on_openblas_s_threads(
        last, workers, monkeypatch):
    # two plans' executors (two CPU devices) split their calls onto the same OpenBLAS
    # threads: another call's share may run there before this call adds its shares up.
    # Here every split call is followed by such a share, which scribbles over the
    # workspaces of the threads it ran on; the shares' sums must not have lived there
    workers(2)
    split = cpu_threads.run

    def then_another_call(jobs):
        results = split(jobs)
        for buf in cpu_threads._pool_bufs.values():
            buf.view(np.uint8).fill(0xFF)           # NaN in every float
        return results

    monkeypatch.setattr(cpu_threads, "run", then_another_call)
    attrs = _attrs()
    x, w, dy = _problem(np.random.RandomState(9), (16, 3, 9, 9), (4, 3, 3, 3), attrs)
    fn = conv_cpu.bind_conv("conv4_filter", x.shape, w.shape, x.dtype, attrs["padding"],
                            attrs["stride"], attrs["dilation"], attrs["mode"], 1.0, last=last)
    want = Conv4Filter.forward(np, x, dy, w, **attrs)
    for _ in range(2):
        np.testing.assert_allclose(fn(x, dy, w), want, rtol=1e-12, atol=1e-12)
    assert cpu_threads._pool_bufs, "no share ran on OpenBLAS's threads"


@needs_pool
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_split_kernels_match_one_thread_over_random_shapes(data):
    """Many small chunks split between 2-4 threads give the one-thread kernels' values."""
    draw = data.draw
    n, c, co = draw(st.integers(1, 12)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    hw = tuple(draw(st.integers(max(1, kk - 2 * p), 7)) for kk, p in zip(k, pad))
    attrs = _attrs(pad, stride, (1, 1), mode=draw(st.integers(0, 1)),
                   alpha=draw(st.sampled_from([1.0, -0.5])))
    last = draw(st.booleans())
    chunk_bytes = draw(st.sampled_from([1, 500, 4000, 1 << 22]))
    threads = draw(st.integers(2, 4))
    grow_pool(threads)
    rs = np.random.RandomState(draw(st.integers(0, 1000)))
    x, w, dy = _problem(rs, (n, c) + hw, (co, c) + k, attrs)
    args = {"conv4": (w, x), "conv4_data": (w, dy, x), "conv4_filter": (x, dy, w)}
    saved = conv_cpu.CHUNK_BYTES, conv_cpu.WORKERS
    try:
        conv_cpu.CHUNK_BYTES = chunk_bytes
        for kind, a in args.items():
            fn = conv_cpu.bind_conv(kind, x.shape, w.shape, x.dtype, pad, stride, (1, 1),
                                    attrs["mode"], attrs["alpha"], last)
            conv_cpu.WORKERS = 1
            want = fn(*a)
            conv_cpu.WORKERS = threads
            np.testing.assert_allclose(fn(*a), want, rtol=1e-12, atol=1e-12)
    finally:
        conv_cpu.CHUNK_BYTES, conv_cpu.WORKERS = saved


@pytest.mark.parametrize("n, chunk_images", [(1, 1), (2, 5), (3, 1), (7, 2), (100, 25),
                                             (100, 50), (100, 34), (9, 9)])
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_shares_cover_the_batch_in_order(n, chunk_images, threads, monkeypatch):
    # one 1x1 image is 8 bytes of columns (float64): CHUNK_BYTES sets images per chunk
    monkeypatch.setattr(conv_cpu, "CHUNK_BYTES", 8 * chunk_images)
    g = conv_cpu._Geometry((n, 1, 1, 1), (1, 1, 1, 1), (0, 0), (1, 1), (1, 1), 8)
    shares = g.share(threads)
    if n < threads:
        assert shares is None
        return
    assert len(shares) == threads and all(shares)
    spans = [s for share in shares for s in share]
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(spans, spans[1:]))
    assert max(b - a for a, b in spans) <= g.chunk      # the workspace holds any chunk
    assert len(spans) >= len(g.spans)
    if len(spans) < n:      # where the batch allows, every thread gets as many chunks
        assert len({len(share) for share in shares}) == 1


@needs_pool
def test_errors_are_raised_once_every_share_is_done(workers):
    workers(2)
    g = conv_cpu._Geometry((4, 1, 3, 3), (1, 1, 2, 2), (0, 0), (1, 1), (1, 1), 8)
    limit = cpu_threads._blas._get()
    done = []

    def fails_on(k_bad, error):
        def job(spans, k):
            if k == k_bad:
                raise error
            done.append(k)
        return job

    with pytest.raises(ValueError, match="pool thread failed"):
        conv_cpu._split(g, fails_on(1, ValueError("pool thread failed")))
    with pytest.raises(KeyError):
        conv_cpu._split(g, fails_on(0, KeyError("this thread failed")))
    assert done == [0, 1]
    assert conv_cpu._split(g, lambda spans, k: spans) == g.share(2)
    assert cpu_threads._blas._get() == limit and cpu_threads._blas._active == 0


@needs_pool
def test_blas_is_held_to_one_thread_while_split_and_restored(workers):
    from threadpoolctl import threadpool_limits

    workers(2)
    g = conv_cpu._Geometry((4, 1, 3, 3), (1, 1, 2, 2), (0, 0), (1, 1), (1, 1), 8)
    with threadpool_limits(limits=2, user_api="blas"):
        assert cpu_threads._blas.budget() == 2
        seen = conv_cpu._split(g, lambda spans, k: cpu_threads._blas._get())
        assert seen == [1, 1]
        assert cpu_threads._blas.budget() == 2 and cpu_threads._blas._get() == 2
        cpu_threads._blas.enter()          # nested and concurrent splits: the last one restores
        conv_cpu._split(g, lambda spans, k: None)
        assert cpu_threads._blas._get() == 1 and cpu_threads._blas.budget() == 2
        cpu_threads._blas.exit()
        assert cpu_threads._blas._get() == 2


@needs_pool
def test_workers_follow_the_blas_budget():
    from threadpoolctl import threadpool_limits

    assert conv_cpu.WORKERS is None
    grow_pool(2)
    with threadpool_limits(limits=1, user_api="blas"):
        assert conv_cpu._workers() == 1
    with threadpool_limits(limits=2, user_api="blas"):
        assert conv_cpu._workers() == 2
    with threadpool_limits(limits=8, user_api="blas"):
        assert conv_cpu._workers() == cpu_threads.MAX_WORKERS


def test_without_openblas_kernels_stay_on_one_thread(monkeypatch):
    monkeypatch.setattr(cpu_threads, "_blas", cpu_threads._OpenBlas())
    monkeypatch.setattr(cpu_threads._blas, "_found", True)      # found nothing usable
    monkeypatch.setattr(conv_cpu, "WORKERS", 4)
    assert conv_cpu._workers() == 1 and cpu_threads._blas.budget() == 1
    g = conv_cpu._Geometry((4, 1, 3, 3), (1, 1, 2, 2), (0, 0), (1, 1), (1, 1), 8)
    assert conv_cpu._split(g, lambda spans, k: (spans, k)) == [(g.spans, 0)]


@needs_pool
def test_workspace_counts_the_pool_threads(workers):
    workers(2)
    rs = np.random.RandomState(2)
    x, w, _ = _problem(rs, (6, 3, 8, 8), (4, 3, 3, 3), _attrs())
    fn = conv_cpu.bind_conv("conv4", x.shape, w.shape, x.dtype, (0, 0), (1, 1), (1, 1), 0,
                            1.0, last=True)
    fn(w, x)
    bufs = cpu_threads._pool_bufs
    assert bufs and all(b.nbytes > 0 for b in bufs.values())
    own = cpu_threads._local.buf.nbytes
    assert conv_cpu.workspace_bytes() == own + sum(
        b.nbytes for b in cpu_threads._pool_bufs.values())
    before = dict(cpu_threads._pool_bufs)
    fn(w, x)        # a pool thread keeps its workspace from call to call
    assert all(cpu_threads._pool_bufs[t] is b for t, b in before.items())


@needs_pool
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_splits_too(workers):
    workers(2)
    rs = np.random.RandomState(4)
    x, w, _ = _problem(rs, (6, 2, 5, 5), (3, 2, 2, 2), _attrs())
    fn = conv_cpu.bind_conv("conv4", x.shape, w.shape, x.dtype, (0, 0), (1, 1), (1, 1), 0,
                            1.0, last=False)
    want = fn(w, x)
    pid = os.fork()
    if pid == 0:                       # the child: OpenBLAS starts its pool again there
        ok = False
        try:
            signal.alarm(20)           # a hang ends the child, and the test fails
            ok = np.allclose(fn(w, x), want, rtol=1e-12, atol=1e-12)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("n, chunk_images, share_images", [(100, 50, 25), (100, 25, 13),
                                                            (7, 7, 2), (5, 5, 1), (3, 2, 9)])
@pytest.mark.parametrize("threads", [2, 3])
def test_split_chunks_are_held_to_share_bytes(n, chunk_images, share_images, threads,
                                              monkeypatch):
    # split, each thread's chunks are held to SHARE_BYTES of columns (never more than a chunk)
    monkeypatch.setattr(conv_cpu, "CHUNK_BYTES", 8 * chunk_images)
    monkeypatch.setattr(conv_cpu, "SHARE_BYTES", 8 * share_images)
    g = conv_cpu._Geometry((n, 1, 1, 1), (1, 1, 1, 1), (0, 0), (1, 1), (1, 1), 8)
    shares = g.share(threads)
    spans = [s for share in shares for s in share]
    assert [a for a, _ in spans] + [n] == [0] + [b for _, b in spans]
    assert max(b - a for a, b in spans) <= min(chunk_images, share_images, n)
    if len(spans) < n:
        assert len({len(share) for share in shares}) == 1


@needs_pool
def test_split_workspaces_hold_only_their_chunks(workers, monkeypatch):
    # two threads with chunks half a one-thread chunk's size: each workspace about half
    monkeypatch.setattr(conv_cpu, "CHUNK_BYTES", 8 * 8 * 100)     # 8 images of 10x10 columns
    monkeypatch.setattr(conv_cpu, "SHARE_BYTES", 8 * 4 * 100)
    rs = np.random.RandomState(3)
    x, w, _ = _problem(rs, (16, 1, 10, 10), (1, 1, 1, 1), _attrs())
    fn = conv_cpu.bind_conv("conv4", x.shape, w.shape, x.dtype, (0, 0), (1, 1), (1, 1), 0,
                            1.0, last=False)
    workers(2)
    want = Conv4.forward(np, w, x, **_attrs())
    cpu_threads._local.buf = None
    cpu_threads._pool_bufs.clear()
    np.testing.assert_allclose(fn(w, x), want, rtol=1e-12)
    sizes = [cpu_threads._local.buf.nbytes] + [b.nbytes for b in cpu_threads._pool_bufs.values()]
    assert len(sizes) == 2 and max(sizes) <= 8 * 4 * 100 + 64


@needs_pool
@pytest.mark.parametrize("last", [False, True])
def test_a_filter_sum_survives_chunks_of_unequal_size(last, workers, monkeypatch):
    # a thread's running sum lives in its workspace while later chunks, smaller by an
    # image, carve theirs: few pixels and many filters make the sum bigger than an image
    monkeypatch.setattr(conv_cpu, "CHUNK_BYTES", 8 * 12 * 2)     # 2 images of 12x1 columns
    rs = np.random.RandomState(6)
    attrs = _attrs()
    x, w, dy = _problem(rs, (7, 3, 2, 2), (16, 3, 2, 2), attrs)
    fn = conv_cpu.bind_conv("conv4_filter", x.shape, w.shape, x.dtype, (0, 0), (1, 1),
                            (1, 1), 0, 1.0, last)
    want = Conv4Filter.forward(np, x, dy, w, **attrs)
    for n in (1, 2):
        workers(n)
        np.testing.assert_allclose(fn(x, dy, w), want, rtol=1e-12, atol=1e-12)
