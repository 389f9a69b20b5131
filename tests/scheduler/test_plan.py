"""Compiled plans (scheduler/plan.py, scheduler/codegen.py): running, feeds, parameters,
reports, numerics checks and runtime errors."""

import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.array import reshape


def _line_below() -> str:
    """`test_plan.py:N` of the line after the caller's."""
    return f"test_plan.py:{sys._getframe(1).f_lineno + 1}"


def _affine():
    """y = x * w + 1 and its sum, with x (?, 3) and w = [1, 2, 3]."""
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.array([1.0, 2.0, 3.0]))
    y = x * w + 1.0
    return x, w, y, kf.compile([y, kf.sum(y)])


# ---- running ----


def test_run_with_dynamic_batch_sizes_caches_per_signature():
    *_, plan = _affine()
    for batch in (2, 5, 2, 5, 1):
        y, s = plan.run({"x": np.ones((batch, 3))})
        np.testing.assert_allclose(y, np.tile([2.0, 3.0, 4.0], (batch, 1)))
        np.testing.assert_allclose(s, 9.0 * batch)
        assert y.dtype == np.dtype("float32")
    assert sorted(plan._programs) == [((1, 3),), ((2, 3),), ((5, 3),)]


def test_plan_is_callable_and_converts_feeds():
    *_, plan = _affine()
    y, _ = plan({"x": [[0, 0, 0]]})  # lists and ints become float32 arrays
    np.testing.assert_allclose(y, [[1.0, 1.0, 1.0]])


def test_compile_rejects_unknown_arguments():
    x = kf.placeholder("x", (3,))
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'fast'"):
        kf.compile([x * 2.0], fast=True)


def test_outputs_are_not_overwritten_by_a_later_run():
    #   x ── mul(w) ── exp ── e ── sum ── s       outputs: e, s, reshape(e), x itself, w
    x = kf.placeholder("x", (2, 3))
    w = kf.param("w", value=np.full(3, 0.5))
    e = kf.exp(x * w)
    plan = kf.compile([e, kf.sum(e), reshape(e, (3, 2)), x, w])
    first = plan.run({"x": np.zeros((2, 3))})
    kept = [np.array(a) for a in first]
    second = plan.run({"x": np.ones((2, 3))})
    for a, k, b in zip(first, kept, second):
        np.testing.assert_array_equal(a, k)
        assert not np.shares_memory(a, b)
    first[3][0, 0] = 99.0  # changing a result changes neither the feed nor the param
    first[4][0] = 99.0
    np.testing.assert_array_equal(plan.params["w"], [0.5, 0.5, 0.5])


def test_feeds_and_params_are_never_written():
    #   x ── exp ── a ── mul(a, x) ── tanh ── out      in-place ops only touch planned buffers
    x = kf.placeholder("x", (4,), "float64")
    w = kf.param("w", value=np.full(4, 2.0), dtype="float64")
    out = kf.tanh(kf.exp(x * w) * x) + w
    plan = kf.compile([kf.sum(out)], optimize_graph=False)
    feed = np.array([0.1, 0.2, 0.3, 0.4])
    plan.run({"x": feed})
    plan.run({"x": feed})
    np.testing.assert_array_equal(feed, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(plan.params["w"], np.full(4, 2.0))


# ---- feed errors ----


def test_missing_input():
    *_, plan = _affine()
    with pytest.raises(kf.FeedError, match=r"feed is missing input\(s\) \['x'\]; "
                                           r"the graph's inputs are \['x'\]"):
        plan.run({})


def test_wrong_shape_names_the_input_and_its_line():
    where = _line_below()
    x = kf.placeholder("x", (None, 3))
    plan = kf.compile([x * 2.0])
    with pytest.raises(kf.FeedError, match=re.escape(
            f"input 'x' expects shape (?, 3), got (2, 4) (placeholder created at {where})")):
        plan.run({"x": np.ones((2, 4))})
    with pytest.raises(kf.FeedError, match=r"input 'x' expects shape \(\?, 3\), got \(3,\)"):
        plan.run({"x": np.ones(3)})


def test_unknown_name_in_feed():
    *_, plan = _affine()
    with pytest.raises(kf.FeedError, match=r"'v' is neither an input nor a param of the plan; "
                                           r"inputs: \['x'\], params: \['w'\]"):
        plan.run({"x": np.ones((1, 3)), "v": np.ones(3)})


# ---- parameters ----


def test_param_override_by_feed_is_for_one_run():
    *_, plan = _affine()
    y, _ = plan.run({"x": np.ones((1, 3)), "w": np.array([5.0, 5.0, 5.0])})
    np.testing.assert_allclose(y, [[6.0, 6.0, 6.0]])
    y, _ = plan.run({"x": np.ones((1, 3))})
    np.testing.assert_allclose(y, [[2.0, 3.0, 4.0]])
    with pytest.raises(kf.FeedError, match=r"param 'w' has shape \(3,\), got \(2,\)"):
        plan.run({"x": np.ones((1, 3)), "w": np.ones(2)})


def test_set_params():
    *_, plan = _affine()
    plan.set_params({"w": [7, 8, 9]})
    assert plan.params["w"].dtype == np.dtype("float32")
    np.testing.assert_allclose(plan.params["w"], [7.0, 8.0, 9.0])
    y, _ = plan.run({"x": np.ones((1, 3))})
    np.testing.assert_allclose(y, [[8.0, 9.0, 10.0]])
    with pytest.raises(kf.FeedError, match=r"param 'w' has shape \(3,\), got \(2,\)"):
        plan.set_params({"w": [1.0, 2.0]})
    with pytest.raises(kf.FeedError, match="plan has no param 'q'"):
        plan.set_params({"q": [1.0]})


def test_params_start_from_their_initializer():
    kf.seed(3)
    w = kf.param("w", (4, 5), init=kf.init.xavier)
    plan = kf.compile([w * 1.0])
    value = plan.params["w"]
    assert value.shape == (4, 5) and value.dtype == np.dtype("float32")
    assert np.any(value != 0)
    np.testing.assert_array_equal(plan.run()[0], value)


def test_keep_on_device():
    *_, plan = _affine()
    y, _ = plan.run({"x": np.ones((2, 3))}, keep_on_device=True)
    assert isinstance(y, np.ndarray)  # the CPU device's arrays are NumPy arrays
    np.testing.assert_allclose(y, np.tile([2.0, 3.0, 4.0], (2, 1)))


# ---- reports ----


def test_memory_report():
    x = kf.placeholder("x", (None, 3))
    plan = kf.compile([kf.sum(kf.exp(x) * kf.tanh(x))], optimize_graph=False)
    with pytest.raises(ValueError, match="run the plan once, or pass feed_shapes"):
        plan.memory_report()
    assert plan.memory_report({"x": (10, 3)}) == {"cpu:0": 240}
    plan.run({"x": np.ones((2, 3))})
    assert plan.memory_report() == {"cpu:0": 48}  # the last signature run


def test_memory_report_of_static_graph_needs_no_run():
    x = kf.placeholder("x", (5,), "float64")
    plan = kf.compile([kf.exp(x)])
    assert plan.memory_report() == {"cpu:0": 40}


def test_profile():
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.ones((3, 2)))
    plan = kf.compile([kf.sum(kf.relu(x @ w))])
    prof = plan.profile({"x": np.ones((8, 3))}, runs=3)
    assert sorted(prof.by_op()) == ["matmul", "relu", "sum"]
    assert [n.op for n, _, _ in prof.rows] == ["matmul", "relu", "sum"]
    assert {d for _, _, d in prof.rows} == {"cpu:0"} and list(prof.by_device()) == ["cpu:0"]
    assert all(s >= 0 for _, s, _ in prof.rows) and prof.total == sum(s for _, s, _ in prof.rows)
    assert prof.runs == 3 and prof.feed_shapes == {"x": (8, 3)}
    lines = str(prof).splitlines()
    assert lines[0] == "profile of 3 run(s) of x (8, 3)"
    assert lines[1].split() == ["op", "us", "shape", "device", "built", "at"]
    assert lines[-1].startswith("total") and lines[-1].endswith("cpu:0")
    assert all("test_plan.py:" in line for line in lines[2:-1]) and len(lines) == 6
    y = plan.run({"x": np.ones((8, 3))})[0]  # profiling left the plan as it was
    assert float(y) == 48.0


# ---- numerics and runtime errors ----


def test_check_numerics_names_the_op_that_made_nan():
    z = kf.placeholder("z", (3,))
    where = _line_below()
    bad = kf.log(z)
    out = kf.exp(bad * 2.0)
    feed = {"z": np.array([1.0, -1.0, 2.0])}
    with np.errstate(invalid="ignore"):
        with pytest.raises(kf.NumericsError, match=re.escape(
                f"log produced NaN or Inf: output float32(3,) (node log#{bad.node.id} "
                f"built at {where})")):
            kf.compile([out], check_numerics=True).run(feed)
        assert np.isnan(kf.compile([out]).run(feed)[0][1])  # off by default


def test_numerics_error_is_an_execution_error():
    assert issubclass(kf.NumericsError, kf.ExecutionError)


def _negative_power(make_outputs):
    """The ExecutionError of a plan computing i ** i with a negative i, and pow's line."""
    i = kf.placeholder("i", (3,), "int64")
    where = _line_below()
    p = i ** i
    plan = kf.compile(make_outputs(p))
    with pytest.raises(kf.ExecutionError) as info:
        plan.run({"i": np.array([1, -1, 2])})  # NumPy refuses negative integer powers
    return info.value, where, plan


def test_runtime_error_names_op_shapes_device_and_user_line():
    error, where, plan = _negative_power(lambda p: [p, kf.sum(p)])
    msg = str(error)
    assert msg.startswith("pow failed on inputs of shapes (3,), (3,) on cpu:0: ValueError: ")
    assert msg.endswith(f"(node built at {where})")
    assert isinstance(error.__cause__, ValueError)
    np.testing.assert_array_equal(plan.run({"i": np.array([1, 2, 3])})[0], [1, 4, 27])


def test_runtime_error_inside_a_fused_chain_names_the_op():
    error, where, _ = _negative_power(lambda p: [p * 2])
    msg = str(error)
    assert msg.startswith("pow failed on inputs of shapes (3,), (3,) on cpu:0: ValueError: ")
    assert msg.endswith(f"(node built at {where})")


# ---- property: optimization passes do not change results ----

_UNARY = ["tanh", "sin", "cos", "neg", "abs", "exp", "square", "sigm", "relu"]
_BINARY = ["add", "sub", "mul", "maximum", "minimum"]


@st.composite
def _chains(draw):
    """Steps of an elementwise chain over x (3, 4) and y (4,): (op, operand) pairs."""
    steps = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            steps.append((draw(st.sampled_from(_UNARY)), None))
        else:
            operand = draw(st.sampled_from(["x", "y", "const", "self"]))
            steps.append((draw(st.sampled_from(_BINARY)), operand))
    return steps


def _chain(steps, x, y):
    v = x
    for op, operand in steps:
        if operand is None:
            v = getattr(kf, op)(kf.tanh(v) if op == "exp" else v)
        else:
            other = {"x": x, "y": y, "const": 0.75, "self": v}[operand]
            v = getattr(kf, op)(v, other)
    return v


@settings(max_examples=50, deadline=None)
@given(steps=_chains(), differentiate=st.booleans())
def test_optimized_and_plain_plans_agree(steps, differentiate):
    x = kf.placeholder("x", (3, 4), "float64")
    y = kf.placeholder("y", (4,), "float64")
    out = kf.sum(_chain(steps, x, y) * np.linspace(0.5, 1.5, 4))
    graph = kf.Graph([out], inputs=[x, y])
    if differentiate:
        graph = kf.backward(graph, wrt=[x, y])
    rs = np.random.RandomState(1)
    feed = {"x": rs.uniform(-1, 1, (3, 4)), "y": rs.uniform(-1, 1, 4)}
    with np.errstate(all="ignore"):
        plain = kf.compile(graph, optimize_graph=False).run(feed)
        optimized = kf.compile(graph).run(feed)
    for a, b in zip(plain, optimized):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_a_signature_with_dynamic_dims_made_known_is_optimized_again():
    # at a feed's shapes a mean's count and its gradient's broadcast are constants
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.ones(3, "float32"))
    graph = kf.backward(kf.Graph([kf.mean((x * w - 1.0) ** 2)]))
    plan = kf.compile(graph)
    assert {"count", "broadcast_like"} <= {n.op for n in plan.graph.nodes}
    feed = {"x": np.arange(12, dtype="float32").reshape(4, 3)}
    got = plan.run(feed)
    ops = {n.op for n in plan._last.graph.nodes}
    assert not ops & {"count", "broadcast_like", "pow"}, ops
    want = kf.compile(graph, optimize_graph=False).run(feed)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_optimizing_at_known_shapes_keeps_the_params_runs_index():
    # at x's shape count(x) folds, and with it the broadcast to the param's shape: the
    # param drops out of that graph, which then is not used (params are fed by position)
    from knetflow.ops.reduce import broadcast_like, count

    x = kf.placeholder("x", (None, 3))
    p = kf.param("p", value=np.zeros(3, "float32"))
    q = kf.param("q", value=np.full(3, 5.0, "float32"))
    plan = kf.compile([broadcast_like(count(x), p) + x + q])
    feed = {"x": np.ones((4, 3), "float32")}
    np.testing.assert_array_equal(plan.run(feed)[0], np.full((4, 3), 18.0))
    assert [n.attrs["name"] for n in plan._last.graph.params] == ["p", "q"]
