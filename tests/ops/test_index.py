"""Tests of knetflow/ops/index.py: zeros_like, getitem and index_add."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops import index as index_ops
from knetflow.ops.index import GetItem
from tests.ops.harness import Arg, Case, check

F = Arg
IDX = np.array([[0, 2], [2, 2]])      # repeated indices: gradients must accumulate
MASK = np.array([True, False, True, True])


def _ix(index):
    """A case taking x[index] with both knetflow and NumPy."""
    return Case(f"getitem{index!r}".replace(" ", ""), lambda x: kf.getitem(x, index),
                lambda x: x[index], [F((4, 3, 5))], second=True)


def _mask(index, axis):
    """A case taking sum(x[index], axis), the axis a mask made."""
    return Case(f"getitem_mask{index!r}".replace(" ", "").replace("\n", ""),
                lambda x: kf.sum(kf.getitem(x, index), axis=axis),
                lambda x: np.sum(x[index], axis=axis), [F((4, 3, 5))], second=True)


CASES = [
    Case("zeros_like", lambda x: kf.zeros_like(x) + x, lambda x: x, [F((2, 3))]),
    # indexing: every kind of index
    _ix(1),
    _ix(-1),
    _ix((2, 1, 4)),
    _ix(slice(1, 3)),
    _ix((slice(None), slice(None, None, 2))),
    _ix((slice(None, None, -1), 0, slice(4, 0, -2))),
    _ix((Ellipsis, 1)),
    _ix((None, 0, Ellipsis, None)),
    _ix(IDX),
    _ix((slice(None), [2, 0, 2, 2])),
    _ix((IDX, slice(None), np.array([4, 0]))),
    _ix((0, slice(None), [1, 1, 3])),
    _ix((slice(None), None, np.array([1, 1]), [3, 3])),
    # a mask makes a dynamic axis; the harness wants static outputs, so sum it away
    _mask(MASK, 0),
    _mask((slice(None), np.eye(3, 5, dtype=bool)), 1),
    _mask((MASK, 2), 0),
    _mask((2, MASK[:3], [[4], [0]]), 1),
    Case("getitem_symbol_indices", lambda x, i: kf.getitem(x, (i, slice(1, None))),
         lambda x, i: x[i, 1:], [F((4, 3)), Arg((5,), "int", high=4)], second=True),
    Case("getitem_symbol_mask", lambda x, m: kf.sum(x[m]), lambda x, m: np.sum(x[m]),
         [F((3, 4)), Arg((3, 4), value=np.array([[1, 0, 1, 1], [0, 0, 0, 1], [1, 1, 0, 0]],
                                                bool))], second=True),
    Case("getitem_operator", lambda x: x[1:, ::2][..., -1], lambda x: x[1:, ::2][..., -1],
         [F((3, 4, 2))]),
    Case("index_add", lambda x, u: kf.index_add(x, (IDX, 1), u), lambda x, u: _np_index_add(
        x, (IDX, 1), u), [F((4, 3)), F((2, 2))], second=True),
    Case("index_add_broadcast", lambda x, u: kf.index_add(x, (slice(None), MASK), u),
         lambda x, u: _np_index_add(x, (slice(None), MASK), u), [F((2, 4)), F((1,))]),
]


def _np_index_add(x, index, update):
    out = x.copy()
    np.add.at(out, index, update)
    return out


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check(case)


# ---- values ----


def test_getitem_scalar_result_is_an_array():
    x = np.arange(6.0).reshape(2, 3)
    got = kf.getitem(x, (1, 2))
    assert isinstance(got, np.ndarray) and got.shape == () and got == 5.0


def test_getitem_index_kinds_eagerly():
    x = np.arange(60.0).reshape(3, 4, 5)
    for index in [0, -2, (1, -1), slice(None, None, -1), (Ellipsis, slice(1, 4, 2)),
                  (None, 1), [2, 0, 0], (slice(None), [[0, 1], [3, 3]]), x > 30,
                  (x[:, :, 0] > 20, 3), (0, slice(None), [1, 4]), (np.int64(2), [True, False,
                                                                               True, False])]:
        np.testing.assert_array_equal(kf.getitem(x, index), x[index], err_msg=repr(index))


def test_getitem_ellipsis_separates_advanced_indices():
    # NumPy puts the advanced axes first when an Ellipsis stands between them, even an
    # Ellipsis that stands for no axes
    x = np.arange(9.0).reshape(3, 3)
    index = (None, np.array([0, 2]), Ellipsis, 0)
    assert kf.getitem(x, index).shape == x[index].shape == (2, 1)
    assert kf.getitem(kf.placeholder("x", (3, 3)), index).shape == (2, 1)


def test_index_add_accumulates_repeats():
    got = kf.index_add(np.zeros(4), np.array([0, 0, 3, 0]), np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(got, [7.0, 0.0, 0.0, 3.0])
    x = np.ones((2, 3))
    np.testing.assert_array_equal(kf.index_add(x, (slice(None), 1), 5.0), [[1, 6, 1], [1, 6, 1]])
    assert x.sum() == 6  # the input is not changed


def test_getitem_gradient_accumulates_repeats():
    w = kf.param("w", value=np.array([1.0, 2.0, 3.0]), dtype="float64")
    loss = kf.sum(w[np.array([0, 0, 2, 0])] * np.array([1.0, 2.0, 3.0, 4.0]))
    _, g = kf.compile(kf.backward(kf.Graph([loss]))).run({})
    np.testing.assert_array_equal(g, [7.0, 0.0, 3.0])


# ---- errors ----


def test_index_errors():
    x = np.ones((3, 4))
    with pytest.raises(kf.ShapeError, match=r"getitem: index 3 is out of bounds .*\(3, 4\)"):
        kf.getitem(x, 3)
    with pytest.raises(kf.ShapeError, match=r"getitem: too many indices for \(3, 4\)"):
        kf.getitem(x, (0, 0, 0))
    with pytest.raises(kf.ShapeError, match="only one Ellipsis"):
        kf.getitem(x, (Ellipsis, Ellipsis))
    with pytest.raises(kf.ShapeError, match="integers or booleans, got float64"):
        kf.getitem(x, np.array([0.0, 1.0]))
    with pytest.raises(kf.ShapeError, match=r"boolean index \(3, 3\) does not match .*\(3, 4\)"):
        kf.getitem(x, np.ones((3, 3), bool))
    with pytest.raises(kf.ShapeError, match="boolean scalar"):
        kf.getitem(x, True)
    with pytest.raises(kf.ShapeError, match=r"index arrays of shapes \(2,\), \(3,\)"):
        kf.getitem(x, ([0, 1], [0, 1, 2]))
    with pytest.raises(kf.ShapeError, match="slice step cannot be zero"):
        kf.getitem(x, slice(None, None, 0))
    with pytest.raises(kf.ShapeError, match=r"index_add: update \(3,\) .*\(2, 4\) of \(3, 4\)"):
        kf.index_add(x, [0, 2], np.ones(3))
    with pytest.raises(kf.ShapeError, match=r"getitem: .*out of bounds.*test_index"):
        kf.placeholder("x", (None, 4))[:, 4]


# ---- properties ----


@st.composite
def _index(draw, ndim):
    """A random NumPy index for an array of shape (3,) * ndim."""
    items, used = [], 0
    while used < ndim and draw(st.integers(0, 3)):
        kind = draw(st.sampled_from(["int", "slice", "none", "array", "mask", "ellipsis"]))
        if kind == "int":
            items.append(draw(st.integers(-3, 2)))
        elif kind == "slice":
            items.append(slice(draw(st.one_of(st.none(), st.integers(-4, 4))),
                               draw(st.one_of(st.none(), st.integers(-4, 4))),
                               draw(st.sampled_from([None, 1, 2, -1, -2]))))
        elif kind == "none":
            items.append(None)
            continue
        elif kind == "array":
            items.append(np.array(draw(st.lists(st.integers(-3, 2), min_size=1, max_size=2))))
        elif kind == "mask":
            items.append(np.array(draw(st.lists(st.booleans(), min_size=3, max_size=3))))
        elif not any(item is Ellipsis for item in items):
            items.append(Ellipsis)
            continue
        used += 1
    return tuple(items)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(st.just(n), _index(n))))
def test_getitem_matches_numpy(args):
    ndim, index = args
    x = np.arange(3.0 ** ndim).reshape((3,) * ndim)
    try:
        want = x[index]
    except IndexError:  # index arrays that do not broadcast; with a mask, known only at run time
        with pytest.raises((kf.ShapeError, IndexError)):
            kf.getitem(x, index)
        return
    np.testing.assert_array_equal(kf.getitem(x, index), want)
    # the shape rule agrees, with a mask's axis dynamic
    items, arrays = _canon(index)
    specs = [kf.Spec(a.shape, str(a.dtype)) for a in arrays]
    inferred = GetItem.infer(kf.Spec(x.shape, "float64"), *specs, index=items).shape
    assert len(inferred) == want.ndim
    assert all(d is None or d == w for d, w in zip(inferred, want.shape))
    # and the gradient scatter puts every selected element back where it came from
    back = kf.index_add(np.zeros_like(x), index, np.ones(want.shape))
    counts = np.zeros_like(x)
    np.add.at(counts, index, 1.0)
    np.testing.assert_array_equal(back, counts)


def _canon(index):
    from knetflow.ops.index import _canon_index

    return _canon_index(index)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 20), st.sampled_from([(), (3,), (2, 2)]),
       st.sampled_from(["float32", "float64"]), st.integers(0, 2 ** 31),
       st.sampled_from(["_REPEATS", "_GROUP_ROWS"]))
def test_a_plan_groups_repeated_rows_as_add_at_adds_them(rows, extra, tail, dtype, seed,
                                                          per_row):
    """The bound kernel (one sort, sums per group, one addition per row) against add.at,
    with few repeats (one add.reduceat) and many (a sum per group); float64 sums in
    another order agree to rounding."""
    n = rows * getattr(index_ops, per_row) + extra   # enough repeats for the kernel to bind
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows,) + tail).astype(dtype)
    ids = rng.integers(0, rows, size=(n,))
    update = rng.standard_normal((n,) + tail).astype(dtype)
    want, before = x.copy(), x.copy()
    np.add.at(want, ids, update)
    xs = kf.placeholder("x", x.shape, dtype)
    us = kf.placeholder("u", update.shape, dtype)
    ys = kf.placeholder("i", ids.shape, "int64")
    specs = [xs.spec, us.spec, ys.spec]
    assert index_ops.IndexAdd.bind(np, {"index": (("array", 0),)}, specs, xs.spec) is not None
    plan = kf.compile(kf.Graph([kf.index_add(xs, ys, us)]))
    (got,) = plan.run({"x": x, "u": update, "i": ids})
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(x, before)   # x is read, never written


@pytest.mark.parametrize("per_row", [2, 40])   # one add.reduceat; a sum per group
def test_group_sums_adds_the_rows_of_each_group(per_row):
    rng = np.random.default_rng(per_row)
    ids = rng.integers(0, 5, size=5 * per_row)
    update = rng.standard_normal((ids.size, 7))
    order = ids.argsort(kind="stable")
    ordered = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    got = index_ops._group_sums(update, order, starts)
    want = [update[ids == v].sum(axis=0) for v in ordered[starts]]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_planned_index_add_with_negative_or_out_of_range_ids_does_as_numpy():
    x = np.zeros((2, 3), "float32")
    update = np.ones((8, 3), "float32")
    xs, us = kf.placeholder("x", (2, 3)), kf.placeholder("u", (8, 3))
    ys = kf.placeholder("i", (8,), "int64")
    plan = kf.compile(kf.Graph([kf.index_add(xs, ys, us)]))
    (got,) = plan.run({"x": x, "u": update, "i": np.array([0, -1, 1, -2, 0, 0, 1, -1])})
    np.testing.assert_array_equal(got, np.full((2, 3), 4.0, "float32"))
    with pytest.raises(kf.ExecutionError, match=r"index_add failed .*IndexError"):
        plan.run({"x": x, "u": update, "i": np.array([0, 1, 2, 0, 0, 0, 0, 0])})
