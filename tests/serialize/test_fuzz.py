"""Malformed, truncated and hostile files raise kf.FormatError and nothing else.

Byte-level cases (truncations, flips, flips behind recomputed checksums) and
hypothesis-made trees and graph edits: a few thousand cheap cases here; the
longer run is `benchmarks/serialize.py --fuzz N` (which sets
KNETFLOW_FUZZ_EXAMPLES for the hypothesis tests).
"""

import copy
import os
import struct
import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.serialize import format as fmt
from knetflow.serialize import loads
from knetflow.serialize.graph_codec import encode_graph
from knetflow.serialize.saving import to_bytes
from tests.serialize.common import mlp, raw_file, sample_file, tree_file, with_crc

SAMPLE = sample_file()
EXAMPLES = int(os.environ.get("KNETFLOW_FUZZ_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200,
                    suppress_health_check=list(HealthCheck))


def loads_or_refuses(data) -> bool:
    """True if `data` loads, False if it raises FormatError; anything else fails the test."""
    try:
        loads(data)
    except kf.FormatError:
        return False
    return True


def test_every_truncation_is_refused():
    for n in range(len(SAMPLE)):
        with pytest.raises(kf.FormatError):
            loads(SAMPLE[:n])


def test_truncated_bodies_with_consistent_lengths_are_refused():
    """Lengths and checksums fixed up, so the parsers behind them see the short body."""
    header_len = struct.unpack_from("<I", SAMPLE, 12)[0]
    header = SAMPLE[32:32 + header_len]
    for n in range(len(SAMPLE) - 32 - header_len):
        with pytest.raises(kf.FormatError):
            loads(raw_file(header, SAMPLE[32 + header_len:32 + header_len + n]))


def test_random_byte_flips_are_refused():
    rs = np.random.RandomState(0)
    for _ in range(1000):
        data = bytearray(SAMPLE)
        for pos in rs.randint(0, len(data), rs.randint(1, 4)):
            data[pos] ^= rs.randint(1, 256)
        with pytest.raises(kf.FormatError):
            loads(bytes(data))


def test_byte_flips_behind_the_checksum_load_or_are_refused():
    rs = np.random.RandomState(1)
    refused = 0
    for _ in range(2000):
        data = bytearray(SAMPLE)
        for pos in rs.randint(32, len(data), rs.randint(1, 4)):
            data[pos] = rs.randint(0, 256)
        refused += not loads_or_refuses(with_crc(bytes(data)))
    assert refused > 500  # most edits of the structure are caught, not silently accepted


def peak_while(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _ext32(code, payload_len, payload=b""):
    return b"\xc9" + struct.pack(">I", payload_len) + struct.pack("b", code) + payload


HOSTILE = {
    "array of 2**32-1 items": tree_file(b"\xdd\xff\xff\xff\xff\xc0"),
    "map of 2**32-1 items": tree_file(b"\xdf\xff\xff\xff\xff\xc0\xc0"),
    "str of 4 GiB": tree_file(b"\xdb\xff\xff\xff\xffabc"),
    "bin of 4 GiB": tree_file(b"\xc6\xff\xff\xff\xffabc"),
    "ext of 4 GiB": tree_file(_ext32(3, 2**32 - 1, b"\x90")),
    "100k nested arrays": tree_file(b"\x91" * 100_000 + b"\xc0"),
    "array record of 4 GiB": tree_file(b"\xc0", arrays=_ext32(1, 2**32 - 1, b"\x0b\x01\0\0"),
                                       narrays=1),
    "shape 2**40 x 2**40": tree_file(b"\xc0", arrays=_ext32(1, 20, b"\x0b\x02\0\0"
                                                          + struct.pack("<QQ", 2**40, 2**40)),
                                     narrays=1),
    "255 dimensions": tree_file(b"\xc0", arrays=_ext32(1, 4, b"\x0b\xff\0\0"), narrays=1),
    "a billion arrays": raw_file({"kind": "state", "knetflow": "x", "tree": 1,
                                  "arrays": 10**9, "summary": {}}, b"\xc0"),
    "header of 4 GiB": fmt.preamble(2**32 - 1, 0, 0),
    "body of 2**63 bytes": fmt.preamble(10, 2**63, 0) + b"\0" * 10,
    "big int of 1 MB": tree_file(msgpack.packb({"state": msgpack.ExtType(4, b"\1" * 2**20)})),
}


def _nested_tuples(depth):
    value = msgpack.packb(0)
    for _ in range(depth):
        value = msgpack.packb(msgpack.ExtType(3, b"\x91" + value))
    return value


HOSTILE["100 nested tuples"] = tree_file(msgpack.packb({"state": msgpack.ExtType(
    3, b"\x91" + _nested_tuples(100))}))


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_are_refused_within_their_size(name):
    data = HOSTILE[name]
    peak = peak_while(lambda: pytest.raises(kf.FormatError, loads, data))
    assert peak < 16 * len(data) + 300_000, f"{name}: {peak} bytes allocated"


def test_a_hostile_file_on_disk_allocates_nothing_big(tmp_path):
    path = tmp_path / "huge.kf"
    path.write_bytes(HOSTILE["body of 2**63 bytes"])
    peak = peak_while(lambda: pytest.raises(kf.FormatError, kf.load, path))
    assert peak < 300_000


@pytest.mark.parametrize("tree, message", [
    ([1, 2], "the state tree is a list, not a map"),
    ({"graph": 1, "params": {}, "metadata": {}}, "graph is a int, expected dict"),
    ({"graph": {"nodes": []}, "params": [], "metadata": {}}, "params is not a map"),
    ({"graph": {"nodes": []}, "params": {"w": 1}, "metadata": {}}, "entry 'w' is not a name"),
    ({"graph": {"nodes": []}, "params": {}, "metadata": 3}, "'metadata' is not a map"),
])
def test_wrong_types_are_refused(tree, message):
    kind = "state" if isinstance(tree, list) else "model"
    with pytest.raises(kf.FormatError, match=message):
        loads(tree_file(tree, kind=kind))


LEAVES = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
          | st.text(max_size=8) | st.binary(max_size=8))
EXTS = (st.builds(msgpack.ExtType, st.sampled_from([0, 1, 2, 3, 4, 5, 127]), st.binary(max_size=12))
        | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1)))
RAW = st.recursive(LEAVES | EXTS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.text(max_size=4) | st.integers(-5, 5), kids, max_size=4), max_leaves=16)
PLAIN = st.recursive(LEAVES, lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids)
                     | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=8)


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data):
    loads_or_refuses(data)
    loads_or_refuses(fmt.MAGIC + data)
    loads_or_refuses(raw_file(SAMPLE[32:32 + struct.unpack_from("<I", SAMPLE, 12)[0]], data))


@SETTINGS
@given(RAW, st.sampled_from(fmt.KINDS))
def test_arbitrary_msgpack_trees(tree, kind):
    loads_or_refuses(tree_file({"state": tree, "graph": tree, "metadata": {}}, kind=kind))
    loads_or_refuses(tree_file(tree, kind=kind))


# every param has its value, so that edits reach the checks after the params' nodes
GRAPH_TREE = {"graph": encode_graph(mlp()), "params": kf.serialize.loads(
    kf.serialize.dumps(mlp())).params, "metadata": {}}


@SETTINGS
@given(st.data())
def test_edited_graphs_load_or_are_refused(data):
    tree = copy.deepcopy(GRAPH_TREE)
    parent, key = tree, "graph"
    while data.draw(st.integers(0, 4)):
        child = parent[key]
        keys = list(child) if isinstance(child, dict) else list(range(len(child))) \
            if isinstance(child, list) else []
        if not keys:
            break
        parent, key = child, data.draw(st.sampled_from(keys))
    parent[key] = data.draw(PLAIN)
    loads_or_refuses(to_bytes("model", tree))
