"""Files of every released format version keep loading (tests/data/format_v*.kf).

`python -m tests.serialize.test_compat` writes the file of the current format
version if it is missing; a released file is never rewritten.
"""

import glob
import os

import numpy as np
import pytest

import knetflow as kf
from knetflow.ops.base import DTYPES

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
FILES = sorted(glob.glob(os.path.join(DATA, "format_v*.kf")))


def dtype_arrays() -> dict:
    return {d: (np.arange(-3, 9).reshape(3, 4) % (2 if d == "bool" else 100)).astype(d)
            for d in DTYPES}


def sample_graph():
    """An MLP with a dropout (stripped at inference), a reduction with a tuple axis,
    and an update (a run counter), built from fixed values."""
    rs = np.random.RandomState(42)
    x = kf.placeholder("x", (None, 6))
    w = kf.param("w", value=rs.randn(6, 4).astype("float32"))
    b = kf.param("b", value=rs.randn(4).astype("float32"))
    runs = kf.param("runs", value=np.array(0, "int64"))
    h = kf.dropout(kf.relu(x @ w + b), 0.5)
    out = kf.logsoftmax(h, axis=-1)
    return kf.Graph([out, kf.sum(out * out, axis=(0, 1)), runs], inputs=[x],
                    updates={"runs": runs + 1})


def write_sample(path):
    graph = sample_graph()
    x = np.random.RandomState(7).randn(5, 6).astype("float32")
    y = kf.compile(graph).run({"x": x})
    kf.save(path, graph, x=x, y=list(y[:2]), dtypes=dtype_arrays(),
            values={"tuple": (1, (2.5, "three")), "list": [None, True, b"\x00"],
                    "big": 2**100 + 7, "negative": -(2**70)})


def test_there_is_a_file_for_the_current_version():
    assert os.path.exists(os.path.join(DATA, f"format_v{kf.serialize.FORMAT_VERSION}.kf"))


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_released_files_keep_loading(path):
    loaded = kf.load(path)
    meta = loaded.metadata
    assert loaded.kind == "model"
    plan = kf.compile(loaded.graph)
    got = plan.run({"x": meta["x"]})
    for g, want in zip(got, meta["y"]):
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-7)
    assert int(got[2]) == 0 and int(plan.params["runs"]) == 1
    for name, want in dtype_arrays().items():
        assert meta["dtypes"][name].dtype == want.dtype
        np.testing.assert_array_equal(meta["dtypes"][name], want)
    assert meta["values"] == {"tuple": (1, (2.5, "three")), "list": [None, True, b"\x00"],
                              "big": 2**100 + 7, "negative": -(2**70)}
    assert kf.load_model(path)(meta["x"])[0].shape == (5, 4)


if __name__ == "__main__":
    target = os.path.join(DATA, f"format_v{kf.serialize.FORMAT_VERSION}.kf")
    if os.path.exists(target):
        raise SystemExit(f"{target} exists; released files are never rewritten")
    write_sample(target)
    print("wrote", target)


def test_a_file_whose_integer_sum_declared_the_narrow_dtype_loads_with_numpys():
    # before integer sums and products declared NumPy's 64-bit dtype, a file said int32
    # for an int32 sum (and for what followed); its plans gave int64 all along
    from knetflow.serialize.saving import model_tree, to_bytes

    x = kf.placeholder("x", (None, 3), "int32")
    tree = model_tree(kf.Graph([kf.sum(x, axis=1) * 2, kf.prod(x, axis=0)]))
    for node in tree["graph"]["nodes"]:
        if node["op"] in ("sum", "mul", "prod"):
            node["spec"] = dict(node["spec"], dtype="int32")
    loaded = kf.serialize.loads(to_bytes("model", tree)).graph
    assert [o.spec.dtype for o in loaded.outputs] == ["int64", "int64"]
    got = kf.compile(loaded).run({"x": np.full((2, 3), 2**30, "int32")})
    np.testing.assert_array_equal(got[0], [6 * 2**30] * 2)
    # any other difference from the shape rule is still refused
    for node in tree["graph"]["nodes"]:
        if node["op"] == "sum":
            node["spec"] = dict(node["spec"], dtype="float32")
    with pytest.raises(kf.FormatError, match="the file says float32"):
        kf.serialize.loads(to_bytes("model", tree))
