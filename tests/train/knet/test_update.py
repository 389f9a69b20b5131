"""kf.update (train/knet/update.py): Knet's update! forms, in place."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.train import optim


def test_array_with_sgd_keywords():
    w = np.array([1.0, 2.0])
    out = kf.update(w, np.array([1.0, -1.0]))
    assert out is w
    np.testing.assert_allclose(w, [0.9, 2.1])  # SGD lr=0.1 by default
    kf.update(w, np.array([10.0, 0.0]), lr=0.5, gclip=1.0)
    np.testing.assert_allclose(w, [0.4, 2.1])


def test_array_with_an_optimizer_keeps_its_state():
    w, opt = np.zeros(2), optim.Momentum(lr=1.0, gamma=0.5)
    kf.update(w, np.ones(2), opt)
    kf.update(w, np.ones(2), opt)
    np.testing.assert_allclose(w, [-2.5, -2.5])  # v: -1, then -1.5
    np.testing.assert_allclose(opt.state[""]["velocity"], [-1.5, -1.5])


def test_param_uses_its_opt():
    p = kf.Param(np.array([1.0, 1.0]), opt=optim.SGD(lr=0.5))
    kf.update(p, np.array([1.0, 2.0]))
    np.testing.assert_allclose(p.value, [0.5, 0.0])
    q = kf.Param(np.array([1.0]))  # no opt: SGD with lr
    kf.update(q, np.array([1.0]), lr=0.25)
    np.testing.assert_allclose(q.value, [0.75])
    assert q.opt is None


def test_tuple_list_and_dict_forms():
    w = (np.ones(2), np.ones(3))
    kf.update(w, (np.ones(2), np.ones(3)), (optim.SGD(lr=0.5), optim.SGD(lr=0.25)))
    np.testing.assert_allclose(w[0], [0.5, 0.5])
    np.testing.assert_allclose(w[1], [0.75] * 3)
    ws = [np.ones(2), np.ones(2)]
    kf.update(ws, [np.ones(2), None])  # None: an unused weight stays
    np.testing.assert_allclose(ws[0], [0.9, 0.9])
    np.testing.assert_allclose(ws[1], [1.0, 1.0])
    d = {"a": np.ones(2), "b": np.ones(2)}
    kf.update(d, {"a": np.ones(2)}, {"a": optim.SGD(lr=1.0), "b": optim.SGD()})  # fewer grads
    np.testing.assert_allclose(d["a"], [0.0, 0.0])
    np.testing.assert_allclose(d["b"], [1.0, 1.0])


def test_one_optimizer_for_a_collection_keeps_state_per_entry():
    opt = optim.Adam()
    ws = [np.ones(2), np.ones(3)]
    kf.update(ws, [np.ones(2), np.ones(3)], opt)
    assert set(opt.state) == {"0", "1"}
    assert opt.state["1"]["m"].shape == (3,)
    d = {"w": np.ones(2)}
    opt2 = optim.Momentum()
    kf.update(d, {"w": np.ones(2)}, opt2)
    assert set(opt2.state) == {"w"}


def test_named_params_in_a_list_key_state_by_name():
    a, b = kf.Param(np.ones(2), name="a"), kf.Param(np.ones(2), name="b")
    opt = optim.Momentum()
    kf.update([a, b], [np.ones(2), np.ones(2)], opt)
    assert set(opt.state) == {"a", "b"}
    assert a.opt is None  # update never sets .opt; minimize does


def test_dict_with_multioptimizer_or_partial_dict():
    d = {"fc1_weight": np.ones(2), "fc1_bias": np.ones(2)}
    m = optim.MultiOptimizer({"default": optim.SGD(lr=1.0), "bias": optim.SGD(lr=0.5)})
    kf.update(d, {k: np.ones(2) for k in d}, m)
    np.testing.assert_allclose(d["fc1_weight"], [0.0, 0.0])
    np.testing.assert_allclose(d["fc1_bias"], [0.5, 0.5])
    # a dict of optimizers that misses a key works like a MultiOptimizer
    d2 = {"x_weight": np.ones(1), "x_bias": np.ones(1)}
    kf.update(d2, {k: np.ones(1) for k in d2}, {"default": optim.SGD(lr=1.0)})
    np.testing.assert_allclose(d2["x_bias"], [0.0])


def test_float32_weights_take_float64_gradients():
    w = np.ones(2, "float32")
    kf.update(w, np.array([1.0, 1.0]), optim.Adam(lr=0.5))
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [0.5, 0.5], rtol=1e-4)


def test_errors_name_lengths_and_shapes():
    with pytest.raises(ValueError, match="differ in length: 2, 1, 2"):
        kf.update([np.ones(1), np.ones(1)], [np.ones(1)])
    with pytest.raises(ValueError, match=r"gradient shape \(3,\) does not match weight shape"):
        kf.update(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match=r"gradients for \['z'\]"):
        kf.update({"a": np.ones(1)}, {"z": np.ones(1)})
    with pytest.raises(TypeError, match="cannot update a list in place"):
        kf.update([[1.0, 2.0]], [np.ones(2)])
    with pytest.raises(TypeError, match="expected an optimizer"):
        kf.update(np.ones(2), np.ones(2), "adam")


def test_nested_containers_and_numbers_as_kf_grad_returns_them():
    w = {"dense": [np.ones(2), 0.5], "out": (np.ones(1), {"b": np.float32(1.0)})}
    g = {"dense": [np.ones(2), 1.0], "out": (None, {"b": np.float32(2.0)})}
    opts = {"dense": [optim.SGD(lr=0.5), optim.SGD(lr=0.25)], "out": optim.Momentum(lr=0.5)}
    kf.update(w, g, opts)
    np.testing.assert_allclose(w["dense"][0], [0.5, 0.5])
    assert w["dense"][1] == 0.25 and type(w["dense"][1]) is float
    np.testing.assert_allclose(w["out"][0], [1.0])  # None: unused, left as it is
    assert w["out"][1]["b"] == np.float32(0.0) and type(w["out"][1]["b"]) is np.float32
    assert set(opts["out"].state) == {"out.1.b"}
    # the seed's loop, with update and one Adam for the list: state per position
    loss = lambda w, x: kf.sum((w[0] * x + w[1]) ** 2)  # noqa: E731
    w, adam = [np.ones(3), 1.0], optim.Adam(lr=0.1)
    for _ in range(3):
        kf.update(w, kf.grad(loss)(w, np.ones(3)), adam)
    assert set(adam.state) == {"0", "1"} and type(w[1]) is float and w[1] < 1.0


def test_a_number_where_it_cannot_be_replaced():
    with pytest.raises(TypeError, match=r"cannot update a float in place; .*keep it in a list"):
        kf.update(0.5, 1.0)
    with pytest.raises(TypeError, match=r"cannot update a float in place"):
        kf.update((np.ones(1), 0.5), (np.ones(1), 1.0))


@pytest.mark.parametrize("make_opt", [None, lambda: optim.SGD(lr=0.3, wdecay=0.1),
                                      lambda: optim.Adam(lr=0.01),
                                      lambda: optim.SGD(lr=0.3, gradient_clip_norm=0.5)])
def test_lists_of_params_and_single_params_update_as_the_general_path(make_opt):
    """Params on the host take a shortcut past the container walk (and plain SGD runs in
    place); it must leave the same weights and state as the walk, which a dict of the
    same Params (always walked) takes."""
    rng = np.random.default_rng(3)
    values = [rng.standard_normal((4, 3)).astype("float32"), rng.standard_normal(3)]
    grads = [rng.standard_normal((4, 3)).astype("float32"), rng.standard_normal(3)]

    def params():
        return [kf.Param(v.copy(), opt=None if make_opt is None else make_opt())
                for v in values]

    listed, single, walked = params(), params(), params()
    for _ in range(3):
        assert kf.update(listed, grads, lr=0.2) is listed
        for p, g in zip(single, grads):
            assert kf.update(p, g, lr=0.2) is p
        kf.update({"a": walked[0], "b": walked[1]}, {"a": grads[0], "b": grads[1]}, lr=0.2)
    for a, b, c in zip(listed, single, walked):
        np.testing.assert_array_equal(a.value, c.value)
        if make_opt is None or make_opt().gradient_clip_norm is None:  # no group norm
            np.testing.assert_array_equal(b.value, c.value)
        assert a.value.dtype == c.value.dtype
        for slot, v in (c.opt.state.get("", {}) if c.opt else {}).items():
            np.testing.assert_array_equal(a.opt.state[""][slot], v)


def test_the_in_place_sgd_step_keeps_the_array_and_casts_a_gradient_of_another_dtype():
    p = kf.Param(np.ones(3, np.float32))
    array = p.value
    kf.update(p, np.array([1.0, 2.0, 3.0]), lr=0.5)          # float64 gradient
    assert p.value is array and array.dtype == np.float32
    np.testing.assert_array_equal(array, np.float32([0.5, 0.0, -0.5]))
    with pytest.raises(ValueError, match=r"gradient shape \(2,\) does not match weight shape"):
        kf.update(p, np.ones(2, np.float32), lr=0.5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # float16: in float32 (optim)
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_the_sgd_step_on_one_element_rounds_as_the_array_form(shape, dtype):
    """One element is updated through its scalar (NumPy's in-place ufunc on it is slow):
    the same float operations in the weight's precision, the array kept."""
    rng = np.random.default_rng(4)
    for lr in (0.1, 0.3, 1e-3):
        w = np.asarray(rng.standard_normal(shape), dtype)
        g = np.asarray(rng.standard_normal(shape), dtype)
        want = w - lr * g  # NumPy's array arithmetic in the weight's dtype
        array = w
        kf.update(w, g, lr=lr)
        assert w is array and w.dtype == want.dtype and w.shape == want.shape
        np.testing.assert_array_equal(w, want)
