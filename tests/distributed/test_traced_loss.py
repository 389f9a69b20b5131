"""Knet-style losses for DaskTrainer: Params and carried state traced into a graph."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.distributed.traced_loss import store_back, trace_loss
from knetflow.errors import TracingError


def _bn_loss():
    w = kf.Param(np.array([[1.0, -1.0], [0.5, 2.0]]), name="w")
    m = kf.bnmoments(momentum=0.5)

    def loss(x, y):
        return kf.mean((kf.batchnorm(x @ w, m) - y) ** 2)

    return loss, w, m


def test_batchnorm_moments_become_aux_params_with_updates():
    loss, w, m = _bn_loss()
    x = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, -1.0]])
    m.mean, m.var = np.zeros(2), np.ones(2)   # arrays: fed in and carried
    graph, targets = trace_loss(loss, x, np.zeros((3, 2)))
    aux = sorted(graph.updates)
    assert len(aux) == 2 and all(targets[a].owner is m for a in aux)
    assert {p.attrs["name"] for p in graph.params if p.attrs.get("trainable") is False} == set(aux)
    assert isinstance(m.mean, np.ndarray) and not m.mean.any()  # the trace left m as it was
    plan = kf.compile(graph)
    plan.run({"x": x, "y": np.zeros((3, 2))})
    h = x @ w.value   # one step's new moments: momentum 0.5 of the batch's
    want = {"mean": 0.5 * h.mean(axis=0), "var": 0.5 + 0.5 * h.var(axis=0)}
    for name in aux:
        attr = targets[name].attr.lstrip("_")
        np.testing.assert_allclose(plan.params[name], want[attr])
    before = m.mean
    store_back(targets, plan.params)
    np.testing.assert_allclose(m.mean, want["mean"])
    assert m.mean is before  # batchnorm keeps its arrays' identity
    np.testing.assert_allclose(w.value, [[1.0, -1.0], [0.5, 2.0]])  # Params: unchanged values


def test_state_set_from_scratch_each_call_is_not_carried():
    r = kf.RNN(2, 3, rnn_type="tanh", h=0)
    r.h = 0

    def loss(x, y):
        return kf.mean((r(x) - y) ** 2)

    x, y = np.ones((4, 1, 2), "float32"), np.ones((4, 1, 3), "float32")
    graph, targets = trace_loss(loss, x, y)
    assert graph.updates == {} and r.h == 0
    assert all(isinstance(t, kf.Param) for t in targets.values())


def test_a_loss_returning_no_scalar_is_refused():
    with pytest.raises(TracingError, match="must return a scalar loss"):
        trace_loss(lambda x: x * 2, np.ones((2, 3)))


def test_dask_training_carries_batchnorm_moments_back(client, workers):
    from knetflow.distributed import DaskTrainer

    loss, w, m = _bn_loss()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)) * [1.0, 3.0] + [2.0, -1.0]
    y = np.zeros((64, 2))
    m.mean, m.var = np.zeros(2), np.ones(2)
    trainer = DaskTrainer.from_loss(loss, x, y, kf.optim.SGD(lr=0.0), client_or_address=client)
    trainer.fit(x, y, batch_size=16, epochs=3)
    h = x @ w.value  # lr 0: w is fixed, so the moments track h's statistics
    np.testing.assert_allclose(m.mean, h.mean(axis=0), atol=0.5 * h.std(axis=0).max())
    assert np.all(m.var > 0.3 * h.var(axis=0)) and np.all(m.var < 3 * h.var(axis=0))
