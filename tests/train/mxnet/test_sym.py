"""Layer symbols (train/mxnet/layer_symbol.py, layers.py, outputs.py): names, deferred shapes,
values against direct op calls, training graphs, saving."""

import pickle

import numpy as np
import pytest

import knetflow as kf

sym = kf.sym
RS = np.random.RandomState(0)


@pytest.fixture(autouse=True)
def fresh_names():
    sym.reset_names()


def run(net, params, training=False, **feed):
    """The graph's outputs for feed (input name -> array), params given by name."""
    shapes = {k: (None,) + np.shape(v)[1:] for k, v in feed.items()}
    dtypes = {k: np.asarray(v).dtype for k, v in feed.items()}
    graph = net.to_graph(training=training, params=params, dtypes=dtypes, **shapes)
    return kf.compile(graph, training=training).run(feed)


def mlp():
    data = sym.Variable("data")
    net = sym.FullyConnected(data, num_hidden=8, name="fc1")
    net = sym.Activation(net, act_type="relu", name="relu1")
    net = sym.FullyConnected(net, num_hidden=3, name="fc2")
    return sym.SoftmaxOutput(net, name="softmax")


# ---- names and shapes ----


def test_mlp_names_follow_mxnet():
    net = mlp()
    assert net.list_arguments() == ["data", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias",
                                    "softmax_label"]
    assert net.list_outputs() == ["softmax_output"]
    assert net.list_auxiliary_states() == []
    assert net.list_inputs() == ["data", "softmax_label"]
    assert net.list_labels() == ["softmax_label"]


def test_infer_shape_defers_param_shapes_to_the_data_shape():
    arg, out, aux = mlp().infer_shape(data=(32, 5))
    assert arg == [(32, 5), (8, 5), (8,), (3, 8), (3,), (32,)]
    assert out == [(32, 3)] and aux == []
    arg, _, _ = mlp().infer_shape((4, 7))  # positionally, in list_arguments order
    assert arg[1] == (8, 7)


def test_automatic_names_count_per_layer_kind():
    data = sym.Variable("data")
    a = sym.FullyConnected(data, num_hidden=4)
    b = sym.Activation(a)
    c = sym.FullyConnected(b, num_hidden=2)
    assert (a.name, b.name, c.name) == ("fullyconnected0", "activation0", "fullyconnected1")
    assert "fullyconnected1_weight" in c.list_arguments()


def test_duplicate_layer_names_are_an_error():
    data = sym.Variable("data")
    net = sym.FullyConnected(sym.FullyConnected(data, 4, name="fc"), 2, name="fc")
    with pytest.raises(ValueError, match=r"duplicate argument names \['fc_bias', 'fc_weight'\]"):
        net.list_arguments()


def test_conv_pool_batchnorm_shapes_and_aux_states():
    data = sym.Variable("data")
    net = sym.Convolution(data, kernel=(3, 3), num_filter=6, pad=(1, 1), stride=(2, 2),
                          name="conv1")
    net = sym.BatchNorm(net, name="bn1")
    net = sym.Pooling(net, kernel=(2, 2), stride=(2, 2), pool_type="avg")
    net = sym.Flatten(net)
    arg, out, aux = net.infer_shape(data=(5, 2, 9, 9))
    names = net.list_arguments()
    assert dict(zip(names, arg)) == {"data": (5, 2, 9, 9), "conv1_weight": (6, 2, 3, 3),
                                     "conv1_bias": (6,), "bn1_gamma": (6,), "bn1_beta": (6,)}
    assert net.list_auxiliary_states() == ["bn1_moving_mean", "bn1_moving_var"]
    assert aux == [(6,), (6,)] and out == [(5, 6 * 2 * 2)]


@pytest.mark.parametrize("layer, shape, want", [
    (lambda d: sym.Pooling(d, kernel=(2, 2)), (1, 3, 5, 5), (1, 3, 4, 4)),  # MXNet stride 1
    (lambda d: sym.Pooling(d, global_pool=True, pool_type="avg"), (2, 3, 5, 4), (2, 3, 1, 1)),
    (lambda d: sym.Deconvolution(d, kernel=(3, 3), num_filter=4, stride=(2, 2)), (1, 2, 4, 4),
     (1, 4, 9, 9)),
    (lambda d: sym.Convolution(d, kernel=(3,), num_filter=4, num_group=2), (2, 6, 10),
     (2, 4, 8)),
    (lambda d: sym.Reshape(d, shape=(0, -1, 2)), (3, 4, 5), (3, 10, 2)),
    (lambda d: sym.RNN(d, state_size=5, mode="gru", bidirectional=True), (7, 3, 4), (7, 3, 10)),
    (lambda d: sym.RNN(d, state_size=5, layout="NTC"), (3, 7, 4), (3, 7, 5)),
    (lambda d: sym.FullyConnected(d, num_hidden=5, flatten=False), (2, 3, 4), (2, 3, 5)),
])
def test_layer_output_shapes(layer, shape, want):
    assert layer(sym.Variable("data")).infer_shape(data=shape)[1] == [want]


def test_labels_follow_the_data_shape():
    data = sym.Variable("data")
    soft = sym.SoftmaxOutput(sym.FullyConnected(data, num_hidden=4, name="f"), name="sm")
    assert soft.infer_shape(data=(6, 3))[0][-1] == (6,)
    reg = sym.LinearRegressionOutput(sym.FullyConnected(data, num_hidden=2, name="g"), name="lr")
    assert reg.list_arguments()[-1] == "lr_label"
    assert reg.infer_shape(data=(6, 3))[0][-1] == (6, 2)


# ---- values against direct op calls ----


def test_fully_connected_is_x_times_weight_transposed_plus_bias():
    x, w, b = RS.randn(4, 2, 3), RS.randn(5, 6), RS.randn(5)
    net = sym.FullyConnected(sym.Variable("data"), num_hidden=5, name="fc")
    (y,) = run(net, {"fc_weight": w, "fc_bias": b}, data=x)
    np.testing.assert_allclose(y, x.reshape(4, 6) @ w.T + b, rtol=1e-12)
    nobias = sym.FullyConnected(sym.Variable("data"), num_hidden=5, no_bias=True, name="f2")
    assert nobias.list_arguments() == ["data", "f2_weight"]


@pytest.mark.parametrize("act, ref", [
    ("relu", lambda x: np.maximum(x, 0)), ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", np.tanh), ("softrelu", lambda x: np.log1p(np.exp(x)))])
def test_activations(act, ref):
    x = RS.randn(3, 4)
    (y,) = run(sym.Activation(sym.Variable("data"), act_type=act), {}, data=x)
    np.testing.assert_allclose(y, ref(x), rtol=1e-10)


def test_convolution_is_cross_correlation_with_bias():
    x, w, b = RS.randn(2, 4, 6, 5), RS.randn(6, 2, 3, 2), RS.randn(6)
    net = sym.Convolution(sym.Variable("data"), kernel=(3, 2), num_filter=6, stride=(1, 2),
                          pad=(1, 0), num_group=2, name="c")
    (y,) = run(net, {"c_weight": w, "c_bias": b}, data=x)
    want = kf.conv4(w, x, padding=(1, 0), stride=(1, 2), mode=1, group=2) + b[:, None, None]
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # cross-correlation written out for one output element (no flip of the kernel)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    direct = (xp[1, 2:4, 2:5, 2:4] * w[4]).sum() + b[4]
    np.testing.assert_allclose(y[1, 4, 2, 1], direct, rtol=1e-12)


def test_deconvolution_is_deconv4_mode_1():
    x, w = RS.randn(2, 3, 4, 4), RS.randn(3, 5, 3, 3)
    net = sym.Deconvolution(sym.Variable("data"), kernel=(3, 3), num_filter=5, stride=(2, 2),
                            pad=(1, 1), name="d")
    assert net.list_arguments() == ["data", "d_weight"]  # MXNet: no bias by default
    (y,) = run(net, {"d_weight": w}, data=x)
    np.testing.assert_allclose(y, kf.deconv4(w, x, padding=1, stride=2, mode=1), rtol=1e-12)


@pytest.mark.parametrize("pool_type, mode, scale", [("max", 0, 1), ("avg", 1, 1),
                                                     ("sum", 1, 4)])
def test_pooling(pool_type, mode, scale):
    x = RS.randn(2, 3, 6, 6)
    net = sym.Pooling(sym.Variable("data"), kernel=(2, 2), stride=(2, 2), pad=(1, 1),
                      pool_type=pool_type)
    (y,) = run(net, {}, data=x)
    want = kf.pool(x, window=2, stride=2, padding=1, mode=mode) * scale
    np.testing.assert_allclose(y, want, rtol=1e-12)


def test_global_pooling_and_flatten():
    x = RS.randn(2, 3, 4, 5)
    net = sym.Flatten(sym.Pooling(sym.Variable("data"), global_pool=True, pool_type="max"))
    (y,) = run(net, {}, data=x)
    np.testing.assert_allclose(y, x.max(axis=(2, 3)), rtol=1e-12)


def _bn_net(**kw):
    return sym.BatchNorm(sym.Variable("data"), name="bn", **kw)


def test_batchnorm_inference_uses_the_moving_statistics():
    x = RS.randn(5, 3, 2)
    p = {"bn_gamma": RS.rand(3) + 0.5, "bn_beta": RS.randn(3),
         "bn_moving_mean": RS.randn(3), "bn_moving_var": RS.rand(3) + 0.5}
    (y,) = run(_bn_net(eps=1e-3), p, data=x)
    c = (slice(None), None)
    want = ((x - p["bn_moving_mean"][c]) / np.sqrt(p["bn_moving_var"][c] + 1e-3)
            * p["bn_gamma"][c] + p["bn_beta"][c])
    np.testing.assert_allclose(y, want, rtol=1e-10)


def test_batchnorm_training_normalizes_by_the_batch_and_updates_moving_stats():
    x = RS.randn(6, 3) * 2 + 1
    p = {"bn_gamma": np.ones(3), "bn_beta": np.zeros(3), "bn_moving_mean": np.zeros(3),
         "bn_moving_var": np.ones(3)}
    net = sym.LinearRegressionOutput(_bn_net(momentum=0.8, fix_gamma=False), name="o")
    graph = net.to_graph(training=True, params=p, dtypes={"data": "float64"}, data=(None, 3))
    assert sorted(graph.updates) == ["bn_moving_mean", "bn_moving_var"]
    trainable = {n.attrs["name"]: n.attrs.get("trainable", True) for n in graph.params}
    assert trainable == {"bn_gamma": True, "bn_beta": True, "bn_moving_mean": False,
                         "bn_moving_var": False}
    y = kf.compile(kf.Graph([graph.outputs[1]], updates=graph.updates), training=True)
    (out,) = y.run({"data": x})
    np.testing.assert_allclose(out, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-10)
    np.testing.assert_allclose(y.params["bn_moving_mean"], 0.2 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(y.params["bn_moving_var"], 0.8 + 0.2 * x.var(0), rtol=1e-12)


def test_batchnorm_fix_gamma_leaves_gamma_untrained():
    net = sym.LinearRegressionOutput(_bn_net(), name="o")
    graph = net.to_graph(training=True, data=(None, 3))
    assert graph.param("bn_gamma").attrs["trainable"] is False


def test_embedding_picks_rows():
    w, ids = RS.randn(10, 4), np.array([[1, 9], [0, 1]])
    net = sym.Embedding(sym.Variable("data"), input_dim=10, output_dim=4, dtype="float64",
                        name="emb")
    (y,) = run(net, {"emb_weight": w}, data=ids)
    np.testing.assert_array_equal(y, w[ids])
    (y,) = run(net, {"emb_weight": w}, data=ids.astype("float32"))  # float ids, as MXNet
    np.testing.assert_array_equal(y, w[ids])


@pytest.mark.parametrize("layout", ["TNC", "NTC"])
def test_rnn_matches_kf_rnn_with_the_same_weights(layout):
    x = RS.randn(5, 3, 4)  # (T, N, C)
    r = kf.RNN(4, 6, rnn_type="lstm", num_layers=2, dtype="float64")
    want = r(x)
    feed = x if layout == "TNC" else x.transpose(1, 0, 2)
    net = sym.RNN(sym.Variable("data"), state_size=6, num_layers=2, mode="lstm", layout=layout,
                  name="rnn")
    (y,) = run(net, {"rnn_parameters": r.w.value}, data=feed)
    got = y if layout == "TNC" else y.transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_dropout_only_in_training_graphs():
    x = np.ones((200, 50))
    net = sym.Dropout(sym.Variable("data"), p=0.25)
    (y,) = run(net, {}, data=x)
    np.testing.assert_array_equal(y, x)
    (_loss, y) = run(sym.LinearRegressionOutput(net, name="o"), {}, training=True, data=x,
                    o_label=x)
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02
    (y,) = run(sym.Dropout(sym.Variable("data"), p=0.5, mode="always"), {}, data=x)
    assert (y == 0).any()


def test_softmax_output_predicts_probabilities_and_trains_with_nll():
    x, labels = RS.randn(6, 4), RS.randint(0, 4, 6)
    net = sym.SoftmaxOutput(sym.Variable("data"), name="sm")
    (p,) = run(net, {}, data=x)
    np.testing.assert_allclose(p, kf.softmax(x, axis=-1), rtol=1e-12)
    loss, _p2 = run(net, {}, training=True, data=x, sm_label=labels)
    np.testing.assert_allclose(loss, kf.nll(x, labels), rtol=1e-12)
    scaled = sym.SoftmaxOutput(sym.Variable("data"), name="s2", grad_scale=2.0)
    loss2, _ = run(scaled, {}, training=True, data=x, s2_label=labels)
    np.testing.assert_allclose(loss2, 2 * loss, rtol=1e-12)


def test_linear_regression_loss_is_half_the_squared_error_per_instance():
    x, t = RS.randn(5, 3), RS.randn(5, 3)
    net = sym.LinearRegressionOutput(sym.Variable("data"), name="lr")
    loss, pred = run(net, {}, training=True, data=x, lr_label=t)
    np.testing.assert_array_equal(pred, x)
    np.testing.assert_allclose(loss, 0.5 * ((x - t) ** 2).sum() / 5, rtol=1e-12)


def test_params_missing_from_params_are_initialized_by_name():
    graph = sym.BatchNorm(sym.Variable("data"), name="bn").to_graph(data=(None, 3))
    values = {n.attrs["name"]: n.attrs["value"] for n in graph.params}
    np.testing.assert_array_equal(values["bn_gamma"], np.ones(3))
    np.testing.assert_array_equal(values["bn_moving_mean"], np.zeros(3))
    w = sym.FullyConnected(sym.Variable("data"), 4, name="f").to_graph(data=(None, 3))
    assert np.abs(w.param("f_weight").attrs["value"]).max() <= 0.01  # Uniform(0.01)


# ---- saving ----


def test_json_and_pickle_round_trips():
    net = mlp()
    for back in (sym.load_json(net.tojson()), pickle.loads(pickle.dumps(net))):
        assert back.list_arguments() == net.list_arguments()
        assert back.infer_shape(data=(2, 5)) == net.infer_shape(data=(2, 5))


def test_a_shaped_symbol_saves_as_an_inference_model(tmp_path):
    net = mlp().with_shapes(data=(None, 5), dtypes={"data": "float64"})
    params = {"fc1_weight": RS.randn(8, 5), "fc1_bias": RS.randn(8), "fc2_weight": RS.randn(3, 8),
              "fc2_bias": RS.randn(3)}
    path = kf.save(tmp_path / "mlp.kf", net, params=params)
    model = kf.load_model(path)
    x = RS.randn(4, 5)
    assert model.output_names == ["softmax_output"]
    want = kf.softmax(np.maximum(x @ params["fc1_weight"].T + params["fc1_bias"], 0)
                      @ params["fc2_weight"].T + params["fc2_bias"], axis=-1)
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-12)
    assert "layer_symbol" in kf.load(path).metadata


# ---- errors ----


def test_error_messages():
    data = sym.Variable("data")
    with pytest.raises(ValueError, match="unknown act_type 'gelu'"):
        sym.Activation(data, act_type="gelu")
    with pytest.raises(ValueError, match="input 'data' of FullyConnected 'fc' needs a shape"):
        sym.FullyConnected(data, 3, name="fc").to_graph()
    with pytest.raises(ValueError, match="num_group=2 must divide the 3 input channels"):
        sym.Convolution(data, kernel=(1, 1), num_filter=4, num_group=2).infer_shape(
            data=(1, 3, 4, 4))
    with pytest.raises(ValueError, match="has no output layer with a loss"):
        sym.FullyConnected(data, 3).to_graph(training=True, data=(None, 2))
    with pytest.raises(ValueError, match="a 2-d kernel"):
        sym.Convolution(data, kernel=(3, 3), num_filter=1).infer_shape(data=(2, 5))
    with pytest.raises(ValueError, match=r"param 'f_weight' should have shape \(3, 2\)"):
        sym.FullyConnected(data, 3, name="f").to_graph(params={"f_weight": np.ones((2, 3))},
                                                       data=(None, 2))
    with pytest.raises(ValueError, match="unknown mode 'elman'"):
        sym.RNN(data, 4, mode="elman")


def test_pooling_kernel_larger_than_the_padded_input_is_refused():
    # Knet's pool cuts such a window; MXNet's Pooling refuses it (a sum would be mis-scaled)
    net = sym.Pooling(sym.Variable("data"), kernel=(5, 5), pool_type="sum", name="p")
    with pytest.raises(ValueError, match=r"Pooling 'p': kernel \(5, 5\) is larger than the "
                                         r"padded input \(3, 3\)"):
        run(net, {}, data=RS.randn(1, 1, 3, 3))


def test_symbol_is_the_layer_symbol_class_by_mxnets_name():
    net = kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=3, name="fc")
    assert kf.sym.Symbol is kf.sym.LayerSymbol
    assert isinstance(net, kf.sym.Symbol) and not isinstance(net, kf.Symbol)
