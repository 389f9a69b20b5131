"""MXNet-style layer symbols: a description of a network, built into a Graph once shapes are known.

A layer symbol (`kf.sym.FullyConnected(data, num_hidden=64, name="fc1")`) is
plain data: a layer kind, a name, input symbols and attributes. It does not
know its parameters' shapes until the shape of its data is known (MXNet's
deferred shape inference), so the knetflow Graph is built lazily:
`symbol.to_graph(data=(None, 784))` walks the description in topological
order, creates each layer's ops and parameters (`fc1_weight`, `fc1_bias`,
..., shapes from the input's spec) and returns a Graph. `FeedForward` does
this when it binds the data shape.

Two graphs come from one symbol:
- inference (`training=False`): outputs are the predictions (softmax
  probabilities for `SoftmaxOutput`); batchnorm uses its moving statistics,
  dropout is left out;
- training (`training=True`): the first output is the scalar loss (the sum of
  the output layers' losses, fed their labels `<name>_label`), then the
  predictions; batchnorm's moving statistics are non-trainable params updated
  through `Graph.updates`.

The description travels as JSON (`tojson()`, `load_json`), so a checkpoint
can carry it and `FeedForward.load` can rebuild a trainable model.
"""

from __future__ import annotations

import collections
import itertools
import json

import numpy as np

from knetflow.graph.build import param as _param
from knetflow.graph.build import placeholder
from knetflow.graph.node import Graph, toposort
from knetflow.graph.symbol import Symbol as _GraphSymbol

__all__ = ["LAYERS", "LayerSymbol", "Variable", "auto_name", "load_json", "reset_names"]

#: layer kind -> rule object with `params(attrs)`, `build(builder, node, inputs)` and, for
#: output layers, `loss(builder, node, inputs)` and `label(data_symbol, attrs)`
LAYERS: dict = {}

_counters: dict = collections.defaultdict(itertools.count)


def auto_name(kind: str) -> str:
    """MXNet's automatic layer name: the lowercase kind and a count per kind
    (`fullyconnected0`, `fullyconnected1`, `convolution0`, ...)."""
    return f"{kind.lower()}{next(_counters[kind])}"


def reset_names() -> None:
    """Restart the automatic layer-name counts (e.g. between scripts building the same net)."""
    _counters.clear()


class LayerSymbol:
    """One layer of a network description (`kf.sym.Symbol`, MXNet's `Symbol`).

    Not a graph node: `kf.Symbol` is the symbolic value of a built Graph, this
    is the layer-level description `kf.sym` functions create.

    Example:
        >>> import knetflow as kf
        >>> data = kf.sym.Variable("data")
        >>> net = kf.sym.FullyConnected(data, num_hidden=10, name="fc1")
        >>> net = kf.sym.SoftmaxOutput(net, name="softmax")
        >>> net.list_arguments()
        ['data', 'fc1_weight', 'fc1_bias', 'softmax_label']
        >>> net.infer_shape(data=(32, 784))[0]
        [(32, 784), (10, 784), (10,), (32,)]
    """

    __slots__ = ("attrs", "inputs", "kind", "name")

    def __init__(self, kind: str, name: str, inputs=(), attrs=None):
        self.kind = kind
        self.name = str(name)
        self.inputs = tuple(inputs)
        self.attrs = dict(attrs or {})
        for i in self.inputs:
            if not isinstance(i, LayerSymbol):
                raise TypeError(f"{kind} {name!r}: inputs must be kf.sym symbols, got "
                                f"{type(i).__name__}")

    # -- structure --
    def topo(self) -> list:
        """Every symbol this one depends on, each after its inputs (inputs in order)."""
        return list(toposort([self], key=id))

    def _names(self, aux: bool) -> list:
        out = []
        for node in self.topo():
            if node.kind == "Variable":
                if not aux:
                    out.append(node.name)
                continue
            out.extend(f"{node.name}_{suffix}" for suffix, is_aux in
                       LAYERS[node.kind].params(node.attrs) if is_aux == aux)
        _check_unique(out, "argument" if not aux else "auxiliary state")
        return out

    def list_arguments(self) -> list:
        """Names of the inputs and trainable parameters, in MXNet's order (MXNet
        `list_arguments`): data, then each layer's params, labels where they enter."""
        return self._names(aux=False)

    def list_auxiliary_states(self) -> list:
        """Names of the auxiliary states (batchnorm moving mean/var)."""
        return self._names(aux=True)

    def list_inputs(self) -> list:
        """Names of the Variables (data and labels)."""
        return [n.name for n in self.topo() if n.kind == "Variable"]

    def list_labels(self) -> list:
        """Names of the label Variables of the output layers."""
        return [n.inputs[1].name for n in self.topo()
                if hasattr(LAYERS.get(n.kind), "loss") and len(n.inputs) > 1]

    def list_outputs(self) -> list:
        """Names of the outputs (MXNet `list_outputs`): `<name>_output`."""
        return [f"{self.name}_output"]

    # -- shapes and graphs --
    def infer_shape(self, *args, **shapes) -> tuple:
        """(arg_shapes, out_shapes, aux_shapes) given input shapes (MXNet `infer_shape`),
        aligned with list_arguments / list_outputs / list_auxiliary_states.

        Shapes are given by name or positionally in list_arguments order; labels
        may be left out (they follow from the data).
        """
        names = self.list_arguments()
        shapes.update((n, s) for n, s in zip(names, args) if s is not None)
        builder = Builder(False, {}, {}, shapes, None, shape_only=True)
        graph = builder.build(self)
        specs = builder.shapes_made
        arg_shapes = [specs[n] for n in names]
        aux_shapes = [specs[n] for n in self.list_auxiliary_states()]
        return arg_shapes, [o.spec.shape for o in graph.outputs], aux_shapes

    def to_graph(self, training=False, params=None, dtypes=None, initializer=None,
                 shape_only=False, **shapes) -> Graph:
        """The knetflow Graph of this network for the given input shapes.

        `shapes`: input name -> shape (`None` for a dynamic batch dim); Variables
        created with a shape need none, labels follow from their data. `params`
        (name -> array) gives parameter values; missing ones are made by
        `initializer(name, array)` (default `kf.init.Uniform(0.01)`). `dtypes`:
        input name -> dtype (default: the Variable's, else float32).

        Example: `g = net.to_graph(data=(None, 784))`; `kf.compile(g).run({"data": x})`.
        """
        builder = Builder(training, params or {}, dtypes or {}, shapes, initializer,
                          shape_only)
        return builder.build(self)

    def with_shapes(self, dtypes=None, **shapes) -> LayerSymbol:
        """A copy whose Variables carry these shapes (and dtypes), so it builds with no
        arguments: `net.with_shapes(data=(None, 784)).to_graph()`."""
        dtypes = dtypes or {}

        def change(node, inputs):
            attrs = dict(node.attrs)
            if node.kind == "Variable" and node.name in shapes:
                attrs["shape"] = tuple(shapes[node.name])
            if node.kind == "Variable" and node.name in dtypes:
                attrs["dtype"] = str(np.dtype(dtypes[node.name]))
            return LayerSymbol(node.kind, node.name, inputs, attrs)

        return self._rebuild(change)

    def _rebuild(self, change) -> LayerSymbol:
        new: dict = {}
        for node in self.topo():
            new[id(node)] = change(node, tuple(new[id(i)] for i in node.inputs))
        return new[id(self)]

    # -- saving --
    def tojson(self) -> str:
        """The description as JSON (MXNet `tojson`); `kf.sym.load_json` reads it back."""
        nodes = self.topo()
        index = {id(n): k for k, n in enumerate(nodes)}
        items = [{"op": n.kind, "name": n.name, "attrs": n.attrs,
                  "inputs": [index[id(i)] for i in n.inputs]} for n in nodes]
        return json.dumps({"knetflow_sym": 1, "nodes": items, "heads": [index[id(self)]]})

    def __knetflow_save__(self) -> dict:
        """For kf.save / kf.save_checkpoint: the inference graph, params left to the caller
        (its Variables need shapes: see `with_shapes`)."""
        return {"graph": self.to_graph(shape_only=True),
                "metadata": {"layer_symbol": self.tojson()}}

    def __repr__(self) -> str:
        return f"<LayerSymbol {self.kind} {self.name}>"

    def __getstate__(self):
        return {"json": self.tojson()}

    def __setstate__(self, state):
        other = load_json(state["json"])
        for slot in self.__slots__:
            setattr(self, slot, getattr(other, slot))


def _check_unique(names, what):
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate {what} names {dup}: give the layers distinct names")


def load_json(text: str) -> LayerSymbol:
    """The symbol `LayerSymbol.tojson()` wrote (MXNet `load_json`)."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("knetflow_sym") != 1:
        raise ValueError("not a knetflow layer-symbol description (from LayerSymbol.tojson())")
    built: list = []
    for item in data["nodes"]:
        if item["op"] not in LAYERS and item["op"] != "Variable":
            raise ValueError(f"unknown layer kind {item['op']!r}; known: {sorted(LAYERS)}")
        attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in item["attrs"].items()}
        inputs = [built[k] for k in item["inputs"]]
        built.append(LayerSymbol(item["op"], item["name"], inputs, attrs))
    return built[data["heads"][0]]


def Variable(name: str, shape=None, dtype=None, **attrs) -> LayerSymbol:
    """A named input of the network (MXNet `Variable`): data or a label.

    `shape` may hold None for a dynamic batch dim; by default the shape is given
    when the graph is built (FeedForward takes it from X). `dtype` defaults to
    the fed data's (float32 when unknown).
    """
    shape = None if shape is None else tuple(None if d is None else int(d) for d in shape)
    return LayerSymbol("Variable", name, (), {"shape": shape,
                                         "dtype": None if dtype is None else str(np.dtype(dtype)),
                                         **attrs})


class Builder:
    """Builds the Graph of a symbol: placeholders, params with values, layer ops."""

    def __init__(self, training, values, dtypes, shapes, initializer, shape_only=False):
        self.training = training
        self.values = values
        self.dtypes = {k: str(np.dtype(v)) for k, v in dtypes.items()}
        self.shapes = {k: None if v is None else tuple(v) for k, v in shapes.items()}
        self.initializer = initializer
        self.shape_only = shape_only
        self.updates: dict = {}
        self.losses: list = []
        self.env: dict = {}
        self.shapes_made: dict = {}  # name -> shape of every input and param created

    def build(self, head: LayerSymbol) -> Graph:
        for node in head.topo():
            if node.kind == "Variable":
                continue
            rule = LAYERS[node.kind]
            inputs = [self._input(node, k, i) for k, i in enumerate(node.inputs)]
            self.env[id(node)] = rule.build(self, node, inputs)
            if self.training and hasattr(rule, "loss"):
                self.losses.append(rule.loss(self, node, inputs))
        if head.kind == "Variable":
            raise ValueError(f"the network is only the Variable {head.name!r}; add layers")
        pred = self.env[id(head)]
        if not self.training:
            return Graph([_named(pred, f"{head.name}_output")])
        if not self.losses:
            raise ValueError(f"cannot train {head!r}: the network has no output layer with a "
                             "loss (end it with SoftmaxOutput or LinearRegressionOutput)")
        loss = self.losses[0]
        for extra in self.losses[1:]:
            loss = loss + extra
        return Graph([loss, pred], updates=self.updates)

    def _input(self, node, k, inp):
        if id(inp) in self.env:
            return self.env[id(inp)]
        # a Variable: its shape is given, set on it, or (labels) follows from the data
        rule = LAYERS[node.kind]
        hint = rule.label(self.env[id(node.inputs[0])], node.attrs) if (
            k == 1 and hasattr(rule, "label")) else None
        shape = self.shapes.get(inp.name, inp.attrs.get("shape"))
        dtype = self.dtypes.get(inp.name, inp.attrs.get("dtype"))
        if shape is None and hint is not None:
            shape = hint[0]
        if dtype is None:
            dtype = hint[1] if hint is not None else "float32"
        if shape is None:
            raise ValueError(f"input {inp.name!r} of {node.kind} {node.name!r} needs a shape: "
                             f"pass {inp.name}=(batch, ...) (None for a dynamic batch)")
        self.env[id(inp)] = placeholder(inp.name, shape, dtype)
        self.shapes_made[inp.name] = self.env[id(inp)].shape
        return self.env[id(inp)]

    def param(self, node, suffix, shape, dtype, aux=False, trainable=True) -> _GraphSymbol:
        """The param `<layer name>_<suffix>` of this shape: its given value, or initialized."""
        name = f"{node.name}_{suffix}"
        shape = tuple(int(d) for d in shape)
        value = self.values.get(name)
        if value is not None:
            value = np.asarray(value)
            if value.shape != shape:
                raise ValueError(f"{node.kind} {node.name!r}: param {name!r} should have shape "
                                 f"{shape} for this input, the value given has {value.shape}")
        elif not self.shape_only:
            value = np.zeros(shape, dtype=dtype)
            self._initializer()(name, value)
        sym = _param(name, shape, dtype=dtype, value=value)
        self.shapes_made[name] = shape
        attrs = {**sym.node.attrs, "kind": node.kind}
        if aux or not trainable:
            attrs["trainable"] = False
        return _GraphSymbol(sym.node.replace(attrs=attrs))

    def _initializer(self):
        if self.initializer is None:
            from knetflow.train.initializer_classes import Uniform

            self.initializer = Uniform(0.01)
        return self.initializer

    def float_dtype(self, x) -> str:
        """The dtype params of a layer with input x take: x's if float, else float32."""
        dtype = np.dtype(x.dtype)
        return str(dtype) if dtype.kind == "f" else "float32"


def _named(sym, name):
    """The symbol's node renamed (for output names of saved inference models)."""
    if sym.node.is_leaf:  # a renamed copy of an input would be a second input of that name
        return sym
    return _GraphSymbol(sym.node.replace(name=name))
