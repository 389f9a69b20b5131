"""kf.init (train/init.py, initializer_classes.py, initializers.py): both kinds of initializer."""

import numpy as np
import pytest

import knetflow as kf


def test_namespace_has_knet_functions_and_mxnet_classes():
    for name in ("xavier_uniform", "xavier", "xavier_normal", "gaussian", "bilinear", "Uniform",
                 "Normal", "Orthogonal", "Xavier", "Load", "Mixed"):
        assert hasattr(kf.init, name), name
    assert kf.init.xavier is kf.init.xavier_uniform


# ---- Knet ----


def test_xavier_uniform_range_and_spread():
    kf.seed(0)
    w = kf.init.xavier_uniform(200, 300)
    bound = np.sqrt(6 / 500)
    assert w.shape == (200, 300) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound
    assert abs(w.mean()) < 0.01 * bound
    assert np.abs(kf.init.xavier_uniform(200, 300, gain=2)).max() > 1.9 * bound


def test_xavier_fans_of_vectors_and_filters():
    kf.seed(1)
    v = kf.init.xavier(1000)  # Knet: fan_in = 1000, fan_out = 1
    assert np.abs(v).max() <= np.sqrt(6 / 1001)
    f = kf.init.xavier((8, 16, 3, 3))  # (Cout, Cin, kh, kw): fans 16*9 and 8*9
    assert f.shape == (8, 16, 3, 3)
    assert np.abs(f).max() <= np.sqrt(6 / (16 * 9 + 8 * 9))
    assert np.abs(f).max() > 0.95 * np.sqrt(6 / (16 * 9 + 8 * 9))


def test_xavier_normal_and_gaussian_statistics():
    kf.seed(2)
    w = kf.init.xavier_normal(300, 500)
    assert abs(w.std() - np.sqrt(2 / 800)) < 0.01 * np.sqrt(2 / 800)
    g = kf.init.gaussian(400, 500, mean=1.0, std=0.5, dtype="float64")
    assert g.dtype == np.float64 and abs(g.mean() - 1.0) < 0.005 and abs(g.std() - 0.5) < 0.005
    assert abs(kf.init.gaussian(100000).std() - 0.01) < 2e-4  # std=0.01 by default


def test_seed_makes_initializers_repeatable():
    kf.seed(5)
    a = (kf.init.xavier(3, 4), kf.init.Xavier()(3, 4), kf.init.Orthogonal()(3, 4))
    kf.seed(5)
    b = (kf.init.xavier(3, 4), kf.init.Xavier()(3, 4), kf.init.Orthogonal()(3, 4))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_bilinear_factor_2_and_3():
    w = kf.init.bilinear("float32", 2, 2, 3, 3)
    assert w.shape == (3, 3, 4, 4) and w.dtype == np.float32
    ramp = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(w[1, 1], np.outer(ramp, ramp))
    assert not w[0, 1].any() and not w[2, 0].any()  # only the channel diagonal
    w3 = kf.init.bilinear(3, 3, 1, 1, dtype="float64")
    assert w3.shape == (1, 1, 5, 5)
    ramp3 = np.array([1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(w3[0, 0], np.outer(ramp3, ramp3))


def test_bilinear_errors():
    with pytest.raises(ValueError, match="square"):
        kf.init.bilinear(2, 3, 1, 1)
    with pytest.raises(ValueError, match="channels must be equal, got 2 and 3"):
        kf.init.bilinear(2, 2, 2, 3)


# ---- MXNet ----


def test_uniform_and_normal():
    kf.seed(3)
    u = kf.init.Uniform()(500, 400)
    assert np.abs(u).max() <= 0.07 and np.abs(u).max() > 0.069
    assert abs(u.std() - 0.07 / np.sqrt(3)) < 5e-4
    n = kf.init.Normal(sigma=0.2)(500, 400)
    assert abs(n.std() - 0.2) < 2e-3 and abs(n.mean()) < 2e-3
    assert kf.init.Normal().sigma == 0.01 and kf.init.Uniform(0.5).scale == 0.5


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (4, 2, 3, 3)], ids=str)
@pytest.mark.parametrize("rand_type", ["uniform", "normal"])
def test_orthogonal(shape, rand_type):
    w = kf.init.Orthogonal(scale=1.5, rand_type=rand_type)(*shape, dtype="float64")
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(len(gram)), atol=1e-10)
    assert kf.init.Orthogonal().scale == 1.414


@pytest.mark.parametrize("factor_type, factor", [("avg", 15.0 * 9), ("in", 20.0 * 9),
                                                 ("out", 10.0 * 9)])
def test_xavier_factor_types(factor_type, factor):
    kf.seed(4)
    init = kf.init.Xavier(factor_type=factor_type, magnitude=2)
    bound = np.sqrt(2 / factor)
    assert init.scale((10, 20, 3, 3)) == pytest.approx(bound)
    w = init(10, 20, 3, 3)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.97 * bound
    g = kf.init.Xavier(rnd_type="gaussian", factor_type=factor_type, magnitude=2)(
        400, 400, dtype="float64")
    assert abs(g.std() - np.sqrt(2 / {"avg": 400, "in": 400, "out": 400}[factor_type])) < 1e-3


def test_xavier_defaults_and_errors():
    x = kf.init.Xavier()
    assert (x.rnd_type, x.factor_type, x.magnitude) == ("uniform", "avg", 3.0)
    assert x.scale((100, 200)) == pytest.approx(np.sqrt(3 / 150))
    with pytest.raises(ValueError, match="rnd_type must be 'uniform' or 'gaussian'"):
        kf.init.Xavier(rnd_type="laplace")
    with pytest.raises(ValueError, match="factor_type must be 'avg', 'in' or 'out'"):
        kf.init.Xavier(factor_type="sum")
    with pytest.raises(ValueError, match=r"at least 2 dims, got shape \(5,\)"):
        x(5)


def test_named_call_fills_by_suffix():
    init = kf.init.Uniform(0.5)
    arrays = {name: np.full((3, 4), 7.0) for name in
              ("fc1_weight", "fc1_bias", "bn_gamma", "bn_beta", "bn_moving_mean", "bn_moving_var")}
    for name, arr in arrays.items():
        assert init(name, arr) is arr
    assert np.abs(arrays["fc1_weight"]).max() <= 0.5 and (arrays["fc1_weight"] != 7).all()
    for name in ("fc1_bias", "bn_beta", "bn_moving_mean"):
        assert not arrays[name].any()
    for name in ("bn_gamma", "bn_moving_var"):
        assert (arrays[name] == 1).all()
    with pytest.raises(ValueError, match="unknown initialization pattern for 'data'"):
        init("data", np.zeros(3))


def test_as_a_param_init():
    kf.seed(6)
    w = kf.param("w", (20, 30), init=kf.init.Xavier(magnitude=6))
    plan = kf.compile([w * 1.0])
    value = plan.params["w"]
    assert value.shape == (20, 30) and value.dtype == np.float32
    assert np.abs(value).max() <= np.sqrt(6 / 25)


def test_load(tmp_path):
    saved = {"arg:fc1_weight": np.arange(6.0).reshape(2, 3), "aux:bn_moving_mean": np.ones(2)}
    init = kf.init.Load(saved, default_init=kf.init.Uniform(0.1))
    w = init("fc1_weight", np.zeros((2, 3)))
    np.testing.assert_array_equal(w, saved["arg:fc1_weight"])
    np.testing.assert_array_equal(init("bn_moving_mean", np.zeros(2)), [1.0, 1.0])
    other = init("fc2_weight", np.zeros((4, 4)))
    assert np.abs(other).max() <= 0.1 and other.any()  # from default_init
    with pytest.raises(ValueError, match=r"'fc1_weight' cannot be loaded: shape \(3, 3\) expected"
                                         r", the loaded array has shape \(2, 3\)"):
        init("fc1_weight", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="cannot initialize 'fc2_weight': not among the loaded"):
        kf.init.Load(saved)("fc2_weight", np.zeros(2))
    with pytest.raises(TypeError, match="needs the parameter's name"):
        init(2, 3)
    path = tmp_path / "p.npz"
    np.savez(path, fc1_weight=np.full((2, 2), 3.0))
    np.testing.assert_array_equal(kf.init.Load(str(path))("fc1_weight", np.zeros((2, 2))),
                                  np.full((2, 2), 3.0))


def test_mixed():
    init = kf.init.Mixed(["fc1_.*", ".*"], [kf.init.Constant(2.0), kf.init.Uniform(0.1)])
    np.testing.assert_array_equal(init("fc1_weight", np.zeros(2)), [2.0, 2.0])
    np.testing.assert_array_equal(init("fc1_bias", np.ones(2)), [0.0, 0.0])
    assert np.abs(init("fc2_weight", np.zeros((3, 3)))).max() <= 0.1
    with pytest.raises(ValueError, match=r"'conv_weight' matches none of the patterns \['fc.*'\]"):
        kf.init.Mixed(["fc.*"], [kf.init.Uniform()])("conv_weight", np.zeros(2))
    with pytest.raises(ValueError, match="2 patterns but 1 initializers"):
        kf.init.Mixed(["a", "b"], [kf.init.Uniform()])
    with pytest.raises(TypeError, match="needs the parameter's name"):
        init(3, 3)


def test_create_by_name_and_dumps():
    assert isinstance(kf.init.create("Xavier", magnitude=2), kf.init.Xavier)
    assert kf.init.create("uniform", scale=0.2).scale == 0.2
    assert kf.init.Xavier(magnitude=2).dumps() == (
        '["xavier", {"rnd_type": "uniform", "factor_type": "avg", "magnitude": 2}]')
    with pytest.raises(ValueError, match="unknown initializer 'he'; known: .*'xavier'"):
        kf.init.create("he")
