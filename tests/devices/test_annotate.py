"""`with kf.device(...)`: symbols built inside carry the device annotation."""

import threading

import numpy as np
import pytest

import knetflow as kf
from knetflow.devices import annotate


def test_nodes_built_inside_a_block_carry_the_device():
    kf.set_cpu_devices(2)
    x = kf.placeholder("x", (None, 3))
    with kf.device("cpu:1") as d:
        assert d is kf.cpu(1)
        w = kf.param("w", (3, 2))
        y = kf.relu(x @ w)
    z = y * 2
    assert x.node.device is None
    assert w.node.device == "cpu:1" and y.node.device == "cpu:1"
    assert z.node.device is None
    assert annotate.current() is None


def test_blocks_nest_and_the_innermost_wins():
    kf.set_cpu_devices(2)
    kf.set_sim_devices(1)
    with kf.cpu(0):
        a = kf.placeholder("a", (2,))
        with kf.device("sim:0"):
            b = a + 1
            with kf.cpu(1):
                c = b * 2
            d = c - 1
        e = d / 2
    assert [s.node.device for s in (a, b, c, d, e)] == ["cpu:0", "sim:0", "cpu:1", "sim:0",
                                                        "cpu:0"]


def test_the_same_device_can_be_entered_twice():
    dev = kf.cpu(0)
    with dev:
        with dev:
            assert annotate.current() == "cpu:0"
        assert annotate.current() == "cpu:0"
    assert annotate.current() is None


def test_an_exception_inside_a_block_leaves_no_annotation():
    with pytest.raises(RuntimeError), kf.cpu(0):
        raise RuntimeError("boom")
    assert annotate.current() is None
    assert kf.placeholder("x", (1,)).node.device is None


def test_annotations_are_per_thread():
    seen = []
    with kf.cpu(0):
        worker = threading.Thread(target=lambda: seen.append(
            kf.placeholder("t", (1,)).node.device))
        worker.start()
        worker.join()
        assert kf.placeholder("m", (1,)).node.device == "cpu:0"
    assert seen == [None]


def test_blocks_must_nest():
    annotate.push("cpu:0")
    with pytest.raises(RuntimeError, match="blocks must nest"):
        annotate.pop("cpu:1")
    annotate.pop("cpu:0")
    with pytest.raises(RuntimeError, match="more exits than entries"):
        annotate.pop()


def test_annotated_graphs_still_compile_and_run():
    with kf.cpu(0):
        x = kf.placeholder("x", (2,))
        y = kf.exp(x)
    out = kf.compile(y).run({"x": np.zeros(2, "float32")})[0]
    np.testing.assert_array_equal(out, np.ones(2, "float32"))
