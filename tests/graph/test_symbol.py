"""The Symbol front end (graph/symbol.py, graph/build.py): operators, NumPy protocols,
errors for Python control flow on symbols, and the user's file:line in messages."""

import os
import re
import sys

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph import build


def _line_below() -> str:
    """`test_symbol.py:N` of the line after the caller's."""
    return f"test_symbol.py:{sys._getframe(1).f_lineno + 1}"


def _ops(sym):
    """(op, [input ops]) of a symbol's node."""
    return sym.node.op, [i.op for i in sym.node.inputs]


@pytest.fixture
def x():
    return kf.placeholder("x", (2, 3))


@pytest.fixture
def y():
    return kf.placeholder("y", (3,))


# ---- operators build nodes ----


@pytest.mark.parametrize("fn, op, inputs", [
    (lambda x, y: x + y, "add", ["input", "input"]),
    (lambda x, y: x - y, "sub", ["input", "input"]),
    (lambda x, y: x * y, "mul", ["input", "input"]),
    (lambda x, y: x / y, "div", ["input", "input"]),
    (lambda x, y: x ** y, "pow", ["input", "input"]),
    (lambda x, y: 1 - x, "sub", ["const", "input"]),
    (lambda x, y: 2 / x, "div", ["const", "input"]),
    (lambda x, y: 2 ** x, "pow", ["const", "input"]),
    (lambda x, y: 3.0 * x, "mul", ["const", "input"]),
    (lambda x, y: x + 1, "add", ["input", "const"]),
    (lambda x, y: -x, "neg", ["input"]),
    (lambda x, y: abs(x), "abs", ["input"]),
    (lambda x, y: x < y, "lt", ["input", "input"]),
    (lambda x, y: x <= y, "le", ["input", "input"]),
    (lambda x, y: x > y, "gt", ["input", "input"]),
    (lambda x, y: x >= y, "ge", ["input", "input"]),
    (lambda x, y: x == y, "eq", ["input", "input"]),
    (lambda x, y: x != 1, "ne", ["input", "const"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_operator_builds_node(x, y, fn, op, inputs):
    out = fn(x, y)
    assert isinstance(out, kf.Symbol)
    assert _ops(out) == (op, inputs)
    assert out.shape == (2, 3)


def test_operator_operand_order(x, y):
    out = y - x
    assert out.node.inputs == (y.node, x.node)
    assert (+x) is x


def test_comparisons_give_bool_and_symbols_still_hash(x, y):
    assert (x < y).dtype == np.dtype("bool")
    assert (x == y).dtype == np.dtype("bool")
    table = {x: "x", y: "y"}  # identity hashing survives the overloaded ==
    assert table[x] == "x" and y in table


def test_python_scalars_take_the_symbol_dtype(x):
    i = kf.placeholder("i", (3,), "int64")
    assert (x * 2.0).dtype == np.dtype("float32")
    assert (i * 2).dtype == np.dtype("int64")
    assert (i * 2.0).dtype == np.dtype("float64")
    assert (i / 2).dtype == np.dtype("float64")
    assert (x * np.float64(2)).dtype == np.dtype("float64")  # NumPy scalars are not weak


def test_shape_methods(x):
    assert _ops(x.T) == ("transpose", ["input"]) and x.T.shape == (3, 2)
    assert x.transpose(1, 0).node.attrs == {"axes": (1, 0)}
    assert x.reshape(3, 2).shape == (3, 2)
    assert x.reshape((6,)).node.attrs == {"shape": (6,)}
    assert x[0].shape == (3,) and x[:, 1].shape == (2,)
    assert x.astype("float64").dtype == np.dtype("float64")
    assert len(x) == 2
    assert [_ops(r) for r in x] == [("getitem", ["input"])] * 2


def test_reduction_methods(x):
    assert x.sum(axis=1).node.attrs == {"axis": (1,), "keepdims": False}
    assert x.mean().shape == ()
    assert x.max(0).shape == (3,)
    assert x.min(axis=1, keepdims=True).shape == (2, 1)
    assert x.prod().node.op == "prod"


def test_symbol_properties(x):
    s = kf.sum(x, axis=-1)
    assert s.shape == (2,) and s.ndim == 1 and s.dtype == np.dtype("float32")
    assert s.name == f"sum#{s.node.id}" and x.name == "x"
    where = _line_below()
    z = kf.exp(x)
    assert repr(z) == f"Symbol(exp float32(2, 3) at {where})"


# ---- NumPy protocols ----


@pytest.mark.parametrize("fn, op", [
    (np.exp, "exp"), (np.tanh, "tanh"), (np.sqrt, "sqrt"), (np.log, "log"),
    (np.negative, "neg"), (np.abs, "abs"),
])
def test_numpy_ufunc_builds_node(x, fn, op):
    out = fn(x)
    assert isinstance(out, kf.Symbol) and _ops(out) == (op, ["input"])


def test_numpy_binary_ufuncs_and_ndarray_operands(x, y):
    assert _ops(np.add(x, y)) == ("add", ["input", "input"])
    assert _ops(np.maximum(x, y)) == ("maximum", ["input", "input"])
    assert _ops(np.less(x, y)) == ("lt", ["input", "input"])
    left = np.ones(3) * x  # ndarray on the left defers to the Symbol
    assert isinstance(left, kf.Symbol) and _ops(left) == ("mul", ["const", "input"])
    assert left.dtype == np.dtype("float64")


def test_numpy_functions_build_nodes(x):
    s = np.sum(x)
    assert _ops(s) == ("sum", ["input"]) and s.shape == ()
    assert np.sum(x, axis=0).node.attrs == {"axis": (0,), "keepdims": False}
    assert np.mean(x, axis=1).shape == (2,)
    assert _ops(np.transpose(x)) == ("transpose", ["input"])


def test_numpy_forms_knetflow_cannot_express_are_refused(x):
    with pytest.raises(kf.TracingError, match=r"np\.exp: out= .* not supported"):
        np.exp(x, out=np.ones((2, 3)))
    with pytest.raises(kf.TracingError, match=r"np\.subtract\.reduce is not supported"):
        np.subtract.reduce(x)
    with pytest.raises(kf.TracingError, match=r"np\.add\.at is not supported"):
        np.add.at(x, [0], 1.0)


# ---- Python needs concrete values: TracingError with advice ----


def test_bool_of_symbol(x):
    with pytest.raises(kf.TracingError, match=r"truth value of symbolic .*use kf\.where"):
        if x > 0:
            pass


def test_float_and_int_of_symbol(x):
    s = x.sum()
    with pytest.raises(kf.TracingError, match=r"^float\(\) of symbolic Symbol\(sum float32\(\)"):
        float(s)
    with pytest.raises(kf.TracingError, match=r"^int\(\) of symbolic .*keep it symbolic"):
        int(s)
    with pytest.raises(kf.TracingError, match=r"index\(\) of symbolic"):
        range(10)[s]


def test_asarray_of_symbol(x):
    with pytest.raises(kf.TracingError, match=r"cannot convert symbolic .* to a NumPy array; "
                                              r"run the graph"):
        np.asarray(x)


def test_tracing_errors_are_type_errors(x):
    with pytest.raises(TypeError):
        float(x)


def test_len_of_dynamic_dim():
    b = kf.placeholder("b", (None, 3))
    with pytest.raises(kf.TracingError, match=r"len\(\) of .*first dimension is not static"):
        len(b)
    with pytest.raises(kf.TracingError):
        len(kf.sum(b))


def test_tracing_error_names_where_the_symbol_was_made():
    where = _line_below()
    z = kf.placeholder("z", (3,))
    with pytest.raises(kf.TracingError, match=re.escape(f"at {where})")):
        bool(z)


# ---- build-time shape errors name the user's line ----


def test_shape_error_names_op_shapes_and_user_line(x):
    with pytest.raises(kf.ShapeError) as info:
        where = _line_below()
        x + kf.placeholder("w", (4,))
    msg = str(info.value)
    assert msg == f"add: shapes (2, 3) and (4,) do not broadcast (at {where})"


def test_shape_error_through_numpy_protocol_names_user_line(x):
    with pytest.raises(kf.ShapeError) as info:
        where = _line_below()
        np.multiply(x, np.ones((5,)))
    assert str(info.value).endswith(f"(at {where})")


def test_nodes_record_user_line_through_helpers(x):
    def helper(v):
        return kf.tanh(v)  # the user's own helper: its line is the user's line

    line = sys._getframe().f_lineno - 2
    assert helper(x).node.where == f"test_symbol.py:{line}"


def test_user_code_beside_the_package_is_user_code(x):
    #   a user's `.../knetflow_extra/model.py` is not part of `.../knetflow/`
    filename = build._PKG_DIR.rstrip(os.sep) + "_extra" + os.sep + "model.py"
    scope = {"kf": kf, "x": x}
    exec(compile("\ny = kf.exp(x)\n", filename, "exec"), scope)  # noqa: S102
    assert scope["y"].node.where == "model.py:2"


# ---- leaves ----


def test_placeholder_param_const():
    p = kf.placeholder("p", (None, 4), dtype="float64")
    assert p.node.op == "input" and p.shape == (None, 4) and p.dtype == np.dtype("float64")
    w = kf.param("w", value=[[1, 2], [3, 4]])
    assert w.shape == (2, 2) and w.dtype == np.dtype("float32")
    assert w.node.attrs["value"].dtype == np.dtype("float32")
    c = kf.const(1.5)
    assert c.dtype == np.dtype("float32") and c.shape == ()  # Python floats: float32
    assert kf.const(np.float64(1.5)).dtype == np.dtype("float64")  # NumPy scalars keep theirs
    assert not c.node.attrs["value"].flags.writeable


def test_leaf_errors():
    with pytest.raises(kf.ShapeError, match="param 'w' needs a shape or a value"):
        kf.param("w")
    with pytest.raises(kf.ShapeError, match=r"param 'w': shape \(3,\) but value has shape \(2,\)"):
        kf.param("w", shape=(3,), value=[1.0, 2.0])
    with pytest.raises(kf.ShapeError, match="placeholder: unsupported dtype 'complex64'"):
        kf.placeholder("z", (2,), dtype="complex64")


def test_ops_on_arrays_run_at_once():
    out = kf.exp(np.array([0.0, 1.0]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [1.0, np.e])
    with pytest.raises(kf.ShapeError, match=r"add: shapes \(2,\) and \(3,\) do not broadcast"):
        kf.add(np.ones(2), np.ones(3))
