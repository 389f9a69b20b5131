"""Tests of knetflow.ops.elementwise: harness cases for every op, eager values against
NumPy/SciPy, dtypes, the gradient rules against central differences, zero-gradient
ops, the elu/selu/sigm definitions and their numerical stability, and shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import knetflow as kf
from knetflow.ops import elementwise as ew
from knetflow.ops.base import spec_of
from tests.ops.harness import Arg, Case, check
from tests.ops.threads import force_split, needs_pool

# Knet's selu constants (seed 000), written out here rather than read from the module
LAMBDA01 = 1.0507009873554805
ALPHA01 = 1.6732632423543778


def _elu_ref(x):
    return np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1)


def _selu_ref(x):
    return LAMBDA01 * np.where(x > 0, x, ALPHA01 * (np.exp(np.minimum(x, 0)) - 1))


def _sigm_ref(x):
    return 1 / (1 + np.exp(-x))


# ---- harness cases ----


def _case(name, fn, ref, kind="float", second=True, **kw):
    return Case(name, fn, ref, [Arg((3, 4), kind)], second=second, **kw)


CASES = [
    _case("exp", kf.exp, np.exp),
    _case("expm1", kf.expm1, np.expm1),
    _case("exp2", kf.exp2, np.exp2),
    _case("exp10", kf.exp10, lambda x: 10.0**x),
    _case("log", kf.log, np.log, "positive"),
    _case("log1p", kf.log1p, np.log1p, "positive"),
    _case("log2", kf.log2, np.log2, "positive"),
    _case("log10", kf.log10, np.log10, "positive"),
    _case("sqrt", kf.sqrt, np.sqrt, "positive"),
    _case("cbrt", kf.cbrt, np.cbrt, "positive"),
    _case("square", kf.square, np.square),
    _case("abs2", kf.abs2, np.square),
    _case("invx", kf.invx, lambda x: 1 / x, "positive"),
    _case("abs", kf.abs, np.abs, second=False),
    _case("sin", kf.sin, np.sin),
    _case("cos", kf.cos, np.cos),
    _case("tan", kf.tan, np.tan),
    _case("sinh", kf.sinh, np.sinh),
    _case("cosh", kf.cosh, np.cosh),
    _case("tanh", kf.tanh, np.tanh),
    # the inverse functions are shifted/scaled into the inside of their domains
    _case("asin", lambda x: kf.asin(0.9 * x), lambda x: np.arcsin(0.9 * x), "unit"),
    _case("acos", lambda x: kf.acos(0.9 * x), lambda x: np.arccos(0.9 * x), "unit"),
    _case("atan", kf.atan, np.arctan),
    _case("asinh", kf.asinh, np.arcsinh),
    _case("acosh", lambda x: kf.acosh(x + 1.5), lambda x: np.arccosh(x + 1.5), "positive"),
    _case("atanh", lambda x: kf.atanh(0.9 * x), lambda x: np.arctanh(0.9 * x), "unit"),
    _case("erf", kf.erf, sp.erf),
    _case("erfc", kf.erfc, sp.erfc),
    _case("erfinv", lambda x: kf.erfinv(0.9 * x), lambda x: sp.erfinv(0.9 * x), "unit"),
    _case("erfcinv", lambda x: kf.erfcinv(1 + 0.9 * x), lambda x: sp.erfcinv(1 + 0.9 * x),
          "unit"),
    _case("erfcx", kf.erfcx, sp.erfcx),
    _case("gamma", kf.gamma, sp.gamma, "positive"),
    _case("lgamma", kf.lgamma, sp.gammaln, "positive"),
    _case("loggamma", kf.loggamma, sp.gammaln, "positive"),
    _case("digamma", kf.digamma, sp.digamma, "positive"),
    _case("trigamma", kf.trigamma, lambda x: sp.polygamma(1, x), "positive"),
    _case("polygamma2", lambda x: kf.polygamma(x, 2), lambda x: sp.polygamma(2, x),
          "positive"),
    _case("sign", kf.sign, np.sign, second=False),
    _case("floor", kf.floor, np.floor, second=False),
    _case("ceil", kf.ceil, np.ceil, second=False),
    _case("round", kf.round, np.rint, second=False),
    _case("trunc", kf.trunc, np.trunc, second=False),
    _case("relu", kf.relu, lambda x: np.maximum(x, 0), second=False),
    Case("relu_grad", lambda g, y: ew.relu_grad(g, y), lambda g, y: g * (y > 0),
         [Arg((3, 4)), Arg((3, 4))], second=True),
    _case("sigm", kf.sigm, _sigm_ref),
    # elu/selu: the second derivative jumps at 0
    _case("elu", kf.elu, _elu_ref, second=False),
    _case("selu", kf.selu, _selu_ref, second=False),
    _case("cast", lambda x: kf.cast(x, "float64"), lambda x: x.astype("float64")),
    _case("cast_int", lambda x: kf.cast(x, "int32"), lambda x: x.astype("int32"), grad=False,
          second=False),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- eager values, dtypes and gradient rules, op by op ----

REAL = np.array([-2.7, -1.3, -0.6, -0.2, 0.3, 0.8, 1.4, 2.6])
POS = np.array([0.2, 0.5, 1.0, 1.7, 3.2, 5.5])
UNIT = np.array([-0.9, -0.5, -0.1, 0.2, 0.6, 0.85])
ABOVE1 = np.array([1.1, 1.5, 2.3, 4.0])
ERFC = np.array([0.1, 0.5, 1.0, 1.4, 1.9])
#: integer inputs inside each domain
INTS = {id(REAL): [-2, 0, 1, 3], id(POS): [1, 2, 5], id(UNIT): [0], id(ABOVE1): [2, 3],
        id(ERFC): [1]}

#: op name -> (NumPy/SciPy reference, input domain)
REFS = {
    "exp": (np.exp, REAL), "expm1": (np.expm1, REAL), "exp2": (np.exp2, REAL),
    "exp10": (lambda x: 10.0**x, REAL), "log": (np.log, POS), "log1p": (np.log1p, POS),
    "log2": (np.log2, POS), "log10": (np.log10, POS), "sqrt": (np.sqrt, POS),
    "cbrt": (np.cbrt, REAL), "square": (np.square, REAL), "invx": (lambda x: 1 / x, POS),
    "abs": (np.abs, REAL), "sin": (np.sin, REAL), "cos": (np.cos, REAL), "tan": (np.tan, REAL),
    "sinh": (np.sinh, REAL), "cosh": (np.cosh, REAL), "tanh": (np.tanh, REAL),
    "asin": (np.arcsin, UNIT), "acos": (np.arccos, UNIT), "atan": (np.arctan, REAL),
    "asinh": (np.arcsinh, REAL), "acosh": (np.arccosh, ABOVE1), "atanh": (np.arctanh, UNIT),
    "erf": (sp.erf, REAL), "erfc": (sp.erfc, REAL), "erfinv": (sp.erfinv, UNIT),
    "erfcinv": (sp.erfcinv, ERFC), "erfcx": (sp.erfcx, REAL), "gamma": (sp.gamma, POS),
    "lgamma": (sp.gammaln, POS), "digamma": (sp.digamma, POS), "sign": (np.sign, REAL),
    "floor": (np.floor, REAL), "ceil": (np.ceil, REAL), "round": (np.rint, REAL),
    "trunc": (np.trunc, REAL), "relu": (lambda x: np.maximum(x, 0), REAL),
    "sigm": (_sigm_ref, REAL), "elu": (_elu_ref, REAL), "selu": (_selu_ref, REAL),
}
ZERO_GRAD = ("sign", "floor", "ceil", "round", "trunc")
#: ops whose integer inputs keep their dtype; the rest are float math giving float64
KEEPS_INT = ZERO_GRAD + ("abs", "square", "relu")


def test_every_unary_op_has_a_reference():
    unary = {name for name, op in kf.REGISTRY.items()
             if op.__module__ == ew.__name__ and name not in ("cast", "polygamma", "relu_grad")}
    assert unary == set(REFS)


@pytest.mark.parametrize("name", sorted(REFS))
def test_value_float64(name):
    ref, x = REFS[name]
    y = getattr(kf, name)(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(REFS))
def test_value_float32(name):
    ref, x = REFS[name]
    x32 = x.astype(np.float32)
    y = getattr(kf, name)(x32)
    assert y.dtype == np.float32
    assert kf.get_op(name).infer(spec_of(x32)).dtype == "float32"
    np.testing.assert_allclose(y, ref(x32.astype(np.float64)), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFS))
def test_integer_input(name):
    ref, x = REFS[name]
    xi = np.array(INTS[id(x)], dtype=np.int32)
    y = getattr(kf, name)(xi)
    expected = "int32" if name in KEEPS_INT else "float64"
    assert y.dtype == expected
    assert kf.get_op(name).infer(spec_of(xi)).dtype == expected
    np.testing.assert_allclose(y, ref(xi.astype(np.float64)), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_compiled_integer_inputs_match_infer(dtype):
    # plans run a declared ufunc directly, without the op's forward
    x = kf.placeholder("x", (3,), dtype)
    names = sorted(name for name, (_, dom) in REFS.items() if dom is REAL)
    outs = [getattr(kf, name)(x) for name in names]
    values = kf.compile(outs).run({"x": np.array([-2, 0, 3], dtype=dtype)})
    for name, sym, value in zip(names, outs, values):
        assert np.asarray(value).dtype == sym.dtype, name


@pytest.mark.parametrize("name", sorted(set(REFS) - set(ZERO_GRAD)))
def test_grad_rule_matches_central_differences(name):
    # grad rules are knetflow expressions, so they also run eagerly on arrays
    fn, (_, x) = getattr(kf, name), REFS[name]
    h = 1e-6
    (gx,) = kf.get_op(name).grad(np.ones_like(x), fn(x), x)
    numeric = (fn(x + h) - fn(x - h)) / (2 * h)
    np.testing.assert_allclose(gx, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_polygamma(n):
    x = POS
    y = kf.polygamma(x, n)
    np.testing.assert_allclose(y, sp.polygamma(n, x), rtol=1e-10)
    assert kf.polygamma(x.astype(np.float32), n).dtype == np.float32
    (gx,) = kf.get_op("polygamma").grad(np.ones_like(x), y, x, n=n)
    np.testing.assert_allclose(gx, sp.polygamma(n + 1, x), rtol=1e-10)


def test_polygamma_zero_is_digamma_and_bad_orders_fail():
    np.testing.assert_allclose(kf.polygamma(POS, 0), sp.digamma(POS))
    for n in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n must be an integer >= 0"):
            kf.polygamma(POS, n)


def test_aliases():
    np.testing.assert_allclose(kf.trigamma(POS), sp.polygamma(1, POS))
    np.testing.assert_allclose(kf.loggamma(POS), sp.gammaln(POS))
    np.testing.assert_allclose(kf.abs2(REAL), REAL * REAL)
    x = kf.placeholder("x", (None, 2), "float64")
    assert kf.trigamma(x).node.op == "polygamma"
    assert kf.trigamma(x).node.attrs == {"n": 1}
    assert kf.loggamma(x).node.op == "lgamma"
    assert kf.abs2(x).node.op == "square"


def test_float16_is_kept_by_special_functions():
    x = np.array([0.25, 0.5], dtype=np.float16)
    for fn in (kf.erf, kf.gamma, kf.sigm, kf.elu, kf.exp):
        assert fn(x).dtype == np.float16


# ---- zero gradients and rounding ----


@pytest.mark.parametrize("name", ZERO_GRAD)
def test_zero_gradient(name):
    op = kf.get_op(name)
    x = REAL
    assert op.grad(np.ones_like(x), getattr(kf, name)(x), x) == (None,)
    assert op.saves == ()


def test_round_ties_to_even_like_julia():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    np.testing.assert_array_equal(kf.round(x), [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0])


def test_rounding_keeps_integers():
    x = np.array([-3, 0, 7], dtype=np.int64)
    for fn in (kf.floor, kf.ceil, kf.round, kf.trunc, kf.sign):
        y = fn(x)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, np.sign(x) if fn is kf.sign else x)


# ---- activations ----


def test_selu_and_elu_constants():
    assert kf.selu(np.array(1.0)) == pytest.approx(LAMBDA01, rel=1e-15)
    assert kf.selu(np.array(-np.inf)) == pytest.approx(-LAMBDA01 * ALPHA01, rel=1e-15)
    assert ew.SELU_LAMBDA == LAMBDA01 and ew.SELU_ALPHA == ALPHA01
    assert kf.elu(np.array(-np.inf)) == -1.0
    np.testing.assert_allclose(kf.elu(np.array([-1.0, 2.0])), [np.exp(-1.0) - 1, 2.0])


def test_activations_do_not_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(all="raise"):
        for dtype in (np.float32, np.float64):
            xd = x.astype(dtype)
            s = kf.sigm(xd)
            assert s.dtype == dtype
            np.testing.assert_allclose(s, [0.0, np.exp(-50.0), 0.5, 1.0, 1.0], rtol=1e-6)
            np.testing.assert_allclose(kf.elu(xd), [-1.0, -1.0, 0.0, 50.0, 1000.0])
            np.testing.assert_allclose(kf.selu(xd)[[0, 4]],
                                       [-LAMBDA01 * ALPHA01, LAMBDA01 * 1000], rtol=1e-6)


def test_elu_is_accurate_near_zero():
    # exp(x) - 1 would lose every digit here; expm1 keeps them
    x = np.array([-1e-10, -1e-20])
    np.testing.assert_allclose(kf.elu(x), x, rtol=1e-9)


def test_relu_gradient_is_zero_at_and_below_zero():
    x = np.array([-1.0, 0.0, 2.0])
    (gx,) = kf.get_op("relu").grad(np.ones_like(x), kf.relu(x), x)
    np.testing.assert_array_equal(gx, [0.0, 0.0, 1.0])


def test_cast():
    x = np.array([1.7, -2.2])
    y = kf.cast(x, np.float32)
    assert y.dtype == np.float32
    assert kf.cast(x, "int32").tolist() == [1, -2]
    out = np.empty(2, dtype=np.float32)
    assert kf.get_op("cast").forward(np, x, dtype="float32", out=out) is out
    (g,) = kf.get_op("cast").grad(np.ones(2, np.float32), y, x, dtype="float32")
    assert g.dtype == np.float64


# ---- symbols, NumPy's protocols, the special-function module ----


@pytest.mark.parametrize("ufunc, op", [
    (np.sin, "sin"), (np.arcsinh, "asinh"), (np.abs, "abs"), (np.around, "round"),
    (np.reciprocal, "invx"), (np.log1p, "log1p"), (np.square, "square"), (np.floor, "floor"),
])
def test_numpy_ufuncs_build_nodes(ufunc, op):
    x = kf.placeholder("x", (None, 3))
    y = ufunc(x)
    assert y.node.op == op
    assert y.shape == (None, 3)


def test_special_module():
    # the device kind of xp says (CuPy's: tests/devices/test_registry.py)
    assert ew._special(np) is sp


# ---- shapes and dtypes over random inputs ----

#: ops defined on all of [-3, 3]
_REAL_OPS = sorted(name for name, (_, dom) in REFS.items() if dom is REAL)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(_REAL_OPS),
       dtype=st.sampled_from(["float32", "float64", "int32", "int64"]))
def test_shapes_and_dtypes(data, name, dtype):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    if dtype.startswith("float"):
        elements = st.floats(-3, 3, width=int(dtype[-2:]))
    else:
        elements = st.integers(-3, 3)
    x = data.draw(hnp.arrays(dtype, shape, elements=elements))
    spec = kf.get_op(name).infer(spec_of(x))
    y = np.asarray(getattr(kf, name)(x))
    assert y.shape == shape and str(y.dtype) == spec.dtype
    tol = 1e-5 if spec.dtype == "float32" else 1e-10
    np.testing.assert_allclose(y, REFS[name][0](x.astype(np.float64)), rtol=tol, atol=tol)
    sym = getattr(kf, name)(kf.placeholder("x", (None,) + shape[1:], dtype))
    assert sym.spec == spec.with_shape((None,) + shape[1:])


@pytest.mark.parametrize("shape", [(3, 4), (65536,), (3, 65536 + 7), (70000,)])
def test_relu_in_a_plan_equals_the_eager_relu_small_blocked_and_strided(shape):
    # plans bind relu to an array of zeros (whole, or in blocks of _RELU_BLOCK elements)
    x = np.random.RandomState(0).randn(*shape).astype("float32")
    x.ravel()[:3] = [np.nan, -0.0, np.inf]
    ph = kf.placeholder("x", shape, "float32")
    plan = kf.compile([kf.relu(ph)])
    np.testing.assert_array_equal(plan.run({"x": x})[0], np.maximum(x, 0))
    if len(shape) == 2:
        xt = np.asfortranarray(x)  # not C-contiguous: the forward's path
        np.testing.assert_array_equal(plan.run({"x": xt})[0], np.maximum(x, 0))


# ---- relu's gradient on big arrays, split between threads (knetflow/ops/cpu_threads.py) ----


def _bound_relu_grad(g, y):
    from knetflow.ops.base import Spec

    specs = [spec_of(g), spec_of(y)]
    return kf.get_op("relu_grad").bind(np, {}, specs, Spec(g.shape, str(g.dtype)))


@needs_pool
@pytest.mark.parametrize("shape", [(2, 3), (7, 5, 3), (101, 64)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_relu_grad_matches_the_forward(shape, dtype, monkeypatch):
    rs = np.random.RandomState(0)
    g = rs.randn(*shape).astype(dtype)
    y = np.maximum(np.round(rs.randn(*shape)), 0).astype(dtype)     # zeros: no gradient
    y.flat[::7] = np.nan
    want = ew.ReluGrad.forward(np, g, y)
    force_split(monkeypatch, 2)
    fn = _bound_relu_grad(g, y)
    np.testing.assert_array_equal(fn(g, y), want)
    out = np.full_like(g, 7.0)
    assert fn(g, y, out=out) is out
    np.testing.assert_array_equal(out, want)
    assert fn(g, y, out=g) is g              # a plan may hand over g's buffer (inplace)
    np.testing.assert_array_equal(g, want)


def test_relu_grad_binds_only_big_arrays_of_one_shape(monkeypatch):
    from knetflow.ops import cpu_threads

    g = np.ones((4, 3), "float32")
    assert _bound_relu_grad(g, g) is None                   # below SPLIT_BYTES
    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 0)
    assert _bound_relu_grad(g, g) is not None
    assert _bound_relu_grad(g, np.ones((1, 3), "float32")) is None     # broadcast
    assert _bound_relu_grad(np.ones((), "float32"), np.ones((), "float32")) is None


def test_relu_grad_on_one_thread_budget_stays_on_this_thread(monkeypatch):
    from knetflow.ops import cpu_threads

    monkeypatch.setattr(cpu_threads, "SPLIT_BYTES", 0)
    monkeypatch.setattr(cpu_threads, "WORKERS", 1)
    monkeypatch.setattr(cpu_threads, "run", lambda jobs: pytest.fail("split on 1 thread"))
    g, y = np.arange(-3.0, 3.0).reshape(3, 2), np.arange(6.0).reshape(3, 2) - 2
    np.testing.assert_array_equal(_bound_relu_grad(g, y)(g, y), g * (y > 0))
