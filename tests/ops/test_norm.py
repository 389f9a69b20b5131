"""batchnorm, bnmoments, bnparams: harness cases, running moments, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.layers import bn_moments as norm_moments
from knetflow.layers import batchnorm, bnmoments
from knetflow.ops.norm import batchnorm_train
from tests.ops.harness import Arg, Case, check
from tests.train.knet.traced import one_sim_device, trace_on

# ---- NumPy references, written from the formulas ----


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _col(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def ref_train(x, gamma=None, beta=None, eps=1e-5):
    mu = x.mean(axis=_axes(x))
    var = ((x - _col(mu, x)) ** 2).mean(axis=_axes(x))
    y = (x - _col(mu, x)) / np.sqrt(_col(var, x) + eps)
    if gamma is not None:
        y = y * _col(gamma, x) + _col(beta, x)
    return y, mu, var


def ref_infer(x, mean, var, gamma=None, beta=None, eps=1e-5):
    y = (x - _col(mean, x)) / np.sqrt(_col(var, x) + eps)
    if gamma is not None:
        y = y * _col(gamma, x) + _col(beta, x)
    return y


def _split(p):
    c = len(p) // 2
    return p[:c], p[c:]


def train_case(name, shape, affine=True, second=False):
    c = shape[1]
    if not affine:
        return Case(name, lambda x: batchnorm(x, training=True),
                    lambda x: ref_train(x)[0], [Arg(shape)], second=second)
    return Case(name, lambda x, p: batchnorm(x, None, p, training=True),
                lambda x, p: ref_train(x, *_split(p))[0], [Arg(shape), Arg((2 * c,))],
                second=second)


def infer_case(name, shape, affine=True, second=False):
    c = shape[1]
    args = [Arg(shape), Arg((c,)), Arg((c,), "positive")]

    def fn(x, mean, var, *p):
        return batchnorm(x, bnmoments(mean=mean, var=var), *p, training=False)

    def ref(x, mean, var, *p):
        return ref_infer(x, mean, var, *(_split(p[0]) if p else ()))

    return Case(name, fn, ref, args + ([Arg((2 * c,))] if affine else []), second=second)


CASES = [
    train_case("bn_train_2d", (6, 3), affine=False, second=True),
    train_case("bn_train_2d_affine", (5, 3), second=True),
    train_case("bn_train_3d_affine", (3, 2, 4)),
    train_case("bn_train_4d_affine", (3, 2, 3, 2), second=True),
    train_case("bn_train_5d_affine", (2, 2, 2, 3, 2)),
    train_case("bn_train_4d", (2, 3, 2, 2), affine=False),
    Case("bn_train_stats", lambda x, g, b: batchnorm_train(x, g, b), ref_train,
         [Arg((4, 2, 3)), Arg((2,)), Arg((2,))], second=True),
    Case("bn_train_stats_only", lambda x: batchnorm_train(x)[1:], lambda x: ref_train(x)[1:],
         [Arg((4, 3))], second=True),
    infer_case("bn_infer_2d", (4, 3), second=True),
    infer_case("bn_infer_2d_plain", (4, 3), affine=False),
    infer_case("bn_infer_4d", (2, 3, 2, 2), second=True),
    infer_case("bn_infer_5d", (2, 2, 2, 2, 3)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- worked values ----


def test_docstring_example_and_bnparams():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(batchnorm(x, training=True, eps=0.0), [[-1, -1], [1, 1]])
    p = kf.bnparams(3)
    assert p.dtype == np.float32 and p.tolist() == [1, 1, 1, 0, 0, 0]
    assert kf.bnparams(2, dtype="float64").dtype == np.float64


def test_training_output_is_normalized_per_channel():
    x = np.random.RandomState(0).randn(8, 3, 4, 5) * 3 + 7
    y = batchnorm(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(2, 4), min_size=2, max_size=5),
       params=st.booleans(), seed=st.integers(0, 100))
def test_eager_matches_reference_for_any_shape(shape, params, seed):
    rs = np.random.RandomState(seed)
    x = rs.randn(*shape)
    p = rs.randn(2 * shape[1]) if params else None
    want = ref_train(x, *(_split(p) if params else ()))[0]
    np.testing.assert_allclose(batchnorm(x, None, p, training=True), want, rtol=1e-6,
                               atol=1e-8)


# ---- running moments ----


def _momentum_steps(batches, momentum=0.1):
    mean, var = np.zeros(batches[0].shape[1]), np.ones(batches[0].shape[1])
    for x in batches:
        _, mu, v = ref_train(x)
        mean, var = (1 - momentum) * mean + momentum * mu, (1 - momentum) * var + momentum * v
    return mean, var


def test_eager_training_updates_moments_in_place_and_inference_uses_them():
    rs = np.random.RandomState(1)
    batches = [rs.randn(4, 3, 2, 2) * 2 + 1 for _ in range(3)]
    m = bnmoments(momentum=0.3)
    for x in batches:
        batchnorm(x, m, training=True)
    want_mean, want_var = _momentum_steps(batches, 0.3)
    np.testing.assert_allclose(m.mean, want_mean)
    np.testing.assert_allclose(m.var, want_var)
    x = rs.randn(2, 3, 2, 2)
    np.testing.assert_allclose(batchnorm(x, m), ref_infer(x, want_mean, want_var))


def test_lazy_init_uses_meaninit_varinit_and_given_moments():
    m = bnmoments(meaninit=np.ones, varinit=lambda shape, dtype: np.full(shape, 4.0, dtype))
    x = np.zeros((2, 3), "float32")
    np.testing.assert_allclose(batchnorm(x, m, eps=0.0), -0.5 * np.ones((2, 3)))
    assert m.mean.dtype == np.float32 and m.mean.shape == (3,)
    given_ = bnmoments(mean=np.array([1.0]), var=np.array([4.0]))
    np.testing.assert_allclose(batchnorm(np.array([[3.0]]), given_, eps=0.0), [[1.0]])


def _graph_setup(c=3):
    x = kf.placeholder("x", (None, c, 2), "float64")
    m = bnmoments(momentum=0.2, name="bn1")
    p = kf.param("bn1_params", value=kf.bnparams(c, "float64"), dtype="float64")
    return x, m, p


def test_compiled_graph_updates_moments_through_graph_updates():
    x, m, p = _graph_setup()
    y = batchnorm(x, m, p, training=True)
    loss = kf.sum(y * y)
    names = ("bn1_moving_mean", "bn1_moving_var")
    assert set(kf.bnupdates(m)) == set(names) == set(m.names)
    plan = kf.compile(kf.backward(kf.Graph([loss], updates=kf.bnupdates(m)), wrt=[p]))
    graph_params = {n.attrs["name"]: n for n in plan.source.params}
    assert graph_params[names[0]].attrs["trainable"] is False
    assert graph_params["bn1_params"].attrs.get("trainable", True)
    rs = np.random.RandomState(2)
    batches = [rs.randn(5, 3, 2) + 3 for _ in range(3)]
    for b in batches:
        plan.run({"x": b})
    want_mean, want_var = _momentum_steps(batches, 0.2)
    np.testing.assert_allclose(plan.params[names[0]], want_mean)
    np.testing.assert_allclose(plan.params[names[1]], want_var)
    # an inference graph over the same moment params, given the trained values
    infer = kf.compile(batchnorm(x, m, p))
    infer.set_params({k: plan.params[k] for k in names})
    xt = rs.randn(2, 3, 2)
    np.testing.assert_allclose(infer.run({"x": xt})[0], ref_infer(xt, want_mean, want_var))


def test_symbolic_default_is_inference_with_initial_moments():
    x, m, p = _graph_setup()
    y = batchnorm(x, m, p)
    assert kf.bnupdates(m) == {}
    xt = np.random.RandomState(3).randn(2, 3, 2)
    np.testing.assert_allclose(kf.compile(y).run({"x": xt})[0], ref_infer(xt, np.zeros(3),
                                                                          np.ones(3)))


def test_diff_trains_with_batch_statistics_and_updates_moments():
    rs = np.random.RandomState(4)
    w = kf.Param(rs.randn(6))
    m = bnmoments()
    r = rs.randn(4, 3, 2)

    def loss(x):
        return kf.sum(batchnorm(x, m, w) * r)

    batches = [rs.randn(4, 3, 2) * 2 - 1 for _ in range(3)]
    for x in batches:
        result = kf.diff(loss, x)
        y, _, _ = ref_train(x, *_split(w.value))
        xh = ref_train(x)[0]
        np.testing.assert_allclose(result.value, np.sum(y * r))
        want = np.concatenate([(r * xh).sum(axis=(0, 2)), r.sum(axis=(0, 2))])
        np.testing.assert_allclose(kf.grad(result, w), want)
    want_mean, want_var = _momentum_steps(batches)
    np.testing.assert_allclose(m.mean, want_mean)
    np.testing.assert_allclose(m.var, want_var)
    # inference inside diff reads the current running moments at each call
    x = rs.randn(4, 3, 2)
    infer = kf.diff(lambda: kf.sum(batchnorm(x, m, w, training=False) * r))
    np.testing.assert_allclose(infer.value, np.sum(ref_infer(x, m.mean, m.var, *_split(w.value))
                                                   * r))
    m.mean[...] = 5.0
    infer = kf.diff(lambda: kf.sum(batchnorm(x, m, w, training=False) * r))
    np.testing.assert_allclose(infer.value, np.sum(ref_infer(x, m.mean, m.var, *_split(w.value))
                                                   * r))


def _eager_moments(batches, momentum):
    m = bnmoments(momentum=momentum)
    for x in batches:
        batchnorm(x, m, training=True)
    return m


def _training_loss(m, w, traces):
    r = np.random.RandomState(7).randn(4, 3, 2, 2)

    def loss(x):
        traces.append(1)
        return kf.sum(batchnorm(x, m, w) * r)

    return loss


def _batches(dtype="float64", n=5):
    rs = np.random.RandomState(8)
    return [(rs.randn(4, 3, 2, 2) * 2 + 1).astype(dtype) for _ in range(n)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_moments_after_cached_diff_calls_equal_eager_and_keep_their_arrays(dtype):
    batches = _batches(dtype)
    w, m, traces = kf.Param(kf.bnparams(3, dtype)), bnmoments(momentum=0.3), []
    loss = _training_loss(m, w, traces)
    kf.diff(loss, batches[0])
    arrays = (m.mean, m.var)
    for x in batches[1:]:
        kf.diff(loss, x)
    assert len(traces) == 1
    assert (m.mean, m.var) == arrays and m.mean.dtype == np.dtype(dtype)  # updated in place
    eager = _eager_moments(batches, 0.3)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(m.mean, eager.mean, rtol=tol, atol=tol)
    np.testing.assert_allclose(m.var, eager.var, rtol=tol, atol=tol)


def test_moments_come_back_from_a_plan_on_a_strict_sim_device():
    batches = _batches()
    w, m, traces = kf.Param(kf.bnparams(3, "float64")), bnmoments(momentum=0.3), []
    loss = _training_loss(m, w, traces)
    with one_sim_device() as sim:
        trace_on(sim, loss, batches[0])
        for x in batches:
            kf.diff(loss, x)
    assert len(traces) == 1 and type(m.mean) is np.ndarray
    eager = _eager_moments(batches, 0.3)
    np.testing.assert_allclose(m.mean, eager.mean, rtol=1e-12)
    np.testing.assert_allclose(m.var, eager.var, rtol=1e-12)


def test_saved_moments_loaded_in_place_or_by_rebinding_are_used_by_cached_calls():
    x = _batches(n=1)[0]
    w, m, traces = kf.Param(kf.bnparams(3, "float64")), bnmoments(momentum=0.5), []
    loss = _training_loss(m, w, traces)
    kf.diff(loss, x)
    _, mu, var = ref_train(x)
    saved_mean, saved_var = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    m.mean[...], m.var[...] = saved_mean, saved_var
    kf.diff(loss, x)
    np.testing.assert_allclose(m.mean, (saved_mean + mu) / 2)
    m.mean, m.var = saved_mean.copy(), saved_var.copy()
    rebound = m.mean
    kf.diff(loss, x)
    assert m.mean is rebound
    np.testing.assert_allclose(m.mean, (saved_mean + mu) / 2)
    np.testing.assert_allclose(m.var, (saved_var + var) / 2)
    assert len(traces) == 1


def test_moments_used_twice_in_one_function_update_twice_as_eagerly():
    a, b = _batches(n=2)
    w, m, seen = kf.Param(kf.bnparams(3, "float64")), bnmoments(momentum=0.2), []

    def loss(a, b):
        first = kf.sum(batchnorm(a, m, w) ** 2)
        seen.append(type(m.mean))  # while tracing: the symbol of the updated mean
        return first + kf.sum(batchnorm(b, m, w) ** 3)

    for _ in range(3):
        kf.diff(loss, a, b)
    assert seen == [kf.Symbol]
    eager = _eager_moments([a, b] * 3, 0.2)
    np.testing.assert_allclose(m.mean, eager.mean, rtol=1e-12)
    np.testing.assert_allclose(m.var, eager.var, rtol=1e-12)


class _DeviceArray:
    """Stands in for a CuPy array: host values go in with .set()."""

    def __init__(self, values):
        self.values = np.array(values)
        self.shape, self.dtype = self.values.shape, self.values.dtype

    def set(self, host):
        self.values = host.copy()


def test_storing_moments_keeps_the_array_where_it_can():
    device = _DeviceArray([0.0, 0.0])
    readonly = np.zeros(2)
    readonly.flags.writeable = False
    m = bnmoments(mean=device, var=readonly)
    norm_moments._store_in_place(m, "_mean", np.array([1.0, 2.0]))
    assert m.mean is device and device.values.tolist() == [1.0, 2.0]
    norm_moments._store_in_place(m, "_var", np.array([3.0, 4.0]))
    assert m.var is not readonly and m.var.tolist() == [3.0, 4.0]
    norm_moments._store_in_place(m, "_var", np.array([1.0, 2.0, 3.0]))  # another shape: rebound
    assert m.var.tolist() == [1.0, 2.0, 3.0]


def test_gradcheck_through_batchnorm_in_diff():
    rs = np.random.RandomState(5)
    w = kf.Param(rs.randn(4))
    x = kf.Param(rs.randn(3, 2, 2, 2))
    assert kf.gradcheck(lambda: kf.sum(batchnorm(x, None, w) ** 3), rtol=1e-4, atol=1e-6)


# ---- errors ----


def test_shape_errors():
    with pytest.raises(kf.ShapeError, match=r"batchnorm: input must be .* 1 dimensions \(3,\)"):
        batchnorm(np.ones(3), training=True)
    with pytest.raises(kf.ShapeError, match=r"6 dimensions"):
        batchnorm(kf.placeholder("x", (1, 2, 1, 1, 1, 1)), training=True)
    with pytest.raises(kf.ShapeError, match=r"params \(5,\) must be \[gamma; beta\] of length "
                                            r"2C = 6 for x \(2, 3\)"):
        batchnorm(np.ones((2, 3)), None, np.ones(5), training=True)
    with pytest.raises(kf.ShapeError, match=r"gamma \(2,\) does not match the 3 channels"):
        batchnorm_train(kf.placeholder("x", (None, 3, 4)), np.ones(2), np.ones(2))
    with pytest.raises(kf.ShapeError, match="needs a floating-point input"):
        batchnorm_train(np.ones((2, 3), "int64"))


def test_moment_errors():
    with pytest.raises(kf.ShapeError, match=r"inference mode \(training=False\) needs moments"):
        batchnorm(np.ones((2, 3)))
    m = bnmoments(mean=np.zeros(4), var=np.ones(4), name="bn4")
    with pytest.raises(kf.ShapeError, match=r"running mean \(4,\) of moments 'bn4' does not "
                                            r"match the 3 channels of x \(2, 3\)"):
        batchnorm(np.ones((2, 3)), m)
    m = bnmoments(name="bnx")
    batchnorm(kf.placeholder("x", (None, 3)), m)
    with pytest.raises(kf.ShapeError, match=r"running mean \(3,\) of moments 'bnx' does not "
                                            r"match the 4 channels of x \(None, 4\)"):
        batchnorm(kf.placeholder("y", (None, 4)), m, training=True)
    with pytest.raises(ValueError, match="momentum must lie in"):
        bnmoments(momentum=1.5)


def test_moments_holding_a_graph_symbol_in_diff():
    m = bnmoments(name="bnsym")
    m.mean = kf.placeholder("mu", (3,), "float64")
    m.var = np.ones(3)
    w = kf.Param(kf.bnparams(3, "float64"))
    with pytest.raises(kf.TracingError, match=r"BNMoments.mean holds a symbol of a graph built "
                                              r"outside this kf.diff/kf.grad call"):
        kf.diff(lambda x: kf.sum(batchnorm(x, m, w)), np.ones((2, 3)))


def test_params_as_a_pair_and_of_another_dtype():
    rs = np.random.RandomState(6)
    x = rs.randn(4, 3).astype("float32")
    p = rs.randn(6)
    y = batchnorm(x, None, (p[:3], p[3:]), training=True)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, batchnorm(x, None, p, training=True), rtol=1e-6)
    np.testing.assert_allclose(y, ref_train(x.astype("float64"), p[:3], p[3:])[0], rtol=1e-4,
                               atol=1e-5)
