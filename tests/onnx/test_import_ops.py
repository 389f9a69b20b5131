"""kf.import_onnx on small models built with onnx.helper: op semantics match
onnxruntime's; malformed and unsupported files raise kf.FormatError naming the
op, node or field."""

import numpy as np
import pytest

import knetflow as kf

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5
RNG = np.random.default_rng(1)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _predict(graph, feed):
    return kf.compile(graph).run(feed)


# ---- semantics against onnxruntime, on models built with onnx.helper ----


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    """Serialized ModelProto; inputs/outputs are (name, shape[, elem type]), float32 by default."""
    def info(name, shape, elem=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, elem, shape)
    graph = helper.make_graph(
        nodes, "g", [info(*i) for i in inputs],
        [info(*o) for o in outputs],
        [numpy_helper.from_array(v, n) for n, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _check_against_onnxruntime(model, feed):
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    ours = _predict(kf.import_onnx(model), feed)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


LAYER_CASES = {
    "conv strided, padded, dilated, grouped": (
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1],
                         dilations=[1, 2], group=2), [("w", _randn(4, 2, 3, 3))], (2, 4, 9, 8)),
    "conv same_upper": (
        helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_UPPER"),
        [("w", _randn(3, 4, 3, 3)), ("b", _randn(3))], (2, 4, 6, 5)),
    "conv 1-d": (helper.make_node("Conv", ["x", "w"], ["y"], pads=[2, 2]),
                 [("w", _randn(3, 4, 5))], (2, 4, 7)),
    "maxpool padded": (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3],
                                        pads=[1, 1, 1, 1], strides=[2, 2]), [], (2, 4, 7, 6)),
    "maxpool ceil agrees": (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                             strides=[2, 2], ceil_mode=1), [], (1, 2, 6, 4)),
    "avgpool excluding pads": (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2],
                                                pads=[1, 1, 1, 1], strides=[2, 1]),
                               [], (2, 3, 7, 5)),
    "avgpool including pads": (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                                pads=[1, 1, 1, 1], count_include_pad=1),
                               [], (2, 3, 5, 5)),
    "avgpool 3-d": (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2, 2],
                                     strides=[2, 2, 2]), [], (1, 2, 4, 4, 6)),
    "global average": (helper.make_node("GlobalAveragePool", ["x"], ["y"]), [], (2, 3, 4, 5)),
    "global max": (helper.make_node("GlobalMaxPool", ["x"], ["y"]), [], (2, 3, 4, 5)),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_conv_and_pool_match_onnxruntime(case):
    node, inits, shape = LAYER_CASES[case]
    model = _model([node], [("x", [None] + list(shape[1:]))], [("y", None)], inits)
    _check_against_onnxruntime(model, {"x": _randn(*shape)})


def test_gemm_softmax_reshape_flatten_match_onnxruntime():
    nodes = [
        helper.make_node("Gemm", ["x", "a", "c"], ["g"], transA=1, alpha=0.5, beta=2.0),
        helper.make_node("Reshape", ["g", "shape"], ["r"]),              # (3, 4) -> (3, 2, 2)
        helper.make_node("Softmax", ["r"], ["s11"], axis=1),              # opset 11: over 1..
        helper.make_node("Flatten", ["s11"], ["f"], axis=2),
        helper.make_node("LeakyRelu", ["f"], ["y"], alpha=0.2),
    ]
    inits = [("a", _randn(5, 4)), ("c", _randn(4)), ("shape", np.array([0, -1, 2], np.int64))]
    model = _model(nodes, [("x", [5, 3])], [("y", None)], inits, opset=11)
    _check_against_onnxruntime(model, {"x": _randn(5, 3)})
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=1),            # opset 13: one axis
             helper.make_node("Unsqueeze", ["s", "axes"], ["u"]),
             helper.make_node("Transpose", ["u"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Squeeze", ["t", "axes"], ["y"])]
    model = _model(nodes, [("x", [None, 3, 4])], [("y", None)],
                   [("axes", np.array([0], np.int64))], opset=13)
    _check_against_onnxruntime(model, {"x": _randn(2, 3, 4)})


GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _rnn_weights(op, dirs, hidden, size):
    g = GATES[op]
    return [("W", _randn(dirs, g * hidden, size)), ("R", _randn(dirs, g * hidden, hidden)),
            ("B", _randn(dirs, 2 * g * hidden))]


def _rnn_model(op, attrs, layout, with_state, inits, dims):
    dirs, hidden, size, steps, batch = dims
    def shape(*d):   # layout 1 is batch first
        return list(d) if layout == 0 else [d[1], d[0]] + list(d[2:])
    inputs = [("x", shape(steps, batch, size))]
    names = ["x", "W", "R", "B" if len(inits) == 3 else ""]
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    if with_state:
        inputs += [(name, shape(dirs, batch, hidden)) for name in states]
        names += [""] + states
    outputs = ["y", "yh", "yc"] if op == "LSTM" else ["y", "yh"]
    node = helper.make_node(op, names, outputs, hidden_size=hidden, layout=layout, **attrs)
    return _model([node], inputs, [(name, None) for name in outputs], inits, opset=14)


@pytest.mark.parametrize("op,attrs,layout,with_state,with_bias", [
    ("LSTM", {"direction": "reverse"}, 0, True, True),
    ("LSTM", {"direction": "bidirectional"}, 1, True, False),
    ("LSTM", {}, 1, False, True),
    ("GRU", {"direction": "bidirectional", "linear_before_reset": 1}, 0, True, True),
    ("GRU", {"linear_before_reset": 1}, 1, False, False),
    ("RNN", {"direction": "reverse"}, 0, True, True),
    ("RNN", {"activations": ["Relu"]}, 1, False, True)])
def test_recurrent_layers_match_onnxruntime(op, attrs, layout, with_state, with_bias):
    """Layout 1 (batch first) is checked against onnxruntime's layout 0 (it has no other)."""
    bidirectional = attrs.get("direction") == "bidirectional"
    dims = dirs, hidden, size, steps, batch = 1 + bidirectional, 3, 2, 4, 5
    inits = _rnn_weights(op, dirs, hidden, size)[:3 if with_bias else 2]
    feed = {"x": _randn(steps, batch, size)}
    if with_state:
        feed.update({name: _randn(dirs, batch, hidden)
                     for name in (["h0", "c0"] if op == "LSTM" else ["h0"])})
    reference = _rnn_model(op, attrs, 0, with_state, inits, dims)
    ref = ort.InferenceSession(reference).run(None, feed)
    graph = kf.import_onnx(_rnn_model(op, attrs, layout, with_state, inits, dims))
    if layout == 1:
        feed = {k: v.transpose(1, 0, 2) for k, v in feed.items()}
    ours = _predict(graph, feed)
    if layout == 1:
        ours = [ours[0].transpose(1, 2, 0, 3)] + [s.transpose(1, 0, 2) for s in ours[1:]]
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# ---- refusals: FormatError naming the op, node or field ----


def _refused(model, *words, **kw):
    with pytest.raises(kf.FormatError) as info:
        kf.import_onnx(model, **kw)
    for word in words:
        assert word in str(info.value), str(info.value)
    return str(info.value)


def _one_node(node, shape=(2, 3, 6, 6), inits=(), opset=17):
    return _model([node], [("x", list(shape))], [("y", None)], inits, opset)


def test_unknown_ops_are_named():
    _refused(_one_node(helper.make_node("FancyOp", ["x"], ["y"], name="n1")), "FancyOp", "'n1'")
    custom = helper.make_node("Relu", ["x"], ["y"], name="n2", domain="com.example")
    _refused(_one_node(custom), "com.example", "'n2'")


def test_attribute_of_the_wrong_type_is_named():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    node.attribute.append(helper.make_attribute("strides", [1.0, 1.0]))
    _refused(_one_node(node, inits=[("w", _randn(4, 3, 3, 3))]), "'conv'", "'strides'",
             "INTS", "FLOATS")


def test_unknown_attribute_is_named():
    _refused(_one_node(helper.make_node("Relu", ["x"], ["y"], name="r", alpha=1.0)), "'alpha'")


def test_missing_initializer_is_named():
    node = helper.make_node("MatMul", ["x", "weights"], ["y"], name="mm")
    _refused(_one_node(node), "'mm'", "'weights'", "not defined")


def test_huge_declared_dims_are_refused_before_allocating():
    big = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**20] * 3, raw_data=bytes(4))
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [big]))
    _refused(model.SerializeToString(), "initializer 'w'", "dims")
    typed = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**40], float_data=[1, 2])
    model.graph.initializer[0].CopyFrom(typed)
    _refused(model.SerializeToString(), "initializer 'w'", "float_data")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["z"], name="zeros"),
             helper.make_node("Add", ["x", "z"], ["y"])]
    inits = [("shape", np.array([2**16, 2**16], np.int64))]
    _refused(_model(nodes, [("x", [1])], [("y", None)], inits), "'z'", "limit")


def test_external_data_is_refused_unread(tmp_path):
    w = numpy_helper.from_array(_randn(3), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../../etc/passwd")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w]))
    _refused(model.SerializeToString(), "initializer 'w'", "external")


def test_inexact_layer_settings_are_refused():
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 1, 0], name="c")
    _refused(_one_node(conv, inits=[("w", _randn(4, 3, 3, 3))]), "'c'", "asymmetric pads")
    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            ceil_mode=1, name="p")
    _refused(_one_node(pool), "'p'", "ceil_mode")
    pool = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], name="p")
    _refused(_model([pool], [("x", [1, 1, 4, 4])], [("y", None), ("i", None)]), "Indices")
    lstm = helper.make_node("LSTM", ["x", "W", "R", "", "lens"], ["y"], hidden_size=3)
    model = _model([lstm], [("x", [4, 5, 2]), ("lens", [5], TensorProto.INT32)], [("y", None)],
                   _rnn_weights("LSTM", 1, 3, 2)[:2])
    _refused(model, "sequence_lens")
    lstm = helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=3, clip=1.0)
    _refused(_model([lstm], [("x", [4, 5, 2])], [("y", None)],
                    _rnn_weights("LSTM", 1, 3, 2)[:2]), "'clip'")
    gru = helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=3)
    _refused(_model([gru], [("x", [4, 5, 2])], [("y", None)], _rnn_weights("GRU", 1, 3, 2)[:2]),
             "linear_before_reset")


def test_reshape_needs_a_constant_shape():
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs")
    model = _model([node], [("x", [2, 6]), ("shape", [2], TensorProto.INT64)], [("y", None)])
    _refused(model, "'rs'", "shape", "constant")


def test_old_op_versions_are_refused():
    _refused(_one_node(helper.make_node("Add", ["x", "x"], ["y"]), opset=6), "version 6", "Add")


def test_bad_files_are_refused(tmp_path):
    _refused(b"", "empty")
    _refused(b"\x89KNFL\r\n\x1a" + bytes(40), "ModelProto")
    path = tmp_path / "m.onnx"
    path.write_bytes(_one_node(helper.make_node("Relu", ["x"], ["y"])))
    _refused(path, "max_bytes", max_bytes=10)
    assert kf.import_onnx(path).outputs[0].op == "relu"


def test_an_empty_initializer_with_dims_no_array_can_have_is_a_format_error():
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [0, 2**62], b"", raw=True)
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(kf.FormatError, match=r"dims \[0, 4611686018427387904\]"):
        kf.import_onnx(model.SerializeToString())
