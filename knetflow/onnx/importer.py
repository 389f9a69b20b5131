"""ONNX import: `kf.import_onnx(path)` turns an ONNX model into a knetflow Graph.

The walk is the ONNX graph's own order (ONNX nodes are topologically
sorted): graph inputs become placeholders (dynamic dimensions such as the
batch become None), float initializers become trainable `param` nodes named
after them (sanitized to letters, digits, `_` and `.`, and made unique; 0-d
ones are constants), and each node is converted by the one small function
registered for its op type (in `from_onnx.py`, `from_onnx_shape.py`,
`from_onnx_nn.py` and `from_onnx_rnn.py`). The shape rules of the knetflow
ops run as the graph is built, so a model whose shapes do not fit fails
here, with the ONNX node named. Finally every node's `where` says which ONNX node it came from
(`model.onnx:/conv1/Conv`) and the outputs take the ONNX output names.

The result is an ordinary Graph: it can be compiled, placed on devices,
differentiated and fine-tuned, and saved with `kf.save`.

Nothing in the file is executed, nothing outside it is read (external data
is refused), and every array is checked against the bytes present before it
is made (`import_proto.py`). Unknown ops, attributes and malformed fields
raise `kf.FormatError` naming the op, node and field.
"""

from __future__ import annotations

import os
import re

import numpy as np

from knetflow.errors import FormatError, KnetflowError
from knetflow.graph.build import const, param, placeholder
from knetflow.graph.node import Graph
from knetflow.graph.passes.rewrite import rewrite
from knetflow.graph.symbol import Symbol
from knetflow.onnx import (  # noqa: F401  (they register the converters)
    from_onnx,
    from_onnx_nn,
    from_onnx_rnn,
    from_onnx_shape,
)
from knetflow.onnx.import_context import CONVERTERS, Filled, NodeContext, ShapeValue
from knetflow.onnx.import_proto import (
    MAX_BYTES,
    default_opset,
    read_model,
    to_array,
    value_spec,
)

__all__ = ["import_onnx"]

# errors a converter's knetflow calls raise on a model that does not fit (re-raised named)
_CONVERSION_ERRORS = (KnetflowError, ValueError, TypeError, IndexError, OverflowError,
                      ZeroDivisionError, NotImplementedError)


def import_onnx(path, max_bytes: int = MAX_BYTES) -> Graph:
    """Import an ONNX model file as a knetflow Graph with its params (the `onnx` extra).

    `path` is a file path (or the model's bytes). The graph's inputs are the
    ONNX graph inputs, by name, with dynamic dims (the batch) as None; its
    outputs are the ONNX outputs; its params hold the initializers' values,
    trainable (batchnorm's running mean and variance are `trainable=False`).
    Files larger than `max_bytes` are refused before they are read.

    Supported ops are those of the seed models as PyTorch's exporter writes
    them (Gemm, MatMul, Conv, MaxPool, AveragePool, BatchNormalization, LSTM,
    Gather as embedding, Softmax, Flatten, Reshape, elementwise ops, ...; see
    docs/API.md). Anything else, and anything malformed, raises
    `kf.FormatError` naming the op, the node and the field.

    Example: `graph = kf.import_onnx("mlp.onnx")`, then
    `kf.compile(graph).run({"x": xs})` or `kf.save("mlp.kf", graph)`.
    """
    model = read_model(path, max_bytes)
    label = "<bytes>" if isinstance(path, (bytes, bytearray, memoryview)) else \
        os.path.basename(os.fspath(path))
    return _Import(model, label).run()


def sanitize(name: str) -> str:
    """A knetflow name for an ONNX name: runs of other characters than letters, digits,
    `_` and `.` become `_` (`onnx::Conv_22` -> `onnx_Conv_22`)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "value"


class _Initializer:
    """An ONNX initializer: its array, made into params only where used as data."""

    def __init__(self, name: str, array: np.ndarray):
        self.name, self.array = name, array


class _Import:
    """The state of one import: ONNX names to values, knetflow names taken, params made."""

    def __init__(self, model, label: str):
        self.model, self.label = model, label
        self.opset = default_opset(model)
        self.env = {}            # ONNX value name -> Symbol, array, _Initializer, ShapeValue...
        self.taken = set()       # knetflow input and param names in use
        self.params = {}         # (initializer name, suffix, trainable) -> Symbol
        self.origin = {}         # knetflow node id -> the ONNX name it came from

    def run(self) -> Graph:
        graph = self.model.graph
        if len(graph.sparse_initializer):
            raise FormatError("ONNX graph: sparse initializers are not supported")
        self._check_opset()
        for t in graph.initializer:
            if t.name in self.env:
                raise FormatError(f"ONNX graph: initializer {t.name!r} is given twice")
            self.env[t.name] = _Initializer(t.name, to_array(t, f"initializer {t.name!r}"))
        inputs = [self._input(info) for info in graph.input if info.name not in self.env]
        for k, node in enumerate(graph.node):
            self._convert(node, k)
        if not len(graph.output):
            raise FormatError("ONNX graph: field 'output' is empty (truncated?)")
        outputs = [self._output(info.name) for info in graph.output]
        return self._finish(outputs, inputs)

    def _check_opset(self):
        import onnx.defs

        known = onnx.defs.onnx_opset_version()
        if self.opset > known:
            raise FormatError(f"ONNX model: opset {self.opset} is newer than the installed "
                              f"onnx package knows ({known}); upgrade onnx")

    # -- leaves --
    def _unique(self, name: str) -> str:
        base, k = sanitize(name), 2
        name = base
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def _input(self, info) -> Symbol:
        if not info.name or info.name in self.env:
            raise FormatError(f"ONNX graph: input name {info.name!r} is empty or given twice")
        shape, dtype = value_spec(info, f"graph input {info.name!r}")
        sym = placeholder(self._unique(info.name), shape, dtype)
        self.origin[sym.node.id] = info.name
        self.env[info.name] = sym
        return sym

    def param_for(self, init: _Initializer, suffix: str, convert, trainable=True) -> Symbol:
        key = (init.name, suffix, trainable)
        if key not in self.params:
            value = np.ascontiguousarray(convert(init.array) if convert else init.array)
            sym = param(self._unique(init.name + suffix), value=value, dtype=str(value.dtype))
            if not trainable:
                node = sym.node
                sym = Symbol(node.replace(attrs={**node.attrs, "trainable": False}))
            self.origin[sym.node.id] = init.name
            self.params[key] = sym
        return self.params[key]

    # -- values as converters need them --
    def lookup(self, name: str, ctx):
        if name not in self.env:
            ctx.fail(f"input {name!r} is not defined: not a graph input, an initializer, nor "
                     "an output of an earlier node (a missing initializer?)")
        return self.env[name]

    def as_data(self, value):
        if isinstance(value, _Initializer):
            # scalars (an epsilon, an exponent) are constants: training them makes no sense
            if value.array.dtype.kind == "f" and value.array.ndim:
                return self.param_for(value, "", None)
            return value.array
        return value

    @staticmethod
    def as_const(value):
        if isinstance(value, _Initializer):
            return value.array
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, Symbol) and value.node.op == "const":
            return value.node.attrs["value"]
        return None

    @staticmethod
    def alias(value, name: str):
        if isinstance(value, _Initializer):
            return _Initializer(name, value.array)
        return value

    @staticmethod
    def initializer(value):
        return value if isinstance(value, _Initializer) else None

    # -- nodes --
    def _convert(self, node, k: int):
        where = f"ONNX node {node.name or f'#{k}'!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise FormatError(f"{where}: op {node.op_type!r} of domain {node.domain!r} is not "
                              "supported; knetflow imports ops of the ONNX domain only")
        conv = CONVERTERS.get(node.op_type)
        if conv is None:
            raise FormatError(f"{where}: ONNX op {node.op_type!r} is not supported by "
                              f"knetflow's importer (supported: {', '.join(sorted(CONVERTERS))})")
        version = self._schema_version(node.op_type, where)
        if version not in conv.versions:
            raise FormatError(f"{where}: version {version} of {node.op_type} (opset "
                              f"{self.opset}) is not supported; knetflow implements the "
                              f"versions {', '.join(map(str, conv.versions))}")
        ctx = NodeContext(self, node, version, k)
        try:
            results = conv.fn(ctx)
        except FormatError:
            raise
        except _CONVERSION_ERRORS as e:
            raise FormatError(f"{where}: {e}") from None
        unread = ctx.attrs.unread()
        if unread:
            ctx.fail(f"attribute {', '.join(map(repr, unread))} is not supported")
        self._bind(ctx, results if isinstance(results, tuple) else (results,))

    def _schema_version(self, op_type: str, where: str) -> int:
        import onnx.defs

        try:
            return onnx.defs.get_schema(op_type, self.opset, "").since_version
        except onnx.defs.SchemaError:
            raise FormatError(f"{where}: ONNX has no op {op_type!r} in opset {self.opset}") \
                from None

    def _bind(self, ctx, results: tuple):
        label = ctx.node.name or next((o for o in ctx.node.output if o), ctx.op)
        for k, name in enumerate(ctx.node.output):
            if not name:
                continue
            if name in self.env:
                ctx.fail(f"output {name!r} is already defined (ONNX names are assigned once)")
            value = results[k] if k < len(results) else None
            if value is None:
                ctx.fail(f"output {k} ({name!r}) is not supported")
            if isinstance(value, Symbol):
                self._attribute(value.node, label)
            self.env[name] = value

    def _attribute(self, node, label: str):
        """Record `label` as the origin of `node` and the new nodes it was built from."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n.id in self.origin:
                continue
            self.origin[n.id] = label
            stack.extend(n.inputs)

    # -- the result --
    def _output(self, name: str) -> tuple:
        if name not in self.env:
            raise FormatError(f"ONNX graph: output {name!r} is not computed by any node")
        value = self.as_data(self.env[name])
        if isinstance(value, (ShapeValue, Filled)):
            raise FormatError(f"ONNX graph: output {name!r} is a run-time shape computation, "
                              "which knetflow cannot output")
        if not isinstance(value, Symbol):
            value = const(np.asarray(value))
            self.origin[value.node.id] = name
        return value, name

    def _finish(self, outputs: list, inputs: list) -> Graph:
        """The Graph, its nodes rebuilt to carry their ONNX origin and output names."""
        graph = Graph([sym for sym, _ in outputs], inputs=inputs)
        names = {}
        for sym, name in outputs:
            if not sym.node.is_leaf:
                names.setdefault(sym.node.id, name)

        def visit(node, original):
            return node.replace(where=f"{self.label}:{self.origin.get(original.id, '?')}",
                                name=names.get(original.id, node.name))

        return rewrite(graph, visit, originals=True)
