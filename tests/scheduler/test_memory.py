"""Memory planning (scheduler/memory.py): exact buffers, liveness and peaks on small graphs.

Every value below is float32 of shape (4,) (16 bytes) unless drawn otherwise; inputs,
params and constants are not counted (the plan does not allocate them).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.array import reshape
from knetflow.scheduler.memory import OUTPUT, liveness, plan_memory, storage_roots

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
