"""Helpers shared by the pass tests: op lists and a numerical comparison."""

import numpy as np

import knetflow as kf


def ops_of(graph) -> list:
    """The graph's op names in topological order."""
    return [n.op for n in graph.nodes]


def assert_same_values(before, after, feed, rtol=1e-6):
    """Both graphs, compiled without further optimization, give the same outputs on feed."""
    want = kf.compile(before, optimize_graph=False).run(feed)
    got = kf.compile(after, optimize_graph=False).run(feed)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert np.shape(w) == np.shape(g) and np.asarray(w).dtype == np.asarray(g).dtype
        np.testing.assert_allclose(g, w, rtol=rtol)
