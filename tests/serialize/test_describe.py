"""The text of `knetflow inspect` for each kind of file."""

import numpy as np

import knetflow as kf
from knetflow.serialize import describe
from tests.serialize.common import mlp


def test_model_file(tmp_path):
    text = describe(kf.save(tmp_path / "m.kf", mlp(), epochs=3))
    assert "knetflow model file, format version 1" in text
    assert "graph: 10 nodes, 4 params" in text and "inputs: x float32(?, 12)" in text
    assert "ops: add x2, matmul x2, relu" in text
    assert "params: 4 arrays, 131 values, 524 bytes" in text and "epochs: 3" in text


def test_checkpoint_files(tmp_path):
    g = mlp()
    params = {n.attrs["name"]: n.attrs["value"] for n in g.params}
    sym, path = kf.save_checkpoint(tmp_path / "c", 7, g, params, {"mean": np.zeros(2)},
                                   optimizer_state={"step": 7, "m": [np.zeros((2, 2))]})
    text = describe(path)
    assert "knetflow params file" in text and "epoch: 7" in text
    assert "aux params: 1 arrays" in text
    assert "['step']: 7" in text and "['m'][0]: array float64[2, 2]" in text
    assert "knetflow symbol file" in describe(sym)


def test_state_file(tmp_path):
    path = kf.serialize.save_state(tmp_path / "s.kfs", {"rng": 2**100, "hist": [0.5, 0.25]})
    text = describe(path)
    assert "knetflow state file" in text
    assert "['rng']: 1267650600228229401496703205376" in text and "['hist']: [0.5, 0.25]" in text
