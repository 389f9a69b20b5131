"""Memory planning: liveness of every value and reuse of preallocated buffers.

Works on a specialized graph (static shapes). A value's *storage* is the node
that allocated it; view ops (reshape, transpose, broadcasts) share their
input's storage. A storage lives from its producer to the last instruction
that reads any value in it. Ops that accept `out=` write into a pooled buffer
of the same shape and dtype released by a dead storage; a ufunc (or an op
marked `inplace`) may even write over its own dying input. Storages that reach an output are never
pooled, so results handed to the user are never overwritten by a later run.

A multi-output op marked `outs_arg` whose outputs are read only through `get`
nodes has one storage per output: the first `get` of that output names it,
every other `get` of it and their views share it. Such a storage is born at
the op (which writes it), not at its `get`, and lives to its own last read, so
a large output read once early is released early. The op is given `out=` a
tuple holding each output's buffer, or None for an output that reaches a
result, is never read, or has no static shape (the op allocates that one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from knetflow.ops.base import REGISTRY

OUTPUT = 1 << 60  # "lives until the end": outputs


@dataclass
class MemoryPlan:
    """Side tables keyed by node id: buffer per node, last use per node."""

    buffers: list = field(default_factory=list)     # index -> (shape, dtype)
    buffer_of: dict = field(default_factory=dict)   # node id -> buffer index (its `out=`)
    outs_of: dict = field(default_factory=dict)     # node id -> (buffer index or None, ...)
    last_use: dict = field(default_factory=dict)    # node id -> instruction position
    peak_bytes: int = 0
    buffer_bytes: int = 0


def split_outputs(graph) -> dict:
    """Multi-output nodes whose outputs are separate storages: node id -> {index: storage id}.

    A node qualifies when its op is marked `outs_arg`, it is not itself a result
    and every node reading it is a `get`; the storage of output i is the id of
    the first `get` of i in the graph's order.
    """
    readers: dict = {}
    for n in graph.nodes:
        for i in n.inputs:
            readers.setdefault(i.id, []).append(n)
    results = {o.id for o in graph.results}
    split = {}
    for n in graph.nodes:
        if n.is_leaf or not REGISTRY[n.op].outs_arg or n.id in results:
            continue
        gets = readers.get(n.id, [])
        if all(r.op == "get" for r in gets):
            split[n.id] = {}
            for r in gets:
                split[n.id].setdefault(_index(r), r.id)
    return split


def _index(get) -> int:
    """The output a `get` node takes, counted from 0 (its attribute may count from the end)."""
    return get.attrs.get("index", 0) % len(get.inputs[0].spec)


def storage_roots(graph, split=None) -> dict:
    """node id -> id of the storage holding its value (see module docstring)."""
    split = split_outputs(graph) if split is None else split
    root = {}
    for n in graph.nodes:
        op = None if n.is_leaf else REGISTRY[n.op]
        if op is not None and n.op == "get" and n.inputs[0].id in split:
            root[n.id] = split[n.inputs[0].id][_index(n)]
        elif op is not None and op.view:
            root[n.id] = root[n.inputs[0].id]
        else:
            root[n.id] = n.id
    return root


def liveness(graph, root) -> dict:
    """storage id -> position of the last instruction that reads it (OUTPUT for outputs)."""
    last = {}
    for pos, n in enumerate(graph.nodes):
        for i in n.inputs:
            last[root[i.id]] = pos
    for o in graph.results:
        last[root[o.id]] = OUTPUT
    for n in graph.nodes:  # a sent value leaves the device: it may be shared, never reused
        if n.op == "send":
            last[root[n.inputs[0].id]] = OUTPUT
    return last


def plan_memory(graph) -> MemoryPlan:
    """Assign pooled buffers to `out=` ops and compute the peak of live bytes."""
    plan = MemoryPlan()
    split = split_outputs(graph)
    root = storage_roots(graph, split)
    last = liveness(graph, root)
    size = _storage_sizes(graph, split)
    held: dict = {}           # storage id -> buffer index, for every pooled storage
    dying: dict = {}          # position -> storages whose last read is there
    for sid, pos in last.items():
        dying.setdefault(pos, []).append(sid)
    free: dict = {}           # (shape, dtype) -> [buffer indices]
    born_at_op = {sid for outs in split.values() for sid in outs.values()}
    live, peak = 0, 0
    for pos, n in enumerate(graph.nodes):
        plan.last_use[n.id] = last.get(root[n.id], pos)
        handed_over, born = None, []
        if not (n.is_leaf or root[n.id] != n.id or n.id in born_at_op):
            born = [n.id]
            if n.id in split:
                _assign_outputs(n, split[n.id], last, plan, free, held)
                born += split[n.id].values()
            else:
                handed_over = _assign(n, pos, root, last, plan, free, held)
            if handed_over is None:  # else n took over a dying input's bytes
                live += size[n.id]
            live += sum(size[s] for s in born[1:])
            peak = max(peak, live)
        for sid in dying.get(pos, ()):  # also where a view or a `get` reads last
            if sid == handed_over:
                continue
            live -= size[sid]
            if sid in held:
                buf = held[sid]
                free.setdefault(plan.buffers[buf], []).append(buf)
        for sid in born:  # a value nothing reads dies at once
            if sid not in last:
                live -= size[sid]
    plan.peak_bytes = peak
    plan.buffer_bytes = sum(_nbytes(s, d) for s, d in plan.buffers)
    return plan


def _storage_sizes(graph, split) -> dict:
    """storage id -> bytes; a split node keeps only the outputs no `get` takes."""
    size = {}
    for n in graph.nodes:
        size[n.id] = 0 if n.is_leaf else n.spec.nbytes or 0
        if n.id in split:
            size[n.id] = sum(s.nbytes or 0 for k, s in enumerate(n.spec) if k not in split[n.id])
    return size


def _assign(n, pos, root, last, plan, free, held):
    """Give n a buffer if it takes `out=`; return the input storage it overwrites, if any."""
    op = REGISTRY[n.op]
    if not (op.out_arg and n.spec.is_static and n.spec.nbytes
            and last.get(n.id, pos) != OUTPUT):
        return None
    if op.ufunc or op.inplace:
        for i in n.inputs:
            sid = root[i.id]
            if (sid == i.id and sid in held and last.get(sid) == pos
                    and i.spec == n.spec
                    and sum(root[j.id] == sid for j in n.inputs) == 1):
                plan.buffer_of[n.id] = held[n.id] = held[sid]
                return sid
    plan.buffer_of[n.id] = held[n.id] = _take(n.spec, plan, free)
    return None


def _assign_outputs(n, outs, last, plan, free, held):
    """Buffers for the output storages of split node n (see module docstring)."""
    bufs = []
    for k, spec in enumerate(n.spec):
        sid = outs.get(k)
        if (sid is None or last.get(sid, OUTPUT) == OUTPUT or not spec.is_static
                or not spec.nbytes):
            bufs.append(None)
            continue
        held[sid] = _take(spec, plan, free)
        bufs.append(held[sid])
    plan.outs_of[n.id] = tuple(bufs)


def _take(spec, plan, free) -> int:
    """A free buffer of spec's shape and dtype, else a new one: its index."""
    key = (spec.shape, spec.dtype)
    if free.get(key):
        return free[key].pop()
    plan.buffers.append(key)
    return len(plan.buffers) - 1


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
