"""The `knetflow` command."""

from knetflow import cli


def test_devices_lists_the_cpu(capsys):
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cpu:0 cpu" in out and "BLAS: " in out


def test_demo_trains_on_real_digits_checkpoints_reloads_and_exports(capsys, tmp_path):
    assert cli.main(["demo", "--epochs", "3", "--no-dask", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    losses = [float(line.split("train loss ")[1].split(",")[0])
              for line in out.splitlines() if "train loss" in line]
    assert len(losses) == 3 and losses[2] < losses[0]
    assert "real 8x8 handwritten digits" in out and "data-parallel on ['cpu:0', 'cpu:1']" in out
    assert (tmp_path / "mlp-symbol.kfg").exists() and (tmp_path / "mlp-0003.kfp").exists()
    accuracy = float(out.split("reloaded epoch 3 for inference")[1].split("test accuracy ")[1]
                     .split()[0])
    assert accuracy > 0.85  # held-out digits: chance is 0.1
    assert "ONNX Runtime agrees on 100.0% of the test digits" in out


def _saved_mlp(tmp_path):
    import numpy as np

    import knetflow as kf

    x = kf.placeholder("x", (None, 4))
    w = kf.param("w", value=np.arange(12, dtype="float32").reshape(4, 3))
    return kf.save(tmp_path / "m.kf", kf.relu(x @ w), note="cli"), x @ w


def test_inspect_shows_graph_params_and_metadata(tmp_path, capsys):
    path, _ = _saved_mlp(tmp_path)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "knetflow model file, format version 1" in out
    assert "inputs: x float32(?, 4)" in out and "ops: matmul, relu" in out
    assert "w     float32  (4, 3)  48" in out and "note: 'cli'" in out


def test_inspect_reports_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.kf"
    bad.write_bytes(b"\x89KNFL\r\n\x1a" + b"\0" * 40)
    assert cli.main(["inspect", str(bad)]) == 1
    assert "knetflow: error:" in capsys.readouterr().err


def test_predict_writes_the_outputs(tmp_path, capsys):
    import numpy as np

    path, _ = _saved_mlp(tmp_path)
    x = np.array([[1, -1, 0, 2], [0, 0, 0, 0]], dtype="float32")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    assert cli.main(["predict", str(path), "--input", str(tmp_path / "x.npy"),
                     "--output", str(out)]) == 0
    w = np.arange(12, dtype="float32").reshape(4, 3)
    np.testing.assert_array_equal(np.load(out), np.maximum(x @ w, 0))
    assert "wrote float32[2, 3]" in capsys.readouterr().out
    assert cli.main(["predict", str(path), "--input", f"x={tmp_path / 'x.npy'}",
                     "--output", str(tmp_path / "y.npz"), "--batch-size", "1"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["output0"], np.maximum(x @ w, 0))


def test_predict_reports_a_bad_input(tmp_path, capsys):
    import numpy as np

    path, _ = _saved_mlp(tmp_path)
    np.save(tmp_path / "x.npy", np.ones((2, 5), "float32"))
    assert cli.main(["predict", str(path), "--input", str(tmp_path / "x.npy"),
                     "--output", str(tmp_path / "y.npy")]) == 1
    assert "expects shape (?, 4)" in capsys.readouterr().err


def test_export_writes_an_onnx_model_that_predicts_as_the_file(tmp_path, capsys):
    import numpy as np
    import pytest

    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the onnx extra) is not "
                                                    "installed")
    path, _ = _saved_mlp(tmp_path)
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(path), "--onnx", str(out), "--opset", "13"]) == 0
    assert "ONNX opset 13, 2 nodes, inputs x -> outputs output0" in capsys.readouterr().out
    x = np.array([[1, -1, 0, 2], [0, 0, 0, 0], [3, 1, -2, 1]], dtype="float32")
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    w = np.arange(12, dtype="float32").reshape(4, 3)
    np.testing.assert_allclose(got[0], np.maximum(x @ w, 0))


def test_export_reports_what_it_cannot_write(tmp_path, capsys):
    import pytest

    import knetflow as kf

    pytest.importorskip("onnx", reason="the onnx package (the onnx extra) is not installed")
    x = kf.placeholder("x", (None, 4))
    path = kf.save(tmp_path / "g.kf", kf.digamma(x))
    assert cli.main(["export", str(path), "--onnx", str(tmp_path / "g.onnx")]) == 1
    err = capsys.readouterr().err
    assert "knetflow: error:" in err and "digamma" in err and "test_cli.py:" in err
    assert cli.main(["export", str(tmp_path / "none.kf"), "--onnx", str(tmp_path / "g.onnx")]) == 1
    assert "none.kf" in capsys.readouterr().err
    assert not (tmp_path / "g.onnx").exists()
