"""Shared by the ONNX tests: export, check with onnx.checker, run in onnxruntime."""

import numpy as np
import pytest

import knetflow as kf

onnx = pytest.importorskip("onnx", reason="the onnx package (the onnx extra) is not installed")

#: float32 tolerances: the two runtimes sum in different orders
RTOL, ATOL = 1e-5, 1e-5


def session(path):
    """An onnxruntime CPU session of `path`, after the ONNX checker (full check) passed."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the onnx extra) is not "
                                                    "installed")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(path, feed) -> list:
    """The exported model's outputs for `feed` (input name -> array)."""
    return session(path).run(None, feed)


def op_types(path) -> list:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def assert_matches(path, plan_or_fn, feeds, rtol=RTOL, atol=ATOL):
    """The exported model agrees with knetflow on every feed (a plan, or feed -> outputs)."""
    sess = session(path)
    for feed in feeds:
        want = plan_or_fn(feed) if callable(plan_or_fn) else plan_or_fn.run(feed)
        want = want if isinstance(want, (list, tuple)) else [want]
        got = sess.run(None, feed)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            w = np.asarray(w)
            assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def export_plan(graph, path, **kw):
    """Compile `graph` (for its param values) and export that plan; both returned."""
    plan = kf.compile(graph)
    return plan, kf.export_onnx(plan, path, **kw)
