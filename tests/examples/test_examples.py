"""The examples/ scripts, each run in-process with --quick: they train and the loss falls."""

import importlib.util
import pathlib

import pytest

import knetflow as kf

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
NAMES = ["linreg", "softmax", "mlp", "lenet", "charlm", "mlp_mxnet", "lenet_mxnet"]


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_cpu_after():
    yield
    kf.set_cpu_devices(1)


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_and_its_loss_falls(name, capsys, tmp_path):
    argv = ["--quick"] + (["--out", str(tmp_path)] if name.endswith("_mxnet") else [])
    result = load(name).main(argv)
    losses = result["losses"]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    out = capsys.readouterr().out
    assert "loss" in out


def test_charlm_prints_generated_text(capsys):
    result = load("charlm").main(["--quick", "--generate", "25"])
    assert len(result["sample"]) == 25
    assert result["sample"] in capsys.readouterr().out


def test_mxnet_examples_checkpoint_and_reload(tmp_path):
    result = load("mlp_mxnet").main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "mlp-0002.kfp").exists() and (tmp_path / "mlp.kf").exists()
    assert 0.0 <= result["accuracy"] <= 1.0
