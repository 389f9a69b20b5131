"""Arrays in the file: msgpack extension objects carrying dtype, shape and bytes.

Every array of a file sits in the array section as one ext 32 object of type
`ARRAY_EXT` (see docs/FORMAT.md). Its payload is

    u8 dtype code | u8 ndim | u16 pad | u64 shape[ndim] | pad zero bytes | data

with the fixed fields little-endian and the data the array's elements in
C order, little-endian. `pad` puts the data at a file offset that is a
multiple of `ALIGN`, so that on load each array is a zero-copy, aligned view
of the buffer the file was read into (`np.frombuffer`).

Writing never copies a C-contiguous little-endian array: the writer hands the
array's own memory to the file. Reading checks every count against the bytes
present before it makes a view, so a hostile shape cannot allocate anything.
"""

from __future__ import annotations

import struct

import numpy as np

from knetflow.errors import FormatError

ARRAY_EXT = 1
ALIGN = 64
MAX_NDIM = 32
#: ext 32 header: 0xc9, u32 big-endian payload length, i8 type
_EXT32 = struct.Struct(">BIb")
_FIXED = struct.Struct("<BBH")
#: (code, dtype name); codes are part of the format and never change meaning
DTYPE_CODES = {
    1: "bool", 2: "int8", 3: "uint8", 4: "int16", 5: "uint16", 6: "int32", 7: "uint32",
    8: "int64", 9: "uint64", 10: "float16", 11: "float32", 12: "float64",
}
_CODE_OF = {name: code for code, name in DTYPE_CODES.items()}
_MAX_PAYLOAD = 2**32 - 1


def supported(dtype) -> bool:
    """Whether arrays of `dtype` can be saved."""
    return np.dtype(dtype).name in _CODE_OF


def as_savable(array) -> np.ndarray:
    """A NumPy array with the same values, C-contiguous and little-endian.

    Copies only when it must (another device, a strided view, big-endian data).
    """
    if not isinstance(array, np.ndarray):
        get = getattr(array, "get", None)  # CuPy arrays come back to the host
        array = get() if callable(get) else np.asarray(array)
    name = array.dtype.name
    if name not in _CODE_OF:
        raise TypeError(f"cannot save an array of dtype {array.dtype}; supported dtypes: "
                        f"{', '.join(_CODE_OF)}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
    return array if array.flags.c_contiguous else array.copy(order="C")


def record(array: np.ndarray, offset: int) -> tuple:
    """(header bytes, data) of `array`'s record written at file `offset`.

    `data` is a flat uint8 view of the array's own memory (no copy).
    """
    shape = array.shape
    if len(shape) > MAX_NDIM:
        raise ValueError(f"cannot save an array of {len(shape)} dimensions (at most {MAX_NDIM})")
    fixed = _FIXED.size + 8 * len(shape)
    start = offset + _EXT32.size + fixed
    pad = -start % ALIGN
    length = fixed + pad + array.nbytes
    if length > _MAX_PAYLOAD:
        raise ValueError(f"cannot save an array of {array.nbytes} bytes: format version 1 "
                         f"holds arrays of up to 4 GiB")
    head = (_EXT32.pack(0xC9, length, ARRAY_EXT)
            + _FIXED.pack(_CODE_OF[array.dtype.name], len(shape), pad)
            + struct.pack(f"<{len(shape)}Q", *shape) + bytes(pad))
    data = array.reshape(-1).view(np.uint8)
    return head, data


def _bad(index: int, position: int, message: str):
    raise FormatError(f"array {index} (at byte {position}): {message}")


def read_record(buf, position: int, end: int, index: int) -> tuple:
    """The array whose record starts at `position`, and the position after it.

    `buf` is a flat uint8 NumPy array (or bytes); the array is a view of it.
    """
    if end - position < _EXT32.size + _FIXED.size:
        _bad(index, position, "truncated record header")
    marker, length, ext = _EXT32.unpack_from(buf, position)
    if marker != 0xC9 or ext != ARRAY_EXT:
        _bad(index, position, f"expected an ext 32 object of type {ARRAY_EXT}, found "
                              f"marker 0x{marker:02x} type {ext}")
    payload = position + _EXT32.size
    stop = payload + length
    if stop > end:
        _bad(index, position, f"record claims {length} bytes but {end - payload} remain")
    code, ndim, pad = _FIXED.unpack_from(buf, payload)
    if code not in DTYPE_CODES:
        _bad(index, position, f"unknown dtype code {code}")
    if ndim > MAX_NDIM:
        _bad(index, position, f"{ndim} dimensions (at most {MAX_NDIM})")
    data = payload + _FIXED.size + 8 * ndim + pad
    if data > stop:
        _bad(index, position, "shape and padding run past the record")
    shape = struct.unpack_from(f"<{ndim}Q", buf, payload + _FIXED.size)
    if any(buf[data - pad:data]):
        _bad(index, position, "padding bytes are not zero")
    dtype = np.dtype(DTYPE_CODES[code]).newbyteorder("<")
    count = 1
    for d in shape:
        count *= d  # Python ints: no overflow, however large the claimed dims
    if count * dtype.itemsize != stop - data:
        _bad(index, position, f"shape {shape} of {dtype.name} needs {count * dtype.itemsize} "
                              f"bytes but the record holds {stop - data}")
    try:
        array = np.frombuffer(buf, dtype=dtype, count=count, offset=data).reshape(shape)
    except ValueError as e:  # dims NumPy cannot represent, e.g. (0, 2**63)
        _bad(index, position, f"shape {shape}: {e}")
    if dtype.kind == "b" and count and array.view(np.uint8).max() > 1:
        _bad(index, position, "bool array holds bytes other than 0 and 1")
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array, stop
