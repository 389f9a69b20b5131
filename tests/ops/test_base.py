"""The op declaration layer: registry lookups and shape-rule helpers."""

import pytest

from knetflow.ops.base import Spec, broadcast_shapes, fmt, get_op, norm_axis, register, Op


def test_unknown_op_is_named():
    with pytest.raises(KeyError, match="unknown op 'frobnicate'"):
        get_op("frobnicate")


def test_an_op_cannot_be_registered_twice_under_one_name():
    class A(Op):
        name = "exp"

    with pytest.raises(ValueError, match="op 'exp' is registered twice"):
        register(A)


def test_broadcast_with_dynamic_dims():
    assert broadcast_shapes("add", Spec((None, 1), "float32"), Spec((3,), "float32")) == (None, 3)
    assert fmt(Spec((None, 3), "float32")) == "(?, 3)"


def test_norm_axis_canonical_and_checked():
    assert norm_axis("sum", -1, 3) == (2,)
    assert norm_axis("sum", (2, 0), 3) == (0, 2)
    with pytest.raises(ValueError, match="sum: repeated axis"):
        norm_axis("sum", (1, 1), 3)
