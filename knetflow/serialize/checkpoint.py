"""Checkpoints: MXNet's pair of files, and a manager that keeps the latest and the best.

`save_checkpoint(prefix, epoch, symbol, arg_params, aux_params)` writes
`prefix-symbol.kfg` (the graph, kind "symbol") and `prefix-0001.kfp` (the
params, optimizer state and metrics of epoch 1, kind "params"), each
atomically. The symbol file is written first, so a crash between the two
leaves the previous epoch's params beside a symbol file that is either the old
one or the new one; `load_checkpoint` checks that the params fit the graph:
every param of the symbol has a value of its spec, and no value names a param
the symbol lacks, unless the caller allows either (MXNet's `allow_missing`,
`allow_extra`).
"""

from __future__ import annotations

import os
import re
import warnings

from knetflow.errors import FormatError
from knetflow.graph.node import Graph
from knetflow.serialize import format as _format
from knetflow.serialize.files import atomic_write, fsync_dir, is_temp
from knetflow.devices.transfers import to_host
from knetflow.serialize.graph_codec import encode_graph
from knetflow.serialize.params_fit import draw_missing, refuse_extra, refuse_missing
from knetflow.serialize.saving import _plain_metadata, interpret, to_bytes, write_file


class Checkpoint(tuple):
    """`(symbol, arg_params, aux_params)` as MXNet returns them, plus more attributes.

    `.graph` (the symbol, a Graph whose params hold the checkpoint's values),
    `.arg_params`, `.aux_params`, `.optimizer_state`, `.epoch`, `.metrics`,
    `.metadata`, and `.initialized`: the params the checkpoint had no value for,
    with the values drawn for them at load (only with `allow_missing=True`).
    """

    def __new__(cls, graph, arg_params, aux_params, **extra):
        self = super().__new__(cls, (graph, arg_params, aux_params))
        self.graph, self.arg_params, self.aux_params = graph, arg_params, aux_params
        self.optimizer_state = extra.get("optimizer_state")
        self.epoch = extra.get("epoch")
        self.metrics = extra.get("metrics", {})
        self.metadata = extra.get("metadata", {})
        self.initialized = extra.get("initialized", {})
        return self


def symbol_path(prefix) -> str:
    """`prefix-symbol.kfg`, the graph file of a checkpoint."""
    return f"{os.fspath(prefix)}-symbol.kfg"


def params_path(prefix, epoch: int) -> str:
    """`prefix-0001.kfp`, the params file of epoch 1 of a checkpoint."""
    return f"{os.fspath(prefix)}-{int(epoch):04d}.kfp"


def _graph_of(symbol) -> Graph:
    from knetflow.scheduler.plan import Plan

    if hasattr(symbol, "__knetflow_save__"):
        symbol = symbol.__knetflow_save__()["graph"]
    if isinstance(symbol, Plan):
        symbol = symbol.source
    return symbol if isinstance(symbol, Graph) else Graph(symbol)


def _named_arrays(params, what: str) -> dict:
    params = dict(params or {})
    for name in params:
        if not isinstance(name, str):
            raise TypeError(f"{what}: parameter names must be strings, got {name!r}")
    return {name: to_host(value) for name, value in params.items()}


def symbol_bytes(symbol) -> bytes:
    """The bytes of a symbol file for `symbol` (a Graph, Symbol(s), Plan or model)."""
    return to_bytes("symbol", {"graph": encode_graph(_graph_of(symbol)), "metadata": {}})


def _write_params(prefix, epoch, arg_params, aux_params, optimizer_state, metrics,
                  metadata) -> str:
    metrics = {str(k): float(v) for k, v in (metrics or {}).items()}
    arg, aux = _named_arrays(arg_params, "arg_params"), _named_arrays(aux_params, "aux_params")
    both = sorted(set(arg) & set(aux))
    if both:
        raise ValueError(f"{both} in both arg_params and aux_params: a name has one value")
    tree = {"epoch": int(epoch), "arg_params": arg, "aux_params": aux,
            "optimizer_state": optimizer_state, "metadata": _plain_metadata(metadata)}
    return write_file(params_path(prefix, epoch), "params", tree,
                      {"epoch": int(epoch), "metrics": metrics})


def _write_symbol(prefix, data: bytes) -> str:
    path = symbol_path(prefix)
    with atomic_write(path) as f:
        f.write(data)
    return path


def save_checkpoint(prefix, epoch: int, symbol, arg_params, aux_params=None,
                    optimizer_state=None, metrics=None, **metadata) -> tuple:
    """Write `prefix-symbol.kfg` and `prefix-%04d.kfp` atomically (MXNet `save_checkpoint`).

    `optimizer_state` is any tree of plain values and arrays (see `save_state`);
    `metrics` (name -> number) are kept in the params file's header, where
    `CheckpointManager` reads them without loading the arrays. Returns both paths.

    Example:
        >>> import knetflow as kf, numpy as np, os, tempfile
        >>> x = kf.placeholder("x", (None, 2)); w = kf.param("w", (2, 2))
        >>> prefix = os.path.join(tempfile.mkdtemp(), "mlp")
        >>> _ = kf.save_checkpoint(prefix, 1, x @ w, {"w": np.eye(2, dtype="float32")}, {})
        >>> graph, arg, aux = kf.load_checkpoint(prefix, 1)
        >>> arg["w"].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    sym = _write_symbol(prefix, symbol_bytes(symbol))
    return sym, _write_params(prefix, epoch, arg_params, aux_params, optimizer_state, metrics,
                              metadata)


def load_checkpoint(prefix, epoch: int, allow_missing: bool = False,
                    allow_extra: bool = False) -> Checkpoint:
    """Load `prefix-symbol.kfg` and `prefix-%04d.kfp` (MXNet `load_checkpoint`).

    Unpacks as `(graph, arg_params, aux_params)`; the graph's params hold the
    checkpoint's values, so `kf.compile(graph)` runs it at once.

    The params must fit the symbol: a param of the symbol with no value in
    `arg_params` or `aux_params` is a FormatError, unless `allow_missing`: then
    it is initialized now from its `init` (under `kf.seed`), listed in the
    checkpoint's `.initialized` and named in a warning. A value for a name the
    symbol lacks is a FormatError unless `allow_extra`; it is then returned
    but not used by the graph.

    Example:
        >>> import knetflow as kf, numpy as np, os, tempfile
        >>> x = kf.placeholder("x", (None, 2))
        >>> w, b = kf.param("w", (2, 2)), kf.param("b", (2,), init="zeros")
        >>> prefix = os.path.join(tempfile.mkdtemp(), "net")
        >>> _ = kf.save_checkpoint(prefix, 1, x @ w + b, {"w": np.eye(2, dtype="float32")})
        >>> kf.load_checkpoint(prefix, 1)
        Traceback (most recent call last):
        ...
        knetflow.errors.FormatError: ...: node 2 (param): param 'b' has no value in ...
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as said:
        ...     warnings.simplefilter("always")
        ...     ckpt = kf.load_checkpoint(prefix, 1, allow_missing=True)
        >>> ckpt.initialized, str(said[0].message).endswith("initialized them: b (zeros)")
        ({'b': array([0., 0.], dtype=float32)}, True)
    """
    path = params_path(prefix, epoch)
    try:
        container = _format.read(path)
        params = interpret(container)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    if params.kind != "params":
        raise FormatError(f"{path}: a {params.kind} file, not a params file")
    sym = symbol_path(prefix)
    fill = None if allow_missing else refuse_missing(
        "arg_params or aux_params", " (allow_missing=True initializes it)")
    try:
        container_sym = _format.read(sym)
        symbol = interpret(container_sym, values=params.params, fill=fill)
        if symbol.kind != "symbol":
            raise FormatError(f"a {symbol.kind} file, not a symbol file")
        if not allow_extra:
            refuse_extra(symbol.graph, params.params, os.path.basename(path),
                         " (allow_extra=True accepts it)")
        drawn = draw_missing(symbol.graph) if allow_missing else {}
        if drawn:  # the graph again, its params all holding values
            symbol = interpret(container_sym, values={**params.params, **drawn})
    except FormatError as e:
        raise FormatError(f"{sym} (with {os.path.basename(path)}): {e}") from None
    if drawn:
        # an init of None stands for xavier_uniform (initializers.initial_value)
        inits = [symbol.graph.param(name).attrs.get("init") or "xavier_uniform"
                 for name in drawn]
        inits = ", ".join(f"{name} ({init})" for name, init in zip(drawn, inits))
        warnings.warn(f"{path} has no values for {len(drawn)} param(s) of its symbol "
                      f"(allow_missing=True); initialized them: {inits}", stacklevel=2)
    state = params.state
    return Checkpoint(symbol.graph, state["arg_params"], state["aux_params"],
                      optimizer_state=state["optimizer_state"], epoch=state["epoch"],
                      metrics=container.summary.get("metrics", {}), metadata=params.metadata,
                      initialized=drawn)


class CheckpointManager:
    """Checkpoints in one directory: keeps the `keep` latest and, with `best`, the best.

    `best` names a metric passed to `save(..., metrics=...)`; `mode` says
    whether lower ("min") or higher ("max") is better.

    Example:
        >>> import knetflow as kf, numpy as np, tempfile
        >>> x = kf.placeholder("x", (None, 2)); w = kf.param("w", (2, 2))
        >>> manager = kf.serialize.CheckpointManager(tempfile.mkdtemp(), keep=2)
        >>> for epoch in range(1, 5):
        ...     _ = manager.save(epoch, x @ w, {"w": np.full((2, 2), epoch, "float32")})
        >>> manager.epochs(), manager.load().epoch
        ([3, 4], 4)
    """

    def __init__(self, directory, keep: int = 5, prefix: str = "checkpoint", best=None,
                 mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory, self.keep, self.prefix = os.fspath(directory), int(keep), prefix
        self.best, self.mode = best, mode
        self._symbol = None
        os.makedirs(self.directory, exist_ok=True)
        self._pattern = re.compile(re.escape(prefix) + r"-(\d+)\.kfp")
        self._remove_stale_temp_files()

    @property
    def path_prefix(self) -> str:
        """The `prefix` its files are named by: `directory/prefix`."""
        return os.path.join(self.directory, self.prefix)

    def _remove_stale_temp_files(self) -> None:
        # left by a crash mid-write; one manager owns a directory's prefix
        for name in os.listdir(self.directory):
            if is_temp(name) and name.startswith(f".{self.prefix}-"):
                try:
                    os.remove(os.path.join(self.directory, name))
                except OSError:
                    pass

    def save(self, epoch: int, symbol, arg_params, aux_params=None, optimizer_state=None,
             metrics=None, **metadata) -> str:
        """Write the checkpoint of `epoch`, then drop old ones; the params file's path."""
        data = symbol_bytes(symbol)
        if data != self._symbol or not os.path.exists(symbol_path(self.path_prefix)):
            _write_symbol(self.path_prefix, data)
            self._symbol = data
        path = _write_params(self.path_prefix, epoch, arg_params, aux_params, optimizer_state,
                             metrics, metadata)
        self._prune()
        return path

    def epochs(self) -> list:
        """Epochs with a params file, oldest first."""
        found = []
        for name in os.listdir(self.directory):
            match = self._pattern.fullmatch(name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def latest(self):
        """The latest epoch saved, or None."""
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def metrics(self, epoch: int) -> dict:
        """The metrics saved with `epoch` (read from the file's header only)."""
        return _format.read_summary(params_path(self.path_prefix, epoch)).summary.get(
            "metrics", {})

    def best_epoch(self):
        """The epoch with the best value of the `best` metric, or None."""
        if self.best is None:
            return None
        scored = []
        for epoch in self.epochs():
            try:
                value = self.metrics(epoch).get(self.best)
            except (FormatError, OSError):
                continue
            if isinstance(value, (int, float)):
                scored.append((value if self.mode == "min" else -value, epoch))
        return min(scored)[1] if scored else None

    def load(self, epoch=None, allow_missing: bool = False,
             allow_extra: bool = False) -> Checkpoint:
        """The checkpoint of `epoch`; by default the latest one that loads.

        A damaged latest file (a disk error; crashes never make one) is skipped
        with a warning, falling back to the one before. `allow_missing` and
        `allow_extra` as for `load_checkpoint`.
        """
        fit = {"allow_missing": allow_missing, "allow_extra": allow_extra}
        if epoch is not None:
            return load_checkpoint(self.path_prefix, epoch, **fit)
        epochs = self.epochs()
        if not epochs:
            raise FileNotFoundError(f"no checkpoints named {self.prefix}-*.kfp in "
                                    f"{self.directory}")
        for candidate in reversed(epochs):
            try:
                return load_checkpoint(self.path_prefix, candidate, **fit)
            except FormatError as e:
                if candidate == epochs[0]:
                    raise
                warnings.warn(f"skipping checkpoint {candidate}: {e}", stacklevel=2)
        raise AssertionError("unreachable")

    def load_best(self, allow_missing: bool = False, allow_extra: bool = False) -> Checkpoint:
        """The checkpoint with the best metric (`allow_*` as for `load_checkpoint`)."""
        epoch = self.best_epoch()
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory} has metric "
                                    f"{self.best!r}")
        return load_checkpoint(self.path_prefix, epoch, allow_missing=allow_missing,
                               allow_extra=allow_extra)

    def _prune(self) -> None:
        epochs = self.epochs()
        keep = set(epochs[-self.keep:])
        best = self.best_epoch()
        if best is not None:
            keep.add(best)
        removed = False
        for epoch in epochs:
            if epoch not in keep:
                try:
                    os.remove(params_path(self.path_prefix, epoch))
                    removed = True
                except FileNotFoundError:
                    pass
        if removed:
            fsync_dir(self.directory)
