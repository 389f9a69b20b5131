"""The container: preamble, header, tree and array section of a knetflow file.

    offset  size  field (little-endian)
    0       8     magic  b"\\x89KNFL\\r\\n\\x1a"
    8       2     format version (u16)
    10      2     flags (u16, 0 in version 1)
    12      4     header length H (u32)
    16      8     body length B (u64)
    24      4     CRC-32 of the H + B bytes after the preamble
    28      4     CRC-32 of bytes 0..27
    32      H     header: a msgpack map (kind, knetflow version, tree length, array count)
    32+H    B     body: the tree (msgpack) then the array section (ext objects)

The file is exactly 32 + H + B bytes. docs/FORMAT.md is the full specification.
Writing streams each array's memory straight to the file and computes the CRC on
the way, then writes the preamble last (the target is a temporary file, see
files.py). Reading checks the preamble against the file's size before it
allocates anything, then the CRC, then parses the header, arrays and tree, each
bounded by the bytes present.
"""

from __future__ import annotations

import mmap
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgpack
import numpy as np

from knetflow.errors import FormatError
from knetflow.version import __version__
from knetflow.serialize import arrays as _arrays
from knetflow.serialize import tree as _tree
from knetflow.serialize.files import read_exactly

# ISA-L computes zlib's CRC-32, about 5x faster, so a save keeps pace with the disk;
# zlib's own serves on a platform isal has no wheel for (the files are the same).
try:
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a dependency
    from zlib import crc32

MAGIC = b"\x89KNFL\r\n\x1a"
FORMAT_VERSION = 1
#: format versions this knetflow reads
READS = (1,)
KINDS = ("model", "symbol", "params", "state")
MAX_HEADER = 64 * 1024
_PREAMBLE = struct.Struct("<8sHHIQII")
PREAMBLE_SIZE = _PREAMBLE.size
#: big arrays are written, read and checksummed in chunks of this size
CHUNK = 32 * 2**20
#: from this size on, the CRC runs on a worker thread, overlapping the file I/O
THREADED_CRC = 16 * 2**20


@dataclass
class Container:
    """A parsed file: its header fields and its decoded tree."""

    kind: str
    tree: object
    version: int = FORMAT_VERSION
    knetflow_version: str = "?"
    summary: dict = field(default_factory=dict)
    size: int = 0
    narrays: int = 0


def _knetflow_version() -> str:
    return __version__


class _Crc:
    """CRC-32 of chunks in the order given; for big files on a worker thread.

    crc32 and file reads and writes release the GIL, so checksumming chunk k
    overlaps writing (or reading) chunk k+1 and costs next to nothing in wall time.
    """

    def __init__(self, threaded: bool):
        self.value = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="knetflow-crc") if threaded else None

    def _add(self, chunk) -> None:
        self.value = crc32(chunk, self.value)

    def add(self, chunk) -> None:
        """Add `chunk` (left unchanged until `result`) to the checksum."""
        if self._pool is None:
            self._add(chunk)
        else:
            self._pool.submit(self._add, chunk)

    def result(self) -> int:
        """The CRC-32 of every chunk added, once all are done."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return self.value


def _chunks(data):
    for start in range(0, len(data), CHUNK):
        yield data[start:start + CHUNK]


# ---- writing ----


def write(f, kind: str, tree, summary=None) -> int:
    """Write a whole file of `kind` holding `tree` to the seekable binary `f`; its size."""
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}; kinds: {KINDS}")
    packed, arrays = _tree.encode(tree, _arrays.as_savable)
    header = msgpack.packb({"kind": kind, "knetflow": _knetflow_version(), "tree": len(packed),
                            "arrays": len(arrays), "summary": dict(summary or {})},
                           use_bin_type=True)
    if len(header) > MAX_HEADER:
        raise ValueError(f"file header of {len(header)} bytes (at most {MAX_HEADER}): "
                         f"keep the summary small")
    start = f.tell()
    f.write(bytes(PREAMBLE_SIZE))
    crc = _Crc(threaded=sum(a.nbytes for a in arrays) >= THREADED_CRC)
    try:
        offset = PREAMBLE_SIZE
        for chunk in _body_chunks(header, packed, arrays, offset):
            crc.add(chunk)
            f.write(chunk)
            offset += len(chunk)
    finally:
        value = crc.result()
    f.seek(start)
    f.write(preamble(len(header), offset - PREAMBLE_SIZE - len(header), value))
    f.seek(start + offset)
    return offset


def _body_chunks(header: bytes, packed: bytes, arrays: list, offset: int):
    """Header, tree and array records as chunks; arrays' memory as is, never copied."""
    yield header
    yield packed
    offset += len(header) + len(packed)
    for array in arrays:
        head, data = _arrays.record(array, offset)
        yield head
        yield from _chunks(data)
        offset += len(head) + data.nbytes


def preamble(header_len: int, body_len: int, crc: int, version: int = FORMAT_VERSION) -> bytes:
    """The 32 preamble bytes for the given lengths and body CRC."""
    head = struct.pack("<8sHHIQI", MAGIC, version, 0, header_len, body_len, crc)
    return head + struct.pack("<I", crc32(head))


# ---- reading ----


def check_preamble(raw: bytes, size: int) -> tuple:
    """(version, header length, body length, crc) from the first bytes of a file of `size`."""
    if size < PREAMBLE_SIZE or len(raw) < PREAMBLE_SIZE:
        if raw[:len(MAGIC)] != MAGIC[:len(raw)]:
            raise FormatError("not a knetflow file (bad magic bytes)")
        raise FormatError(f"truncated: {size} bytes, shorter than the {PREAMBLE_SIZE}-byte "
                          f"preamble")
    magic, version, flags, header_len, body_len, crc, own = _PREAMBLE.unpack_from(raw)
    if magic != MAGIC:
        raise FormatError(f"not a knetflow file (bad magic bytes {magic!r})")
    if crc32(raw[:PREAMBLE_SIZE - 4]) != own:
        raise FormatError("corrupt preamble (its checksum does not match)")
    if version not in READS:
        known = f"this knetflow ({_knetflow_version()}) reads ({', '.join(map(str, READS))})"
        if version > max(READS):
            raise FormatError(f"format version {version} is newer than the versions {known}; "
                              f"upgrade knetflow to read it")
        raise FormatError(f"format version {version} is not one of the versions {known}")
    if flags:
        raise FormatError(f"unknown flags 0x{flags:04x} in the preamble")
    if header_len > MAX_HEADER:
        raise FormatError(f"header of {header_len} bytes (at most {MAX_HEADER})")
    expected = PREAMBLE_SIZE + header_len + body_len
    if expected != size:
        what = "truncated" if expected > size else "trailing data"
        raise FormatError(f"{what}: the preamble describes {expected} bytes, the file has "
                          f"{size}")
    return version, header_len, body_len, crc


def _header(data) -> dict:
    header = _tree.decode(data, [])
    if not isinstance(header, dict):
        raise FormatError("header is not a map")
    wants = {"kind": str, "knetflow": str, "tree": int, "arrays": int, "summary": dict}
    for key, typ in wants.items():
        if not isinstance(header.get(key), typ) or isinstance(header.get(key), bool):
            raise FormatError(f"header field {key!r} is missing or not a {typ.__name__}")
    if header["kind"] not in KINDS:
        raise FormatError(f"unknown file kind {header['kind']!r} (known: {', '.join(KINDS)})")
    return header


def parse(buf, body_crc=None) -> Container:
    """Parse a whole file held in `buf` (bytes or a flat uint8 NumPy array).

    `body_crc`, when the caller computed it while reading, is the CRC-32 of
    everything after the preamble.
    """
    if not isinstance(buf, np.ndarray):
        buf = np.frombuffer(buf, dtype=np.uint8)  # slices below are views, not copies
    size = len(buf)
    version, header_len, body_len, crc = check_preamble(bytes(buf[:PREAMBLE_SIZE]), size)
    if body_crc is None:
        body_crc = crc32(buf[PREAMBLE_SIZE:])
    if body_crc != crc:
        raise FormatError("checksum mismatch: the file is corrupt")
    tree_start = PREAMBLE_SIZE + header_len
    header = _header(bytes(buf[PREAMBLE_SIZE:tree_start]))
    tree_end = tree_start + header["tree"]
    if not 0 <= header["tree"] <= body_len:
        raise FormatError(f"header says the tree has {header['tree']} bytes; the body has "
                          f"{body_len}")
    if not 0 <= header["arrays"] <= body_len // 10:
        raise FormatError(f"header claims {header['arrays']} arrays in {body_len} bytes")
    found, position = [], tree_end
    for index in range(header["arrays"]):
        array, position = _arrays.read_record(buf, position, size, index)
        found.append(array)
    if position != size:
        raise FormatError(f"{size - position} bytes after the last array")
    value = _tree.decode(bytes(buf[tree_start:tree_end]), found)
    return Container(header["kind"], value, version, header["knetflow"], header["summary"],
                     size, len(found))


def read(path, map_file: bool = False) -> Container:
    """Read and parse the file at `path`; memory used is bounded by the file's size.

    With `map_file`, the file is memory-mapped (copy-on-write) instead of read:
    arrays are views of the mapping, nothing is copied. The file must then not be
    truncated or rewritten in place while they live (knetflow's own writes
    replace files whole, which is safe).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        first = f.read(PREAMBLE_SIZE)
        check_preamble(first, size)
        if map_file:
            return parse(np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY),
                                       dtype=np.uint8))
        buf = np.empty(size, dtype=np.uint8)
        buf[:PREAMBLE_SIZE] = np.frombuffer(first, dtype=np.uint8)
        crc = _Crc(threaded=size >= THREADED_CRC)
        try:
            for chunk in _chunks(buf[PREAMBLE_SIZE:]):
                if read_exactly(f, memoryview(chunk)) != len(chunk):
                    raise FormatError("truncated: the file shrank while it was read")
                crc.add(chunk)
        finally:
            body_crc = crc.result()
    return parse(buf, body_crc)


def read_summary(path) -> Container:
    """The header of the file at `path` (tree None), without reading the body."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        version, header_len, _, _ = check_preamble(f.read(PREAMBLE_SIZE), size)
        data = f.read(header_len)
    if len(data) != header_len:
        raise FormatError("truncated header")
    header = _header(data)
    return Container(header["kind"], None, version, header["knetflow"], header["summary"],
                     size, header["arrays"])
