"""The container: preamble, versions, checksums, header, array records and trees."""

import struct
import zlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import knetflow as kf
from knetflow.ops.base import DTYPES
from knetflow.serialize import dumps, loads
from knetflow.serialize.arrays import ALIGN
from knetflow.serialize.saving import to_bytes
from tests.serialize.common import raw_file, sample_file, tree_file, with_crc


def state_roundtrip(value):
    return loads(to_bytes("state", {"state": value, "metadata": {}})).state


def test_preamble_layout():
    data = sample_file()
    magic, version, flags, hlen, blen, _, _ = struct.unpack_from("<8sHHIQII", data)
    assert magic == b"\x89KNFL\r\n\x1a" and version == 1 and flags == 0
    assert len(data) == 32 + hlen + blen
    header = msgpack.unpackb(data[32:32 + hlen])
    assert header["kind"] == "model" and header["knetflow"] == kf.__version__
    assert set(header) == {"kind", "knetflow", "tree", "arrays", "summary"}


def test_writing_is_deterministic():
    assert sample_file() == sample_file()


def test_newer_version_is_refused_naming_both_versions():
    data = bytearray(sample_file())
    struct.pack_into("<H", data, 8, 7)
    with pytest.raises(kf.FormatError, match=r"format version 7 is newer than the versions "
                                             r"this knetflow \(0\.1\.0\) reads \(1\)"):
        loads(with_crc(bytes(data)))
    struct.pack_into("<H", data, 8, 0)
    with pytest.raises(kf.FormatError, match=r"format version 0 is not one of the versions"):
        loads(with_crc(bytes(data)))


def test_bad_magic_checksum_flags_and_lengths():
    data = sample_file()
    with pytest.raises(kf.FormatError, match="not a knetflow file"):
        loads(b"PK\x03\x04" + data[4:])
    with pytest.raises(kf.FormatError, match="checksum mismatch"):
        loads(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(kf.FormatError, match="corrupt preamble"):
        loads(data[:16] + bytes([data[16] ^ 1]) + data[17:])
    with pytest.raises(kf.FormatError, match="unknown flags"):
        loads(raw_file({}, b"", flags=1))
    with pytest.raises(kf.FormatError, match="truncated: the preamble describes"):
        loads(data[:-10])
    with pytest.raises(kf.FormatError, match="trailing data"):
        loads(data + b"\0")
    with pytest.raises(kf.FormatError, match="shorter than the 32-byte preamble"):
        loads(data[:20])


def test_header_fields_are_checked():
    with pytest.raises(kf.FormatError, match="header field 'tree' is missing"):
        loads(raw_file({"kind": "state", "knetflow": "x", "arrays": 0, "summary": {}}, b"\xc0"))
    with pytest.raises(kf.FormatError, match="unknown file kind 'pickle'"):
        loads(raw_file({"kind": "pickle", "knetflow": "x", "tree": 1, "arrays": 0,
                        "summary": {}}, b"\xc0"))
    with pytest.raises(kf.FormatError, match="header says the tree has 99 bytes"):
        loads(raw_file({"kind": "state", "knetflow": "x", "tree": 99, "arrays": 0,
                        "summary": {}}, b"\xc0"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_exactly(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if dtype == "bool":
        values = np.array([[True, False, True]])
    elif info is not None:
        values = np.array([[info.min, info.max, 0]], dtype=dtype)
    else:
        values = np.array([[np.nan, -np.inf, -0.0], [np.finfo(dtype).tiny, 1.5, 3]], dtype=dtype)
    for v in (values, values[:1, :1].reshape(()), values[:, ::2], values.T, values[:0]):
        got = state_roundtrip(v)
        assert got.dtype == np.dtype(dtype) and got.shape == v.shape
        assert got.tobytes() == np.ascontiguousarray(v).tobytes()


def test_big_endian_and_fortran_arrays_load_native():
    v = np.arange(6, dtype=">i4").reshape(2, 3)
    got = state_roundtrip([v, np.asfortranarray(v)])
    for g in got:
        assert g.dtype == np.dtype("int32") and g.dtype.isnative
        np.testing.assert_array_equal(g, v)


def test_unsupported_values_are_refused_on_save():
    with pytest.raises(TypeError, match="dtype complex128"):
        to_bytes("state", {"state": np.zeros(2, complex)})
    with pytest.raises(TypeError, match=r"\['f'\]: a function is not a plain value"):
        to_bytes("state", {"state": {"f": lambda: 0}})
    with pytest.raises(TypeError, match="dict key"):
        to_bytes("state", {"state": {(1, 2): 3}})
    with pytest.raises(ValueError, match="nested deeper"):
        deep = []
        for _ in range(100):
            deep = [deep]
        to_bytes("state", {"state": deep})


def test_arrays_are_aligned_zero_copy_views():
    data = dumps(kf.Graph([kf.placeholder("x", (3,)) * 2]), params={},
                 a=np.arange(7, dtype="int8"), b=np.ones((4, 5)))
    loaded = loads(data)
    base = np.frombuffer(data, np.uint8)
    for a in (loaded.metadata["a"], loaded.metadata["b"]):
        assert np.shares_memory(a, base) and not a.flags.writeable
        offset = a.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        assert offset % ALIGN == 0


def test_shared_arrays_are_written_once():
    big = np.ones(10_000)
    one = len(to_bytes("state", {"state": [big]}))
    two = to_bytes("state", {"state": [big, big]})
    assert len(two) < one + 16
    a, b = loads(two).state
    assert a is b


def test_tuples_lists_and_big_ints_come_back_as_they_were():
    value = {"axis": (0, 2), "nested": ((1,), [2, (3, [4])]), "list": [1, 2], "empty": (),
             "big": 2**127 + 1, "neg": -(2**64), "edge": [2**64 - 1, -(2**63)],
             "s": "é", "b": b"\x00\xff", "f": [1e300, -0.0], "n": None, 5: "int key"}
    got = state_roundtrip(value)
    assert got == value
    assert type(got["axis"]) is tuple and type(got["list"]) is list
    assert type(got["nested"][1][1]) is tuple and type(got["nested"][1][1][1]) is list


def test_numpy_scalars_are_saved_as_python_numbers():
    got = state_roundtrip([np.float32(1.5), np.int64(-3), np.bool_(True), np.uint64(2**64 - 1)])
    assert got == [1.5, -3, True, 2**64 - 1]
    assert [type(v) for v in got] == [float, int, bool, int]


@pytest.mark.parametrize("name", ["PCG64", "MT19937", "Philox", "SFC64", "PCG64DXSM"])
def test_rng_states_round_trip_exactly(name):
    gen = np.random.Generator(getattr(np.random, name)(1234))
    gen.standard_normal(7)
    state = state_roundtrip(gen.bit_generator.state)
    expected = gen.standard_normal(5)
    other = np.random.Generator(getattr(np.random, name)())
    other.bit_generator.state = state
    np.testing.assert_array_equal(other.standard_normal(5), expected)


def test_tree_level_errors_name_the_problem():
    with pytest.raises(kf.FormatError, match="unknown msgpack extension type 9"):
        loads(tree_file({"state": msgpack.ExtType(9, b"")}))
    with pytest.raises(kf.FormatError, match="reference to array 0, but the file has 0"):
        loads(tree_file({"state": msgpack.ExtType(2, b"\0\0\0\0")}))
    with pytest.raises(kf.FormatError, match="map key of type float"):
        loads(tree_file({"state": {1.5: 1}}))
    with pytest.raises(kf.FormatError, match="unexpected value of type Timestamp"):
        loads(tree_file({"state": msgpack.Timestamp(1)}))
    with pytest.raises(kf.FormatError, match="extra data"):
        loads(tree_file(msgpack.packb({"state": 1}) + b"\xc0"))
    with pytest.raises(kf.FormatError, match="a state file has no state"):
        loads(tree_file({"nothing": 1}))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=4096), start=st.integers(0, 2**32 - 1))
def test_the_checksum_is_zlibs_crc32(data, start):
    # files written with ISA-L's CRC must load where only zlib's is available, and back
    from knetflow.serialize.format import crc32

    assert crc32(data, start) == zlib.crc32(data, start)
    assert crc32(np.frombuffer(data, np.uint8)) == zlib.crc32(data)
