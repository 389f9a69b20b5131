"""`kf.save` / `kf.load`: one self-contained file; state trees for the training layer.

A file has a kind (docs/FORMAT.md, "Kinds"):

- `model`: a graph, the values of its params and metadata (`kf.save`);
- `symbol`: a graph alone (`prefix-symbol.kfg` of a checkpoint);
- `params`: arg and aux params, optimizer state and epoch (`prefix-0001.kfp`);
- `state`: any tree of plain values and arrays (`save_state`), e.g. an
  optimizer's state or a training loop's epoch, step, RNG state and history.

`kf.load` reads any kind and returns a `LoadedFile`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np

from knetflow.errors import FormatError
from knetflow.graph.node import Graph
from knetflow.serialize import format as _format
from knetflow.serialize.files import atomic_write
from knetflow.serialize.graph_codec import decode_graph, encode_graph, param_values
from knetflow.serialize.params_fit import refuse_extra, refuse_missing


@dataclass
class LoadedFile:
    """What `kf.load` returns: the file's graph, params, metadata and state.

    `graph` is None for params and state files; `state` holds a state file's
    tree, or a params file's `{"epoch", "arg_params", "aux_params",
    "optimizer_state"}`.
    """

    kind: str
    graph: Graph | None = None
    params: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    state: object = None
    format_version: int = _format.FORMAT_VERSION
    knetflow_version: str = "?"
    size: int = 0

    def __repr__(self) -> str:
        graph = f", {len(self.graph.nodes)} nodes" if self.graph is not None else ""
        return (f"<LoadedFile {self.kind}{graph}, {len(self.params)} params, "
                f"format {self.format_version}, {self.size} bytes>")


# ---- writing ----


def write_file(path, kind: str, tree, summary=None, durable: bool = True) -> str:
    """Write a file of `kind` holding `tree` atomically at `path`; the path."""
    path = os.fspath(path)
    with atomic_write(path, durable=durable) as f:
        _format.write(f, kind, tree, summary)
    return path


def _plain_metadata(metadata) -> dict:
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise TypeError("metadata must be a dict with string keys")
    return dict(metadata)


def resolve(obj, params=None) -> tuple:
    """(graph, param values, metadata) of what `kf.save` was given.

    Accepts a Graph, a Symbol or a list of Symbols (the outputs), a Plan (its
    source graph and current params), or any object with a
    `__knetflow_save__()` method returning a dict with `graph` and optionally
    `params` and `metadata` (models such as FeedForward implement it).

    A model file holds values for its graph's params only: a name in `params`
    that the graph lacks is a ValueError (a typo would otherwise be saved and
    ignored); values the object itself holds for params its graph does not use
    are left out.
    """
    from knetflow.scheduler.plan import Plan

    metadata: dict = {}
    values = {}
    if hasattr(obj, "__knetflow_save__"):
        saved = obj.__knetflow_save__()
        obj, values = saved["graph"], dict(saved.get("params") or {})
        metadata = dict(saved.get("metadata") or {})
    if isinstance(obj, Plan):
        values = dict(obj.params)
        obj = obj.source
    graph = obj if isinstance(obj, Graph) else Graph(obj)
    names = {n.attrs["name"] for n in graph.params}
    unknown = sorted(name for name in (params or {}) if name not in names)
    if unknown:
        raise ValueError(f"params has values for {unknown}, which the graph does not have; "
                         f"its params are {sorted(names)}")
    values = {name: v for name, v in values.items() if name in names}
    values.update(params or {})
    return graph, param_values(graph, values), metadata


def model_tree(obj, params=None, metadata=None) -> dict:
    """The tree of a model file (graph, params, metadata)."""
    graph, values, meta = resolve(obj, params)
    meta.update(_plain_metadata(metadata or {}))
    return {"graph": encode_graph(graph), "params": values, "metadata": meta}


def save(path, graph, params=None, **metadata) -> str:
    """Save a graph and its param values to one self-contained file (MXNet `save`).

    `graph` is a Graph, Symbol(s), a Plan or a model; `params` (name -> array)
    overrides param values; keyword arguments are stored as metadata. The write
    is atomic. Returns the path.

    Example:
        >>> import knetflow as kf, numpy as np, os, tempfile
        >>> x = kf.placeholder("x", (None, 2))
        >>> w = kf.param("w", value=np.eye(2, dtype="float32"))
        >>> path = kf.save(os.path.join(tempfile.mkdtemp(), "m.kf"), x @ w, note="identity")
        >>> kf.load(path).metadata
        {'note': 'identity'}
    """
    tree = model_tree(graph, params, metadata)
    return write_file(path, "model", tree, {"nodes": len(tree["graph"]["nodes"]),
                                            "params": len(tree["params"])})


def dumps(graph, params=None, **metadata) -> bytes:
    """The bytes `save` would write (for sending a model over a network)."""
    return to_bytes("model", model_tree(graph, params, metadata))


def to_bytes(kind: str, tree, summary=None) -> bytes:
    """A whole file of `kind` holding `tree`, in memory."""
    buffer = io.BytesIO()
    _format.write(buffer, kind, tree, summary)
    return buffer.getvalue()


def save_state(path, state, **metadata) -> str:
    """Save a tree of plain values and arrays (optimizer or training state) atomically.

    Dicts, lists, tuples, numbers (ints of any size), strings, bytes and arrays
    nest freely; a NumPy Generator's `bit_generator.state` round-trips exactly.

    Example:
        >>> import knetflow as kf, numpy as np, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "opt.kfs")
        >>> _ = kf.serialize.save_state(path, {"step": 3, "m": [np.zeros(2)]})
        >>> kf.serialize.load_state(path)["step"]
        3
    """
    return write_file(path, "state", {"state": state, "metadata": _plain_metadata(metadata)})


# ---- reading ----


def _params(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise FormatError(f"{what} is not a map")
    for name, array in value.items():
        if not isinstance(name, str) or not isinstance(array, np.ndarray):
            raise FormatError(f"{what}: entry {name!r} is not a name and an array")
    return value


def _dict(tree, key: str, default=None) -> dict:
    value = tree.get(key, default)
    if not isinstance(value, dict):
        raise FormatError(f"{key!r} is not a map")
    return value


def interpret(container, values=None, fill=None) -> LoadedFile:
    """The LoadedFile of a parsed container; FormatError if its tree is not of its kind.

    A model file's params must be exactly its graph's (docs/FORMAT.md); a symbol
    file holds no values: `values` (param name -> array) gives them, and
    `fill` (see decode_graph) says what a param without one gets.
    """
    tree = container.tree
    if not isinstance(tree, dict):
        raise FormatError(f"the {container.kind} tree is a {type(tree).__name__}, not a map")
    out = LoadedFile(container.kind, metadata=_dict(tree, "metadata", {}),
                     format_version=container.version,
                     knetflow_version=container.knetflow_version, size=container.size)
    if container.kind == "model":
        out.params = _params(tree.get("params", {}), "params")
        out.graph = decode_graph(_graph(tree, "model"), out.params,
                                 refuse_missing("the file's params"))
        refuse_extra(out.graph, out.params, "params")
    elif container.kind == "symbol":
        stored = _params(tree.get("params", {}), "params")
        if stored:
            raise FormatError(f"a symbol file holds no param values, this one has "
                              f"{next(iter(stored))[:60]!r}")
        out.graph = decode_graph(_graph(tree, "symbol"), values, fill)
    elif container.kind == "params":
        arg = _params(tree.get("arg_params", {}), "arg_params")
        aux = _params(tree.get("aux_params", {}), "aux_params")
        both = [name for name in arg if name in aux]
        if both:
            raise FormatError(f"{both[0][:60]!r} is in both arg_params and aux_params")
        epoch = tree.get("epoch")
        if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool)):
            raise FormatError("epoch is not an int")
        out.params = {**arg, **aux}
        out.state = {"epoch": epoch, "arg_params": arg, "aux_params": aux,
                     "optimizer_state": tree.get("optimizer_state")}
    else:
        if "state" not in tree:
            raise FormatError("a state file has no state")
        out.state = tree["state"]
    return out


def _graph(tree: dict, kind: str):
    if "graph" not in tree:
        raise FormatError(f"a {kind} file has no graph")
    return tree["graph"]


def _where(path, error: FormatError) -> FormatError:
    return FormatError(f"{os.fspath(path)}: {error}")


def load(path, mmap: bool = False) -> LoadedFile:
    """Load a file written by `save` (or any knetflow file); see LoadedFile (MXNet `load`).

    Never executes code from the file; a malformed, truncated, corrupt or hostile
    file raises `kf.FormatError` saying what is wrong. Arrays are views of the
    buffer the file was read into; with `mmap=True`, of a copy-on-write memory
    map of the file (no copy at all; do not rewrite the file in place meanwhile).
    """
    try:
        return interpret(_format.read(path, map_file=mmap))
    except FormatError as e:
        raise _where(path, e) from None


def loads(data) -> LoadedFile:
    """Load a file held in memory (bytes); its arrays are read-only views of `data`."""
    return interpret(_format.parse(data))


def load_state(path, mmap: bool = False):
    """The state tree saved by `save_state` (`mmap` as for `load`)."""
    loaded = load(path, mmap=mmap)
    if loaded.kind != "state":
        raise FormatError(f"{os.fspath(path)}: a {loaded.kind} file, not a state file")
    return loaded.state
