"""The IR (graph/node.py, graph/printing.py): Node, toposort, Graph, verify, printing."""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import knetflow as kf
from knetflow.graph.node import Node, toposort
from knetflow.ops.base import Spec


def _line_below() -> str:
    """`test_node.py:N` of the line after the caller's."""
    return f"test_node.py:{sys._getframe(1).f_lineno + 1}"


def _diamond():
    """
        x
       / \\
     exp  tanh
       \\ /
       mul
        |
       sum
    """
    x = kf.placeholder("x", (None, 3))
    a, b = kf.exp(x), kf.tanh(x)
    c = a * b
    return x, a, b, c, kf.sum(c)


# ---- Node ----


def test_node_is_frozen_and_compares_by_identity():
    x = kf.placeholder("x", (2,))
    n = kf.exp(x).node
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.op = "log"
    twin = n.replace()
    assert twin is not n and twin != n and twin.id != n.id
    assert (twin.op, twin.inputs, twin.attrs, twin.spec, twin.where) == (
        n.op, n.inputs, n.attrs, n.spec, n.where)


def test_node_records_op_spec_and_user_line():
    x = kf.placeholder("x", (None, 3))
    where = _line_below()
    y = kf.sum(x, axis=1)
    assert y.node.op == "sum"
    assert y.node.inputs == (x.node,)
    assert y.node.attrs == {"axis": (1,), "keepdims": False}
    assert y.node.spec == Spec((None,), "float32")
    assert y.node.where == where
    assert x.node.is_leaf and not y.node.is_leaf


def test_node_label():
    x = kf.placeholder("x", (2,))
    w = kf.param("w", value=np.ones(2))
    y = kf.exp(x)
    assert x.node.label() == "x" and w.node.label() == "w"
    assert y.node.label() == f"exp#{y.node.id}"
    assert y.node.replace(name="act").label() == "act"


# ---- toposort ----


def test_toposort_diamond_puts_inputs_first_once_each():
    x, a, b, c, s = _diamond()
    order = toposort([s.node])
    assert order == (x.node, a.node, b.node, c.node, s.node)


def test_toposort_several_roots_share_nodes():
    x, a, b, c, s = _diamond()
    order = toposort([b.node, s.node])
    assert order == (x.node, b.node, a.node, c.node, s.node)


def test_toposort_deep_chain_has_no_recursion_limit():
    x = kf.placeholder("x", (2,))
    y = x
    for _ in range(3 * sys.getrecursionlimit()):
        y = -y
    order = toposort([y.node])
    assert len(order) == 3 * sys.getrecursionlimit() + 1
    assert order[0] is x.node and order[-1] is y.node


# ---- Graph ----


def test_graph_collects_inputs_params_nodes():
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.ones((3, 2)))
    b = kf.param("b", value=np.zeros(2))
    y = kf.placeholder("y", (None, 2))
    loss = kf.sum((kf.relu(x @ w + b) - y) ** 2)
    g = kf.Graph(loss)
    assert g.outputs == (loss.node,)
    assert [n.attrs["name"] for n in g.inputs] == ["x", "y"]
    assert [n.attrs["name"] for n in g.params] == ["w", "b"]
    assert g.nodes[-1] is loss.node
    assert g.input("y") is y.node and g.param("b") is b.node
    with pytest.raises(KeyError, match="no input named 'z'"):
        g.input("z")
    with pytest.raises(KeyError, match="no param named 'x'"):
        g.param("x")


def test_graph_keeps_declared_unused_inputs_in_order():
    x = kf.placeholder("x", (3,))
    u = kf.placeholder("u", (2,))
    g = kf.Graph([kf.exp(x)], inputs=[u, x])
    assert [n.attrs["name"] for n in g.inputs] == ["u", "x"]
    assert u.node in g.nodes


def test_graph_users():
    x, a, b, c, s = _diamond()
    users = kf.Graph([s]).users()
    assert users[x.node.id] == [a.node, b.node]
    assert users[a.node.id] == [c.node]
    assert users[s.node.id] == []


def test_graph_rejects_non_symbols():
    with pytest.raises(TypeError, match="expected a Symbol or Node, got ndarray"):
        kf.Graph([np.ones(3)])


def test_infer_shapes_makes_dynamic_dims_concrete():
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.ones((3, 4)))
    g = kf.Graph([kf.tanh(x @ w), kf.sum(x, axis=1)])
    shapes = g.infer_shapes(x=(5, 3))
    assert shapes == {"inputs": {"x": (5, 3)}, "params": {"w": (3, 4)},
                      "outputs": [(5, 4), (5,)]}
    with pytest.raises(kf.FeedError, match=r"input 'x' expects shape \(\?, 3\), got \(5, 4\)"):
        g.infer_shapes(x=(5, 4))


# ---- verify ----


def test_verify_passes_and_returns_graph():
    *_, s = _diamond()
    g = kf.Graph([s])
    assert g.verify() is g


def test_verify_catches_duplicate_input_names():
    a = kf.placeholder("a", (3,))
    b = kf.placeholder("a", (3,))
    with pytest.raises(AssertionError, match="two input nodes named 'a'"):
        kf.Graph([a + b]).verify()


def test_verify_catches_unknown_op():
    x = kf.placeholder("x", (3,))
    bad = Node("frobnicate", (x.node,), {}, x.node.spec)
    with pytest.raises(AssertionError, match="unknown op 'frobnicate'"):
        kf.Graph([bad]).verify()


def test_verify_catches_bad_spec():
    x = kf.placeholder("x", (3,))
    bad = Node("exp", (x.node,), {}, (3,))
    with pytest.raises(AssertionError, match="spec is not a Spec"):
        kf.Graph([bad]).verify()


def test_verify_catches_node_before_its_input():
    *_, s = _diamond()
    g = kf.Graph([s])
    g.nodes = tuple(reversed(g.nodes))  # what a buggy pass might leave
    with pytest.raises(AssertionError, match="comes after it"):
        g.verify()


def test_verify_catches_missing_input_and_output():
    x, a, _, _, s = _diamond()
    g = kf.Graph([s])
    g.nodes = tuple(n for n in g.nodes if n is not a.node)
    with pytest.raises(AssertionError, match=re.escape(f"input {a.node!r} is not in the graph")):
        g.verify()
    g = kf.Graph([s])
    g.outputs = (kf.exp(x).node,)
    with pytest.raises(AssertionError, match="output .* is not in the graph"):
        g.verify()


def test_compile_verifies():
    a = kf.placeholder("a", (3,))
    with pytest.raises(AssertionError, match="two input nodes named 'a'"):
        kf.compile([a * kf.placeholder("a", (3,))])


# ---- printing ----


def test_str_is_a_flat_equation_list():
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.ones(3))
    where = _line_below()
    y = kf.sum(kf.exp(x * w), axis=1)
    m = y.node.inputs[0].inputs[0]
    e = y.node.inputs[0]
    assert str(kf.Graph([y])).splitlines() == [
        "input x: float32(?, 3)",
        "param w: float32(3,)",
        f"%{m.id} = mul(x, w)  float32(?, 3)  {where}",
        f"%{e.id} = exp(%{m.id})  float32(?, 3)  {where}",
        f"%{y.node.id} = sum[axis=(1,), keepdims=False](%{e.id})  float32(?,)  {where}",
        f"return %{y.node.id}",
    ]
    assert repr(kf.Graph([y])) == f"<Graph 5 nodes -> sum#{y.node.id}(?,)>"


def test_str_shows_consts_and_leaf_outputs():
    x = kf.placeholder("x", (2,))
    where = _line_below()
    y = x + np.ones(2)
    text = str(kf.Graph([y, x])).splitlines()
    c = y.node.inputs[1]
    assert f"%{c.id} = const float64(2,)  float64(2,)  {where}" in text
    assert text[-1] == f"return %{y.node.id}, x"


def test_summary_prints_and_returns_table(capsys):
    x = kf.placeholder("x", (None, 3))
    w = kf.param("w", value=np.ones((3, 2)))
    text = kf.Graph([kf.relu(x @ w)]).summary()
    assert capsys.readouterr().out == text + "\n"
    lines = text.splitlines()
    assert lines[0].split() == ["node", "op", "shape", "dtype", "where"]
    assert lines[1].split()[:4] == ["x", "input", "(?,", "3)"]
    assert lines[2].split()[:4] == ["w", "param", "(3,", "2)"]
    assert [line.split()[1] for line in lines[3:-1]] == ["matmul", "relu"]
    assert lines[-1] == "4 nodes, 1 params, 6 parameter values"


def test_to_dot_has_a_box_per_op_and_an_edge_per_input():
    x, a, _, c, s = _diamond()
    dot = kf.Graph([s]).to_dot()
    assert dot.startswith("digraph knetflow {") and dot.endswith("}")
    assert f'n{x.node.id} [label="x\\nfloat32(?, 3)", shape=ellipse];' in dot
    assert f'n{c.node.id} [label="mul#{c.node.id}\\nfloat32(?, 3)", shape=box];' in dot
    assert f'n{a.node.id} -> n{c.node.id} [label="(?, 3)"];' in dot
    assert dot.count("->") == 5


def test_leaf_nodes_carry_their_user_names():
    w1 = kf.param("w1", (3, 2))
    x = kf.placeholder("x", (None, 3))
    g = kf.Graph([kf.sum(x @ w1)])
    assert [p.name for p in g.params] == ["w1"] and [n.name for n in g.inputs] == ["x"]
    assert g.param("w1").name == "w1"


def test_the_user_line_when_knetflow_is_imported_through_a_relative_path(tmp_path):
    """A script that puts the checkout on sys.path as a relative path (as benchmarks/ do)
    still gets its own lines, not knetflow's."""
    root = os.path.relpath(os.path.dirname(os.path.dirname(kf.__file__)), tmp_path)
    script = tmp_path / "script.py"
    script.write_text(f"import sys\nsys.path.insert(0, {root!r})\nimport knetflow as kf\n"
                      "print(kf.__file__)\n"
                      "print((kf.placeholder('x', (2,)) * 2).node.where)\n")
    out = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert ".." in out[0]      # knetflow came through the relative entry, unnormalized
    assert out[1] == "script.py:5"
