"""Reading an ONNX file safely: the protobuf parse, tensors, attributes and value types.

The file's size is checked before a byte is read, the parse runs on those
bytes only (external data is never followed, so a model cannot make the
loader open other files), and every tensor's declared dims are checked
against the bytes that are really there before an array is made. So an
import's memory stays a small multiple of the file's size, whatever the
file declares. Anything malformed raises `kf.FormatError` naming the field,
the tensor or the node.

Only this module touches the `onnx` package, and only inside functions, so
`import knetflow` works without it.
"""

from __future__ import annotations

import math
import os

import numpy as np

from knetflow.errors import FormatError

#: ONNX TensorProto.DataType codes knetflow has a dtype for (onnx.proto's numbering)
DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
          7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}

# which repeated field holds a tensor's values when it has no raw_data (onnx.proto)
_TYPED_FIELD = {"float32": "float_data", "float64": "double_data", "int64": "int64_data",
                "uint32": "uint64_data", "uint64": "uint64_data"}

# AttributeProto.AttributeType codes (onnx.proto)
ATTR_TYPES = {1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 5: "GRAPH", 6: "FLOATS",
              7: "INTS", 8: "STRINGS", 9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR",
              12: "SPARSE_TENSORS", 13: "TYPE_PROTO", 14: "TYPE_PROTOS"}

#: the largest file import_onnx reads by default (protobuf's own limit is 2 GiB)
MAX_BYTES = 2**31 - 1

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def read_model(path, max_bytes: int = MAX_BYTES):
    """The ModelProto in the file at `path` (or in `bytes`), its size checked first."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        data = bytes(path)
        if len(data) > max_bytes:
            raise FormatError(f"ONNX model of {len(data)} bytes is over the limit of "
                              f"{max_bytes} bytes (max_bytes)")
    else:
        data = _read_bounded(os.fspath(path), max_bytes)
    return parse_model(data)


def _read_bounded(path: str, max_bytes: int) -> bytes:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise FormatError(f"{path}: {size} bytes is over the limit of {max_bytes} bytes "
                              "(max_bytes)")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # the file grew while it was read
        raise FormatError(f"{path}: over the limit of {max_bytes} bytes (max_bytes)")
    return data


def parse_model(data: bytes):
    """Decode ModelProto bytes; a protobuf decode error becomes a FormatError."""
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise FormatError("ONNX model: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise FormatError(f"ONNX model: not a valid ModelProto (truncated or corrupt): {e}") \
            from None
    if not model.HasField("graph"):
        raise FormatError("ONNX model: field 'graph' is missing (truncated or not an ONNX "
                          "model)")
    return model


def default_opset(model) -> int:
    """The model's opset version of the ONNX domain ('' or 'ai.onnx')."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise FormatError("ONNX model: field 'opset_import' names no version of the ONNX "
                          "domain (truncated, or not an ONNX model)")
    if len(set(versions)) > 1 or versions[0] < 1:
        raise FormatError(f"ONNX model: field 'opset_import' gives the ONNX domain the "
                          f"versions {versions}")
    return versions[0]


# ---- tensors ----


def dtype_of(code: int, what: str) -> str:
    """The knetflow dtype of an ONNX element type code, or a FormatError naming it."""
    if code not in DTYPES:
        raise FormatError(f"{what}: element type {_type_name(code)} is not supported "
                          f"(knetflow has {', '.join(sorted(set(DTYPES.values())))})")
    return DTYPES[code]


def _type_name(code: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return f"code {code}"


def to_array(tensor, what: str) -> np.ndarray:
    """A TensorProto's value as a new, writable NumPy array, its dims checked first.

    `what` names the tensor in errors (`initializer 'fc.weight'`). External
    data and segments are refused; the element count the dims declare must
    match the data present, so no array is larger than the bytes in the file.
    """
    if tensor.data_location == _EXTERNAL or len(tensor.external_data):
        raise FormatError(f"{what}: its data is stored outside the model file (external "
                          "data); knetflow imports self-contained ONNX files only")
    if tensor.HasField("segment"):
        raise FormatError(f"{what}: segmented tensors are not supported")
    dtype = np.dtype(dtype_of(tensor.data_type, what))
    dims = tuple(tensor.dims)
    if any(d < 0 for d in dims):
        raise FormatError(f"{what}: dims {list(dims)} must not be negative")
    count = math.prod(dims)
    if tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != count * dtype.itemsize:
            raise FormatError(f"{what}: dims {list(dims)} of {dtype} need "
                              f"{count * dtype.itemsize} bytes but raw_data has {len(raw)}")
        if dtype == np.bool_:  # any non-zero byte is True
            return _shaped(np.frombuffer(raw, dtype=np.uint8) != 0, dims, what)
        return _shaped(np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype), dims,
                   what)
    return _from_typed_field(tensor, dtype, dims, count, what)


def _shaped(flat, dims, what) -> np.ndarray:
    """flat as `dims`; dims NumPy cannot hold (an empty tensor declared (0, 2**62)) are
    the file's error."""
    try:
        return flat.reshape(dims)
    except ValueError as e:
        raise FormatError(f"{what}: dims {list(dims)}: {e}") from None


def _from_typed_field(tensor, dtype, dims, count, what) -> np.ndarray:
    field = _TYPED_FIELD.get(dtype.name, "int32_data")
    values = getattr(tensor, field)
    if len(values) != count:
        raise FormatError(f"{what}: dims {list(dims)} declare {count} elements but "
                          f"{field} has {len(values)}")
    try:
        if dtype.name == "float16":  # stored as the bit patterns
            flat = np.array(values, dtype=np.uint16).view(np.float16)
        elif dtype.name == "bool":
            flat = np.array(values, dtype=np.int64) != 0
        else:
            flat = np.array(values, dtype=dtype)
    except OverflowError:
        raise FormatError(f"{what}: a value in {field} does not fit {dtype}") from None
    return _shaped(flat, dims, what)


# ---- value types (graph inputs and outputs) ----


def value_spec(info, what: str) -> tuple:
    """(shape, dtype) of a ValueInfoProto: a tensor type; unknown dims become None."""
    if info.type.WhichOneof("value") != "tensor_type":
        raise FormatError(f"{what}: only tensor values are supported, got "
                          f"{info.type.WhichOneof('value') or 'no type'}")
    ttype = info.type.tensor_type
    dtype = dtype_of(ttype.elem_type, what)
    if not ttype.HasField("shape"):
        raise FormatError(f"{what}: field 'shape' is missing; knetflow needs each input's rank")
    shape = []
    for d in ttype.shape.dim:
        if d.WhichOneof("value") == "dim_value":
            if d.dim_value < 0:
                raise FormatError(f"{what}: dim {d.dim_value} must not be negative")
            shape.append(int(d.dim_value))
        else:  # dim_param ("batch") or unknown: a dynamic dimension
            shape.append(None)
    return tuple(shape), dtype


# ---- attributes ----


class Attrs:
    """A node's attributes, read by name with their expected ONNX types checked.

    The importer refuses attributes a converter did not read (`unread()`):
    an attribute knetflow does not know could change what the node computes.
    """

    def __init__(self, node, where: str):
        self.where = where
        self._attrs = {}
        for a in node.attribute:
            if a.name in self._attrs:
                raise FormatError(f"{where}: attribute {a.name!r} is given twice")
            if a.ref_attr_name:
                raise FormatError(f"{where}: attribute {a.name!r} refers to a function "
                                  "attribute; only plain graphs are supported")
            self._attrs[a.name] = a
        self._read = set()

    def __contains__(self, name) -> bool:
        return name in self._attrs

    def _get(self, name, kind):
        self._read.add(name)
        a = self._attrs.get(name)
        if a is None:
            return None
        got = ATTR_TYPES.get(a.type, f"type code {a.type}")
        if got != kind:
            raise FormatError(f"{self.where}: attribute {name!r} must be {kind}, got {got}")
        return a

    def int(self, name, default=None):
        a = self._get(name, "INT")
        return default if a is None else int(a.i)

    def float(self, name, default=None):
        a = self._get(name, "FLOAT")
        return default if a is None else float(a.f)

    def string(self, name, default=None):
        a = self._get(name, "STRING")
        if a is None:
            return default
        try:
            return a.s.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.where}: attribute {name!r} is not UTF-8") from None

    def ints(self, name, default=None):
        a = self._get(name, "INTS")
        return default if a is None else tuple(int(v) for v in a.ints)

    def floats(self, name, default=None):
        a = self._get(name, "FLOATS")
        return default if a is None else tuple(float(v) for v in a.floats)

    def strings(self, name, default=None):
        a = self._get(name, "STRINGS")
        if a is None:
            return default
        return tuple(s.decode("utf-8", "replace") for s in a.strings)

    def tensor(self, name):
        a = self._get(name, "TENSOR")
        return None if a is None else to_array(a.t, f"{self.where}: attribute {name!r}")

    def ignore(self, *names) -> None:
        """Attributes that do not change what knetflow computes (e.g. `momentum` in inference)."""
        self._read.update(names)

    def unread(self) -> list:
        return [name for name in self._attrs if name not in self._read]
