"""Shared helpers of the serialization tests: small graphs and hand-made files."""

from __future__ import annotations

import struct
import zlib

import msgpack
import numpy as np

import knetflow as kf
from knetflow.serialize import format as fmt


def mlp(seed=0, hidden=8):
    """The seed MLP shape (784-64-10, smaller): x -> relu(x @ w1 + b1) @ w2 + b2."""
    rs = np.random.RandomState(seed)
    x = kf.placeholder("x", (None, 12))
    w1 = kf.param("w1", value=rs.randn(12, hidden).astype("float32"))
    b1 = kf.param("b1", value=np.zeros(hidden, "float32"))
    w2 = kf.param("w2", value=rs.randn(hidden, 3).astype("float32"))
    b2 = kf.param("b2", value=rs.randn(3).astype("float32"))
    return kf.Graph([kf.relu(x @ w1 + b1) @ w2 + b2], inputs=[x])


def batch(n=5, seed=1):
    return np.random.RandomState(seed).randn(n, 12).astype("float32")


def sample_file() -> bytes:
    """A small model file using every part of the format (tuples, big ints, arrays)."""
    return kf.serialize.dumps(mlp(), note="sample", axes=(0, (1, 2)), big=-(2**90),
                              table={"a": [1, 2.5, None, True], 3: b"raw"},
                              mask=np.array([True, False]))


def with_crc(data: bytes) -> bytes:
    """`data` with its preamble checksums recomputed (to reach the parsers behind them)."""
    data = bytearray(data)
    body_crc = zlib.crc32(data[fmt.PREAMBLE_SIZE:])
    struct.pack_into("<I", data, 24, body_crc)
    struct.pack_into("<I", data, 28, zlib.crc32(bytes(data[:28])))
    return bytes(data)


def raw_file(header, body: bytes, version=fmt.FORMAT_VERSION, flags=0) -> bytes:
    """A file from a header (a dict, packed here, or bytes) and raw body bytes."""
    if not isinstance(header, bytes):
        header = msgpack.packb(header, use_bin_type=True)
    pre = struct.pack("<8sHHIQI", fmt.MAGIC, version, flags, len(header), len(body),
                      zlib.crc32(header + body))
    return pre + struct.pack("<I", zlib.crc32(pre)) + header + body


def tree_file(tree, kind="state", arrays=b"", narrays=0) -> bytes:
    """A file whose tree is `tree` packed as-is (msgpack objects, ExtTypes allowed)."""
    packed = tree if isinstance(tree, bytes) else msgpack.packb(tree, use_bin_type=True)
    header = {"kind": kind, "knetflow": "test", "tree": len(packed), "arrays": narrays,
              "summary": {}}
    return raw_file(header, packed + arrays)
