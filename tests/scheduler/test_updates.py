"""Graph.updates: new param values a plan computes and stores after each run."""

import numpy as np
import pytest

import knetflow as kf


def test_update_is_stored_and_used_by_the_next_run():
    # count ── add(1) ──> new count;  output: count * x
    count = kf.param("count", value=np.array(0.0, "float32"))
    x = kf.placeholder("x", ())
    graph = kf.Graph([count * x], updates={"count": count + 1})
    plan = kf.compile(graph)
    outs = [float(plan.run({"x": np.float32(2)})[0]) for _ in range(3)]
    assert outs == [0.0, 2.0, 4.0]
    assert float(plan.params["count"]) == 3.0


def test_sgd_step_as_an_update_fused_into_the_plan():
    w = kf.param("w", value=np.array([1.0, -2.0], "float32"))
    loss = kf.sum(w * w)
    grads = kf.backward(kf.Graph([loss]))
    step = kf.Graph([grads.outputs[0]],
                    updates={"w": kf.Symbol(grads.param("w")) - 0.25 * kf.Symbol(grads.outputs[1])})
    plan = kf.compile(step)
    plan.run({})
    np.testing.assert_allclose(plan.params["w"], [0.5, -1.0])  # w - 0.25 * 2w


def test_update_must_match_its_param():
    w = kf.param("w", value=np.zeros(2, "float32"))
    with pytest.raises(AssertionError, match="update of 'w' is float32\\(3,\\)"):
        kf.Graph([w], updates={"w": kf.placeholder("z", (3,))}).verify()
    with pytest.raises(AssertionError, match="update of 'v', which is not a param"):
        kf.Graph([w], updates={"v": w}).verify()


def test_updates_survive_passes_and_backward():
    w = kf.param("w", value=np.ones(2, "float32"))
    g = kf.backward(kf.Graph([kf.sum(w * 3.0)], updates={"w": w * 0.5}))
    assert set(g.updates) == {"w"}
    plan = kf.compile(g)
    plan.run({})
    np.testing.assert_allclose(plan.params["w"], [0.5, 0.5])
