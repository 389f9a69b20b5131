"""Memory planning (scheduler/memory.py): exact buffers, liveness and peaks on small graphs.

Every value below is float32 of shape (4,) (16 bytes) unless drawn otherwise; inputs,
params and constants are not counted (the plan does not allocate them).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.array import reshape
from knetflow.ops.base import (REGISTRY, Get, Op, Spec, TupleSpec, apply, apply_multi,
                               register)
from knetflow.scheduler.memory import (OUTPUT, liveness, plan_memory, split_outputs,
                                       storage_roots)

F32 = (4,), "float32"


def _ids(*syms):
    return [s.node.id for s in syms]


def test_inplace_ufunc_on_a_dying_input():
    #   x ── exp ── a ──┐
    #                   mul ── c ── sum ── out        a dies at mul: c is written over a
    #   x ── tanh ─ b ──┘
    x = kf.placeholder("x", (4,))
    a, b = kf.exp(x), kf.tanh(x)
    c = a * b
    out = kf.sum(c)
    m = plan_memory(kf.Graph([out]))
    assert m.buffers == [F32, F32]
    assert m.buffer_of == {a.node.id: 0, b.node.id: 1, c.node.id: 0}
    assert m.last_use == {x.node.id: 2, a.node.id: 3, b.node.id: 3, c.node.id: 4,
                          out.node.id: OUTPUT}
    assert m.peak_bytes == 32          # a and b; c takes a's place
    assert m.buffer_bytes == 32


def test_an_op_marked_inplace_writes_over_its_dying_input():
    #   x ── exp ── g ──┐
    #   x ── relu ─ y ──┴─ relu_grad ── r ── sum      g dies at relu_grad: r takes its buffer
    x = kf.placeholder("x", (4,))
    g, y = kf.exp(x), kf.relu(x)
    r = kf.ops.elementwise.relu_grad(g, y)
    m = plan_memory(kf.Graph([kf.sum(r)]))
    assert m.buffer_of[r.node.id] == m.buffer_of[g.node.id] != m.buffer_of[y.node.id]
    plan = kf.compile([kf.sum(r), y], optimize_graph=False)
    xs = np.array([-1.0, 0.5, 2.0, -0.1], "float32")
    total, relu = plan.run({"x": xs})
    np.testing.assert_allclose(total, (np.exp(xs) * (xs > 0)).sum(), rtol=1e-6)


def test_buffer_reused_after_last_use():
    #   x ── exp ── a ── sum ── s ──┐
    #   x ── tanh ── b ─────────────┴ mul ── out     b takes a's buffer: a died at sum
    x = kf.placeholder("x", (4,))
    a = kf.exp(x)
    s = kf.sum(a)
    b = kf.tanh(x)
    out = s * b
    g = kf.Graph([out])
    assert g.nodes == (x.node, a.node, s.node, b.node, out.node)
    m = plan_memory(g)
    assert m.buffers == [F32, ((), "float32")]
    assert m.buffer_of == {a.node.id: 0, s.node.id: 1, b.node.id: 0}
    assert m.peak_bytes == 4 + 16 + 16  # s, b and the output
    assert m.buffer_bytes == 20


def test_no_inplace_when_the_dying_input_is_read_twice():
    #   x ── exp ── a ══ mul ── sum      mul(a, a) cannot overwrite a while reading it twice
    x = kf.placeholder("x", (4,))
    a = kf.exp(x)
    sq = a * a
    m = plan_memory(kf.Graph([kf.sum(sq)]))
    assert m.buffer_of == {a.node.id: 0, sq.node.id: 1}
    assert m.peak_bytes == 32


def test_no_inplace_over_a_broadcast_input():
    #   x(4,) ── exp ── a ──┐
    #   y(3,4) ─────────────┴ add ── sum     a dies at add, but add's output is bigger
    x = kf.placeholder("x", (4,))
    y = kf.placeholder("y", (3, 4))
    a = kf.exp(x)
    c = a + y
    m = plan_memory(kf.Graph([kf.sum(c)]))
    assert m.buffers == [F32, ((3, 4), "float32")]
    assert m.buffer_of == {a.node.id: 0, c.node.id: 1}
    assert m.peak_bytes == 16 + 48


def test_outputs_are_never_pooled():
    #   x ── exp ── a ── sum ── s       both a and s are outputs: neither gets a pooled buffer
    x = kf.placeholder("x", (4,))
    a = kf.exp(x)
    s = kf.sum(a)
    m = plan_memory(kf.Graph([a, s]))
    assert m.buffers == [] and m.buffer_of == {}
    assert m.last_use[a.node.id] == OUTPUT
    assert m.peak_bytes == 20


def test_an_output_view_keeps_its_storage_out_of_the_pool():
    #   x ── exp ── a ── reshape(2,2) ── out      a's storage reaches an output
    #         a ── tanh ── t ── sum ── out
    x = kf.placeholder("x", (4,))
    a = kf.exp(x)
    r = reshape(a, (2, 2))
    t = kf.tanh(a)
    m = plan_memory(kf.Graph([r, kf.sum(t)]))
    assert m.buffer_of == {t.node.id: 0}
    assert m.last_use[a.node.id] == OUTPUT and m.last_use[r.node.id] == OUTPUT


def test_views_keep_their_storage_alive():
    #   x ── exp ── a ── reshape ── r ──┐
    #   x ── tanh ── c ── reshape ── rc ┴ mul ── m ── sum ── out
    # r is read at mul, so a's buffer is still in use when c is made: c gets a new one
    x = kf.placeholder("x", (4,))
    a = kf.exp(x)
    r = reshape(a, (2, 2))
    c = kf.tanh(x)
    rc = reshape(c, (2, 2))
    prod = r * rc
    out = kf.sum(prod)
    g = kf.Graph([out])
    assert g.nodes == (x.node, a.node, r.node, c.node, rc.node, prod.node, out.node)
    roots = storage_roots(g)
    assert roots[r.node.id] == a.node.id and roots[rc.node.id] == c.node.id
    assert liveness(g, roots)[a.node.id] == 5
    m = plan_memory(g)
    assert m.buffers == [F32, F32, ((2, 2), "float32")]
    assert m.buffer_of == {a.node.id: 0, c.node.id: 1, prod.node.id: 2}
    assert m.last_use[a.node.id] == m.last_use[r.node.id] == 5
    assert m.peak_bytes == 48


def test_value_nothing_reads_dies_at_once():
    x = kf.placeholder("x", (4,))
    g = kf.Graph([kf.sum(kf.exp(x))], inputs=[x])
    assert plan_memory(g).peak_bytes == 16 + 4


def test_dynamic_shapes_get_no_buffers():
    x = kf.placeholder("x", (None, 4))
    m = plan_memory(kf.Graph([kf.sum(kf.tanh(kf.exp(x)))]))
    assert m.buffers == [] and m.buffer_of == {}
    assert m.peak_bytes == 4  # only the scalar output has a known size


def test_memory_report_matches_the_plan():
    x = kf.placeholder("x", (None, 4))
    plan = kf.compile([kf.sum(kf.exp(x) * kf.tanh(x))], optimize_graph=False)
    # exp and tanh (160 bytes each) are live together; mul overwrites exp; then the sum
    assert plan.memory_report({"x": (10, 4)}) == {"cpu:0": 320}


# ---- property: the planned program computes what eager evaluation computes ----

_UNARY = [kf.tanh, kf.sin, kf.exp, kf.neg, kf.abs, kf.square]
_BINARY = [kf.add, kf.mul, kf.sub, kf.maximum]


@st.composite
def _programs(draw):
    """A random DAG over inputs 0 and 1: steps (fn, operand indices), and output indices."""
    steps = []
    for k in range(draw(st.integers(1, 10))):
        n = k + 2
        if draw(st.booleans()):
            steps.append((draw(st.sampled_from(_UNARY)), (draw(st.integers(0, n - 1)),)))
        else:
            steps.append((draw(st.sampled_from(_BINARY)),
                          (draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1)))))
    total = len(steps) + 2
    outs = draw(st.lists(st.integers(2, total - 1), min_size=1, max_size=3, unique=True))
    if total - 1 not in outs:
        outs.append(total - 1)
    return steps, outs


def _evaluate(program, a, b):
    steps, outs = program
    values = [a, b]
    for fn, refs in steps:
        values.append(fn(*[kf.tanh(values[r]) if fn is kf.exp else values[r] for r in refs]))
    return [values[k] for k in outs]


@settings(max_examples=60, deadline=None)
@given(program=_programs())
def test_planned_buffers_never_clobber_live_values(program):
    rs = np.random.RandomState(0)
    a, b = rs.uniform(-1, 1, (3, 4)), rs.uniform(-1, 1, (4,))
    pa, pb = kf.placeholder("a", (3, 4), "float64"), kf.placeholder("b", (4,), "float64")
    plan = kf.compile(kf.Graph(_evaluate(program, pa, pb), inputs=[pa, pb]))
    with np.errstate(all="ignore"):  # long product chains may overflow: both sides alike
        want = _evaluate(program, a, b)
        for _ in range(2):  # the second run reuses the buffers of the first
            got = plan.run({"a": a, "b": b})
            for w, g in zip(want, got):
                np.testing.assert_allclose(g, w, rtol=1e-12)


# ---- multi-output ops given a tuple of planned buffers (`outs_arg`) ----


class _Halves(Op):
    """(x + 1, 2 * x) into the planned buffers it is given: a test-only `outs_arg` op."""
    name = "test_halves"
    outs_arg = True

    def infer(x: Spec) -> TupleSpec:
        return TupleSpec((x, x))

    def forward(xp, x, out=None):
        first, second = (None, None) if out is None else out
        return xp.add(x, 1, out=first), xp.multiply(x, 2, out=second)


@pytest.fixture
def halves():
    register(_Halves)
    yield lambda x: apply_multi(_Halves, x)
    del REGISTRY["test_halves"]


def test_each_read_output_of_a_multi_output_op_gets_its_own_buffer(halves):
    #   x ── halves ─┬ get0 ── a ── exp ── e ──┐
    #                └ get1 ── b ──────────────┴ mul ── m ── sum ── out
    # a dies at exp, so e takes a's buffer; b lives until mul, which writes over e
    x = kf.placeholder("x", (4,))
    a, b = halves(x)
    e = kf.exp(a)
    m = e * b
    out = kf.sum(m)
    g = kf.Graph([out])
    t = a.node.inputs[0]
    assert g.nodes == (x.node, t, a.node, e.node, b.node, m.node, out.node)
    assert split_outputs(g) == {t.id: {0: a.node.id, 1: b.node.id}}
    roots = storage_roots(g)
    assert roots[a.node.id] == a.node.id and roots[b.node.id] == b.node.id
    mem = plan_memory(g)
    assert mem.buffers == [F32, F32]
    assert mem.outs_of == {t.id: (0, 1)}
    assert mem.buffer_of == {e.node.id: 0, m.node.id: 0}
    assert mem.last_use[a.node.id] == 3 and mem.last_use[b.node.id] == 5
    assert mem.peak_bytes == 32     # both outputs, born together at the op


def test_gets_of_one_output_share_its_storage_whatever_the_index_sign(halves):
    #   x ── halves ── t ─┬ get(1) ── b ── exp ── sum ── result
    #                     └ get(-1) ─ c ── tanh ── sum ── result     b and c: one storage
    x = kf.placeholder("x", (4,), "float64")
    t = apply(_Halves, x)
    b, c = apply(Get, t, index=1), apply(Get, t, index=-1)
    g = kf.Graph([kf.sum(kf.exp(b)), kf.sum(kf.tanh(c))])
    roots = storage_roots(g)
    assert roots[c.node.id] == roots[b.node.id] == b.node.id
    mem = plan_memory(g)
    assert mem.last_use[b.node.id] == mem.last_use[c.node.id] == g.nodes.index(
        next(n for n in g.nodes if n.op == "tanh"))
    v = np.linspace(-1, 1, 4)
    plan = kf.compile(g, optimize_graph=False)
    for _ in range(2):
        total_exp, total_tanh = plan.run({"x": v})
        assert total_exp == pytest.approx(np.exp(2 * v).sum(), rel=1e-14)
        assert total_tanh == pytest.approx(np.tanh(2 * v).sum(), rel=1e-14)


def test_an_output_reaching_a_result_gets_no_buffer(halves):
    #   x ── halves ─┬ get0 ── a ── reshape(2, 2) ── result
    #                └ get1 ── b ── tanh ── sum ── result
    x = kf.placeholder("x", (4,))
    a, b = halves(x)
    r = reshape(a, (2, 2))
    s = kf.sum(kf.tanh(b))
    g = kf.Graph([r, s])
    t = a.node.inputs[0]
    mem = plan_memory(g)
    assert mem.outs_of == {t.id: (None, 0)}
    assert mem.last_use[a.node.id] == mem.last_use[r.node.id] == OUTPUT


def test_an_output_nothing_reads_gets_no_buffer_and_dies_at_once(halves):
    x = kf.placeholder("x", (4,))
    a, _ = halves(x)
    t = a.node.inputs[0]
    mem = plan_memory(kf.Graph([kf.sum(kf.exp(a))]))
    assert mem.outs_of == {t.id: (0, None)}
    # a (16) while exp writes over it, then the sum (4); the unread output counts at the
    # op only: 16 + 16, then it is gone
    assert mem.peak_bytes == 32


def test_dynamic_shapes_give_a_multi_output_op_no_buffers(halves):
    x = kf.placeholder("x", (None, 4))
    a, b = halves(x)
    g = kf.Graph([kf.sum(a * b)])
    assert plan_memory(g).outs_of == {a.node.inputs[0].id: (None, None)}


def test_ops_without_outs_arg_keep_one_storage():
    # nll_terms is multi-output without outs_arg: its gets are views of its one storage
    s = kf.placeholder("s", (3, 5))
    y = kf.placeholder("y", (3,), "int64")
    total = kf.nll(s, y)
    g = kf.Graph([total])
    assert split_outputs(g) == {}
    roots = storage_roots(g)
    gets = [n for n in g.nodes if n.op == "get"]
    assert gets and all(roots[n.id] == n.inputs[0].id for n in gets)


def test_outputs_kept_from_one_run_survive_the_next(halves):
    #   x ── halves ─┬ get0 ── a ── exp ── e ── result, and a ── reshape ── result
    #                └ get1 ── b ── mul(b, b) ── result
    x = kf.placeholder("x", (4,), "float64")
    a, b = halves(x)
    plan = kf.compile(kf.Graph([kf.exp(a), reshape(a, (2, 2)), b * b, a, b]),
                      optimize_graph=False)
    v1, v2 = np.arange(4.0), np.linspace(-1, 1, 4)
    first = plan.run({"x": v1})
    kept = [f.copy() for f in first]
    second = plan.run({"x": v2})
    for f, k in zip(first, kept, strict=True):
        np.testing.assert_array_equal(f, k)
    want = [np.exp(v2 + 1), (v2 + 1).reshape(2, 2), 4 * v2 * v2, v2 + 1, 2 * v2]
    for s, w in zip(second, want, strict=True):
        np.testing.assert_allclose(s, w, rtol=1e-15)


@settings(max_examples=60, deadline=None)
@given(program=_programs(), at=st.integers(0, 11), which=st.integers(0, 2))
def test_planned_tuple_buffers_never_clobber_live_values(program, at, which):
    """The random programs above, with one value replaced by halves' first, second or both."""
    register(_Halves)
    try:
        rs = np.random.RandomState(1)
        a, b = rs.uniform(-1, 1, (3, 4)), rs.uniform(-1, 1, (4,))
        pa, pb = kf.placeholder("a", (3, 4), "float64"), kf.placeholder("b", (4,), "float64")

        def build(x, y, multi):
            values = [x, y]
            for k, (fn, refs) in enumerate(program[0]):
                args = [kf.tanh(values[r]) if fn is kf.exp else values[r] for r in refs]
                if k == at % len(program[0]):
                    h1, h2 = multi(args[0])
                    values.append((h1, h2, h1 * h2)[which])
                else:
                    values.append(fn(*args))
            return [values[k] for k in program[1]]

        def numpy_halves(v):
            return v + 1, 2 * v

        plan = kf.compile(kf.Graph(build(pa, pb, lambda v: apply_multi(_Halves, v)),
                                   inputs=[pa, pb]))
        with np.errstate(all="ignore"):
            want = build(a, b, numpy_halves)
            kept = None
            for _ in range(2):  # the second run reuses the buffers of the first
                got = plan.run({"a": a, "b": b})
                for w, g in zip(want, got):
                    np.testing.assert_allclose(g, w, rtol=1e-12)
                if kept is not None:
                    for k, f in kept:
                        np.testing.assert_array_equal(f, k)
                kept = [(g.copy(), g) for g in got]
    finally:
        del REGISTRY["test_halves"]
