"""`kf.load_model`: run a saved graph for inference, without the code that built it.

The graph is compiled once when the model loads (for `device`); each input
signature (shapes fed) gets its program on first use, cached by the plan, so
the second `predict` with the same shapes costs one plan run.
"""

from __future__ import annotations

import os

import numpy as np

from knetflow.errors import FeedError, FormatError
from knetflow.serialize.saving import LoadedFile, load


class InferenceModel:
    """A loaded graph with its params, compiled once; see `load_model`.

    `predict(x)` feeds the graph's single input; a graph with several inputs
    takes them positionally (in `input_names` order), by keyword, or as one
    dict. Returns one NumPy array per output (a tuple when there are several).
    """

    def __init__(self, graph, metadata=None, device=None):
        from knetflow.graph.node import Graph
        from knetflow.scheduler.plan import compile

        self.graph = graph
        self.metadata = dict(metadata or {})
        # inference leaves params as saved: a training graph's updates (running
        # statistics, optimizer steps) are not run
        inference = Graph(graph.outputs, inputs=graph.inputs) if graph.updates else graph
        self.plan = compile(inference, devices=device)
        self.input_names = [n.attrs["name"] for n in graph.inputs]
        self.output_names = [n.name or f"output{k}" for k, n in enumerate(graph.outputs)]

    @property
    def params(self) -> dict:
        """Param values by name (the plan's arrays)."""
        return self.plan.params

    def _feed(self, args, kwargs) -> dict:
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            return dict(args[0])
        if len(args) > len(self.input_names):
            raise FeedError(f"predict got {len(args)} inputs; the model's inputs are "
                            f"{self.input_names}")
        feed = dict(zip(self.input_names, args))
        for name, value in kwargs.items():
            if name in feed:
                raise FeedError(f"input {name!r} given twice")
            feed[name] = value
        return feed

    def predict(self, *args, batch_size=None, **kwargs):
        """The graph's outputs for the given inputs, as NumPy arrays (MXNet `predict`).

        With `batch_size`, inputs are split along their first axis into batches
        of at most that many rows and the outputs concatenated.
        """
        feed = self._feed(args, kwargs)
        if batch_size is None:
            return self._unpack(self.plan.run(feed))
        rows = {len(np.asarray(v)) for v in feed.values()}
        if len(rows) != 1:
            raise FeedError(f"batched inputs must have the same number of rows, got {rows}")
        n = rows.pop()
        parts = [self.plan.run({k: np.asarray(v)[i:i + batch_size] for k, v in feed.items()})
                 for i in range(0, n, int(batch_size))]
        outs = tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))
        return self._unpack(outs)

    __call__ = predict

    def _unpack(self, outs):
        outs = tuple(np.asarray(o) for o in outs)
        return outs[0] if len(outs) == 1 else outs

    def __knetflow_save__(self) -> dict:
        return {"graph": self.graph, "params": self.params, "metadata": self.metadata}

    def __repr__(self) -> str:
        return (f"<InferenceModel inputs {self.input_names} -> {self.output_names} "
                f"on {self.plan.device.name}>")


def load_model(path, device=None) -> InferenceModel:
    """Load a model saved by `kf.save` for inference on `device` (MXNet `FeedForward.load`).

    Example:
        >>> import knetflow as kf, numpy as np, os, tempfile
        >>> x = kf.placeholder("x", (None, 2))
        >>> path = kf.save(os.path.join(tempfile.mkdtemp(), "m.kf"), kf.relu(x) * 2)
        >>> kf.load_model(path).predict(np.array([[-1., 3.]], "float32"))
        array([[0., 6.]], dtype=float32)
    """
    loaded = path if isinstance(path, LoadedFile) else load(path)
    if loaded.kind != "model":
        name = os.fspath(path) if not isinstance(path, LoadedFile) else "the file"
        raise FormatError(f"{name}: a {loaded.kind} file, not a model file saved by kf.save "
                          f"(checkpoints load with kf.load_checkpoint)")
    return InferenceModel(loaded.graph, loaded.metadata, device=device)
