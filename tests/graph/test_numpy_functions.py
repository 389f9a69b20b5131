"""NumPy reductions, elementwise functions and shape functions on symbols
(graph/numpy_math.py, graph/numpy_shape.py): NumPy's values, dtypes and gradients."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from tests.graph.numpy_harness import F, case, check

X = F((2, 3, 4))
M = F((3, 4))
V = F((4,))
ZEROS = F((2, 3), value=[[0.0, 1.5, 0.0], [-2.0, 0.0, 0.0]])

REDUCTIONS = [
    case("np.sum", np.sum, X),
    case("np.sum[axis=1]", lambda x: np.sum(x, axis=1), X),
    case("np.sum[positional axis, keepdims]", lambda x: np.sum(x, -1, keepdims=True), X),
    case("np.sum[axis tuple]", lambda x: np.sum(x, axis=(0, 2)), X),
    # a float32 result: finite differences cannot see float64 steps through it
    case("np.sum[dtype=float32]", lambda x: np.sum(x, axis=0, dtype=np.float32), M, grad=False),
    case("np.sum[ints widen]", lambda x, i: np.sum(i, axis=0) * x, M,
         F((3, 4), value=np.arange(12, dtype=np.int32).reshape(3, 4))),
    case("np.prod", np.prod, M),
    case("np.prod[axis=0, keepdims]", lambda x: np.prod(x, axis=0, keepdims=True), M),
    case("np.mean", np.mean, X),
    case("np.mean[axis tuple, keepdims]", lambda x: np.mean(x, (1, 2), keepdims=True), X),
    case("np.mean[of ints]", lambda x, i: np.mean(i, axis=1) + x, F((3,)),
         F((3, 4), "int", high=9)),
    case("np.max", np.max, X),
    case("np.max[axis=-1]", lambda x: np.max(x, axis=-1), X),
    case("np.amax", lambda x: np.amax(x, 0, keepdims=True), M),
    case("np.min", lambda x: np.min(x, axis=(0, 1)), X),
    case("np.amin", np.amin, M),
    case("np.ptp", lambda x: np.ptp(x, axis=1), M),
    case("np.var", np.var, X),
    case("np.var[axis, ddof=1]", lambda x: np.var(x, axis=1, ddof=1), X),
    case("np.var[correction, keepdims]", lambda x: np.var(x, 0, correction=1, keepdims=True), M),
    case("np.std", np.std, M),
    case("np.std[axis tuple, ddof]", lambda x: np.std(x, axis=(0, 2), ddof=1), X),
    case("np.average", np.average, M),
    case("np.average[axis, 1-D weights]", lambda x, w: np.average(x, axis=1, weights=w),
         M, F((4,), "positive")),
    case("np.average[same-shape weights, returned]",
         lambda x, w: np.average(x, weights=w, returned=True), M, F((3, 4), "positive")),
    case("np.average[axis tuple weights, keepdims]",
         lambda x, w: np.average(x, axis=(2, 0), weights=w, keepdims=True),
         X, F((4, 2), "positive")),
    case("np.any", lambda x: np.any(x, axis=1), ZEROS),
    case("np.all", lambda x: np.all(x, axis=0, keepdims=True), ZEROS),
    case("np.count_nonzero", lambda x: np.count_nonzero(x, axis=1), ZEROS),
    case("np.argmax", np.argmax, X),
    case("np.argmax[axis=1, keepdims]", lambda x: np.argmax(x, axis=1, keepdims=True), X),
    case("np.argmax[ties: first]", lambda x: np.argmax(x, axis=1),
         F((2, 3), value=[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])),
    case("np.argmin", lambda x: np.argmin(x, axis=-1), M),
    case("np.argmin[axis=None, keepdims]", lambda x: np.argmin(x, keepdims=True), M),
]

ELEMENTWISE = [
    case("np.round", np.round, F((3, 4), value=np.linspace(-2.5, 2.5, 12).reshape(3, 4))),
    case("np.round[decimals=2]", lambda x: np.round(x, 2), M),
    case("np.round[decimals=-1]", lambda x: np.round(x * 30, decimals=-1), M),
    case("np.around", lambda x: np.around(x, 1), M),
    case("np.fix", np.fix, M),
    case("np.real", np.real, M),
    case("np.imag", np.imag, M),
    case("np.clip", lambda x: np.clip(x, -0.5, 0.5), M),
    case("np.clip[one side]", lambda x: np.clip(x, None, 0.5), M),
    case("np.clip[min=, max= keywords]", lambda x: np.clip(x, min=-1.0, max=1.0), M),
    case("np.clip[array bounds]", lambda x, lo: np.clip(x, lo, 1.0), M, F((4,), "unit")),
    case("np.where", lambda x, y: np.where(x > 0, x, y), M, M),
    case("np.where[scalar branch]", lambda x: np.where(x > 0, x, 0.0), M),
    case("np.where[numeric condition]", lambda c, x: np.where(c, x, -x), ZEROS,
         F((2, 3))),
    case("np.where[int scalars]", lambda x: np.where(x > 0, 2, 0) * x, M),
    case("np.zeros_like", lambda x: np.zeros_like(x) + x, M),
    case("np.ones_like", lambda x: np.ones_like(x, dtype=np.int32) * x, M),
    case("np.full_like", lambda x: np.full_like(x, 2.5) * x, M),
    case("np.full_like[int dtype casts the fill]",
         lambda x: np.full_like(x, 2.7, dtype=np.int64) * x, M),
    case("np.copy", np.copy, M),
    case("np.astype", lambda x: np.astype(x, np.float32), M, grad=False),
    case("np.astype[float64]", lambda x: np.astype(x, np.float64) * 2, M),
]

SHAPES = [
    case("np.reshape", lambda x: np.reshape(x, (4, -1)), X),
    case("np.reshape[int shape]", lambda x: np.reshape(x, 24), X),
    case("np.ravel", np.ravel, X),
    case("np.transpose", np.transpose, X),
    case("np.transpose[axes]", lambda x: np.transpose(x, (1, -1, 0)), X),
    case("np.transpose[permute_dims alias]", lambda x: np.permute_dims(x, (2, 0, 1)), X),
    case("np.matrix_transpose", np.matrix_transpose, X),
    case("np.linalg.matrix_transpose", np.linalg.matrix_transpose, M),
    case("np.swapaxes", lambda x: np.swapaxes(x, 0, -1), X),
    case("np.moveaxis", lambda x: np.moveaxis(x, 0, -1), X),
    case("np.moveaxis[sequences]", lambda x: np.moveaxis(x, [0, 1], [-1, 0]), X),
    case("np.squeeze", np.squeeze, F((1, 3, 1))),
    case("np.squeeze[axis]", lambda x: np.squeeze(x, axis=-1), F((1, 3, 1))),
    case("np.expand_dims", lambda x: np.expand_dims(x, 1), M),
    case("np.expand_dims[tuple]", lambda x: np.expand_dims(x, (0, -1)), M),
    case("np.atleast_1d", lambda s: np.atleast_1d(s), F(())),
    case("np.atleast_2d", lambda v, m: np.atleast_2d(v, m), V, M),
    case("np.atleast_3d", lambda s, v, m: np.atleast_3d(s, v, m), F(()), V, M),
    case("np.broadcast_to", lambda x: np.broadcast_to(x, (2, 3, 4)), F((3, 1))),
    case("np.flip", np.flip, M),
    case("np.flip[axis]", lambda x: np.flip(x, axis=(0, 2)), X),
    case("np.fliplr", np.fliplr, M),
    case("np.flipud", np.flipud, V),
    case("np.diff", np.diff, M),
    case("np.diff[n=2, axis=0]", lambda x: np.diff(x, n=2, axis=0), F((4, 3))),
    case("np.take", lambda x: np.take(x, [0, 5, 11]), M),
    case("np.take[axis, negative and repeated]", lambda x: np.take(x, [-1, 0, 0], axis=1), M),
    case("np.diagonal", np.diagonal, M),
    case("np.diagonal[offset]", lambda x: np.diagonal(x, offset=1), M),
    case("np.diagonal[negative offset, axes]", lambda x: np.diagonal(x, -1, 2, 1), X),
    case("np.linalg.diagonal", lambda x: np.linalg.diagonal(x, offset=1), X),
    case("np.tile", lambda x: np.tile(x, 2), M),
    case("np.tile[more reps than dims]", lambda x: np.tile(x, (2, 1, 3)), M),
    case("np.tile[fewer reps]", lambda x: np.tile(x, (2,)), F((2, 2, 3))),
]

JOINS = [
    case("np.concatenate", lambda x, y: np.concatenate([x, y]), M, F((2, 4))),
    case("np.concatenate[axis=-1, tuple]", lambda x, y: np.concatenate((x, y), axis=-1),
         M, F((3, 2))),
    case("np.concatenate[axis=None]", lambda x, y: np.concatenate([x, y], axis=None), M, X),
    case("np.concatenate[one array]", lambda x: np.concatenate(x), X),
    case("np.concatenate[one array, axis=1]", lambda x: np.concatenate(x, axis=1), X),
    case("np.concatenate[one array, axis=None]", lambda x: np.concatenate(x, axis=None), X),
    case("np.concatenate[dtype]", lambda x, y: np.concatenate([x, y], dtype=np.float32), V, V,
         grad=False),
    case("np.concatenate[concat alias]", lambda x, y: np.concat([x, y], axis=1), M, M),
    case("np.stack", lambda x, y: np.stack([x, y]), M, M),
    case("np.stack[axis=-1]", lambda x, y, z: np.stack((x, y, z), axis=-1), V, V, V),
    case("np.stack[one array]", lambda x: np.stack(x, axis=1), X),
    case("np.vstack", lambda x, y: np.vstack([x, y]), V, V),
    case("np.vstack[matrices and a vector]", lambda x, y: np.vstack([x, y]), M, V),
    case("np.vstack[one vector: a column]", np.vstack, V),
    case("np.vstack[one matrix]", np.vstack, M),
    case("np.vstack[one 3-D array]", np.vstack, X),
    case("np.vstack[dtype]", lambda x, y: np.vstack((x, y), dtype=np.float32), V, V,
         grad=False),
    case("np.hstack", lambda x, y: np.hstack([x, y]), V, F((2,))),
    case("np.hstack[matrices]", lambda x, y: np.hstack([x, y]), M, F((3, 1))),
    case("np.hstack[one vector]", np.hstack, V),
    case("np.hstack[one matrix]", np.hstack, M),
    case("np.hstack[one 3-D array]", np.hstack, X),
    case("np.hstack[scalars]", lambda a, b: np.hstack([a, b]), F(()), F(())),
    case("np.dstack", lambda x, y: np.dstack([x, y]), M, M),
    case("np.dstack[vectors]", lambda x, y: np.dstack([x, y]), V, V),
    case("np.dstack[one matrix]", np.dstack, M),
    case("np.column_stack", lambda x, y: np.column_stack([x, y]), V, V),
    case("np.column_stack[vector and matrix]", lambda x, y: np.column_stack([x, y]),
         F((3,)), M),
    case("np.column_stack[one matrix]", np.column_stack, M),
]

CASES = REDUCTIONS + ELEMENTWISE + SHAPES + JOINS


@pytest.mark.parametrize("c", CASES, ids=str)
def test_function(c):
    check(c)


def test_row_stack_goes_through_vstack():
    # NumPy's deprecated alias calls np.vstack(tup, dtype=None, casting="same_kind")
    if not hasattr(np, "row_stack"):
        pytest.skip("this NumPy has no row_stack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        c = case("np.row_stack", lambda x, y: np.row_stack([x, y]), V, M)
        check(c)
        c = case("np.row_stack[one vector]", np.row_stack, V)
        check(c)


def test_empty_like_has_numpys_shape_and_dtype():
    x = kf.placeholder("x", (2, 3), "float32")
    for y in (np.empty_like(x), np.empty_like(x, dtype=np.int64)):
        want = np.empty_like(np.ones((2, 3), np.float32), dtype=y.dtype)
        assert y.shape == want.shape and y.dtype == want.dtype


def test_static_facts():
    x = kf.placeholder("x", (2, 3, 4))
    assert np.shape(x) == (2, 3, 4) and np.ndim(x) == 3
    assert np.size(x) == 24 and np.size(x, 1) == 3 and np.size(x, axis=-1) == 4
    b = kf.placeholder("b", (None, 3))
    assert np.shape(b) == (None, 3) and np.ndim(b) == 2 and np.size(b, 1) == 3
    with pytest.raises(kf.TracingError, match=r"np\.size: .*dynamic \(None\) dimension"):
        np.size(b)


def test_dynamic_batch_dimension():
    x = kf.placeholder("x", (None, 3), "float64")
    outs = [np.sum(x, axis=1), np.mean(x, axis=0, keepdims=True), np.var(x, axis=1, ddof=1),
            np.where(x > 0, x, 0.0), np.clip(x, -1, 1), np.reshape(x, (x.shape[0], -1)),
            np.concatenate([x, x], axis=1), np.vstack([x, x]), np.hstack([x, x]),
            np.swapaxes(x, 0, 1), np.argmax(x, axis=1), np.linalg.norm(x, axis=1)]
    value = np.random.RandomState(0).randn(5, 3)
    got = kf.compile(outs).run({"x": value})
    want = [np.sum(value, axis=1), np.mean(value, axis=0, keepdims=True),
            np.var(value, axis=1, ddof=1), np.where(value > 0, value, 0.0),
            np.clip(value, -1, 1), np.reshape(value, (5, -1)),
            np.concatenate([value, value], axis=1), np.vstack([value, value]),
            np.hstack([value, value]), np.swapaxes(value, 0, 1), np.argmax(value, axis=1),
            np.linalg.norm(value, axis=1)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


# ---- shapes that vary ----

_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@st.composite
def _reduction(draw):
    shape = draw(_shapes)
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                          st.lists(st.integers(0, len(shape) - 1), min_size=1,
                                   unique=True).map(tuple)))
    keepdims = draw(st.booleans())
    fn = draw(st.sampled_from(["sum", "mean", "max", "min", "prod", "var", "std", "ptp"]))
    return shape, axis, keepdims, fn


@settings(max_examples=40, deadline=None)
@given(_reduction())
def test_reductions_over_random_shapes_and_axes(spec):
    shape, axis, keepdims, fn = spec
    c = case(f"np.{fn}[{shape}, axis={axis}, keepdims={keepdims}]",
             lambda x: getattr(np, fn)(x, axis=axis, keepdims=keepdims), F(shape))
    if fn in ("var", "std") and np.prod([shape[a] for a in np.atleast_1d(
            range(len(shape)) if axis is None else axis)]) == 1:
        c.grad = False  # a variance of one element is 0 for any input: sqrt has no slope
    check(c)


@st.composite
def _join(draw):
    ndim = draw(st.integers(1, 3))
    base = list(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    shapes = []
    for n in sizes:
        s = list(base)
        s[axis] = n
        shapes.append(tuple(s))
    return shapes, axis


@settings(max_examples=30, deadline=None)
@given(_join())
def test_concatenate_over_random_shapes(spec):
    shapes, axis = spec
    c = case(f"np.concatenate[{shapes}, axis={axis}]",
             lambda *xs: np.concatenate(xs, axis=axis), *[F(s) for s in shapes])
    check(c)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple), st.integers(1, 3),
       st.sampled_from(["vstack", "hstack", "dstack", "column_stack", "stack"]),
       st.booleans())
def test_stacking_over_random_shapes(shape, count, fn, one_array):
    if one_array:  # one array where NumPy takes a sequence: the sequence of its rows
        shape = (count,) + shape
        c = case(f"np.{fn}[one {shape} array]", getattr(np, fn), F(shape))
        if len(shape) == 1 and fn in ("stack",):
            c = case(f"np.{fn}[one {shape} array]", lambda x: np.stack(x), F(shape))
    else:
        c = case(f"np.{fn}[{count} of {shape}]", lambda *xs: getattr(np, fn)(list(xs)),
                 *[F(shape)] * count)
    check(c)
