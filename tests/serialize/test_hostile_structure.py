"""Hostile files that edit structure: each a valid file with one field changed.

In the spirit of safetensors' `attacks/`: a valid model, checkpoint and state
file are taken apart (anatomy.py), one field of the preamble, header, graph,
params, tree or an array record is edited, and the file is put back together
with its lengths and both CRCs recomputed, so that only the reader's own checks
stand between the edit and a loaded model. Every such file must be refused
with a kf.FormatError saying what is wrong. The cases follow docs/FORMAT.md,
"What a reader checks", and "Params and their values".

All loads run in one subprocess (guarded.py) under an address-space limit,
with an audit hook that sees any code run or program started while they do.
The files are generated here, never committed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import pytest

import knetflow as kf
from knetflow.serialize import save_state
from tests.serialize.anatomy import Raw, Record, index_of, join, raw_map, ref, split, tuple_ext

needs_guard = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="the guard uses RLIMIT_AS and /proc")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guarded.py")


def base_graph():
    """softmax(x @ w + b) and a sum over a tuple axis, with a const: every kind of leaf.

    w is all ones, so the first output is [1/3, 1/3, 1/3] for any x.
    """
    x = kf.placeholder("x", (None, 4))
    w = kf.param("w", value=np.ones((4, 3), "float32"))
    b = kf.param("b", (3,), init="zeros")
    c = kf.const(np.arange(3, dtype="float32"))
    p = kf.softmax(x @ w + b)
    return kf.Graph([p, kf.sum(p * c, axis=(0, 1))], inputs=[x])


def write_bases(directory) -> dict:
    """The valid files every case starts from: name -> bytes."""
    g = base_graph()
    model = kf.save(os.path.join(directory, "base.kf"), g, note="base",
                    mask=np.array([True, False]), big=2**70, pair=(1, (2, 3)))
    prefix = os.path.join(directory, "base")
    symbol, params = kf.save_checkpoint(
        prefix, 1, g, {"w": np.ones((4, 3), "float32"), "b": np.zeros(3, "float32")},
        optimizer_state={"step": 1, "m": (np.zeros((4, 3), "float32"),)}, metrics={"loss": 0.5})
    state = save_state(os.path.join(directory, "base.kfs"), {
        "step": 3, "rng": np.random.default_rng(0).bit_generator.state,
        "m": [np.ones(3), np.array([True, False])], "hyper": (0.9, 0.999)})
    return {name: Path(path).read_bytes() for name, path in
            (("model", model), ("symbol", symbol), ("params", params), ("state", state))}


# ---- editing helpers, so that each case is one expression ----


def nodes(p) -> list:
    return p.tree["graph"]["nodes"]


def node(p, op: str) -> dict:
    return next(n for n in nodes(p) if n["op"] == op)


def set_node(p, which: str, **fields) -> None:
    """Set fields of the first node whose op is `which`."""
    node(p, which).update(fields)


def set_spec(p, which: str, **fields) -> None:
    node(p, which)["spec"].update(fields)


def set_attrs(p, which: str, **attrs) -> None:
    node(p, which)["attrs"].update(attrs)


def record(p, name: str, where="params") -> Record:
    """The record of param `name` (or of metadata entry `name`)."""
    return p.records[index_of(p.tree[where][name])]


def set_record(p, name: str, where="params", **fields) -> None:
    rec = record(p, name, where)
    for key, value in fields.items():
        setattr(rec, key, value)


def set_graph(p, **fields) -> None:
    p.tree["graph"].update(fields)


def append_node(p, item: dict, output: bool = False) -> None:
    nodes(p).append(item)
    if output:
        p.tree["graph"]["outputs"].append(len(nodes(p)) - 1)


def param_node(p, name: str) -> dict:
    return next(n for n in nodes(p) if n["op"] == "param" and n["attrs"]["name"] == name)


def rename_param(p, old: str, new: str) -> None:
    param_node(p, old)["attrs"]["name"] = new
    if "params" in p.tree and old in p.tree["params"]:
        p.tree["params"][new] = p.tree["params"].pop(old)


def meta(p, key: str, value, where="metadata") -> None:
    p.tree[where][key] = value


def drop(mapping: dict, *keys) -> None:
    for key in keys:
        del mapping[key]


def body_length(p) -> int:
    data = join(p)
    return len(data) - 32 - int.from_bytes(data[12:16], "little")


def add_array(p, rec: Record) -> msgpack.ExtType:
    """Append an array record; the reference to it."""
    p.records.append(rec)
    p.header["arrays"] = len(p.records)
    return ref(len(p.records) - 1)


def nested_lists(depth: int):
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def nested_tuples(depth: int):
    value: object = 0
    for _ in range(depth):
        value = tuple_ext([value])
    return value


def a_param(name: str, shape=(4, 3)) -> dict:
    return {"op": "param", "in": [], "attrs": {"name": name, "init": None},
            "spec": {"dtype": "float32", "shape": list(shape)}, "where": "evil.py:1"}


# ---- the cases ----


@dataclass
class Case:
    """A hostile file: `edit` changes the parts of base file `base` (both files of a
    checkpoint: `edit(symbol, params)`), and the load must fail matching `expect`."""

    name: str
    base: str
    edit: Callable
    expect: str
    load: str = ""
    options: dict = field(default_factory=dict)


CASES: list = []


def case(name, base, edit, expect, **kw) -> None:
    assert name not in {c.name for c in CASES}, name
    CASES.append(Case(name, base, edit, expect, **kw))


# The preamble and the frame: size, magic, checksums, flags, version, lengths.
case("file shorter than the preamble", "model", lambda p: join(p)[:31],
     r"truncated: 31 bytes, shorter than the 32-byte preamble")
case("magic mangled by a text-mode transfer", "model",
     lambda p: setattr(p, "magic", b"\x89KNFL\n\n\x1a"), r"not a knetflow file \(bad magic")
case("preamble checksum wrong", "model", lambda p: setattr(p, "preamble_crc", 0),
     r"corrupt preamble \(its checksum does not match\)")
case("unknown flags", "model", lambda p: setattr(p, "flags", 4), r"unknown flags 0x0004")
case("a newer version", "model", lambda p: setattr(p, "version", 2),
     r"format version 2 is newer than the versions this knetflow \(.+\) reads \(1\); upgrade")
case("version 0", "model", lambda p: setattr(p, "version", 0),
     r"format version 0 is not one of the versions this knetflow")
case("body length past the end", "model", lambda p: setattr(p, "body_length", 2**63),
     r"truncated: the preamble describes \d+ bytes, the file has \d+")
case("body length short of the end", "model",
     lambda p: setattr(p, "body_length", body_length(p) - 1),
     r"trailing data: the preamble describes \d+ bytes, the file has \d+")
case("header length over 64 KiB", "model", lambda p: setattr(p, "header_length", 65537),
     r"header of 65537 bytes \(at most 65536\)")
case("a header of 70 KB", "model", lambda p: p.header["summary"].update(pad="x" * 70_000),
     r"header of 700\d\d bytes \(at most 65536\)")
case("body checksum wrong", "model", lambda p: setattr(p, "body_crc", 12345),
     r"checksum mismatch: the file is corrupt")
case("body checksum wrong (mmap)", "model", lambda p: setattr(p, "body_crc", 12345),
     r"checksum mismatch", load="mmap")

# The header.
case("header not a map", "model", lambda p: setattr(p, "raw_header", msgpack.packb([1])),
     r"header is not a map")
case("header without arrays", "model", lambda p: drop(p.header, "arrays"),
     r"header field 'arrays' is missing or not a int")
case("header knetflow not a str", "model", lambda p: p.header.update(knetflow=1),
     r"header field 'knetflow' is missing or not a str")
case("header kind pickle", "model", lambda p: p.header.update(kind="pickle"),
     r"unknown file kind 'pickle' \(known: model, symbol, params, state\)")
case("header tree longer than the body", "model", lambda p: setattr(p, "tree_length", 10**6),
     r"header says the tree has 1000000 bytes; the body has \d+")
case("header tree one byte short", "model",
     lambda p: setattr(p, "tree_length", len(msgpack.packb(p.tree)) - 1),
     r"array 0 \(at byte \d+\): expected an ext 32 object of type 1, found marker 0x")
case("header counts an array more", "model", lambda p: p.header.update(arrays=5),
     r"array 4 \(at byte \d+\): truncated record header")
case("header counts an array less", "model", lambda p: p.header.update(arrays=3),
     r"\d+ bytes after the last array")
case("header claims a billion arrays", "model", lambda p: p.header.update(arrays=10**9),
     r"header claims 1000000000 arrays in \d+ bytes")
case("header holds a key twice", "model", lambda p: setattr(p, "raw_header", join_header_twice(p)),
     r"a map holds the key 'kind' twice")
case("bytes after the last array", "model", lambda p: setattr(p, "tail", b"\xc0"),
     r"1 bytes after the last array")


def join_header_twice(p) -> bytes:
    return raw_map([*p.header.items(), ("kind", "state")]).data


# The tree: lengths bounded by the bytes present, nesting, ext types, references, keys.
case("str of 4 GiB", "model", lambda p: meta(p, "note", Raw(b"\xdb\xff\xff\xff\xffabc")),
     r"truncated msgpack data")
case("bin of 4 GiB", "model", lambda p: meta(p, "note", Raw(b"\xc6\xff\xff\xff\xffabc")),
     r"truncated msgpack data")
case("array of 2**32-1 items", "model", lambda p: meta(p, "note", Raw(b"\xdd\xff\xff\xff\xff")),
     r"4294967295 exceeds max_array_len")
case("map of 2**32-1 items", "model", lambda p: meta(p, "note", Raw(b"\xdf\xff\xff\xff\xff")),
     r"4294967295 exceeds max_map_len")
case("ext of 4 GiB", "state", lambda p: meta(p, "hyper", Raw(b"\xc9\xff\xff\xff\xff\x03\x90"),
                                             "state"),
     r"exceeds max_ext_len")
case("lists nested 65 deep", "model", lambda p: meta(p, "deep", nested_lists(65)),
     r"values nested deeper than 64")
case("tuples nested 65 deep", "state", lambda p: meta(p, "hyper", nested_tuples(65), "state"),
     r"tuples nested deeper than 64")
case("unknown ext type", "model", lambda p: meta(p, "note", msgpack.ExtType(9, b"")),
     r"unknown msgpack extension type 9")
case("array ext inside the tree", "model", lambda p: meta(p, "note", msgpack.ExtType(1, b"")),
     r"unknown msgpack extension type 1")
case("timestamp ext", "state", lambda p: meta(p, "step", Raw(b"\xd6\xff\0\0\0\1"), "state"),
     r"unexpected value of type Timestamp in the tree")
case("array reference out of range", "model", lambda p: meta(p, "mask", ref(99)),
     r"reference to array 99, but the file has 4")
case("array reference of 3 bytes", "state",
     lambda p: meta(p, "m", [msgpack.ExtType(2, b"\0\0\0")], "state"),
     r"array reference of 3 bytes \(expected 4\)")
case("big int of 0 bytes", "state", lambda p: meta(p, "step", msgpack.ExtType(4, b""), "state"),
     r"big int of 0 bytes \(1 to 1024 allowed\)")
case("big int of 1025 bytes", "state",
     lambda p: meta(p, "step", msgpack.ExtType(4, b"\1" * 1025), "state"),
     r"big int of 1025 bytes")
case("tuple payload not an array", "state",
     lambda p: meta(p, "hyper", msgpack.ExtType(3, msgpack.packb(1)), "state"),
     r"tuple payload is a int, not an array")
case("tuple payload with extra data", "state",
     lambda p: meta(p, "hyper", msgpack.ExtType(3, msgpack.packb([1]) + b"\xc0"), "state"),
     r"extra data after a tuple's items")
case("map key a float", "model", lambda p: meta(p, "note", {1.5: 1}),
     r"map key of type float \(str or int expected\)")
case("map key a bool", "state", lambda p: meta(p, "rng", {True: 1}, "state"),
     r"map key of type bool")
case("metadata holds a key twice", "model",
     lambda p: p.tree.update(metadata=raw_map([("note", "a"), ("note", "b")])),
     r"a map holds the key 'note' twice")
case("extra data after the tree", "model",
     lambda p: setattr(p, "raw_tree", msgpack.packb(p.tree) + b"\xc0"),
     r"1 bytes of extra data after the tree")
case("tree not a map", "model", lambda p: setattr(p, "tree", [1]),
     r"the model tree is a list, not a map")
case("metadata not a map", "model", lambda p: p.tree.update(metadata=3),
     r"'metadata' is not a map")

# Array records: marker, lengths, dtype codes, dimensions, shapes, padding, bools.
case("record marker not ext 32", "model", lambda p: set_record(p, "w", marker=0xC7),
     r"array 1 \(at byte \d+\): expected an ext 32 object of type 1, found marker 0xc7")
case("record of ext type 2", "model", lambda p: set_record(p, "w", ext=2),
     r"found marker 0xc9 type 2")
case("record longer than the file", "model", lambda p: set_record(p, "w", length=2**32 - 1),
     r"array 1 \(at byte \d+\): record claims 4294967295 bytes but \d+ remain")
case("unknown dtype code", "model", lambda p: set_record(p, "w", code=13),
     r"array 1 \(at byte \d+\): unknown dtype code 13")
case("dtype code 0", "state", lambda p: setattr(p.records[0], "code", 0),
     r"array 0 \(at byte \d+\): unknown dtype code 0")
case("33 dimensions", "model", lambda p: set_record(p, "w", ndim=33),
     r"array 1 \(at byte \d+\): 33 dimensions \(at most 32\)")
case("shape and padding past the record", "model", lambda p: set_record(p, "w", length=6),
     r"shape and padding run past the record")
case("shape against the bytes", "model", lambda p: set_record(p, "w", shape=[4, 4]),
     r"shape \(4, 4\) of float32 needs 64 bytes but the record holds 48")
case("shape of 2**40 x 2**40", "model", lambda p: set_record(p, "w", shape=[2**40, 2**40]),
     r"needs \d{25,} bytes but the record holds 48")
case("empty shape NumPy cannot hold", "model",
     lambda p: set_record(p, "w", shape=[0, 2**63], data=b""),
     r"shape \(0, 9223372036854775808\)")
case("padding not zero", "model",
     lambda p: set_record(p, "w", pad=b"\1" + record(p, "w").pad[1:]),
     r"array 1 \(at byte \d+\): padding bytes are not zero")
case("bool bytes other than 0 and 1", "model",
     lambda p: set_record(p, "mask", "metadata", data=b"\2\0"),
     r"bool array holds bytes other than 0 and 1")
case("bool bytes other than 0 and 1 (mmap)", "model",
     lambda p: set_record(p, "mask", "metadata", data=b"\0\xff"),
     r"bool array holds bytes other than 0 and 1", load="mmap")

# The graph: ops, input positions, arity, attributes, specs, leaves, outputs, updates.
case("unknown op", "model", lambda p: set_node(p, "matmul", op="eval"),
     r"node 4 \(eval\): unknown op 'eval'")
case("op not a str", "model", lambda p: set_node(p, "matmul", op=7),
     r"node 4 op is a int, expected str")
case("forward input", "model", lambda p: set_node(p, "softmax", **{"in": [7]}),
     r"node 6 \(softmax\): input 7 is not the position of an earlier node")
case("node its own input", "model", lambda p: set_node(p, "softmax", **{"in": [6]}),
     r"node 6 \(softmax\): input 6 is not the position")
case("negative input", "model", lambda p: set_node(p, "add", **{"in": [4, -1]}),
     r"node 5 \(add\): input -1 is not the position")
case("bool input", "model", lambda p: set_node(p, "add", **{"in": [4, True]}),
     r"node 5 \(add\): input True is not the position")
case("wrong arity", "model", lambda p: set_node(p, "matmul", **{"in": [0]}),
     r"node 4 \(matmul\): matmul rejects its stored inputs and attributes: TypeError")
case("attribute of the wrong type", "model", lambda p: set_attrs(p, "sum", axis="all"),
     r"node 8 \(sum\): sum rejects its stored inputs and attributes")
case("an attribute an op lacks", "model", lambda p: set_attrs(p, "matmul", evil=1),
     r"node 4 \(matmul\): matmul rejects its stored inputs and attributes: TypeError")
case("attrs not a map", "model", lambda p: set_node(p, "add", attrs=[1]),
     r"node 5 \(add\) attrs is a list, expected dict")
case("attribute names not str", "model", lambda p: set_node(p, "add", attrs={1: 2}),
     r"node 5 \(add\): attribute names must be strings")
case("spec against the shape rule", "model", lambda p: set_spec(p, "add", shape=[None, 4]),
     r"node 5 \(add\): the file says float32\(\?, 4\) but add gives float32\(\?, 3\)")
case("object dtype", "model", lambda p: set_spec(p, "add", dtype="object"),
     r"node 5 \(add\) spec: unsupported dtype 'object'")
case("negative dimension", "model", lambda p: set_spec(p, "add", shape=[-1, 3]),
     r"node 5 \(add\) spec: dimension -1 out of range")
case("huge dimension", "model", lambda p: set_spec(p, "add", shape=[2**62, 3]),
     r"node 5 \(add\) spec: dimension 4611686018427387904 out of range")
case("bool dimension", "model", lambda p: set_spec(p, "add", shape=[True, 3]),
     r"node 5 \(add\) spec dimension is a bool, expected int")
case("33 dimensions in a spec", "model", lambda p: set_spec(p, "add", shape=[1] * 33),
     r"node 5 \(add\) spec: 33 dimensions \(at most 32\)")
case("spec not a map", "model", lambda p: set_node(p, "add", spec="float32"),
     r"node 5 \(add\) spec is a str, expected dict")
case("tuple spec of tuple specs", "model", lambda p: set_node(p, "add", spec=[[]]),
     r"node 5 \(add\) spec is a list, expected dict")
case("bytes where a name belongs", "model", lambda p: set_attrs(p, "input", name=b"x"),
     r"node 0 \(input\) attribute 'name' is a bytes, expected str")
case("node name of bytes", "model", lambda p: set_node(p, "param", name=b"w"),
     r"node 1 \(param\) name is a bytes, expected str")
case("device not a str", "model", lambda p: set_node(p, "add", device=1),
     r"node 5 \(add\) device is a int, expected str")
case("where not a str", "model", lambda p: set_node(p, "add", where=None),
     r"node 5 \(add\) where is a NoneType, expected str")
case("param of dynamic shape", "model", lambda p: set_spec(p, "param", shape=[None, 3]),
     r"node 1 \(param\): a param needs a static shape")
case("param init not a str", "model", lambda p: set_attrs(p, "param", init=3),
     r"node 1 \(param\) attribute 'init' is a int, expected str")
case("leaf with inputs", "model", lambda p: set_node(p, "const", **{"in": [0]}),
     r"node 3 \(const\): a const node has no inputs")
case("const value not an array", "model", lambda p: set_attrs(p, "const", value=[0, 1, 2]),
     r"node 3 \(const\): a const needs an array value of spec float32\(3,\)")
case("const value of another spec", "model", lambda p: set_attrs(p, "const", value=ref(1)),
     r"node 3 \(const\): a const needs an array value of spec float32\(3,\)")
case("fused program naming a non-ufunc", "model",
     lambda p: set_node(p, "add", op="fused", attrs={"program": tuple_ext(
         [tuple_ext(["matmul", tuple_ext([0, 1])])])}),
     r"node 5 \(fused\): step 0 names 'matmul', not an elementwise ufunc op")
case("outputs out of range", "model", lambda p: set_graph(p, outputs=[6, 99]),
     r"graph outputs: 99 is not the position of a node")
case("outputs not a list", "model", lambda p: set_graph(p, outputs=6),
     r"graph outputs is a int, expected list")
case("nodes not a list", "model", lambda p: set_graph(p, nodes={}),
     r"graph nodes is a dict, expected list")
case("inputs naming a param", "model", lambda p: set_graph(p, inputs=[1]),
     r"graph inputs: node 1 is a param node, not an input")
case("inputs listing a node twice", "model", lambda p: set_graph(p, inputs=[0, 0]),
     r"graph inputs: \[0, 0\] lists a node twice")
case("update of no param", "model", lambda p: set_graph(p, updates={"nope": 6}),
     r"invalid graph: update of 'nope', which is not a param of the graph")
case("update of another spec", "model", lambda p: set_graph(p, updates={"w": 6}),
     r"invalid graph: update of 'w' is float32\(\?, 3\), the param is float32\(4, 3\)")
case("update name not a str", "model", lambda p: set_graph(p, updates={1: 6}),
     r"update name is a int, expected str")
case("updates holding a name twice", "model",
     lambda p: set_graph(p, updates=raw_map([("w", 1), ("w", 1)])),
     r"a map holds the key 'w' twice")
case("no graph", "model", lambda p: drop(p.tree, "graph"), r"a model file has no graph")
case("node appended that nothing uses", "model",
     lambda p: append_node(p, {**node(p, "softmax"), "in": [5]}),
     r"node 9 \(softmax\) is used by no output, update or listed input")

# Names: two leaves of one name (issue 15, second edit), inputs and params together.
case("a second param named w, unused", "model", lambda p: append_node(p, a_param("w")),
     r"two param nodes named 'w' \(nodes 1 and 9\)")
case("a second param named w, used", "model",
     lambda p: append_node(p, a_param("w"), output=True),
     r"two param nodes named 'w' \(nodes 1 and 9\)")
case("a second input named x", "model",
     lambda p: (append_node(p, dict(node(p, "input"))), set_graph(p, inputs=[0, 9])),
     r"two input nodes named 'x' \(nodes 0 and 9\)")
case("a param named as the input", "model", lambda p: rename_param(p, "b", "x"),
     r"an input and a param named 'x' \(nodes 0 and 2\)")
case("params holding a name twice", "model",
     lambda p: p.tree.update(params=raw_map([("w", ref(1)), ("b", ref(2)), ("w", ref(0))])),
     r"a map holds the key 'w' twice")

# Param values of a model file (issue 15, first edit): none missing, none extra, specs.
case("params empty", "model", lambda p: p.tree.update(params={}),
     r"node 1 \(param\): param 'w' has no value in the file's params")
case("params without b", "model", lambda p: drop(p.tree["params"], "b"),
     r"node 2 \(param\): param 'b' has no value in the file's params")
case("no params at all", "model", lambda p: drop(p.tree, "params"),
     r"node 1 \(param\): param 'w' has no value")
case("a value for no param", "model",
     lambda p: p.tree["params"].update(zzz=p.tree["params"]["b"]),
     r"params holds a value for 'zzz', which is not a param of the graph")
case("value of another shape", "model", lambda p: p.tree["params"].update(w=ref(0)),
     r"node 1 \(param\): param 'w' is float32\(4, 3\) but its value is float32\(3,\)")
case("value of another dtype", "model", lambda p: set_record(p, "w", code=6),
     r"node 1 \(param\): param 'w' is float32\(4, 3\) but its value is int32\(4, 3\)")
case("value not an array", "model", lambda p: p.tree["params"].update(w=1),
     r"params: entry 'w' is not a name and an array")
case("params not a map", "model", lambda p: p.tree.update(params=[1]),
     r"params is not a map")

# Checkpoints: the symbol file and the params file must fit each other.
case("arg_params without w", "checkpoint", lambda s, p: drop(p.tree["arg_params"], "w"),
     r"base-symbol\.kfg \(with base-0001\.kfp\): node 1 \(param\): param 'w' has no value in "
     r"arg_params or aux_params \(allow_missing=True initializes it\)")
case("arg_params empty", "checkpoint", lambda s, p: p.tree.update(arg_params={}),
     r"param 'w' has no value in arg_params or aux_params")
case("arg_params with a value for no param", "checkpoint",
     lambda s, p: p.tree["arg_params"].update(zzz=p.tree["arg_params"]["w"]),
     r"base-0001\.kfp holds a value for 'zzz', which is not a param of the graph "
     r"\(allow_extra=True accepts it\)")
case("aux_params with a value for no param", "checkpoint",
     lambda s, p: p.tree["aux_params"].update(zzz=p.tree["arg_params"]["w"]),
     r"holds a value for 'zzz', which is not a param of the graph")
case("arg value of another shape", "checkpoint",
     lambda s, p: p.tree["arg_params"].update(w=p.tree["arg_params"]["b"]),
     r"node 1 \(param\): param 'w' is float32\(4, 3\) but its value is float32\(3,\)")
case("arg_params holding a name twice", "checkpoint",
     lambda s, p: p.tree.update(arg_params=raw_map([("w", ref(0)), ("w", ref(1))])),
     r"base-0001\.kfp: a map holds the key 'w' twice")
case("a name in arg_params and aux_params", "checkpoint",
     lambda s, p: p.tree["aux_params"].update(w=p.tree["arg_params"]["w"]),
     r"base-0001\.kfp: 'w' is in both arg_params and aux_params")
case("arg_params not a map", "checkpoint", lambda s, p: p.tree.update(arg_params=1),
     r"base-0001\.kfp: arg_params is not a map")
case("epoch not an int", "checkpoint", lambda s, p: p.tree.update(epoch="1"),
     r"base-0001\.kfp: epoch is not an int")
case("optimizer state nested 65 deep", "checkpoint",
     lambda s, p: p.tree.update(optimizer_state=nested_lists(65)),
     r"base-0001\.kfp: values nested deeper than 64")
case("params file of kind state", "checkpoint", lambda s, p: p.header.update(kind="state"),
     r"base-0001\.kfp: a state file has no state")
case("symbol file carrying values", "checkpoint",
     lambda s, p: s.tree.update(params={"w": add_array(s, Record(11, [4, 3], bytes(48)))}),
     r"base-symbol\.kfg \(with base-0001\.kfp\): a symbol file holds no param values, this "
     r"one has 'w'")
case("symbol file of kind params", "checkpoint", lambda s, p: s.header.update(kind="params"),
     r"base-symbol\.kfg \(with base-0001\.kfp\): a params file, not a symbol file")
case("symbol with a second param named w", "checkpoint",
     lambda s, p: append_node(s, a_param("w")),
     r"base-symbol\.kfg \(with base-0001\.kfp\): two param nodes named 'w' \(nodes 1 and 9\)")
case("symbol with an unknown op", "checkpoint", lambda s, p: set_node(s, "softmax", op="exec"),
     r"node 6 \(exec\): unknown op 'exec'")
case("symbol param of another shape", "checkpoint",
     lambda s, p: set_spec(s, "param", shape=[3, 4]),
     r"node 1 \(param\): param 'w' is float32\(3, 4\) but its value is float32\(4, 3\)")
case("allowed missing param with an unknown init", "checkpoint",
     lambda s, p: (drop(p.tree["arg_params"], "b"), param_node(s, "b")["attrs"].update(
         init="evil")),
     r"base-symbol\.kfg \(with base-0001\.kfp\): param 'b' has no value and its init "
     r"'evil' is not a knetflow initializer", options={"allow_missing": True})
case("allowed missing param of 4 TiB", "checkpoint",
     lambda s, p: (append_node(s, a_param("big", (2**20, 2**20))), append_node(
         s, {**node(s, "sum"), "in": [9], "attrs": {"axis": None, "keepdims": False}},
         output=True)),
     r"param 'big' has no value and its spec float32\(1048576, 1048576\) is too large to "
     r"initialize", options={"allow_missing": True})

# State files.
case("state file without state", "state", lambda p: drop(p.tree, "state"),
     r"a state file has no state")
case("state record with a bad pad", "state",
     lambda p: setattr(p.records[0], "pad", b"\xff" + p.records[0].pad[1:]),
     r"array 0 \(at byte \d+\): padding bytes are not zero")
case("state file of kind model", "state", lambda p: p.header.update(kind="model"),
     r"a model file has no graph")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Every case's file(s) written, then loaded in one guarded subprocess: its report."""
    root = tmp_path_factory.mktemp("hostile")
    bases = write_bases(str(root))
    manifest = [{"name": f"control {kind}", "load": load, "path": str(root / path)}
                for kind, load, path in (("model", "model", "base.kf"),
                                         ("checkpoint", "checkpoint", "base"),
                                         ("state", "state", "base.kfs"))]
    manifest += [{"name": "probe-memory", "load": "probe-memory"},
                 {"name": "probe-pickle", "load": "probe-pickle"}]
    for k, c in enumerate(CASES):
        directory = root / f"case{k}"
        directory.mkdir()
        if c.base == "checkpoint":
            symbol, params = split(bases["symbol"]), split(bases["params"])
            c.edit(symbol, params)
            (directory / "base-symbol.kfg").write_bytes(join(symbol))
            (directory / "base-0001.kfp").write_bytes(join(params))
            path, load = directory / "base", "checkpoint"
        else:
            parts = split(bases[c.base])
            edited = c.edit(parts)
            path = directory / f"case.{c.base}"
            path.write_bytes(edited if isinstance(edited, bytes) else join(parts))
            load = c.load or c.base
        manifest.append({"name": c.name, "load": load, "path": str(path), "options": c.options})
    (root / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, GUARD, str(root / "manifest.json"),
                           str(root / "report.json")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "report.json").read_text())


def test_split_and_join_give_back_every_base_file(tmp_path):
    for name, data in write_bases(str(tmp_path)).items():
        assert join(split(data)) == data, name


@needs_guard
@pytest.mark.parametrize("kind", ["model", "checkpoint", "state"])
def test_the_unedited_files_load_under_the_guard(guarded, kind):
    assert guarded["results"][f"control {kind}"] == {"error": None, "message": None,
                                                     "events": []}


@needs_guard
def test_the_guard_caps_memory_and_sees_unpickling(guarded):
    results = guarded["results"]
    assert 2**30 <= guarded["limit"] < 4 * 2**30
    assert results["probe-memory"]["error"] == "MemoryError"
    assert any(e.startswith("pickle.find_class") for e in results["probe-pickle"]["events"])


@needs_guard
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_a_hostile_file_is_refused_saying_why(guarded, name):
    got = guarded["results"][name]
    expect = next(c.expect for c in CASES if c.name == name)
    assert got["events"] == [], f"code ran or a program started: {got['events']}"
    assert got["error"] == "FormatError", f"{got['error']}: {got['message']}"
    assert re.search(expect, got["message"]), got["message"]


def test_a_model_predicts_with_its_own_weights_or_not_at_all(tmp_path):
    """A 4x3 all-ones layer predicts [1/3, 1/3, 1/3]; with its params dropped, it loaded
    and answered with fresh random weights."""
    path = tmp_path / "ones.kf"
    kf.save(path, base_graph())
    x = np.array([[1, 0, 2, 0]], "float32")
    np.testing.assert_allclose(kf.load_model(path).predict(x)[0], [[1 / 3] * 3], rtol=1e-6)
    parts = split(path.read_bytes())
    parts.tree["params"] = {}
    path.write_bytes(join(parts))
    with pytest.raises(kf.FormatError, match=r"ones.kf: node 1 \(param\): param 'w' has no "
                                             r"value in the file's params"):
        kf.load_model(path)
