"""`kf.export_onnx`: an inference graph written as a standard ONNX model.

What is exported is the *source* inference graph, not a compiled plan: the
graph's outputs (a training graph's updates, such as batchnorm's running
statistics, are not part of inference), with dropout removed. Inputs keep
their names, dtypes and shapes, a dynamic (`None`) dimension becoming a
symbolic one (`N` for the first axis), so the batch size stays free. Params
become initializers under their own names.

The walk visits the knetflow nodes in topological order and hands each to
its converter (one small function per op in `knetflow.onnx.table`, which
`to_onnx` and `to_onnx_layers` fill), which emits ONNX nodes through the
`_Exporter` context below. A node that cannot be converted keeps its error,
which is raised only if an output needs the node:
weights that an op reads as constants (an RNN's gate matrices, a filter to
flip) are folded from the params with NumPy, so the ops that sliced them out
of a flat parameter never need an ONNX form. Unused ONNX nodes and
initializers are dropped at the end. Every ONNX node carries the user's
`file:line` as its doc string.

The `onnx` package (the `onnx` extra) is imported only when exporting.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from knetflow.errors import KnetflowError
from knetflow.graph.node import Graph, Node
from knetflow.graph.passes.rewrite import rewrite
from knetflow.ops.base import REGISTRY, TupleSpec

#: the opset written when none is asked for (onnxruntime has run it since 1.13)
DEFAULT_OPSET = 17
#: the oldest opset the converters can write (Squeeze, Unsqueeze and ReduceSum take axes
#: as inputs from 13 on)
MIN_OPSET = 13


class ExportError(KnetflowError, ValueError):
    """A graph with no ONNX form: the message names the op and the user's line."""


def _require_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError("kf.export_onnx needs the onnx package: pip install "
                          "'knetflow[onnx]'") from e
    return onnx


def _check_opset(onnx, opset) -> int:
    newest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) \
            or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"export_onnx: opset must be an int from {MIN_OPSET} to {newest} "
                         f"(the newest this onnx package knows), got {opset!r}")
    return int(opset)


def export_onnx(model_or_graph, path, opset=None, *, params=None) -> str:
    """Write an inference graph as an ONNX model file (the `onnx` extra); returns the path.

    `model_or_graph` is a `kf.FeedForward`, a model from `kf.load_model`, a file
    from `kf.load`, a path to a model file saved by `kf.save`, a Plan, or a Graph
    (or its output Symbols) with its params; `params` (name -> array) overrides
    param values as in `kf.save`. Dynamic (`None`) input dims stay dynamic (the
    batch axis named `N`). `opset` defaults to 17. The model is checked with
    `onnx.checker` before the (atomic) write. An op with no ONNX form raises
    `knetflow.onnx.ExportError` naming the op and the line that built it.

    Example (a FeedForward `model` after `fit`):

        kf.export_onnx(model, "mlp.onnx")
        onnxruntime.InferenceSession("mlp.onnx").run(None, {"data": x})[0]
    """
    onnx = _require_onnx()
    opset = _check_opset(onnx, opset)
    graph, values = inference_graph(model_or_graph, params)
    model = to_model(graph, values, opset)
    try:  # full_check: ONNX's type rules too (float16 IsInf before opset 20, bool ReduceMax)
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported model is not valid ONNX at opset {opset}, so it is "
                          f"not written: {str(e).splitlines()[0]}") from None
    data = model.SerializeToString()
    from knetflow.serialize.files import atomic_write

    path = os.fspath(path)
    with atomic_write(path) as f:
        f.write(data)
    return path


# ---- what is exported ----


def inference_graph(obj, params=None) -> tuple:
    """(inference graph, param values) of what export_onnx was given.

    Duck typing: an object with `__knetflow_save__` (FeedForward, a loaded
    model), a Graph, Symbols, a Plan, anything with a `graph` and `params`
    (a `kf.load` result), or a path to a model file.
    """
    from knetflow.scheduler.plan import Plan
    from knetflow.serialize.saving import load, resolve

    if isinstance(obj, (str, os.PathLike)):
        obj = load(obj)
    kind = getattr(obj, "kind", "model")
    if kind != "model":
        raise ValueError(f"export_onnx: a {kind} file holds no model to export (a model file "
                         f"is saved by kf.save; a checkpoint loads with kf.load_checkpoint)")
    held = getattr(obj, "graph", None)
    # a Plan's own graph is its optimized one: resolve takes its source graph
    if not hasattr(obj, "__knetflow_save__") and not isinstance(obj, Plan) \
            and isinstance(held, Graph):
        names = {n.attrs["name"] for n in held.params}
        given = dict(getattr(obj, "params", None) or {})
        params = {**{k: v for k, v in given.items() if k in names}, **dict(params or {})}
        obj = held
    graph, values, _ = resolve(obj, params)
    graph = Graph(graph.outputs, inputs=graph.inputs)   # inference runs no updates
    return drop_dropout(graph), values


def drop_dropout(graph: Graph) -> Graph:
    """`x * dropout_mask(x)` becomes x where the mask drops only in training."""

    def visit(node):
        if node.op != "mul":
            return node
        for k, mask in enumerate(node.inputs):
            other = node.inputs[1 - k]
            if (mask.op == "dropout_mask" and mask.attrs.get("training_only", True)
                    and other.spec == node.spec):
                return other
        return node

    return rewrite(graph, visit)


# ---- the walk ----


def to_model(graph: Graph, values: dict, opset: int):
    """The ONNX ModelProto of an inference graph whose params have `values`."""
    from onnx import helper

    from knetflow.version import __version__

    exporter = _Exporter(graph, values, opset)
    onnx_graph = exporter.run()
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="knetflow",
                              producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def _output_names(graph: Graph) -> list:
    """The outputs' names as kf.load_model names them (`output0`, ...), made unique."""
    names, seen = [], {n.attrs["name"] for n in graph.inputs + graph.params}
    for k, node in enumerate(graph.outputs):
        name = node.name if node.op not in ("input", "param") and node.name else f"output{k}"
        while name in seen:
            name += "_"
        seen.add(name)
        names.append(name)
    return names


class _Exporter:
    """The context converters emit into: ONNX nodes, initializers, value names."""

    def __init__(self, graph: Graph, values: dict, opset: int):
        from knetflow.onnx import to_onnx, to_onnx_layers  # noqa: F401  (they fill TABLE)
        from knetflow.onnx.table import TABLE

        self.graph, self.values, self.opset, self.table = graph, values, opset, TABLE
        self.nodes: list = []          # ONNX NodeProtos, in emission (topological) order
        self.initializers: dict = {}   # name -> TensorProto
        self.results: dict = {}        # knetflow node id -> value name(s) or ExportError
        self.foldable: dict = {}       # node id -> whether params and consts alone give it
        self.folded: dict = {}         # node id -> its value computed with NumPy
        self.small: dict = {}          # (dtype, shape, bytes) -> name of a small constant
        self.output_names = _output_names(graph)
        self.leaf_names = {n.attrs["name"] for n in graph.inputs + graph.params}
        self.taken = self.leaf_names | set(self.output_names)
        self.current: Node | None = None
        self._fresh = itertools.count()

    # -- the walk --
    def run(self):
        from onnx import helper

        for node in self.graph.nodes:
            self._visit(node)
        outputs = []
        renames = {}
        for name, node in zip(self.output_names, self.graph.outputs):
            self.current = node
            value = self.name(node)
            if isinstance(value, tuple):
                raise self.error(node, "a multi-output op as a graph output has no ONNX form; "
                                       "return its outputs one by one")
            if value in renames or value in self.leaf_names or value in self.initializers:
                self._append(helper.make_node("Identity", [value], [name]))
            else:
                renames[value] = name
            outputs.append(_value_info(name, node.spec, dynamic=None))
        nodes = [_renamed(n, renames) for n in self.nodes]
        nodes, used = _needed(nodes, self.output_names)
        inits = [t for name, t in self.initializers.items() if name in used]
        inputs = [_value_info(n.attrs["name"], n.spec, dynamic="N") for n in self.graph.inputs]
        return helper.make_graph(nodes, "knetflow", inputs, outputs, inits)

    def _visit(self, node: Node):
        if node.is_leaf:
            self.foldable[node.id] = node.op != "input"
            return
        op = REGISTRY.get(node.op)
        self.foldable[node.id] = (op is not None and op.pure and not op.random
                                  and all(self.foldable[i.id] for i in node.inputs))
        self.current = node
        convert = self.table.get(node.op)
        try:
            if convert is None:
                raise self.error(node, "has no ONNX form in knetflow's exporter")
            self.results[node.id] = convert(self, node)
        except ExportError as e:
            self.results[node.id] = e   # raised if an output needs this node

    # -- what converters call --
    def error(self, node: Node | None, message: str) -> ExportError:
        """The ExportError of `node` (default: the one being converted), naming its line."""
        node = node or self.current
        return ExportError(f"export_onnx: {node.op}: {message} (at {node.where})")

    def fail(self, message: str):
        raise self.error(None, message)

    def name(self, node: Node):
        """The ONNX value name of node's output (a tuple for a multi-output op)."""
        got = self.results.get(node.id)
        if got is None and node.is_leaf:
            got = self.results[node.id] = self._leaf(node)
        if isinstance(got, ExportError):
            raise got
        return got

    def arg(self, node: Node, dtype=None) -> str:
        """The value name of input `node`, cast to `dtype` when given and different."""
        name = self.name(node)
        if isinstance(name, tuple):
            self.fail(f"input {node.op} has several outputs; pick one with get")
        return self.cast(name, node.spec.dtype, dtype) if dtype is not None else name

    def cast(self, name: str, dtype, to) -> str:
        if np.dtype(dtype) == np.dtype(to):
            return name
        return self.emit("Cast", [name], to=_onnx_dtype(to))

    def emit(self, op_type: str, inputs, outputs: int = 1, **attrs):
        """Add an ONNX node; its output name (a list of `outputs` names if not 1)."""
        from onnx import helper

        where = self.current.where if self.current is not None else ""
        prefix = self.current.op if self.current is not None else "value"
        names = [self._new_name(prefix) for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(op_type, list(inputs), names, name=self._new_name(op_type),
                                doc_string=where, **attrs)
        self._append(node)
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=None) -> str:
        """The name of an initializer holding `value` (small ones are shared)."""
        # np.array, not np.ascontiguousarray, which makes a 0-d value 1-d
        array = np.array(value, dtype=dtype, order="C")
        key = None
        if array.size <= 16:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self.small:
                return self.small[key]
        name = self._new_name("const")
        self._initializer(name, array)
        if key is not None:
            self.small[key] = name
        return name

    def ints(self, values) -> str:
        """A 1-D int64 constant (axes, shapes, indices)."""
        return self.const(np.array(list(values), dtype=np.int64))

    def scalar(self, value, dtype) -> str:
        return self.const(np.array(value, dtype=dtype))

    def value(self, node: Node):
        """node's value as a NumPy array when params and constants alone give it, else None."""
        if not self.foldable.get(node.id):
            return None
        if node.id not in self.folded:
            if node.op == "param":
                value = self.values[node.attrs["name"]]
            elif node.op == "const":
                value = node.attrs["value"]
            else:
                args = [self.value(i) for i in node.inputs]
                value = REGISTRY[node.op].forward(np, *args, **node.attrs)
                if not isinstance(value, tuple):
                    value = np.asarray(value, dtype=node.spec.dtype)
            self.folded[node.id] = value
        return self.folded[node.id]

    # -- internals --
    def _leaf(self, node: Node) -> str:
        if node.op == "input":
            return node.attrs["name"]
        if node.op == "param":
            name = node.attrs["name"]
            if name not in self.initializers:
                self._initializer(name, np.asarray(self.values[name], dtype=node.spec.dtype))
            return name
        return self.const(node.attrs["value"], dtype=node.spec.dtype)

    def _initializer(self, name: str, array):
        from onnx import numpy_helper

        self.initializers[name] = numpy_helper.from_array(np.array(array, order="C"), name)

    def _new_name(self, prefix: str) -> str:
        while True:
            name = f"{prefix}_{next(self._fresh)}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def _append(self, node):
        self.nodes.append(node)


def _onnx_dtype(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _value_info(name: str, spec, dynamic):
    """A graph input or output: `dynamic` names a None first axis (others get their own)."""
    from onnx import helper

    if isinstance(spec, TupleSpec):
        raise ExportError(f"export_onnx: {name} is a tuple of values, not one array")
    dims = []
    for axis, d in enumerate(spec.shape):
        if d is not None:
            dims.append(int(d))
        elif dynamic is None:
            dims.append(None)
        else:
            dims.append(dynamic if axis == 0 else f"{name}_{axis}")
    return helper.make_tensor_value_info(name, _onnx_dtype(spec.dtype), dims)


def _renamed(node, renames: dict):
    if not renames:
        return node
    for k, name in enumerate(node.input):
        if name in renames:
            node.input[k] = renames[name]
    for k, name in enumerate(node.output):
        if name in renames:
            node.output[k] = renames[name]
    return node


def _needed(nodes: list, outputs: list) -> tuple:
    """The nodes the outputs need (in order) and every value name they read or write."""
    used = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(name in used for name in node.output):
            kept.append(node)
            used.update(name for name in node.input if name)
    kept.reverse()
    return kept, used
