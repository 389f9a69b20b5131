"""A knetflow file taken apart field by field, edited, and put back together.

`split(data)` decodes every layer of a file (docs/FORMAT.md): preamble fields,
the header map, the tree (msgpack objects, with knetflow's ext objects left as
`msgpack.ExtType` so that a reference or a tuple can be edited as it is
stored) and each array record's fields. `join(parts)` encodes them again and
recomputes the lengths and both CRCs, so an edit reaches the checks behind the
checksums, as an attacker's would. `join(split(data)) == data` for any file
knetflow writes.

Example:
    >>> import knetflow as kf
    >>> parts = split(kf.serialize.dumps(kf.relu(kf.placeholder("x", (2,)))))
    >>> parts.tree["graph"]["nodes"][1]["op"]
    'relu'
    >>> parts.tree["graph"]["nodes"][1]["op"] = "eval"
    >>> kf.serialize.loads(join(parts))
    Traceback (most recent call last):
    ...
    knetflow.errors.FormatError: node 1 (eval): unknown op 'eval'; ...
"""

from __future__ import annotations

import copy
import struct
import zlib
from dataclasses import dataclass

import msgpack

from knetflow.serialize import format as fmt

_EXT32 = struct.Struct(">BIb")
_FIXED = struct.Struct("<BBH")


@dataclass
class Record:
    """One array record; the fields an edit may set to lie are the optional ones."""

    code: int
    shape: list
    data: bytes
    pad: bytes = b""
    ndim: int | None = None  # None: len(shape)
    length: int | None = None  # ext payload length; None: the payload's own
    marker: int = 0xC9
    ext: int = 1

    def encode(self) -> bytes:
        ndim = len(self.shape) if self.ndim is None else self.ndim
        payload = (_FIXED.pack(self.code, ndim, len(self.pad))
                   + struct.pack(f"<{len(self.shape)}Q", *self.shape) + self.pad + self.data)
        length = len(payload) if self.length is None else self.length
        return _EXT32.pack(self.marker, length, self.ext) + payload


@dataclass
class Parts:
    """A whole file as fields. `raw_*` and the lengths, when set, replace what
    `join` would compute, to make a file that lies about itself."""

    header: dict
    tree: object
    records: list
    magic: bytes = fmt.MAGIC
    version: int = fmt.FORMAT_VERSION
    flags: int = 0
    tail: bytes = b""  # bytes after the last record
    raw_header: bytes | None = None
    raw_tree: bytes | None = None
    tree_length: int | None = None  # header["tree"]; None: the tree's length
    header_length: int | None = None
    body_length: int | None = None
    body_crc: int | None = None
    preamble_crc: int | None = None

    def copy(self) -> Parts:
        return copy.deepcopy(self)


def _keep_ext(code: int, data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


def unpack(data: bytes):
    """msgpack `data` with every ext object kept as an ExtType."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_keep_ext)


class Raw:
    """msgpack bytes put into a tree as they are: what no Python value packs to
    (a map holding a key twice, a length that lies)."""

    def __init__(self, data: bytes):
        self.data = data


def raw_map(pairs: list) -> Raw:
    """A msgpack map of `pairs` in order, repeated keys kept."""
    packer = msgpack.Packer(use_bin_type=True)
    return Raw(packer.pack_map_header(len(pairs))
               + b"".join(pack(k) + pack(v) for k, v in pairs))


def pack(value) -> bytes:
    """msgpack bytes of `value`, each Raw in it spliced in as it is."""
    raws: list = []

    def mark(v):
        if isinstance(v, Raw):
            raws.append(v.data)
            return f"\0raw{len(raws) - 1}\0"  # a str no tree holds, replaced below
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    out = msgpack.packb(mark(value), use_bin_type=True)
    for k, data in enumerate(raws):
        out = out.replace(msgpack.packb(f"\0raw{k}\0"), data, 1)
    return out


def split(data: bytes) -> Parts:
    """The fields of a well-formed file."""
    magic, version, flags, header_len, _, _, _ = struct.unpack_from("<8sHHIQII", data)
    start = fmt.PREAMBLE_SIZE + header_len
    header = unpack(data[fmt.PREAMBLE_SIZE:start])
    tree = unpack(data[start:start + header["tree"]])
    records, position = [], start + header["tree"]
    for _ in range(header["arrays"]):
        _, length, _ = _EXT32.unpack_from(data, position)
        payload = position + _EXT32.size
        code, ndim, pad = _FIXED.unpack_from(data, payload)
        shape = list(struct.unpack_from(f"<{ndim}Q", data, payload + _FIXED.size))
        begin = payload + _FIXED.size + 8 * ndim
        records.append(Record(code, shape, data[begin + pad:payload + length],
                              data[begin:begin + pad]))
        position = payload + length
    return Parts(header, tree, records, magic, version, flags, tail=data[position:])


def join(parts: Parts) -> bytes:
    """The bytes of `parts`, lengths and checksums recomputed unless set."""
    tree = pack(parts.tree) if parts.raw_tree is None else parts.raw_tree
    header = dict(parts.header)
    if "tree" in header:
        header["tree"] = len(tree) if parts.tree_length is None else parts.tree_length
    header = pack(header) if parts.raw_header is None else parts.raw_header
    body = header + tree + b"".join(r.encode() for r in parts.records) + parts.tail
    header_len = len(header) if parts.header_length is None else parts.header_length
    body_len = len(body) - len(header) if parts.body_length is None else parts.body_length
    body_crc = zlib.crc32(body) if parts.body_crc is None else parts.body_crc
    head = struct.pack("<8sHHIQI", parts.magic, parts.version, parts.flags, header_len,
                       body_len, body_crc)
    own = zlib.crc32(head) if parts.preamble_crc is None else parts.preamble_crc
    return head + struct.pack("<I", own) + body


def ref(index: int) -> msgpack.ExtType:
    """A tree's reference to array `index`."""
    return msgpack.ExtType(2, struct.pack("<I", index))


def index_of(reference: msgpack.ExtType) -> int:
    """The array index a reference points to."""
    return struct.unpack("<I", reference.data)[0]


def tuple_ext(items: list) -> msgpack.ExtType:
    """A stored tuple of `items` (msgpack values or ext objects)."""
    return msgpack.ExtType(3, pack(items))
