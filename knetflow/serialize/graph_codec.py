"""Graph <-> plain data: the tree a saved graph becomes, and its validation on load.

    {"nodes":   [{"op": str, "in": [int], "attrs": {str: value}, "spec": spec,
                  "name": str?, "device": str?, "where": str}, ...],
     "inputs":  [int], "outputs": [int], "updates": {param name: int}}

Nodes are listed by creation order (their ids), which is also a topological
order: a node's inputs are referred to by their positions, always before it.
A spec is `{"dtype": str, "shape": [int or None]}`, or a list of specs for a
multi-output op (TupleSpec). Param nodes keep `name` and a string `init` but
never a callable, nor their value: values travel separately, by param name.

Loading checks everything before a node exists: op names against the registry,
dtypes against the supported list, input positions, and each op's stored spec
against the spec its shape rule gives for the stored inputs and attributes.
Then the graph as a whole: no two leaves (inputs and params together) share a
name, every node listed is one the graph uses, and `Graph.verify()` passes. A
param with no value in `values` goes to `fill` (params_fit.refuse_missing
refuses it), or is left without one.
"""

from __future__ import annotations

import numpy as np

from knetflow.devices.transfers import to_host
from knetflow.errors import FormatError
from knetflow.graph.node import LEAF_OPS, Graph, Node, toposort
from knetflow.ops.base import DTYPES, REGISTRY, Spec, TupleSpec, fmt, spec_of

MAX_NDIM = 32


# ---- graph -> data ----


def encode_spec(spec):
    """A Spec (or TupleSpec) as plain data."""
    if isinstance(spec, TupleSpec):
        return [encode_spec(s) for s in spec]
    return {"dtype": spec.dtype, "shape": list(spec.shape)}


def _ordered_nodes(graph: Graph) -> list:
    nodes = toposort(graph.results + tuple(graph.inputs))
    by_id = sorted(nodes, key=lambda n: n.id)
    position = {n.id: k for k, n in enumerate(by_id)}
    if all(position[i.id] < k for k, n in enumerate(by_id) for i in n.inputs):
        return by_id  # creation order keeps id-ordered lists (params, inputs) as they were
    return list(nodes)


def _encode_attrs(node: Node) -> dict:
    attrs = dict(node.attrs)
    if node.op == "param":
        attrs.pop("value", None)
        if not isinstance(attrs.get("init"), str):
            attrs["init"] = None  # callables are code: the value is saved instead
    return attrs


def encode_graph(graph: Graph) -> dict:
    """The plain-data tree of `graph` (param values left out; see `param_values`)."""
    nodes = _ordered_nodes(graph)
    position = {n.id: k for k, n in enumerate(nodes)}
    out = []
    for node in nodes:
        item = {"op": node.op, "in": [position[i.id] for i in node.inputs],
                "attrs": _encode_attrs(node), "spec": encode_spec(node.spec),
                "where": str(node.where)}
        if node.name is not None:
            item["name"] = str(node.name)
        if node.device is not None:
            item["device"] = str(getattr(node.device, "name", node.device))
        out.append(item)
    return {"nodes": out, "inputs": [position[n.id] for n in graph.inputs],
            "outputs": [position[n.id] for n in graph.outputs],
            "updates": {name: position[n.id] for name, n in graph.updates.items()}}


def param_values(graph: Graph, overrides=None) -> dict:
    """Value of every param of `graph`: from `overrides`, else its `value`, else its init.

    An init that is a callable runs now (under `kf.seed`), as compiling would.
    """
    from knetflow import initializers

    overrides = dict(overrides or {})
    values = {}
    for node in graph.params:
        name = node.attrs["name"]
        value = overrides.pop(name, None)
        if value is None:
            value = node.attrs.get("value")
        if value is None:
            value = initializers.initial_value(node.attrs.get("init"), node.spec.shape,
                                               node.spec.dtype)
        value = to_host(value)
        if value.shape != node.spec.shape:
            raise ValueError(f"param {name!r} has shape {node.spec.shape}, its value has "
                             f"shape {value.shape}")
        values[name] = value.astype(node.spec.dtype, copy=False)
    values.update((name, to_host(v)) for name, v in overrides.items())
    return values



# ---- data -> graph ----


def _want(value, typ, what: str):
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise FormatError(f"{what} is a {type(value).__name__}, expected {names}")
    return value


def decode_spec(data, what: str, depth: int = 0):
    """A Spec or TupleSpec from plain data, checked."""
    if isinstance(data, list) and depth == 0:
        return TupleSpec(tuple(decode_spec(s, what, 1) for s in data))
    _want(data, dict, what)
    dtype = _want(data.get("dtype"), str, f"{what} dtype")
    if dtype not in DTYPES:
        raise FormatError(f"{what}: unsupported dtype {dtype!r}")
    shape = _want(data.get("shape"), list, f"{what} shape")
    if len(shape) > MAX_NDIM:
        raise FormatError(f"{what}: {len(shape)} dimensions (at most {MAX_NDIM})")
    for d in shape:
        if d is not None and (_want(d, int, f"{what} dimension") < 0 or d >= 2**62):
            raise FormatError(f"{what}: dimension {d} out of range")
    return Spec(tuple(shape), dtype)


def _leaf_attrs(op: str, attrs: dict, spec, values: dict, fill, what: str) -> dict:
    if op in ("input", "param"):
        _want(attrs.get("name"), str, f"{what} attribute 'name'")
    if op == "param":
        init = attrs.get("init")
        if init is not None:
            _want(init, str, f"{what} attribute 'init'")
        if isinstance(spec, TupleSpec) or not spec.is_static:
            raise FormatError(f"{what}: a param needs a static shape, got {spec!r}")
        value = values.get(attrs["name"])
        if value is None and fill is not None:
            value = fill(attrs["name"], spec, init, what)
        if value is not None and spec_of(value) != spec:
            raise FormatError(f"{what}: param {attrs['name']!r} is {spec!r} but its value "
                              f"is {spec_of(value)!r}")
        attrs = {**attrs, "value": value}
    elif op == "const":
        value = attrs.get("value")
        if not isinstance(value, np.ndarray) or spec_of(value) != spec:
            raise FormatError(f"{what}: a const needs an array value of spec {spec!r}")
        value.setflags(write=False)
    return attrs


def _check_fused(attrs: dict, n_inputs: int, what: str) -> None:
    """A fused chain names only registered ufunc ops and refers only to its inputs."""
    program = _want(attrs.get("program", ()), tuple, f"{what} program")
    for step, item in enumerate(program):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], tuple)):
            raise FormatError(f"{what}: step {step} of its program is not (op name, refs)")
        op = REGISTRY.get(item[0])
        if op is None or op.ufunc is None:
            raise FormatError(f"{what}: step {step} names {item[0][:40]!r}, not an "
                              f"elementwise ufunc op")
        lowest = 0 if step == 0 else -1
        for r in item[1]:
            if not isinstance(r, int) or isinstance(r, bool) or not lowest <= r < n_inputs:
                raise FormatError(f"{what}: step {step} refers to input {r!r} of {n_inputs}")


def _infer(op: str, inputs: list, attrs: dict, spec, what: str) -> None:
    if op not in REGISTRY:
        raise FormatError(f"{what}: unknown op {op!r}; this knetflow has no op of that name")
    if op == "fused":
        _check_fused(attrs, len(inputs), what)
    try:
        inferred = REGISTRY[op].infer(*[i.spec for i in inputs], **attrs)
    except Exception as e:  # noqa: BLE001 - any failure of the shape rule means a bad file
        raise FormatError(f"{what}: {op} rejects its stored inputs and attributes: "
                          f"{type(e).__name__}: {e}") from None
    if inferred != spec and not _widened_integers(spec, inferred):
        raise FormatError(f"{what}: the file says {spec!r} but {op} gives {inferred!r} for "
                          f"inputs {', '.join(fmt(i.spec) for i in inputs)}")
    return inferred


def _widened_integers(stored, inferred) -> bool:
    """Whether `stored` is what files written before integer sums declared NumPy's dtype
    say where `inferred` is now: the same shape, an integer (or bool) dtype narrower than
    64 bits where the sum, the product, or what follows from them is 64 bits wide. Their
    plans gave the 64-bit values all along; the inferred spec is read."""
    try:
        old, new = np.dtype(stored.dtype), np.dtype(inferred.dtype)
    except (AttributeError, TypeError):  # multi-output specs
        return False
    return (stored.shape == inferred.shape and old.kind in "biu" and old.itemsize < 8
            and new in (np.dtype("int64"), np.dtype("uint64")))


def _node(k: int, data, nodes: list, values: dict, fill) -> Node:
    what = f"node {k}"
    _want(data, dict, what)
    op = _want(data.get("op"), str, f"{what} op")
    what = f"node {k} ({op[:40]})"
    refs = _want(data.get("in"), list, f"{what} inputs")
    for r in refs:
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r < k:
            raise FormatError(f"{what}: input {r!r} is not the position of an earlier node")
    attrs = _want(data.get("attrs"), dict, f"{what} attrs")
    if not all(isinstance(key, str) for key in attrs):
        raise FormatError(f"{what}: attribute names must be strings")
    spec = decode_spec(data.get("spec"), f"{what} spec")
    inputs = [nodes[r] for r in refs]
    if op in LEAF_OPS:
        if inputs:
            raise FormatError(f"{what}: a {op} node has no inputs")
        attrs = _leaf_attrs(op, attrs, spec, values, fill, what)
    else:
        spec = _infer(op, inputs, attrs, spec, what)
    name, device = data.get("name"), data.get("device")
    for field, value in (("name", name), ("device", device)):
        if value is not None:
            _want(value, str, f"{what} {field}")
    where = _want(data.get("where", "?"), str, f"{what} where")
    return Node(op, tuple(inputs), attrs, spec, name=name, device=device, where=where)


def _positions(data, n: int, what: str) -> list:
    _want(data, list, what)
    for r in data:
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r < n:
            raise FormatError(f"{what}: {r!r} is not the position of a node")
    return data


def _check_leaf_names(nodes: list) -> None:
    """Inputs and params have distinct names, all together: a feed names either."""
    first: dict = {}
    for k, node in enumerate(nodes):
        if node.op not in ("input", "param"):
            continue
        name = node.attrs["name"]
        if name in first:
            j = first[name]
            kinds = f"two {node.op} nodes" if nodes[j].op == node.op else "an input and a param"
            raise FormatError(f"{kinds} named {name[:60]!r} (nodes {j} and {k})")
        first[name] = k


def _check_all_used(nodes: list, graph: Graph) -> None:
    """Every node listed is one the graph has (writers list exactly those)."""
    if len(graph.nodes) == len(nodes):
        return
    used = {n.id for n in graph.nodes}
    k = next(k for k, n in enumerate(nodes) if n.id not in used)
    raise FormatError(f"node {k} ({nodes[k].op}) is used by no output, update or listed "
                      f"input")


def decode_graph(data, values=None, fill=None) -> Graph:
    """The Graph of plain `data`, its params given `values` by name; FormatError if bad.

    A param with no value in `values` gets `fill(name, spec, init, what)`, or
    none (a symbol file's params) when `fill` is None.
    """
    _want(data, dict, "graph")
    items = _want(data.get("nodes"), list, "graph nodes")
    nodes: list = []
    for k, item in enumerate(items):
        nodes.append(_node(k, item, nodes, values or {}, fill))
    inputs = _positions(data.get("inputs", []), len(nodes), "graph inputs")
    outputs = _positions(data.get("outputs"), len(nodes), "graph outputs")
    updates = _want(data.get("updates", {}), dict, "graph updates")
    _positions(list(updates.values()), len(nodes), "graph updates")
    for r in inputs:
        if nodes[r].op != "input":
            raise FormatError(f"graph inputs: node {r} is a {nodes[r].op} node, not an input")
    if len(set(inputs)) != len(inputs):
        raise FormatError(f"graph inputs: {inputs[:16]} lists a node twice")
    _check_leaf_names(nodes)
    graph = Graph([nodes[r] for r in outputs], inputs=[nodes[r] for r in inputs],
                  updates={_want(k, str, "update name"): nodes[r] for k, r in updates.items()})
    _check_all_used(nodes, graph)
    try:
        graph.verify()
    except AssertionError as e:
        raise FormatError(f"invalid graph: {e}") from None
    return graph
