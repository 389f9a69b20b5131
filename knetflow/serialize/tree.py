"""Trees of plain values: the msgpack encoding of everything but array bytes.

A tree is built of None, bool, int, float, str, bytes, list, tuple, dict (str
or int keys) and NumPy arrays. msgpack holds most of these natively; three
extension types carry the rest (docs/FORMAT.md, "Trees"):

- `REF_EXT`: an array, as the u32 index of its record in the array section;
- `TUPLE_EXT`: a tuple, as the msgpack array of its items, so tuples come
  back as tuples and lists as lists (attributes such as `axis=(0, 2)` are
  compared and hashed, so the difference matters);
- `BIGINT_EXT`: an int outside msgpack's range (-2**63 .. 2**64-1), as
  signed little-endian two's-complement bytes (NumPy's PCG64 state holds
  128-bit ints).

NumPy scalars are saved as Python numbers. Decoding bounds every length by the
bytes it is given (msgpack's Unpacker limits), nesting by `MAX_DEPTH`, refuses
a map that holds a key twice, and accepts nothing but the types above.
"""

from __future__ import annotations

import struct

import msgpack
import numpy as np

from knetflow.devices import registry
from knetflow.errors import FormatError

REF_EXT = 2
TUPLE_EXT = 3
BIGINT_EXT = 4
MAX_DEPTH = 64
MAX_BIGINT_BYTES = 1024
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_REF = struct.Struct("<I")


class _Encoder:
    """One tree's encoding: collects its arrays (each distinct array once)."""

    def __init__(self, as_array):
        self.arrays: list = []
        self._index: dict = {}
        self._as_array = as_array

    def array_ref(self, value) -> msgpack.ExtType:
        """The reference to `value`, an array added to the file once however often it occurs."""
        key = id(value)
        if key not in self._index:
            self._index[key] = len(self.arrays)
            # keep the original alive too, so its id is not reused within this tree
            self.arrays.append((self._as_array(value), value))
        return msgpack.ExtType(REF_EXT, _REF.pack(self._index[key]))

    def encode(self, value, depth: int, path: str):
        """`value` as msgpack-ready data; `path` names it in error messages."""
        if depth > MAX_DEPTH:
            raise ValueError(f"cannot save {path or 'the value'}: nested deeper than {MAX_DEPTH}")
        if value is None or isinstance(value, (bool, np.bool_)):
            return None if value is None else bool(value)
        if isinstance(value, (int, np.integer)):
            return _encode_int(int(value))
        if isinstance(value, (float, np.floating)):
            return float(value)
        if isinstance(value, (str, np.str_)):
            return str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, tuple):
            items = [self.encode(v, depth + 1, f"{path}[{k}]") for k, v in enumerate(value)]
            return msgpack.ExtType(TUPLE_EXT, msgpack.packb(items, use_bin_type=True))
        if isinstance(value, list):
            return [self.encode(v, depth + 1, f"{path}[{k}]") for k, v in enumerate(value)]
        if isinstance(value, dict):
            return self._encode_dict(value, depth, path)
        if isinstance(value, np.ndarray) or _is_device_array(value):
            return self.array_ref(value)
        raise TypeError(f"cannot save {path or 'the value'}: a {type(value).__name__} is not "
                        f"a plain value (None, bool, int, float, str, bytes, list, tuple, "
                        f"dict or array)")

    def _encode_dict(self, value: dict, depth: int, path: str) -> dict:
        out = {}
        for key, item in value.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(f"cannot save {path or 'the value'}: dict key {key!r} is not "
                                f"a str or an int")
            key = str(key) if isinstance(key, str) else int(key)
            if not _INT_MIN <= (key if isinstance(key, int) else 0) <= _INT_MAX:
                raise TypeError(f"cannot save {path}: dict key {key} is out of range")
            out[key] = self.encode(item, depth + 1, f"{path}[{key!r}]")
        return out


def _is_device_array(value) -> bool:
    """An array of a device (a GPU's, a sim device's): saved through its host copy."""
    return registry.is_device_array(value)


def _encode_int(value: int):
    if _INT_MIN <= value <= _INT_MAX:
        return value
    size = (value.bit_length() + 8) // 8  # room for the sign bit
    if size > MAX_BIGINT_BYTES:
        raise ValueError(f"cannot save an int of {value.bit_length()} bits "
                         f"(at most {8 * MAX_BIGINT_BYTES})")
    return msgpack.ExtType(BIGINT_EXT, value.to_bytes(size, "little", signed=True))


def encode(tree, as_array) -> tuple:
    """(msgpack bytes, arrays) of `tree`; arrays are `as_array(value)` in reference order."""
    encoder = _Encoder(as_array)
    packed = msgpack.packb(encoder.encode(tree, 0, ""), use_bin_type=True)
    return packed, [a for a, _ in encoder.arrays]


# ---- decoding ----


def _limits(n: int) -> dict:
    n = max(n, 1)
    return {"max_str_len": n, "max_bin_len": n, "max_array_len": n,
            "max_map_len": n // 2 + 1, "max_ext_len": n}


def _map(pairs: list) -> dict:
    """A map from msgpack's (key, value) pairs: keys are str or int, none twice.

    msgpack itself keeps the last value of a repeated key; another reader may keep
    the first, so a file with one would mean different things to different readers.
    """
    out: dict = {}
    for key, value in pairs:
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise FormatError(f"map key of type {type(key).__name__} (str or int expected)")
        if key in out:
            raise FormatError(f"a map holds the key {_short(key)} twice")
        out[key] = value
    return out


def _short(key) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _unpack(data, ext_hook, top: bool):
    """One msgpack object filling `data` exactly, every length bounded by len(data).

    The tree itself goes through an Unpacker whose buffer is bounded too; a
    tuple's payload, already in memory, through `unpackb`, which keeps its
    parser state on the C stack (64 nested Unpackers would cost megabytes).
    """
    options = {"raw": False, "use_list": True, "strict_map_key": False, "ext_hook": ext_hook,
               "object_pairs_hook": _map, **_limits(len(data))}
    try:
        if not top:
            return msgpack.unpackb(data, **options)
        unpacker = msgpack.Unpacker(None, max_buffer_size=max(len(data), 1), **options)
        unpacker.feed(data)
        value = unpacker.unpack()
    except FormatError:
        raise
    except msgpack.OutOfData:
        raise FormatError("truncated msgpack data") from None
    except msgpack.ExtraData:
        raise FormatError("extra data after a tuple's items") from None
    except Exception as e:  # noqa: BLE001 - any malformed input becomes a FormatError
        raise FormatError(f"malformed msgpack data: {type(e).__name__}: {e}") from None
    if unpacker.tell() != len(data):
        raise FormatError(f"{len(data) - unpacker.tell()} bytes of extra data after the tree")
    return value


class _Decoder:
    def __init__(self, arrays):
        self.arrays = arrays
        self.depth = 0

    def ext_hook(self, code: int, payload: bytes):
        """The value of one extension object (msgpack's hook); FormatError if it is bad."""
        if code == REF_EXT:
            if len(payload) != _REF.size:
                raise FormatError(f"array reference of {len(payload)} bytes (expected 4)")
            (index,) = _REF.unpack(payload)
            if index >= len(self.arrays):
                raise FormatError(f"reference to array {index}, but the file has "
                                  f"{len(self.arrays)}")
            return self.arrays[index]
        if code == TUPLE_EXT:
            return self._tuple(payload)
        if code == BIGINT_EXT:
            if not 0 < len(payload) <= MAX_BIGINT_BYTES:
                raise FormatError(f"big int of {len(payload)} bytes "
                                  f"(1 to {MAX_BIGINT_BYTES} allowed)")
            return int.from_bytes(payload, "little", signed=True)
        raise FormatError(f"unknown msgpack extension type {code}")

    def _tuple(self, payload: bytes) -> tuple:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise FormatError(f"tuples nested deeper than {MAX_DEPTH}")
            items = _unpack(payload, self.ext_hook, top=False)
        finally:
            self.depth -= 1
        if not isinstance(items, list):
            raise FormatError(f"tuple payload is a {type(items).__name__}, not an array")
        return tuple(items)


def _check(value, depth: int) -> None:
    """Accept only the tree types, nested at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise FormatError(f"values nested deeper than {MAX_DEPTH}")
    if isinstance(value, (list, tuple)):
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, dict):  # keys were checked as the map was read (_map)
        for item in value.values():
            _check(item, depth + 1)
    elif not (value is None or isinstance(value, (bool, int, float, str, bytes, np.ndarray))):
        raise FormatError(f"unexpected value of type {type(value).__name__} in the tree")


def decode(data, arrays: list):
    """The tree in msgpack `data`, with array references resolved to `arrays`."""
    value = _unpack(data, _Decoder(arrays).ext_hook, top=True)
    _check(value, 0)
    return value
