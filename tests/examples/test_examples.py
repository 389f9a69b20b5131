"""The examples/ scripts, each run in-process with --quick: they train and the loss falls.

The seed's five Knet-style models also train with --arrays (w a plain list of
arrays, `kf.grad`/`kf.gradloss` over it): the loss falls, the loss traces once
(no retrace per step), and the weights end as in the default `kf.Param` style
after the same steps from the same initial weights.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

import knetflow as kf
from knetflow.train.knet import trace_cache

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
NAMES = ["linreg", "softmax", "mlp", "lenet", "charlm", "mlp_mxnet", "lenet_mxnet"]
KNET = ["linreg", "softmax", "mlp", "lenet", "charlm"]  # each also has --arrays


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


@pytest.mark.parametrize("name", KNET)
def test_example_with_arrays_runs_its_loss_falls_and_it_traces_once(name, capsys,
                                                                    monkeypatch):
    traces = []
    trace_call = trace_cache.trace_call

    def counted(*args, **kwargs):
        traces.append(args[0])
        return trace_call(*args, **kwargs)

    trace_cache.clear()  # an earlier test's trace of the same code would be reused
    monkeypatch.setattr(trace_cache, "trace_call", counted)
    result = load(name).main(["--quick", "--arrays"])
    losses = result["losses"]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    assert all(type(v) is np.ndarray for v in result["weights"])
    out = capsys.readouterr().out
    assert "loss" in out and "plain arrays" in out
    # every step calls the same loss on the same shapes: one trace, then the cached plan
    assert len(traces) == 1, [trace_cache.name_of(f) for f in traces]


def assert_close_for_dtype(actual, expected, what):
    """Equal up to rounding in the dtype: a few ulps of the array's largest magnitude."""
    expected = np.asarray(expected)
    eps = np.finfo(expected.dtype).eps
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=16 * eps, atol=16 * eps * scale,
                               err_msg=what)


@pytest.mark.parametrize("name", KNET)
def test_arrays_and_params_styles_end_with_the_same_weights(name, capsys):
    module = load(name)
    params = module.main(["--quick"])
    arrays = module.main(["--quick", "--arrays"])
    out = capsys.readouterr().out
    assert "kf.Params" in out and "plain arrays" in out
    assert len(arrays["weights"]) == len(params["weights"])
    for k, (a, p) in enumerate(zip(arrays["weights"], params["weights"])):
        assert a.shape == p.shape and a.dtype == p.dtype, (k, a.shape, p.shape, a.dtype, p.dtype)
        assert_close_for_dtype(a, p, f"{name}: w[{k}]")
    dtype = params["weights"][0].dtype
    assert_close_for_dtype(np.array(arrays["losses"], dtype), np.array(params["losses"], dtype),
                           f"{name}: losses")


def test_linreg_lossgradient_matches_central_differences():
    """The seed's lossgradient over [array, float] in float64: dw[1] is a float, both exact."""
    linreg = load("linreg")
    rs = np.random.RandomState(0)
    x, y = rs.randn(30, 13), rs.randn(30, 1)
    w = linreg.init_weights(rs)
    w[1] = 0.3
    dw = linreg.lossgradient(w, x, y)
    assert isinstance(dw, list) and type(dw[1]) is float and dw[0].shape == (13, 1)
    h = 1e-6

    def numeric(bump):
        return (float(linreg.loss(bump(h), x, y)) - float(linreg.loss(bump(-h), x, y))) / (2 * h)

    for i in range(13):
        def bump(d, i=i):
            w0 = w[0].copy()
            w0[i, 0] += d
            return [w0, w[1]]
        assert dw[0][i, 0] == pytest.approx(numeric(bump), rel=1e-6, abs=1e-6)
    assert dw[1] == pytest.approx(numeric(lambda d: [w[0], w[1] + d]), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("style", [[], ["--arrays"]], ids=["params", "arrays"])
def test_charlm_prints_generated_text(style, capsys):
    result = load("charlm").main(["--quick", "--generate", "25", *style])
    assert len(result["sample"]) == 25
    assert result["sample"] in capsys.readouterr().out


def test_mxnet_examples_checkpoint_and_reload(tmp_path):
    result = load("mlp_mxnet").main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "mlp-0002.kfp").exists() and (tmp_path / "mlp.kf").exists()
    assert 0.0 <= result["accuracy"] <= 1.0
