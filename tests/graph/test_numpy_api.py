"""NumPy's protocols on knetflow values (graph/numpy_api.py, numpy_table.py): when a call
builds nodes, what is refused and how the error reads, Params inside and outside a trace,
the bugs the by-name lookup had, and docs/NUMPY.md kept in sync with the table."""

import importlib
import inspect
import pathlib
import re
import warnings

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph import numpy_api
from knetflow.graph.numpy_table import FUNCTIONS
from knetflow.graph.numpy_ufuncs import UFUNCS

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "NUMPY.md"
CASE_MODULES = ("test_numpy_functions", "test_numpy_linalg", "test_numpy_ufuncs",
                "test_numpy_methods")


@pytest.fixture
def x():
    return kf.placeholder("x", (3, 4), "float64")


# ---- the bugs of the by-name lookup ----


def test_vstack_of_one_traced_vector_has_numpys_gradient():
    # Knet's vcat made (1, n) rows of it; NumPy's vstack of a 1-D array is a column (n, 1)
    w = np.array([[1.0], [2.0], [3.0]])
    a = np.array([0.5, -1.0, 2.0])
    g = kf.grad(lambda a: np.sum(np.vstack(a) * w))(a)
    np.testing.assert_allclose(g, [1.0, 2.0, 3.0])


def test_linalg_norm_is_the_norm_not_a_module():
    a = np.array([3.0, -4.0])
    g, loss = kf.gradloss(lambda a: np.linalg.norm(a))(a)
    assert loss == pytest.approx(5.0)
    np.testing.assert_allclose(g, a / 5.0)


def test_row_stack_dtype_argument_is_accepted():
    if not hasattr(np, "row_stack"):
        pytest.skip("this NumPy has no row_stack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        g = kf.grad(lambda a: np.sum(np.row_stack([a, 2 * a])))(np.ones(3))
    np.testing.assert_allclose(g, [3.0, 3.0, 3.0])


def test_ufunc_keyword_arguments_at_numpys_defaults_are_accepted(x):
    y = np.add(x, 1.0, out=None, where=True, casting="same_kind", order="K", dtype="float64")
    assert y.dtype == np.float64 and y.shape == (3, 4)
    assert np.exp(x, dtype=np.float32).dtype == np.float32


# ---- refusals name the function and what is supported ----


@pytest.mark.parametrize("call, name", [
    (lambda x: np.sort(x), "np.sort"),
    (lambda x: np.argsort(x), "np.argsort"),
    (lambda x: np.median(x), "np.median"),
    (lambda x: np.percentile(x, 50), "np.percentile"),
    (lambda x: np.unique(x), "np.unique"),
    (lambda x: np.nonzero(x), "np.nonzero"),
    (lambda x: np.cumprod(x), "np.cumprod"),
    (lambda x: np.isclose(x, x), "np.isclose"),
    (lambda x: np.allclose(x, x), "np.allclose"),
    (lambda x: np.nan_to_num(x), "np.nan_to_num"),
    (lambda x: np.pad(x, 1), "np.pad"),
    (lambda x: np.fft.fft(x), "np.fft.fft"),
    (lambda x: np.linalg.qr(x), "np.linalg.qr"),
])
def test_unsupported_functions_are_named(x, call, name):
    with pytest.raises(kf.TracingError) as info:
        call(x)
    message = str(info.value)
    assert message.startswith(f"{name} is not supported on knetflow symbols")
    assert "docs/NUMPY.md" in message


@pytest.mark.parametrize("call, match", [
    (lambda x: np.sum(x, where=x > 0), r"^np\.sum: the argument where=.*knetflow takes: a, "
                                       r"axis, dtype, keepdims; out only as None"),
    (lambda x: np.sum(x, initial=1.0), r"^np\.sum: the argument initial=1\.0"),
    (lambda x: np.mean(x, out=np.empty(())), r"^np\.mean: the argument out="),
    (lambda x: np.max(x, 0, np.empty(4)), r"^np\.max: the argument out="),
    (lambda x: np.var(x, mean=np.zeros((3, 1))), r"^np\.var: the argument mean="),
    (lambda x: np.reshape(x, 12, order="F"), r"^np\.reshape: order='F'"),
    (lambda x: np.ravel(x, "K"), r"^np\.ravel: order='K'"),
    (lambda x: np.zeros_like(x, shape=(2,)), r"^np\.zeros_like: the argument shape=\(2,\)"),
    (lambda x: np.take(x, [0], mode="clip"), r"^np\.take: the argument mode='clip'"),
    (lambda x: np.concatenate([x, x], out=np.empty((6, 4))), r"^np\.concatenate: .*out="),
    (lambda x: np.where(x > 0), r"^np\.where: np\.where\(condition\) with one argument"),
    (lambda x: np.argmax(kf.placeholder("d", (None,))), r"^np\.argmax: .*dynamic"),
    (lambda x: np.tile(kf.placeholder("d", (None, 2)), 2), r"^np\.tile: .*dynamic"),
])
def test_unsupported_arguments_are_named(x, call, match):
    with pytest.raises(kf.TracingError, match=match) as info:
        call(x)
    assert "is not supported on knetflow symbols" in str(info.value)


def test_wrong_arguments_are_numpys_errors(x):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'foo'"):
        np.sum(x, foo=1)  # NumPy's own dispatcher refuses it
    with pytest.raises(TypeError, match=r"^np\.sum: got an unexpected keyword argument 'foo'"):
        numpy_api.array_function(np.sum, (x,), {"foo": 1})
    with pytest.raises(np.exceptions.AxisError):
        np.sum(x, axis=2)
    with pytest.raises(ValueError, match="either both or neither"):
        np.where(x > 0, x)
    with pytest.raises(ValueError, match="ddof and correction"):
        np.var(x, ddof=1, correction=1)
    with pytest.raises(kf.ShapeError, match=r"concat: .*differ on axis"):
        np.concatenate([x, kf.placeholder("y", (2, 3))])


def _dispatched(module):
    """Public functions of a NumPy module that go through __array_function__."""
    for name in dir(module):
        obj = getattr(module, name)
        if not name.startswith("_") and hasattr(obj, "_implementation"):
            yield obj


def test_every_other_numpy_function_is_refused_by_name(x):
    # never NotImplemented falling through to NumPy, never another knetflow op
    count = 0
    for module in (np, np.linalg, np.fft):
        for func in _dispatched(module):
            if func in FUNCTIONS:
                continue
            with pytest.raises(kf.TracingError, match=rf"^np\.\S*{func.__name__} is not "):
                numpy_api.array_function(func, (x,), {})
            count += 1
    assert count > 100


def test_every_other_ufunc_is_refused_by_name(x):
    ufuncs = [getattr(np, n) for n in dir(np) if isinstance(getattr(np, n), np.ufunc)]
    others = [u for u in ufuncs if u not in UFUNCS]
    assert len(others) > 10
    for u in others:
        with pytest.raises(kf.TracingError, match=rf"^np\.{u.__name__} is not supported"):
            numpy_api.array_ufunc(u, "__call__", (x,) * u.nin, {})


# ---- Params: traced inside kf.diff/kf.grad, plain arrays outside ----


def test_params_inside_a_trace_build_nodes():
    w = kf.Param(np.array([[1.0, -2.0], [0.5, 3.0]]))
    x = np.array([1.0, 2.0])
    r = kf.diff(lambda: np.sum(np.tanh(np.dot(w, x))))
    want = np.sum(np.tanh(w.value @ x))
    assert r.value == pytest.approx(want)
    t = np.tanh(w.value @ x)
    np.testing.assert_allclose(kf.grad(r, w), np.outer(1 - t * t, x))


def test_params_outside_a_trace_are_their_arrays():
    p = kf.Param(np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]]))
    v = p.value
    for got, want in [(np.exp(p), np.exp(v)), (np.vstack([p, p]), np.vstack([v, v])),
                      (np.linalg.norm(p, axis=1), np.linalg.norm(v, axis=1)),
                      (np.sort(p), np.sort(v)), (np.ones(3) * p, np.ones(3) * v),
                      (p.sum(axis=0), v.sum(axis=0)), (p.T, v.T), (p.argmax(), v.argmax()),
                      (np.add.reduce(p), np.add.reduce(v))]:
        assert isinstance(got, (np.ndarray, np.generic))
        np.testing.assert_array_equal(got, want)
    assert p.tolist() == v.tolist() and p.item(0) == 1.0


def test_symbols_and_untraced_params_mix_as_constants():
    p = kf.Param(np.array([1.0, 2.0]))
    x = kf.placeholder("x", (2,), "float64")
    y = np.add(x, p)
    assert isinstance(y, kf.Symbol)
    assert kf.compile([y]).run({"x": np.ones(2)})[0].tolist() == [2.0, 3.0]


# ---- the table, its tests and docs/NUMPY.md agree ----


def test_adapters_take_only_numpys_parameters():
    for entry in FUNCTIONS.values():
        params = entry.signature.parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        extra = entry.takes - set(params)
        assert not extra, f"{entry.name} adapter takes {extra}, not in NumPy's signature"


def _case_names() -> set:
    names = set()
    for module in CASE_MODULES:
        for c in getattr(importlib.import_module(f"tests.graph.{module}"), "CASES", []):
            names.add(c.name.split("[")[0])
    return names


# functions no harness case can check (no graph value to compare), with their tests
NO_CASE = {
    "np.empty_like": "test_numpy_functions.py::test_empty_like_has_numpys_shape_and_dtype",
    "np.shape": "test_numpy_functions.py::test_static_facts",
    "np.ndim": "test_numpy_functions.py::test_static_facts",
    "np.size": "test_numpy_functions.py::test_static_facts",
}


def test_every_function_in_the_table_has_a_case():
    covered = _case_names() | set(NO_CASE)
    missing = sorted(e.name for e in FUNCTIONS.values() if e.name not in covered)
    assert not missing, f"functions in the table with no test case: {missing}"


def _documented() -> str:
    return DOCS.read_text()


def test_docs_list_every_function_ufunc_and_method():
    text = _documented()
    names = ([e.name for e in FUNCTIONS.values()] + [u.name for u in UFUNCS.values()]
             + [f"np.{u.__name__}.reduce" for u in (np.add, np.multiply, np.maximum)]
             + [f".{m}" for m in numpy_api.supported_methods()])
    missing = [n for n in names if f"`{n}" not in text]
    assert not missing, f"in the code table but not in docs/NUMPY.md: {missing}"


def test_docs_list_nothing_the_table_lacks():
    # every `np.name` the docs give as supported is a table entry or an alias of one
    text = _documented().split("## Refused")[0]
    for name in sorted(set(re.findall(r"`(np\.[A-Za-z_][\w.]*)", text))):
        if name == "np.row_stack" or name.rsplit(".", 1)[-1] in ("reduce", "accumulate", "outer"):
            continue  # NumPy's row_stack calls np.vstack; ufunc methods go by their ufunc
        obj = np
        for part in name.split(".")[1:]:
            obj = getattr(obj, part, None)
        assert obj in FUNCTIONS or obj in UFUNCS, f"docs/NUMPY.md lists {name}: not in the table"
