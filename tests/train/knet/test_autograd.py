"""The Knet-style front end (train/knet/autograd.py): Param, diff, grad, gradloss, params, value."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import knetflow as kf
from tests.train.knet.traced import counting
from knetflow.layers.dropout import dropout

W = kf.Param(np.array([[1.0, -1.0], [0.5, 2.0]]))  # a global Param, found by the rule too


# ---- the seed examples ----


def test_seed_diff_of_a_closure():
    x = kf.Param([1.0, 2.0, 3.0])
    r = kf.diff(lambda: kf.sum(x * x))
    np.testing.assert_array_equal(kf.grad(r, x), [2.0, 4.0, 6.0])
    assert kf.value(r) == 14.0


def test_seed_grad_of_a_function():
    x = kf.Param([1.0, 2.0, 3.0])

    def f(x):
        return kf.sum(x * x)

    np.testing.assert_array_equal(kf.grad(f)(x), [2.0, 4.0, 6.0])
    g, loss = kf.gradloss(f)(x)
    np.testing.assert_array_equal(g, [2.0, 4.0, 6.0])
    assert loss == 14.0


def test_grad_of_plain_arrays_and_argnum():
    np.testing.assert_array_equal(kf.grad(lambda x: kf.sum(x * x))(np.array([1.0, 2.0])),
                                  [2.0, 4.0])
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    np.testing.assert_array_equal(kf.grad(lambda a, b: kf.sum(a * b), argnum=1)(a, b), a)
    with pytest.raises(TypeError, match="give argnum by keyword"):
        kf.grad(lambda a, b: kf.sum(a * b), 1)


def test_diff_with_arguments_and_keywords():
    w = kf.Param(np.array([2.0, 3.0]))
    r = kf.diff(lambda x, scale=1.0: kf.sum(w * x) * scale, np.array([1.0, 1.0]), scale=2.0)
    assert kf.value(r) == 10.0
    np.testing.assert_array_equal(kf.grad(r, w), [2.0, 2.0])


# ---- Params are found: passed, captured, global, in objects ----


def test_captured_and_global_params_are_found():
    b = kf.Param(np.array([0.5, -0.5]))
    x = np.array([[1.0, 2.0]])
    r = kf.diff(lambda: kf.sum(kf.tanh(x @ W + b)))
    assert {id(p) for p in r.params} == {id(W), id(b)}
    t = 1 - np.tanh(x @ W.value + b.value) ** 2
    np.testing.assert_allclose(kf.grad(r, b), t[0])
    np.testing.assert_allclose(kf.grad(r, W), x.T @ t)


def test_params_of_an_object():
    class Model:
        def __init__(self):
            self.w = kf.Param(np.array([1.0, 2.0]))

        def __call__(self, x):
            return kf.sum(self.w * x)

    model = Model()
    r = kf.diff(model, np.array([3.0, 4.0]))
    np.testing.assert_array_equal(kf.grad(r, model.w), [3.0, 4.0])


def test_unused_param_has_no_gradient():
    u, v = kf.Param(np.ones(2)), kf.Param(np.ones(2))
    r = kf.diff(lambda: kf.sum(u * 3.0))
    assert kf.grad(r, v) is None
    assert r.params == [u]


def test_gradloss_of_an_argument_the_function_ignores():
    g, loss = kf.gradloss(lambda a, b: kf.sum(b * b))(np.ones(3), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(g, np.zeros(3))
    assert loss == 5.0


# ---- the cache: values are fed, never frozen; new shapes retrace ----


def test_param_value_updated_between_calls_is_seen():
    x = kf.Param([1.0, 2.0, 3.0])

    def f():
        return kf.sum(x * x)

    first = kf.diff(f)
    x.value = np.array([4.0, 5.0, 6.0])
    second = kf.diff(f)
    np.testing.assert_array_equal(kf.grad(second, x), [8.0, 10.0, 12.0])
    np.testing.assert_array_equal(kf.grad(first, x), [2.0, 4.0, 6.0])  # not overwritten
    assert (kf.value(first), kf.value(second)) == (14.0, 77.0)


def test_captured_array_is_fed_each_call():
    q = kf.Param([1.0, 2.0])
    arr = np.array([1.0, 1.0])

    def f():
        return kf.sum(q * arr)

    np.testing.assert_array_equal(kf.grad(kf.diff(f), q), [1.0, 1.0])
    arr[:] = 5.0
    np.testing.assert_array_equal(kf.grad(kf.diff(f), q), [5.0, 5.0])




def test_traced_once_per_signature():
    f, calls = counting(lambda x: kf.sum(x * x))
    for n in (3, 3, 3, 4, 3, 4):
        np.testing.assert_array_equal(kf.grad(f)(np.arange(float(n))), 2 * np.arange(n))
    assert len(calls) == 2
    kf.grad(f)(np.arange(3, dtype="float32"))
    assert len(calls) == 3


def test_captured_param_of_a_new_shape_retraces():
    x = kf.Param([1.0, 2.0, 3.0])
    f, calls = counting(lambda: kf.sum(x * x))
    np.testing.assert_array_equal(kf.grad(kf.diff(f), x), [2.0, 4.0, 6.0])
    x.value = np.array([1.0, 2.0])
    np.testing.assert_array_equal(kf.grad(kf.diff(f), x), [2.0, 4.0])
    x.value = np.array([1.0, 2.0], dtype="float32")
    g = kf.grad(kf.diff(f), x)
    assert g.dtype == np.dtype("float32")
    assert len(calls) == 3


def test_replaced_param_attribute_is_seen():
    class Model:
        def __init__(self, w):
            self.w = kf.Param(np.array(w))

        def __call__(self, x):
            return kf.sum(self.w * x)

    model, x = Model([1.0, 2.0]), np.array([3.0, 4.0])
    assert kf.value(kf.diff(model, x)) == 11.0
    model.w = kf.Param(np.array([10.0, 20.0]))
    r = kf.diff(model, x)
    assert kf.value(r) == 110.0
    np.testing.assert_array_equal(kf.grad(r, model.w), [3.0, 4.0])


def test_new_closure_contents_retrace():
    def scaled(k):
        return lambda z: kf.sum(z * k)

    np.testing.assert_array_equal(kf.grad(scaled(2.0))(np.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(kf.grad(scaled(3.0))(np.ones(2)), [3.0, 3.0])


def test_dropout_drops_while_differentiating():
    kf.seed(0)
    x = kf.Param(np.ones(1000))
    g = kf.grad(kf.diff(lambda: kf.sum(dropout(x, 0.5))), x)
    assert set(np.unique(g)) == {0.0, 2.0}


# ---- errors ----


def test_non_scalar_output():
    x = kf.Param([1.0, 2.0, 3.0])
    with pytest.raises(kf.ShapeError, match=r"must return a scalar to differentiate, got shape "
                                            r"\(3,\) \(at test_autograd.py:\d+\); reduce it"):
        kf.diff(lambda: x * 2.0)
    with pytest.raises(kf.ShapeError, match="must return a scalar"):
        kf.grad(lambda x: x * 2.0)(np.ones(3))


def test_output_not_computed_from_params():
    with pytest.raises(kf.TracingError, match="returned float, not a value computed from its "
                                              "Params; nothing to differentiate"):
        kf.diff(lambda: 3.0)


def test_python_control_flow_on_a_traced_value():
    x = kf.Param([1.0, -1.0])
    with pytest.raises(kf.TracingError, match="use kf.where"):
        kf.diff(lambda: kf.sum(x) if kf.sum(x) > 0 else kf.sum(-x))


# ---- Param, params, value ----


def test_param_basics():
    p = kf.Param([1, 2, 3])
    assert p.value.dtype == np.dtype("float64")  # integer values become floats
    assert (p.shape, p.ndim, p.size, len(p)) == ((3,), 1, 3, 3)
    assert p.opt is None and kf.Param(1.0, opt="adam").opt == "adam"
    np.testing.assert_array_equal(np.asarray(p), [1.0, 2.0, 3.0])
    assert repr(p) == "Param(array([1., 2., 3.]))"
    np.testing.assert_array_equal(p * 2, [2.0, 4.0, 6.0])  # outside a trace: plain arrays


def test_params_of_nested_containers_and_objects():
    a, b, c, d = (kf.Param(np.full(2, float(k))) for k in range(4))

    class Layer:
        def __init__(self):
            self.w, self.b = a, b
            self.name = "dense"

    class Net:
        def __init__(self):
            self.layers = [Layer(), {"extra": (c, [d, "text", 3])}]
            self.again = a  # found once

    assert kf.params(Net()) == [a, b, c, d]
    assert kf.params({"k": [a, (b,)], "n": None}) == [a, b]
    assert kf.params(5) == [] and kf.params(np.ones(3)) == []


def test_params_and_value_of_a_diff_result():
    x = kf.Param([1.0, 2.0])
    r = kf.diff(lambda: kf.sum(x * 3.0))
    assert kf.params(r) == [x]
    assert kf.value(r) == 9.0 and kf.value(x) is x.value
    assert kf.value(5) == 5 and kf.value("s") == "s"


# ---- property: gradients of broadcast products match NumPy ----


@settings(max_examples=30, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3,
                                                max_side=3), data=st.data())
def test_grad_of_broadcast_product(shapes, data):
    (sa, sb), so = shapes.input_shapes, shapes.result_shape
    floats = st.floats(-2, 2, allow_nan=False, width=64)
    a = kf.Param(data.draw(hnp.arrays("float64", sa, elements=floats)))
    b = kf.Param(data.draw(hnp.arrays("float64", sb, elements=floats)))
    r = kf.diff(lambda: kf.sum(a * b))
    ones = np.ones(so)
    want_a = (ones * b.value).sum(axis=tuple(range(len(so) - len(sa))))
    want_a = want_a.sum(axis=tuple(k for k, d in enumerate(sa) if d == 1), keepdims=True)
    np.testing.assert_allclose(kf.grad(r, a), want_a.reshape(sa), rtol=1e-12, atol=1e-12)
    assert kf.value(r) == pytest.approx(float(np.sum(a.value * b.value)))


def test_np_asarray_of_a_param_inside_a_trace_is_refused():
    p = kf.Param(np.array([1.0, 2.0]))
    with pytest.raises(kf.TracingError, match=r"np.asarray of a kf.Param \(\(2,\) float64\) "
                                              r"inside a function being differentiated"):
        kf.diff(lambda: kf.sum(p * np.asarray(p)))
    np.testing.assert_array_equal(np.asarray(p), [1.0, 2.0])  # outside a trace: its array
