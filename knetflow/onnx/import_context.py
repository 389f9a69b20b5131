"""What an ONNX op converter sees: the table of converters, the node being
converted, and the import-time values a graph's shape arithmetic produces.

A converter is one small function per ONNX op type, registered with
`@converter("Conv", 1, 11, 22)`: the numbers are the versions of the op's
schema (its `since_version`s) the function implements. It gets a
`NodeContext` and returns the node's outputs: knetflow Symbols, NumPy arrays
(values known at import time, folded by running the same knetflow ops on
arrays), or the two shape values below; `None` for an output it cannot give.

Shape arithmetic: PyTorch's exporter computes some shapes at run time
(`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`, or zeros of
`ConstantOfShape` as an LSTM's initial state). A knetflow graph has static
shapes with dynamic dimensions, so these are evaluated while importing: a
`ShapeValue` is a 1-D int64 tensor whose items are ints or `DimRef`s (a
dynamic dimension of a tensor), `Filled` a tensor of one value whose shape is
a ShapeValue. Where they are consumed (Reshape, an LSTM's initial state) they
become static attributes; anywhere else they are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from knetflow.errors import FormatError
from knetflow.onnx.import_proto import Attrs

#: the largest array an import may compute itself (ConstantOfShape), beyond the file's data
MAX_FOLDED_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Converter:
    fn: Callable
    versions: tuple


#: ONNX op type -> Converter
CONVERTERS: dict = {}


def converter(op_type: str, *versions: int):
    """Register `fn` as the converter of ONNX op `op_type` for schema versions `versions`."""
    def register(fn):
        CONVERTERS[op_type] = Converter(fn, tuple(versions))
        return fn
    return register


@dataclass(frozen=True, eq=False)
class DimRef:
    """Dimension `axis` of the tensor computed by `node`, unknown until run time."""
    node: object
    axis: int


@dataclass(frozen=True)
class ShapeValue:
    """A 1-D (or, `scalar`, 0-d) int64 tensor of ints and DimRefs, known at import."""
    items: tuple
    scalar: bool = False


@dataclass(frozen=True)
class Filled:
    """A tensor of `value` everywhere, of shape `shape` (ints and DimRefs)."""
    shape: tuple
    value: np.ndarray


def shape_value(items, scalar=False):
    """A ShapeValue, or a plain int64 array when every item is known."""
    items = tuple(items)
    if all(isinstance(d, (int, np.integer)) for d in items):
        arr = np.array(items, dtype=np.int64)
        return arr.reshape(()) if scalar else arr
    return ShapeValue(items, scalar)


def shape_items(value, where: str) -> tuple:
    """The items of a 1-D shape-like value (int array or ShapeValue)."""
    if isinstance(value, ShapeValue):
        return value.items if not value.scalar else (value.items[0],)
    arr = np.asarray(value)
    if arr.ndim > 1 or arr.dtype.kind not in "iu":
        raise FormatError(f"{where}: a shape must be a 1-D integer tensor, got {arr.dtype} "
                          f"{arr.shape}")
    return tuple(int(v) for v in arr.reshape(-1))


class NodeContext:
    """One ONNX node being converted: its attributes, inputs and error messages."""

    def __init__(self, importer, node, version: int, index: int):
        self.node, self.op, self.version = node, node.op_type, version
        label = node.name or f"#{index}"
        self.where = f"ONNX node {label!r} ({node.op_type})"
        self.attrs = Attrs(node, self.where)
        self._importer = importer

    def fail(self, message: str):
        raise FormatError(f"{self.where}: {message}")

    # -- inputs --
    def has(self, i: int) -> bool:
        """Whether input i is given (ONNX leaves optional inputs out or names them '')."""
        return i < len(self.node.input) and self.node.input[i] != ""

    def require(self, *counts) -> None:
        """The number of inputs given (trailing optional ones not counted) is in `counts`."""
        n = len(self.node.input)
        while n and self.node.input[n - 1] == "":
            n -= 1
        if n not in counts:
            want = " or ".join(str(c) for c in counts)
            self.fail(f"takes {want} inputs, got {n}")

    def raw(self, i: int, what: str = None):
        if not self.has(i):
            self.fail(f"input {what or i} is required")
        return self._importer.lookup(self.node.input[i], self)

    def data(self, i: int, what: str = None):
        """Input i as data: a Symbol (params for float initializers) or an array."""
        value = self.raw(i, what)
        if isinstance(value, (ShapeValue, Filled)):
            value = self._materialize(value, i, what)
        return self._importer.as_data(value)

    def const(self, i: int, what: str = None) -> np.ndarray:
        """Input i's value, which must be known at import (initializer, Constant, folded)."""
        value = self._importer.as_const(self.raw(i, what))
        if value is None:
            self.fail(f"input {what or i} ({self.node.input[i]!r}) must be a constant (an "
                      "initializer or a Constant node); it is computed at run time")
        return value

    def known(self, i: int):
        """Input i's value if it is known at import (an array), else None."""
        return self._importer.as_const(self.raw(i))

    def is_initializer(self, i: int) -> bool:
        return self.has(i) and self._importer.initializer(self.raw(i)) is not None

    def alias(self, i: int, name: str):
        """Input i under another name when it is an initializer (Identity), else as it is:
        PyTorch's exporter writes `running_var = Identity(weight)` when two are equal."""
        return self._importer.alias(self.raw(i), name)

    def param(self, i: int, what: str, suffix: str = "", convert: Callable = None,
              trainable: bool = True):
        """A param holding `convert(initializer i's array)`, named after the initializer
        plus `suffix`; `trainable=False` for values such as running statistics."""
        init = self._importer.initializer(self.raw(i, what))
        if init is None:
            self.fail(f"input {what} ({self.node.input[i]!r}) must be an initializer")
        return self._importer.param_for(init, suffix, convert, trainable)

    def _materialize(self, value, i, what):
        if isinstance(value, Filled) and all(isinstance(d, int) for d in value.shape):
            size = int(np.prod(value.shape)) * value.value.dtype.itemsize
            if size > MAX_FOLDED_BYTES:
                self.fail(f"input {what or i} ({self.node.input[i]!r}), a ConstantOfShape of "
                          f"{value.shape} ({size} bytes), is over the import limit of "
                          f"{MAX_FOLDED_BYTES} bytes")
            return np.full(value.shape, value.value.reshape(()), dtype=value.value.dtype)
        self.fail(f"input {what or i} ({self.node.input[i]!r}) is computed from the run-time "
                  "shape of a tensor (Shape/ConstantOfShape); knetflow takes such values "
                  "only as Reshape's shape and as an LSTM's initial state")

    # -- outputs --
    def wants(self, k: int) -> bool:
        """Whether output k is named (used) in the graph."""
        return k < len(self.node.output) and self.node.output[k] != ""
