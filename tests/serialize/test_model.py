"""kf.load_model: inference from a saved file, compiled once."""

import numpy as np
import pytest

import knetflow as kf
from tests.serialize.common import batch, mlp


@pytest.fixture
def saved(tmp_path):
    g = mlp()
    return kf.save(tmp_path / "mlp.kf", g, classes=["a", "b", "c"]), g


def test_predict_and_call_match_the_original_graph(saved):
    path, g = saved
    model = kf.load_model(path)
    want = kf.compile(g).run({"x": batch()})[0]
    np.testing.assert_array_equal(model.predict(batch()), want)
    np.testing.assert_array_equal(model(batch()), want)
    np.testing.assert_array_equal(model(x=batch()), want)
    np.testing.assert_array_equal(model({"x": batch()}), want)
    assert model.metadata == {"classes": ["a", "b", "c"]} and model.input_names == ["x"]


def test_compiled_once_and_reused(saved, monkeypatch):
    model = kf.load_model(saved[0])
    plan = model.plan
    model(batch(4))
    programs = dict(plan._programs)
    model(batch(4, seed=2))
    assert model.plan is plan and plan._programs == programs
    compiles = []
    monkeypatch.setattr(kf.scheduler.plan, "compile", lambda *a, **k: compiles.append(1))
    model(batch(4))
    assert not compiles


def test_batches_give_the_same_answer(saved):
    model = kf.load_model(saved[0])
    x = batch(23)
    whole = model.predict(x)
    # BLAS sums in another order for another batch size: float32 rounding, scaled to the
    # outputs' magnitude (an element near zero has no relative precision of its own)
    scale = np.abs(whole).max()
    np.testing.assert_allclose(model.predict(x, batch_size=5), whole,
                               rtol=1e-5, atol=1e-6 * scale)


def test_several_inputs_and_outputs(tmp_path):
    a, b = kf.placeholder("a", (None, 2)), kf.placeholder("b", (None, 2))
    path = kf.save(tmp_path / "two.kf", [a + b, a * b])
    model = kf.load_model(path)
    va, vb = np.ones((1, 2), "float32"), np.full((1, 2), 3, "float32")
    s, p = model(va, vb)
    np.testing.assert_array_equal(s, [[4, 4]])
    np.testing.assert_array_equal(p, [[3, 3]])
    np.testing.assert_array_equal(model(va, b=vb)[1], [[3, 3]])
    with pytest.raises(kf.FeedError, match="missing input"):
        model(va)


def test_a_loaded_model_saves_again(saved, tmp_path):
    model = kf.load_model(saved[0])
    again = kf.load_model(kf.save(tmp_path / "again.kf", model))
    np.testing.assert_array_equal(again(batch()), model(batch()))
    assert again.metadata == model.metadata


def test_only_model_files_load_as_models(tmp_path):
    path = kf.serialize.save_state(tmp_path / "s.kfs", {"a": 1})
    with pytest.raises(kf.FormatError, match="a state file, not a model file"):
        kf.load_model(path)


def test_on_a_named_device(saved):
    model = kf.load_model(saved[0], device="cpu:0")
    assert model.plan.device.name == "cpu:0"
    assert model(batch()).shape == (5, 3)


def test_a_training_graphs_updates_are_not_run(tmp_path):
    count = kf.param("count", value=np.array(0.0, "float32"))
    x = kf.placeholder("x", ())
    path = kf.save(tmp_path / "t.kf", kf.Graph([count + x], updates={"count": count + 1}))
    model = kf.load_model(path)
    assert [float(model(np.float32(1))) for _ in range(3)] == [1.0, 1.0, 1.0]
    assert kf.load(kf.save(tmp_path / "again.kf", model)).graph.updates.keys() == {"count"}


def test_save_refuses_a_value_for_a_param_the_graph_lacks(tmp_path):
    with pytest.raises(ValueError, match=r"params has values for \['w3'\], which the graph "
                                         r"does not have; its params are \['b1', 'b2', 'w1'"):
        kf.save(tmp_path / "m.kf", mlp(), params={"w3": np.ones(2)})


def test_a_models_own_values_for_unused_params_are_left_out(tmp_path):
    class Model:  # a model whose state holds more than its inference graph uses
        def __knetflow_save__(self):
            g = mlp()
            values = {n.attrs["name"]: n.attrs["value"] for n in g.params}
            return {"graph": g, "params": {**values, "loss_scale": np.float32(2)}}

    loaded = kf.load(kf.save(tmp_path / "m.kf", Model()))
    assert sorted(loaded.params) == ["b1", "b2", "w1", "w2"]
