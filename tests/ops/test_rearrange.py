"""Tests of knetflow/ops/rearrange.py: repeat (and its adjoint repeat_sum), roll, split."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.ops.rearrange import RepeatSum, repeat_sum
from tests.ops.harness import Arg, Case, check

F = Arg


def _np_repeat_sum(g, repeats, axis):
    """Reference for repeat_sum: the sum of each group of repeats along axis."""
    counts = [repeats] * (g.shape[axis] // repeats) if isinstance(repeats, int) else repeats
    ends = np.cumsum(counts)
    starts = ends - np.asarray(counts)
    moved = np.moveaxis(g, axis, 0)
    sums = np.stack([moved[s:e].sum(0) for s, e in zip(starts, ends)])
    return np.moveaxis(sums, 0, axis)


def _split(x, sections, axis=0):
    return tuple(kf.split(x, sections, axis=axis))


def _np_split(x, sections, axis=0):
    return tuple(np.split(x, sections, axis=axis))


CASES = [
    # repeat
    Case("repeat_flat", lambda x: kf.repeat(x, 2), lambda x: np.repeat(x, 2), [F((2, 3))],
         second=True),
    Case("repeat_axis", lambda x: kf.repeat(x, 3, axis=1), lambda x: np.repeat(x, 3, axis=1),
         [F((2, 3, 2))], second=True),
    Case("repeat_each", lambda x: kf.repeat(x, (2, 0, 1), axis=-2),
         lambda x: np.repeat(x, (2, 0, 1), axis=-2), [F((2, 3, 4))], second=True),
    Case("repeat_one_count", lambda x: kf.repeat(x, [2], axis=0),
         lambda x: np.repeat(x, [2], axis=0), [F((3, 2))]),
    Case("repeat_zero", lambda x: kf.repeat(x, 0, axis=1), lambda x: np.repeat(x, 0, axis=1),
         [F((3, 2))]),
    Case("repeat_scalar", lambda x: kf.repeat(x, 3), lambda x: np.repeat(x, 3), [F(())]),
    Case("repeat_sum", lambda g: repeat_sum(g, 2, axis=1),
         lambda g: _np_repeat_sum(g, 2, 1), [F((3, 6, 2))], second=True),
    Case("repeat_sum_each", lambda g: repeat_sum(g, (1, 0, 3), axis=0),
         lambda g: _np_repeat_sum(g, (1, 0, 3), 0), [F((4, 2))], second=True),
    # roll
    Case("roll_flat", lambda x: kf.roll(x, 4), lambda x: np.roll(x, 4), [F((2, 3))],
         second=True),
    Case("roll_axis", lambda x: kf.roll(x, -1, axis=1), lambda x: np.roll(x, -1, axis=1),
         [F((2, 3, 4))], second=True),
    Case("roll_axes", lambda x: kf.roll(x, (1, -2), axis=(0, 2)),
         lambda x: np.roll(x, (1, -2), axis=(0, 2)), [F((2, 3, 4))]),
    Case("roll_same_axis_twice", lambda x: kf.roll(x, (1, 5), axis=(-1, 1)),
         lambda x: np.roll(x, (1, 5), axis=(-1, 1)), [F((3, 4))]),
    Case("roll_one_shift_many_axes", lambda x: kf.roll(x, 2, axis=(0, 1)),
         lambda x: np.roll(x, 2, axis=(0, 1)), [F((3, 4))]),
    Case("roll_flat_shifts", lambda x: kf.roll(x, (1, 2)), lambda x: np.roll(x, (1, 2)),
         [F((5,))]),
    # split
    Case("split_sections", lambda x: _split(x, 3), lambda x: _np_split(x, 3), [F((6, 2))],
         second=True),
    Case("split_axis", lambda x: _split(x, 2, axis=-1), lambda x: _np_split(x, 2, axis=-1),
         [F((2, 3, 4))]),
    Case("split_indices", lambda x: _split(x, [1, 3], axis=1),
         lambda x: _np_split(x, [1, 3], axis=1), [F((2, 5))], second=True),
    Case("split_unordered_indices", lambda x: _split(x, [3, 1, -1]),
         lambda x: _np_split(x, [3, 1, -1]), [F((5, 2))]),
    Case("split_none", lambda x: _split(x, []), lambda x: _np_split(x, []), [F((3,))]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- values, dtypes and shapes ----


def test_repeat_matches_numpy_on_integers_and_bools():
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    np.testing.assert_array_equal(kf.repeat(x, 2, axis=0), np.repeat(x, 2, axis=0))
    assert kf.repeat(x, 2).dtype == np.int32
    b = np.array([True, False])
    np.testing.assert_array_equal(kf.repeat(b, np.array([1, 3])), np.repeat(b, [1, 3]))


def test_repeat_sequence_of_one_counts_for_every_element():
    x = kf.placeholder("x", (3, 2))
    assert kf.repeat(x, [4], axis=0).node.attrs["repeats"] == 4
    assert kf.repeat(x, (1, 2, 3), axis=0).shape == (6, 2)
    attrs = kf.repeat(x, [np.int64(1), np.int32(2), 3], axis=0).node.attrs
    assert attrs["repeats"] == (1, 2, 3) and all(type(r) is int for r in attrs["repeats"])


def test_repeat_dynamic_dims():
    x = kf.placeholder("x", (None, 3), "float64")
    assert kf.repeat(x, 2, axis=0).shape == (None, 3)
    assert kf.repeat(x, 2, axis=1).shape == (None, 6)
    assert kf.repeat(x, (1, 2, 1), axis=1).shape == (None, 4)
    assert kf.repeat(x, 2).shape == (None,)
    g = kf.backward(kf.Graph([kf.sum(kf.repeat(x, (1, 2, 1), axis=1) * 2.0)], inputs=[x]),
                    wrt=[x])
    value = np.arange(6.0).reshape(2, 3)
    loss, gx = kf.compile(g).run({"x": value})
    assert loss == pytest.approx(2 * np.repeat(value, (1, 2, 1), axis=1).sum())
    np.testing.assert_allclose(gx, np.tile([2.0, 4.0, 2.0], (2, 1)))


def test_repeat_sum_is_the_adjoint_of_repeat():
    rs = np.random.RandomState(0)
    x = rs.randn(3, 4)
    for counts, width in ((3, 12), ((1, 4, 0, 4), 9)):
        y = rs.randn(3, width)
        lhs = np.sum(kf.repeat(x, counts, axis=1) * y)
        rhs = np.sum(x * repeat_sum(y, counts, axis=1))
        assert lhs == pytest.approx(rhs)


def test_roll_keeps_shape_and_dtype_and_rolls_back():
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    got = kf.roll(x, (1, -3), axis=(0, 1))
    np.testing.assert_array_equal(got, np.roll(x, (1, -3), axis=(0, 1)))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(kf.roll(got, (-1, 3), axis=(0, 1)), x)
    node = kf.roll(kf.placeholder("x", (None, 4)), 1, axis=-1).node
    assert node.spec.shape == (None, 4) and node.attrs == {"shift": (1,), "axis": (1,)}


def test_roll_dynamic_batch_compiled():
    x = kf.placeholder("x", (None, 3), "float64")
    plan = kf.compile([kf.roll(x, 1), kf.roll(x, 1, axis=0)])
    value = np.arange(12.0).reshape(4, 3)
    flat, rows = plan.run({"x": value})
    np.testing.assert_array_equal(flat, np.roll(value, 1))
    np.testing.assert_array_equal(rows, np.roll(value, 1, axis=0))


def test_split_returns_a_list_of_slices():
    x = kf.placeholder("x", (6, 4))
    pieces = kf.split(x, 2)
    assert isinstance(pieces, list) and [p.shape for p in pieces] == [(3, 4), (3, 4)]
    assert all(p.node.op == "getitem" for p in pieces)
    assert [p.shape for p in kf.split(x, [1, 10], axis=0)] == [(1, 4), (5, 4), (0, 4)]
    arrays = kf.split(np.arange(6.0), np.array([2]))
    assert [a.tolist() for a in arrays] == [[0.0, 1.0], [2.0, 3.0, 4.0, 5.0]]


def test_split_with_indices_on_a_dynamic_axis():
    x = kf.placeholder("x", (None, 2), "float64")
    head, tail = kf.split(x, [1])
    assert head.shape == tail.shape == (None, 2)  # the axis may be shorter than 1
    value = np.arange(8.0).reshape(4, 2)
    got = kf.compile([head, tail]).run({"x": value})
    np.testing.assert_array_equal(got[0], value[:1])
    np.testing.assert_array_equal(got[1], value[1:])


def test_split_gradient_puts_pieces_back():
    x = kf.Param(np.arange(6.0))

    def loss():
        first, _, last = kf.split(x, 3)
        return kf.sum(first) + 3 * kf.sum(last)

    np.testing.assert_allclose(kf.grad(kf.diff(loss), x), [1, 1, 0, 0, 3, 3])


# ---- errors ----


def test_repeat_errors():
    x = kf.placeholder("x", (3, 2))
    with pytest.raises(kf.ShapeError, match=r"repeat: repeats must not be negative, got -1"):
        kf.repeat(x, -1)
    with pytest.raises(kf.ShapeError, match=r"repeat: 2 repeats for axis 0 of length 3 "
                                            r"in \(3, 2\)"):
        kf.repeat(x, (1, 2), axis=0)
    with pytest.raises(kf.ShapeError, match=r"repeat: repeats must be an int or a sequence "
                                            r"of ints known when the graph is built"):
        kf.repeat(x, kf.placeholder("r", (3,), "int64"), axis=0)
    with pytest.raises(kf.ShapeError, match=r"repeat: repeats must be an int"):
        kf.repeat(x, 1.5)
    with pytest.raises(kf.ShapeError, match=r"repeat: axis 2 is out of range for an array "
                                            r"of 2 dimensions"):
        kf.repeat(x, 2, axis=2)
    with pytest.raises(kf.ShapeError, match=r"repeat: axis must be an int or None, got \(0,\)"):
        kf.repeat(x, 2, axis=(0,))


def test_repeat_sum_errors():
    g = kf.placeholder("g", (3, 5))
    with pytest.raises(kf.ShapeError, match=r"repeat_sum: axis 1 of \(3, 5\) is not a multiple "
                                            r"of repeats=2"):
        repeat_sum(g, 2, axis=1)
    with pytest.raises(kf.ShapeError, match=r"repeat_sum: axis 0 of \(3, 5\) is not the 4 "
                                            r"elements of repeats \(1, 3, 0\)"):
        repeat_sum(g, (1, 3, 0), axis=0)
    with pytest.raises(kf.ShapeError, match=r"repeat_sum: repeats=0 leaves no groups to sum"):
        repeat_sum(g, 0)
    with pytest.raises(kf.ShapeError, match=r"repeat_sum: axis 2 is out of range for \(3, 5\)"):
        RepeatSum.infer(kf.Spec((3, 5), "float32"), repeats=1, axis=2)


def test_roll_errors():
    x = kf.placeholder("x", (3, 2))
    with pytest.raises(kf.ShapeError, match=r"roll: shift \(1, 2\) and axis \(0, 1, 0\) must "
                                            r"have the same length"):
        kf.roll(x, (1, 2), axis=(0, 1, 0))
    with pytest.raises(kf.ShapeError, match=r"roll: axis -3 is out of range for an array of "
                                            r"2 dimensions"):
        kf.roll(x, 1, axis=-3)
    with pytest.raises(kf.ShapeError, match=r"roll: shift must be an int or a sequence of ints"):
        kf.roll(x, 0.5)
    with pytest.raises(kf.ShapeError, match=r"roll: axis must be an int or a sequence of ints"):
        kf.roll(x, 1, axis="0")


def test_split_errors():
    x = kf.placeholder("x", (7, 2))
    with pytest.raises(kf.ShapeError, match=r"split: array split does not result in an equal "
                                            r"division: axis 0 of length 7 into 3 sections"):
        kf.split(x, 3)
    with pytest.raises(kf.ShapeError, match=r"split: the number of sections must be larger "
                                            r"than 0, got 0"):
        kf.split(x, 0)
    with pytest.raises(kf.ShapeError, match=r"split: cannot split the dynamic axis 0 of "
                                            r"\(\?, 2\) into 2 equal sections; give the split "
                                            r"indices instead"):
        kf.split(kf.placeholder("y", (None, 2)), 2)
    with pytest.raises(kf.ShapeError, match=r"split: a zero-dimensional array cannot be split"):
        kf.split(np.float64(1.0), 1)
    with pytest.raises(kf.ShapeError, match=r"split: axis 2 is out of range"):
        kf.split(x, 1, axis=2)
    with pytest.raises(kf.ShapeError, match=r"split: indices_or_sections must be an int or a "
                                            r"sequence of ints"):
        kf.split(x, [1.5])


def test_tuple_attributes_survive_save_and_load(tmp_path):
    # repeats, shift and axis are tuples; a saved graph may give them back as lists
    x = kf.placeholder("x", (3, 4), "float64")
    outs = [kf.repeat(x, (1, 0, 2), axis=0), kf.roll(x, (1, -1), axis=(0, 1)),
            repeat_sum(x, (3, 1), axis=1)]
    loss = kf.sum(outs[0]) + kf.sum(outs[1] * outs[1]) + kf.sum(outs[2] * 2.0)
    graph = kf.backward(kf.Graph([loss] + outs, inputs=[x]), wrt=[x])
    kf.save(tmp_path / "g.knf", graph)
    loaded = kf.load(tmp_path / "g.knf").graph
    feed = {"x": np.random.RandomState(0).randn(3, 4)}
    for want, got in zip(kf.compile(graph).run(feed), kf.compile(loaded).run(feed)):
        np.testing.assert_allclose(got, want)
