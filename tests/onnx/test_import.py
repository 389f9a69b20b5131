"""kf.import_onnx on models exported by PyTorch: they predict the same in knetflow,
save as knetflow files, run on two devices and fine-tune; truncated files
raise kf.FormatError. Op semantics and refusals: test_import_ops.py."""

import warnings

import numpy as np
import pytest

import knetflow as kf

onnx = pytest.importorskip("onnx")

RTOL, ATOL = 1e-5, 1e-5
RNG = np.random.default_rng(0)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _predict(graph, feed, devices=None):
    return kf.compile(graph, devices=devices).run(feed)


# ---- models exported by PyTorch ----


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    """{name: (path, torch module, example feed)} exported once by the classic exporter."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx")

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1)
            self.p1 = nn.MaxPool2d(2, ceil_mode=True)   # 12 -> 6: rounding agrees
            self.c2 = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)
            self.p2 = nn.AvgPool2d(3, stride=3, padding=1, count_include_pad=False)
            self.p3 = nn.AvgPool2d(1)
            self.fc = nn.Linear(24, 5)

        def forward(self, x):
            h = self.p1(torch.relu(self.c1(x)))
            h = self.p3(self.p2(torch.relu(self.c2(h))))
            return torch.log_softmax(self.fc(torch.flatten(h, 1)), dim=1)

    class BatchNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn2 = nn.BatchNorm2d(3)
            self.conv = nn.Conv2d(3, 2, 2, stride=2)
            self.bn1 = nn.BatchNorm1d(8)

        def forward(self, x):   # Shape -> Gather -> Unsqueeze -> Concat -> Reshape
            h = self.conv(self.bn2(x))
            return self.bn1(h.reshape(h.size(0), -1))

    class CharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(11, 6)
            self.lstm = nn.LSTM(6, 7, num_layers=2)
            self.out = nn.Linear(7, 11)

        def forward(self, ids):
            return self.out(self.lstm(self.embed(ids))[0])

    class BiLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True, bidirectional=True)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            return y, h

    class GRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 4, num_layers=2)
            self.rnn = nn.RNN(4, 2, nonlinearity="relu")

        def forward(self, x):
            return self.rnn(self.gru(x)[0])[0]

    bn = BatchNorm()
    for m in (bn.bn1, bn.bn2):   # moments and affine params other than their defaults
        for t in (m.running_mean, m.weight, m.bias):
            t.data.normal_()
        m.running_var.data.uniform_(0.5, 2.0)
    specs = {
        "mlp": (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
                {"x": _randn(5, 4)}, 0),
        "lenet": (LeNet(), {"x": _randn(3, 1, 12, 12)}, 0),
        "batchnorm": (bn, {"x": _randn(4, 3, 4, 4)}, 0),
        "charlm": (CharLM(), {"x": RNG.integers(0, 11, (6, 3))}, 1),
        "bilstm": (BiLSTM(), {"x": _randn(3, 5, 3)}, 0),
        "gru": (GRU(), {"x": _randn(5, 2, 3)}, 1),
    }
    models = {}
    for name, (module, feed, batch_axis) in specs.items():
        module.eval()
        path = out / f"{name}.onnx"
        args = tuple(torch.from_numpy(v) for v in feed.values())
        outputs = ["y", "h"] if name == "bilstm" else ["y"]
        axes = {"x": {batch_axis: "batch"}, "y": {batch_axis: "batch"}, "h": {1: "batch"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=["x"],
                              output_names=outputs,
                              dynamic_axes={k: axes[k] for k in ["x"] + outputs})
        models[name] = (path, module, feed)
    return models


def _torch_predict(module, feed):
    import torch

    with torch.no_grad():
        out = module(*(torch.from_numpy(v) for v in feed.values()))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("name", ["mlp", "lenet", "batchnorm", "charlm", "bilstm", "gru"])
def test_exported_model_predicts_as_pytorch(torch_models, name):
    path, module, feed = torch_models[name]
    graph = kf.import_onnx(path)
    ours = _predict(graph, feed)
    for a, b in zip(ours, _torch_predict(module, feed)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert [n.name for n in graph.outputs] == (["y", "h"] if name == "bilstm" else ["y"])
    assert graph.inputs[0].attrs["name"] == "x"


def test_batch_dim_is_dynamic_and_params_are_named_and_trainable(torch_models):
    path, module, _ = torch_models["mlp"]
    graph = kf.import_onnx(str(path))
    assert graph.inputs[0].spec.shape == (None, 4)
    assert [p.attrs["name"] for p in graph.params] == ["0.weight", "0.bias", "2.weight",
                                                       "2.bias"]
    assert all(p.attrs.get("trainable", True) for p in graph.params)
    np.testing.assert_array_equal(graph.param("0.weight").attrs["value"],
                                  module[0].weight.detach().numpy())
    for batch in (1, 7):   # any batch size
        feed = {"x": _randn(batch, 4)}
        np.testing.assert_allclose(_predict(graph, feed)[0], _torch_predict(module, feed)[0],
                                   rtol=RTOL, atol=ATOL)
    assert all(n.where.startswith("mlp.onnx:") for n in graph.nodes)


def test_batchnorm_moments_are_not_trainable(torch_models):
    graph = kf.import_onnx(torch_models["batchnorm"][0])
    trainable = {p.attrs["name"]: p.attrs.get("trainable", True) for p in graph.params}
    assert trainable["bn2.weight"] and trainable["bn2.bias"]
    assert not trainable["bn2.running_mean"] and not trainable["bn2.running_var"]
    assert not trainable["bn1.running_mean"] and not trainable["bn1.running_var"]


def test_saved_as_a_knetflow_file(torch_models, tmp_path):
    for name in ("lenet", "batchnorm", "charlm"):
        path, module, feed = torch_models[name]
        saved = kf.save(tmp_path / f"{name}.kf", kf.import_onnx(path))
        model = kf.load_model(saved)
        assert model.output_names == ["y"]
        np.testing.assert_allclose(model.predict(feed["x"]), _torch_predict(module, feed)[0],
                                   rtol=RTOL, atol=ATOL)
    loaded = kf.load(tmp_path / "batchnorm.kf").graph
    assert not loaded.param("bn2.running_var").attrs.get("trainable", True)


def test_runs_on_two_cpu_devices(torch_models):
    kf.set_cpu_devices(2)
    try:
        for name in ("lenet", "charlm"):
            path, module, feed = torch_models[name]
            ours = _predict(kf.import_onnx(path), feed, devices=["cpu:0", "cpu:1"])
            np.testing.assert_allclose(ours[0], _torch_predict(module, feed)[0],
                                       rtol=RTOL, atol=ATOL)
    finally:
        kf.set_cpu_devices(1)


def _fine_tune(graph, feed, labels, steps=15, lr=0.1):
    """Losses of `steps` SGD steps of nll on the imported graph's output."""
    scores = kf.Symbol(graph.outputs[0])
    y = kf.placeholder("labels", labels.shape, dtype="int64")
    loss_graph = kf.Graph([kf.nll(scores, y)])
    trainable = [p.attrs["name"] for p in loss_graph.params if p.attrs.get("trainable", True)]
    grads = kf.backward(loss_graph)   # gradients for the trainable params only
    assert len(grads.outputs) == 1 + len(trainable)
    step = kf.optim.step_graph(loss_graph, kf.optim.SGD(lr=lr), wrt=trainable)
    plan = kf.compile(step)
    fed = {**feed, "labels": labels}
    return [float(plan.run(fed)[0]) for _ in range(steps)], plan


@pytest.mark.parametrize("name,lr", [("lenet", 0.1), ("batchnorm", 0.1), ("charlm", 2.0)])
def test_fine_tuned_with_the_derived_backward_graph(torch_models, name, lr):
    path, _, feed = torch_models[name]
    graph = kf.import_onnx(path)
    out_shape = _predict(graph, feed)[0].shape
    labels = RNG.integers(0, out_shape[-1], out_shape[:-1])
    losses, plan = _fine_tune(graph, feed, labels, lr=lr)
    assert losses[-1] < 0.9 * losses[0], losses
    moments = [p.attrs["name"] for p in graph.params if not p.attrs.get("trainable", True)]
    for m in moments:   # running statistics are not trained
        np.testing.assert_array_equal(plan.params[m], graph.param(m).attrs["value"])


def test_truncated_files_raise_format_error(torch_models):
    data = torch_models["mlp"][0].read_bytes()
    for cut in range(len(data)):
        with pytest.raises(kf.FormatError):
            kf.import_onnx(data[:cut])


def test_round_trip_through_kf_export_onnx(tmp_path):
    """A knetflow graph exported by kf.export_onnx imports back to the same predictions."""
    x = kf.placeholder("x", (None, 1, 8, 8))
    w = kf.param("w", value=_randn(3, 1, 3, 3))
    h = kf.pool(kf.relu(kf.conv4(w, x, padding=1)), window=3, padding=1, stride=2, mode=2)
    moments = kf.bnmoments(name="bn", mean=_randn(3), var=RNG.uniform(0.5, 2, 3).astype("f"))
    h = kf.batchnorm(h, moments, kf.param("bnp", value=kf.bnparams(3)))
    scores = kf.mat(h) @ kf.param("w2", value=_randn(48, 5))
    seq = kf.placeholder("seq", (6, None, 5))
    graph = kf.Graph([kf.softmax(scores, axis=1), kf.RNN(5, 4)(seq)])
    path = kf.export_onnx(graph, str(tmp_path / "g.onnx"))
    feed = {"x": _randn(4, 1, 8, 8), "seq": _randn(6, 3, 5)}
    for a, b in zip(_predict(kf.import_onnx(path), feed), _predict(graph, feed)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
