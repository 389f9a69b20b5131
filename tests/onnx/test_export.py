"""kf.export_onnx on the seed models: each exported file passes the ONNX checker and
gives knetflow's own predictions in onnxruntime, at two batch sizes (the batch stays
dynamic). Op-by-op cases, errors and opsets are in test_export_ops.py."""

import numpy as np
import pytest

import knetflow as kf
from tests.onnx.common import assert_matches, export_plan, onnx, op_types, run

RS = np.random.RandomState(0)


def _x(*shape, dtype="float32"):
    return RS.standard_normal(shape).astype(dtype)


def test_linreg_keeps_the_batch_dynamic(tmp_path):
    x = kf.placeholder("x", (None, 13))
    w = kf.param("w", (13, 1), init=kf.init.gaussian)
    b = kf.param("b", value=np.array([0.5], "float32"))
    plan, path = export_plan(kf.Graph([x @ w + b]), tmp_path / "linreg.onnx")
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 13
    assert {t.name for t in model.graph.initializer} == {"w", "b"}
    assert model.opset_import[0].version == kf.onnx.DEFAULT_OPSET
    assert_matches(path, plan, [{"x": _x(3, 13)}, {"x": _x(7, 13)}])


def test_softmax_model_scores_probabilities_and_nll(tmp_path):
    x = kf.placeholder("x", (None, 20))
    labels = kf.placeholder("y", (None,), dtype="int64")
    w = kf.param("w", (20, 5))
    b = kf.param("b", value=_x(5))
    scores = x @ w + b
    outputs = [scores, kf.softmax(scores, axis=-1), kf.softmax(scores),
               kf.nll(scores, labels), kf.accuracy(scores, labels)]
    plan, path = export_plan(kf.Graph(outputs), tmp_path / "softmax.onnx")
    feeds = [{"x": _x(n, 20), "y": np.array(ys, dtype="int64")}
             for n, ys in ((4, [0, 4, -1, 2]), (6, [1, 1, 3, -1, -1, 0]))]
    assert_matches(path, plan, feeds)


def _mlp_symbol(dropout=False):
    net = kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=16, name="fc1")
    net = kf.sym.Activation(net, act_type="relu", name="relu1")
    if dropout:
        net = kf.sym.Dropout(net, p=0.5, name="drop1")
    net = kf.sym.FullyConnected(net, num_hidden=4, name="fc2")
    return kf.sym.SoftmaxOutput(net, name="softmax")


def _fitted(symbol, x, y, **kw):
    kf.seed(1)
    model = kf.FeedForward(symbol, num_epoch=1, optimizer="sgd", learning_rate=0.1,
                           numpy_batch_size=20, initializer=kf.init.Xavier(), **kw)
    return model.fit(x, y)


def test_mlp_feedforward_with_dropout_removed(tmp_path):
    x, y = _x(60, 10), RS.randint(0, 4, 60)
    model = _fitted(_mlp_symbol(dropout=True), x, y)
    path = kf.export_onnx(model, tmp_path / "mlp.onnx")
    ops = op_types(path)
    assert "Dropout" not in ops and not any(op.startswith("Random") for op in ops)
    assert_matches(path, lambda feed: model.predict(feed["data"]),
                   [{"data": x[:5]}, {"data": x[:13]}])


def test_a_loaded_model_and_its_file(tmp_path):
    x, y = _x(60, 10), RS.randint(0, 4, 60)
    saved = kf.save(tmp_path / "mlp.kf", _fitted(_mlp_symbol(), x, y))
    loaded = kf.load_model(saved)
    feeds = [{"data": x[:3]}, {"data": x[:9]}]
    for source in (loaded, saved, kf.load(saved)):
        path = kf.export_onnx(source, tmp_path / "mlp.onnx")
        assert_matches(path, lambda feed: loaded.predict(feed["data"]), feeds)


def _lenet_weights():
    return [_x(3, 1, 5, 5), _x(1, 3, 1, 1), _x(4, 3, 3, 3), _x(1, 4, 1, 1), _x(4, 6) * 0.3,
            _x(6), _x(6, 10), _x(10)]


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("pool_mode", [0, 1, 2])
def test_lenet_knet_style(tmp_path, mode, pool_mode):
    """The seed's predict: conv4 (true convolution or cross-correlation), relu, pool, mat."""
    w = [kf.param(f"w{k}", value=v) for k, v in enumerate(_lenet_weights())]
    x = kf.placeholder("x", (None, 1, 14, 14))
    h = kf.pool(kf.relu(kf.conv4(w[0], x, mode=mode) + w[1]), mode=pool_mode)   # 10 -> 5
    h = kf.pool(kf.relu(kf.conv4(w[2], h, mode=mode, padding=1) + w[3]), window=3,
                padding=1, stride=2, mode=pool_mode)                             # 5 -> 3
    h = kf.pool(h, window=3, mode=pool_mode)                                     # 3 -> 1
    h = kf.relu(kf.mat(h) @ w[4] + w[5])
    plan, path = export_plan(kf.Graph([h @ w[6] + w[7]]), tmp_path / "lenet.onnx")
    assert op_types(path).count("Conv") == 2
    assert_matches(path, plan, [{"x": _x(2, 1, 14, 14)}, {"x": _x(5, 1, 14, 14)}])


def test_lenet_mxnet_style_with_batchnorm_in_inference_mode(tmp_path):
    net = kf.sym.Variable("data")
    net = kf.sym.Convolution(net, kernel=(3, 3), num_filter=4, pad=1, name="conv1")
    net = kf.sym.BatchNorm(net, fix_gamma=False, name="bn1")
    net = kf.sym.Activation(net, act_type="tanh")
    net = kf.sym.Pooling(net, pool_type="max", kernel=(2, 2), stride=(2, 2))
    net = kf.sym.Convolution(net, kernel=(3, 3), num_filter=4, name="conv2")
    net = kf.sym.Pooling(net, pool_type="avg", kernel=(2, 2), stride=(1, 1), pad=(1, 1))
    net = kf.sym.Flatten(net)
    net = kf.sym.Dropout(net, p=0.3)
    net = kf.sym.FullyConnected(net, num_hidden=5, name="fc")
    net = kf.sym.SoftmaxOutput(net, name="softmax")
    x, y = _x(40, 1, 10, 10), RS.randint(0, 5, 40)
    model = _fitted(net, x, y)
    assert np.abs(model.get_params()[1]["bn1_moving_mean"]).max() > 0
    path = kf.export_onnx(model, tmp_path / "lenet.onnx")
    assert_matches(path, lambda feed: model.predict(feed["data"]),
                   [{"data": x[:3]}, {"data": x[:8]}])


def test_batchnorm_knet_style_inference(tmp_path):
    moments = kf.bnmoments(mean=_x(3), var=np.abs(_x(3)) + 0.5)
    x = kf.placeholder("x", (None, 3, 4, 4))
    params = kf.param("bn", value=np.concatenate([_x(3), _x(3)]))
    y = kf.batchnorm(x, moments, params, training=False)
    plan, path = export_plan(kf.Graph([y]), tmp_path / "bn.onnx")
    assert_matches(path, plan, [{"x": _x(2, 3, 4, 4)}, {"x": _x(5, 3, 4, 4)}])


def _charlm(rnn_type, vocab=11, embed=6, hidden=5, **kw):
    kf.seed(2)
    x = kf.placeholder("x", (7, None), dtype="int64")     # (T, B) character ids
    table = kf.param("embedding", value=_x(vocab, embed))
    r = kf.RNN(embed, hidden, rnn_type=rnn_type, **kw)
    r.w.value[:] = _x(r.w.value.size) * 0.5
    h = r(kf.embedding(table, x))
    width = h.shape[-1]
    wout, bout = kf.param("wout", value=_x(width, vocab)), kf.param("bout", value=_x(vocab))
    scores = kf.reshape(h, (-1, width)) @ wout + bout
    return [scores] + ([r.h] if kw.get("h") is not None else []) + \
        ([r.c] if kw.get("c") is not None else [])


@pytest.mark.parametrize("rnn_type,kw", [
    ("lstm", {}), ("lstm", {"h": 0, "c": 0}), ("gru", {"h": 0}), ("tanh", {}),
    ("relu", {"num_layers": 2}), ("lstm", {"bidirectional": True}),
])
def test_charlm_embedding_rnn_linear(tmp_path, rnn_type, kw):
    outputs = _charlm(rnn_type, **kw)
    plan, path = export_plan(kf.Graph(outputs), tmp_path / "charlm.onnx")
    form = {"lstm": "LSTM", "gru": "GRU"}.get(rnn_type, "RNN")
    assert form in op_types(path) and "Gather" in op_types(path)
    feeds = [{"x": RS.randint(0, 11, (7, b)).astype("int64")} for b in (1, 4)]
    assert_matches(path, plan, feeds)


def test_the_seeds_lstm_over_a_lumped_weight(tmp_path):
    """examples/charlm.py's lstm: wx and wh sliced from one param, bh = zeros_like(bias)."""
    n, hidden = 4, 3
    weight = kf.param("weight", value=_x(n + hidden, 4 * hidden))
    bias = kf.param("bias", value=_x(4 * hidden))
    h0 = kf.placeholder("h0", (None, hidden))
    c0 = kf.placeholder("c0", (None, hidden))
    x = kf.placeholder("x", (5, None, n))
    y, h, c = kf.rnn_scan(x, weight[:n], weight[n:], bias, kf.zeros_like(bias), h0, c0)
    plan, path = export_plan(kf.Graph([y, h, c], inputs=[x, h0, c0]), tmp_path / "lstm.onnx")
    assert "Slice" not in op_types(path)     # the gate matrices were folded into W and R
    feeds = [{"x": _x(5, b, n), "h0": _x(b, hidden), "c0": _x(b, hidden)} for b in (2, 3)]
    assert_matches(path, plan, feeds)


@pytest.mark.parametrize("mode", ["lstm", "gru", "tanh"])
def test_an_rnn_looking_its_terms_up_in_a_table(tmp_path, mode):
    """rnn_scan(ids, E @ wx, ..., lookup=True), as kf.backward folds an embedded layer:
    a Gather of the table's rows read through an identity W."""
    hidden, width = 3, {"lstm": 12, "gru": 9, "tanh": 3}[mode]
    ids = kf.placeholder("ids", (4, None), dtype="int64")
    table = kf.param("E", value=_x(6, 2)) @ kf.param("wx", value=_x(2, width))
    ws = [kf.param(k, value=_x(*s) * 0.5) for k, s in
          (("wh", (hidden, width)), ("bx", (width,)), ("bh", (width,)))]
    y = kf.rnn_scan(ids, table, *ws, mode=mode, lookup=True)[0]
    plan, path = export_plan(kf.Graph([y]), tmp_path / "lookup.onnx")
    assert "Gather" in op_types(path)
    assert_matches(path, plan, [{"ids": RS.randint(0, 6, (4, b)).astype("int64")}
                                for b in (1, 3)])


def test_rnn_weights_computed_in_the_graph(tmp_path):
    """Weights fed as inputs: the gate blocks are reordered by ONNX ops, not NumPy."""
    n, hidden = 3, 2
    names = ("wx", "wh", "bx", "bh")
    shapes = ((n, 3 * hidden), (hidden, 3 * hidden), (3 * hidden,), (3 * hidden,))
    ws = [kf.placeholder(k, s) for k, s in zip(names, shapes)]
    x = kf.placeholder("x", (4, None, n))
    y, h = kf.rnn_scan(x, *ws, mode="gru", reverse=True)
    plan, path = export_plan(kf.Graph([y, h], inputs=[x, *ws]), tmp_path / "gru.onnx")
    feed = {k: _x(*s) for k, s in zip(names, shapes)}
    assert_matches(path, plan, [{**feed, "x": _x(4, b, n)} for b in (1, 3)])
    assert run(path, {**feed, "x": _x(4, 2, n)})[0].shape == (4, 2, hidden)


def test_charlm_mxnet_style_embedding_bidirectional_rnn(tmp_path):
    net = kf.sym.Embedding(kf.sym.Variable("data"), input_dim=9, output_dim=4, name="emb")
    net = kf.sym.RNN(net, state_size=5, mode="lstm", layout="NTC", bidirectional=True,
                     name="lstm")
    net = kf.sym.Reshape(net, shape=(-1, 10))
    net = kf.sym.FullyConnected(net, num_hidden=9, name="fc")
    net = kf.sym.SoftmaxOutput(net, name="softmax")
    graph = net.to_graph(data=(None, 6), dtypes={"data": "int64"})
    plan, path = export_plan(graph, tmp_path / "charlm.onnx")
    assert op_types(path).count("LSTM") == 2
    feeds = [{"data": RS.randint(0, 9, (b, 6)).astype("int64")} for b in (1, 3)]
    assert_matches(path, plan, feeds)
