"""The generic op test harness: every op case checked the same way.

A `Case` names a function of symbolic or concrete inputs (`fn`), a NumPy
reference (`ref`) and argument generators (`Arg`). `check(case)`:

1. values: the compiled graph and the eager call both agree with `ref`, in
   float64 and float32, and each output's inferred spec matches the real one;
2. gradient: d/dx of sum(out * R) (R fixed random) from the derived backward
   graph agrees with central differences in float64;
3. second order (`second=True`): the gradient of <grad, V> agrees with central
   differences of the first gradient.

Test modules declare `CASES` and parametrize `test_op` over them;
`test_coverage.py` fails when a registered op is used by no case.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import knetflow as kf

FLOAT_KINDS = ("float", "positive", "unit")


@dataclass
class Arg:
    """How to make one input: its shape and kind of values.

    kinds: float (-2..2), positive (0.5..2), unit (-0.9..0.9), int (0..high),
    bool, label (int64 in 0..high-1). `value` fixes the input instead.
    """

    shape: tuple = ()
    kind: str = "float"
    high: int | None = None
    value: Any = None

    @property
    def differentiable(self) -> bool:
        return self.value is None and self.kind in FLOAT_KINDS

    def make(self, rs: np.random.RandomState, dtype: str):
        if self.value is not None:
            v = np.asarray(self.value)
            return v.astype(dtype) if v.dtype.kind == "f" else v
        if self.kind == "float":
            return rs.uniform(-2, 2, self.shape).astype(dtype)
        if self.kind == "positive":
            return rs.uniform(0.5, 2, self.shape).astype(dtype)
        if self.kind == "unit":
            return rs.uniform(-0.9, 0.9, self.shape).astype(dtype)
        if self.kind == "int":
            return rs.randint(0, self.high or 5, self.shape).astype("int64")
        if self.kind == "bool":
            return rs.rand(*self.shape) > 0.5
        if self.kind == "label":
            return rs.randint(0, self.high, self.shape).astype("int64")
        raise ValueError(f"unknown Arg kind {self.kind!r}")


@dataclass
class Case:
    """One op test case; see the module docstring."""

    name: str
    fn: Callable
    ref: Callable | None
    args: list = field(default_factory=list)
    grad: bool = True
    second: bool = False
    rtol: float = 1e-5
    atol: float = 1e-6
    grad_rtol: float = 1e-4
    grad_atol: float = 1e-6
    dtypes: tuple = ("float64", "float32")
    eager: bool = True

    def __str__(self) -> str:
        return self.name

    def inputs(self, dtype):
        rs = np.random.RandomState(zlib.crc32(self.name.encode()))
        return [a.make(rs, dtype) for a in self.args]


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def build(case, dtype="float64"):
    """Placeholders for the case's inputs and the case's outputs (a tuple of Symbols)."""
    arrays = case.inputs(dtype)
    syms = [kf.placeholder(f"a{k}", a.shape, a.dtype) for k, a in enumerate(arrays)]
    outs = _tuple(case.fn(*syms))
    return arrays, syms, outs


def _feed(arrays):
    return {f"a{k}": a for k, a in enumerate(arrays)}


def check_values(case, dtype):
    arrays, syms, outs = build(case, dtype)
    got = kf.compile(list(outs)).run(_feed(arrays))
    tol = dict(rtol=case.rtol, atol=case.atol) if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    for sym, value in zip(outs, got):
        value = np.asarray(value)
        assert value.shape == sym.shape, f"{case}: infer says {sym.shape}, got {value.shape}"
        assert value.dtype == sym.dtype, f"{case}: infer says {sym.dtype}, got {value.dtype}"
    if case.ref is not None:
        want = _tuple(case.ref(*arrays))
        assert len(want) == len(got), f"{case}: {len(got)} outputs, reference has {len(want)}"
        for w, g in zip(want, got):
            np.testing.assert_allclose(np.asarray(g), w, **tol, err_msg=f"{case} ({dtype}) compiled")
    if case.eager:
        eager = _tuple(case.fn(*arrays))
        for e, g in zip(eager, got):
            np.testing.assert_allclose(np.asarray(e), np.asarray(g), **tol,
                                       err_msg=f"{case} ({dtype}) eager vs compiled")
    return got


def _loss_graph(case):
    """Inputs, weights R and the scalar sum(out * R) over the case's float outputs."""
    arrays, syms, outs = build(case, "float64")
    rs = np.random.RandomState(7)
    terms = []
    for o in outs:
        if o.dtype.kind == "f":
            r = rs.uniform(0.5, 1.5, [d for d in o.shape])
            terms.append(kf.sum(o * r))
    wrt = [s for s, a in zip(syms, case.args) if a.differentiable]
    if not terms:  # no float output: nothing to differentiate
        return arrays, syms, None, []
    loss = terms[0]
    for t in terms[1:]:
        loss = loss + t
    return arrays, syms, loss, wrt


def numeric_grad(fun, arrays, k, eps=1e-6, max_entries=24):
    """Central differences of scalar fun(arrays) w.r.t. arrays[k] (a sample of entries)."""
    x = arrays[k]
    g = np.full(x.shape, np.nan)
    flat = list(np.ndindex(x.shape))
    if len(flat) > max_entries:
        rs = np.random.RandomState(3)
        flat = [flat[i] for i in rs.choice(len(flat), max_entries, replace=False)]
    for idx in flat:
        old = x[idx]
        x[idx] = old + eps
        up = fun(arrays)
        x[idx] = old - eps
        down = fun(arrays)
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def _compare(analytic, numeric, case, what):
    mask = ~np.isnan(numeric)
    np.testing.assert_allclose(np.asarray(analytic)[mask], numeric[mask], rtol=case.grad_rtol,
                               atol=case.grad_atol, err_msg=f"{case}: {what}")


def check_gradient(case):
    arrays, syms, loss, wrt = _loss_graph(case)
    if not wrt:
        return
    forward = kf.compile([loss])
    plan = kf.compile(kf.backward(kf.Graph([loss], inputs=syms), wrt=wrt))
    grads = plan.run(_feed(arrays))[1:]
    positions = [k for k, a in enumerate(case.args) if a.differentiable]
    for k, g in zip(positions, grads):
        assert np.asarray(g).shape == arrays[k].shape, f"{case}: gradient shape of input {k}"
        num = numeric_grad(lambda arr: float(forward.run(_feed(arr))[0]), arrays, k)
        _compare(g, num, case, f"gradient of input {k}")


def check_second_order(case):
    arrays, syms, loss, wrt = _loss_graph(case)
    first = kf.backward(kf.Graph([loss], inputs=syms), wrt=wrt)
    rs = np.random.RandomState(11)
    vs = [rs.uniform(0.5, 1.5, s.shape) for s in wrt]
    h = kf.sum(kf.Symbol(first.outputs[1]) * vs[0])
    for g, v in zip(first.outputs[2:], vs[1:]):
        h = h + kf.sum(kf.Symbol(g) * v)
    grad_plan = kf.compile(first)
    second = kf.compile(kf.backward(kf.Graph([h], inputs=syms), wrt=wrt))
    hv = second.run(_feed(arrays))[1:]
    positions = [k for k, a in enumerate(case.args) if a.differentiable]

    def h_value(arr):
        gs = grad_plan.run(_feed(arr))[1:]
        return float(sum(np.sum(g * v) for g, v in zip(gs, vs)))

    for k, g in zip(positions, hv):
        _compare(g, numeric_grad(h_value, arrays, k), case, f"second derivative, input {k}")


def check_into_planned_buffers(case):
    """Inside a graph the op writes into a planned buffer that later runs reuse."""
    shapes = [a.shape for a in case.inputs("float64")]
    syms = [kf.placeholder(f"a{k}", s, "float64") for k, s in enumerate(shapes)]
    plan = kf.compile([case.fn(*syms) * 2.0])
    for seed in (0, 1):
        arrays = [np.random.RandomState(seed).randn(*s) for s in shapes]
        got = plan.run(_feed(arrays))[0]
        np.testing.assert_allclose(got, 2 * case.ref(*arrays), rtol=1e-10, atol=1e-12)


def check(case):
    """Run every check of the harness on one case."""
    for dtype in case.dtypes:
        check_values(case, dtype)
    if case.grad:
        check_gradient(case)
    if case.second:
        check_second_order(case)


def ops_used(case) -> set:
    """Op names in the case's forward and backward graphs (for the coverage test)."""
    _, syms, outs = build(case)
    graph = kf.Graph(list(outs), inputs=syms)
    names = {n.op for n in graph.nodes}
    _, syms, loss, wrt = _loss_graph(case)
    if case.grad and wrt:
        names |= {n.op for n in kf.backward(kf.Graph([loss], inputs=syms), wrt=wrt).nodes}
    return names
