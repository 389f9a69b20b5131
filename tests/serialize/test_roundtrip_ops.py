"""Every registered op survives a save/load round trip and reruns to identical outputs.

The graphs come from the op harness cases (tests/ops/test_*.py): each case's
forward graph, its derived backward graph, and the optimized graph a plan runs
(where fusion makes `fused` nodes) are saved, loaded and rerun.
"""

import numpy as np
import pytest

import knetflow as kf
from knetflow.serialize import dumps, loads
from tests.ops.harness import _feed, _loss_graph, build, ops_used
from tests.ops.test_coverage import all_cases

CASES = all_cases()
SEEN: set = set()


def roundtrip(graph):
    loaded = loads(dumps(graph))
    SEEN.update(n.op for n in loaded.graph.nodes)
    return loaded.graph


def same_outputs(graph, feed):
    """Outputs of graph and of its reloaded copy, run on the same feed, are identical."""
    again = roundtrip(graph)
    assert [n.op for n in again.nodes] == [n.op for n in graph.nodes]
    assert [n.spec for n in again.nodes] == [n.spec for n in graph.nodes]
    assert [n.attrs.get("name") for n in again.params] == [n.attrs["name"] for n in graph.params]
    kf.seed(0)  # random ops (dropout) draw the same masks in both plans
    want = kf.compile(graph, optimize_graph=False).run(feed)
    kf.seed(0)
    got = kf.compile(again, optimize_graph=False).run(feed)
    for w, g in zip(want, got):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_backward_and_optimized_graphs_round_trip(case):
    arrays, syms, outs = build(case, "float64")
    forward = kf.Graph(list(outs), inputs=syms)
    same_outputs(forward, _feed(arrays))
    optimized = kf.compile(forward).graph  # after fusion and the other passes
    same_outputs(optimized, _feed(arrays))
    arrays, syms, loss, wrt = _loss_graph(case)
    if case.grad and wrt:
        same_outputs(kf.backward(kf.Graph([loss], inputs=syms), wrt=wrt), _feed(arrays))


def test_every_op_the_harness_builds_was_round_tripped():
    """Runs after the cases above (file order). That every registered op has a harness
    case is tests/ops/test_coverage.py's check; `get` is round-tripped in
    test_graph_codec.py, `fused` by the optimized graphs above."""
    if len(SEEN) < 10:
        pytest.skip("run with the round-trip cases")
    built = set().union(*(ops_used(case) for case in CASES)) | {"fused"}
    missing = built - SEEN
    assert not missing, f"ops never round-tripped: {sorted(missing)}"
