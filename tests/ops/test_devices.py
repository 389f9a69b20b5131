"""Every harness case on strict simulated devices: one device, and two in alternation.

A sim device refuses arrays of another device, as CuPy does, so an op that
reaches for host arrays (or a missing transfer) fails here on a CPU-only machine.
"""

import numpy as np
import pytest

import knetflow as kf
from tests.ops.harness import _loss_graph, build
from tests.ops.test_coverage import all_cases

CASES = all_cases()


@pytest.fixture(scope="module")
def sims():
    kf.set_sim_devices(2)
    yield ["sim:0", "sim:1"]
    kf.set_sim_devices(0)


def _host(x, device):
    return x if isinstance(x, np.ndarray) else kf.device(device).get(x)


def _same_on(graph, feed, devices, placement="auto"):
    want = kf.compile(graph).run(feed)
    got = kf.compile(graph, devices=devices, placement=placement).run(feed)
    for w, g in zip(want, got):
        np.testing.assert_allclose(_host(g, devices[0]), w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case_on_sim_devices(case, sims):
    arrays, syms, outs = build(case, "float64")
    feed = {f"a{k}": a for k, a in enumerate(arrays)}
    forward = kf.Graph(list(outs), inputs=syms)
    _same_on(forward, feed, ["sim:0"])
    _same_on(forward, feed, sims, placement=lambda n: sims[n.id % 2])
    arrays, syms, loss, wrt = _loss_graph(case)
    if case.grad and wrt:
        grads = kf.backward(kf.Graph([loss], inputs=syms), wrt=wrt)
        _same_on(grads, {f"a{k}": a for k, a in enumerate(arrays)}, sims,
                 placement=lambda n: sims[n.id % 2])
