"""ndarray methods and properties on knetflow values (graph/symbol.py `Operators`, so
Symbols and traced Params alike): NumPy's values, dtypes and gradients; methods that need
a concrete value are refused by name."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph import numpy_api
from tests.graph.numpy_harness import F, case, check

M = F((3, 4))
X = F((2, 3, 4))

CASES = [
    case("x.sum", lambda x: x.sum(axis=1, keepdims=True), X),
    case("x.sum[positional axis, dtype]", lambda x: x.sum(0, np.float64), M),
    case("x.prod", lambda x: x.prod(axis=-1), M),
    case("x.mean", lambda x: x.mean((0, 2)), X),
    case("x.max", lambda x: x.max(axis=0), M),
    case("x.min", lambda x: x.min(), M),
    case("x.var", lambda x: x.var(axis=1, ddof=1), M),
    case("x.std", lambda x: x.std(keepdims=True), M),
    case("x.any", lambda x: x.any(axis=0), F((2, 3), value=[[0.0, 1.0, 0.0], [0.0, 2.0, 1.0]])),
    case("x.all", lambda x: x.all(axis=1), F((2, 3), value=[[1.0, 1.0, 0.0], [3.0, 2.0, 1.0]])),
    case("x.argmax", lambda x: x.argmax(axis=1), M),
    case("x.argmin", lambda x: x.argmin(), M),
    case("x.ravel", lambda x: x.ravel(), X),
    case("x.flatten", lambda x: x.flatten(), X),
    case("x.reshape", lambda x: x.reshape(4, -1), X),
    case("x.reshape[tuple, order]", lambda x: x.reshape((6, 4), order="C"), X),
    case("x.transpose", lambda x: x.transpose(), X),
    case("x.transpose[axes]", lambda x: x.transpose(1, 0, 2), X),
    case("x.transpose[tuple]", lambda x: x.transpose((2, 0, 1)), X),
    case("x.T", lambda x: x.T, X),
    case("x.mT", lambda x: x.mT, X),
    case("x.squeeze", lambda x: x.squeeze(), F((1, 3, 1))),
    case("x.squeeze[axis]", lambda x: x.squeeze(axis=0), F((1, 3, 1))),
    case("x.swapaxes", lambda x: x.swapaxes(0, 2), X),
    case("x.astype", lambda x: x.astype(np.float32), M, grad=False),
    case("x.astype[int]", lambda x: x.astype("int32"), M),
    case("x.clip", lambda x: x.clip(-0.5, 0.5), M),
    case("x.clip[min only]", lambda x: x.clip(min=0.0), M),
    case("x.round", lambda x: x.round(1), M),
    case("x.conj", lambda x: x.conj(), M),
    case("x.conjugate", lambda x: x.conjugate(), M),
    case("x.real", lambda x: x.real, M),
    case("x.imag", lambda x: x.imag, M),
    case("x.dot", lambda x, y: x.dot(y), M, F((4, 2))),
    case("x.trace", lambda x: x.trace(), M),
    case("x.trace[offset, axes]", lambda x: x.trace(1, 1, 2), X),
    case("x.diagonal", lambda x: x.diagonal(offset=-1), M),
    case("x.take", lambda x: x.take([2, 0], axis=1), M),
    case("x.repeat", lambda x: x.repeat(2, axis=0), M),
    case("x.cumsum", lambda x: x.cumsum(axis=1), M),
]

@pytest.mark.parametrize("c", CASES, ids=str)
def test_method(c):
    check(c)


def test_every_supported_method_has_a_case():
    covered = {c.name.split("[")[0][2:] for c in CASES}
    missing = [m for m in numpy_api.supported_methods()
               if m not in covered and m not in ("shape", "ndim", "size", "dtype")]
    assert not missing


def test_static_properties():
    x = kf.placeholder("x", (2, 3, 4))
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.size == 24 and x.dtype == np.float32
    b = kf.placeholder("b", (None, 4))
    assert b.ndim == 2
    with pytest.raises(kf.TracingError, match=r"size of Symbol\(input .*dynamic \(None\) "
                                              r"dimension; use kf\.count"):
        b.size


@pytest.mark.parametrize("name, args", [
    ("tolist", ()), ("item", ()), ("tobytes", ()), ("fill", (0.0,)), ("sort", ()),
    ("argsort", ()), ("nonzero", ()), ("cumprod", ()), ("view", ()), ("resize", ((2,),)),
])
def test_methods_needing_values_are_refused_by_name(name, args):
    x = kf.placeholder("x", (3,))
    with pytest.raises(kf.TracingError, match=rf"^\.{name}\(\) of symbolic Symbol\(input "):
        getattr(x, name)(*args)


def test_item_assignment_is_refused():
    x = kf.placeholder("x", (3,))
    with pytest.raises(kf.TracingError, match=r"item assignment into symbolic .*kf\.where"):
        x[0] = 1.0


def test_traced_params_have_the_methods():
    w = kf.Param(np.array([[1.0, -2.0, 3.0], [0.5, 0.0, 2.0]]))
    r = kf.diff(lambda: w.var(axis=1).sum() + w.clip(0, 1).ravel().dot(np.arange(6.0)))
    v = w.value
    assert r.value == pytest.approx(v.var(axis=1).sum() + v.clip(0, 1).ravel() @ np.arange(6.0))
    assert kf.gradcheck(lambda: w.var(axis=1).sum() + w.clip(0, 1).ravel().dot(np.arange(6.0)),
                        rtol=1e-4, atol=1e-6)

    def tolist():
        w.tolist()
        return kf.sum(w)

    with pytest.raises(kf.TracingError, match=r"^\.tolist\(\) of symbolic"):
        kf.diff(tolist)


def test_untraced_params_use_the_arrays_methods():
    w = kf.Param(np.array([[1.0, -2.0], [0.5, 3.0]]))
    assert w.tolist() == [[1.0, -2.0], [0.5, 3.0]] and w.item(1) == -2.0
    assert w.size == 4 and w.ndim == 2
    w.sort(axis=1)  # in place, as ndarray.sort
    np.testing.assert_array_equal(w.value, [[-2.0, 1.0], [0.5, 3.0]])
    w[0, 0] = 7.0
    assert w.value[0, 0] == 7.0
    np.testing.assert_array_equal(w.mT, w.value.T)
