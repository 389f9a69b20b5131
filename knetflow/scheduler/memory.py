"""Memory planning: liveness of every value and reuse of preallocated buffers.

Works on a specialized graph (static shapes). A value's *storage* is the node
that allocated it; view ops (reshape, transpose, broadcasts) share their
input's storage. A storage lives from its producer to the last instruction
that reads any value in it. Ops that accept `out=` write into a pooled buffer
of the same shape and dtype released by a dead storage; a ufunc (or an op
marked `inplace`) may even write over its own dying input. Storages that reach an output are never
pooled, so results handed to the user are never overwritten by a later run.
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
    buffer_of: dict = field(default_factory=dict)   # node id -> buffer index
    last_use: dict = field(default_factory=dict)    # node id -> instruction position
    peak_bytes: int = 0
    buffer_bytes: int = 0


def storage_roots(graph) -> dict:
    """node id -> id of the node whose allocation holds its value."""
    root = {}
    for n in graph.nodes:
        op = None if n.is_leaf else REGISTRY[n.op]
        root[n.id] = root[n.inputs[0].id] if op is not None and op.view else n.id
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
    root = storage_roots(graph)
    last = liveness(graph, root)
    size = {n.id: (0 if n.is_leaf else n.spec.nbytes or 0) for n in graph.nodes}
    dying: dict = {}          # position -> storages whose last read is there
    for sid, pos in last.items():
        dying.setdefault(pos, []).append(sid)
    free: dict = {}           # (shape, dtype) -> [buffer indices]
    live, peak = 0, 0
    for pos, n in enumerate(graph.nodes):
        plan.last_use[n.id] = last.get(root[n.id], pos)
        if n.is_leaf or root[n.id] != n.id:
            continue
        handed_over = _assign(n, pos, root, last, plan, free)
        if handed_over is None:
            live += size[n.id]
        peak = max(peak, live)
        for sid in dying.get(pos, ()):
            if sid == handed_over:
                continue
            live -= size[sid]
            if sid in plan.buffer_of:
                buf = plan.buffer_of[sid]
                free.setdefault(plan.buffers[buf], []).append(buf)
        if n.id not in last:  # a value nothing reads dies at once
            live -= size[n.id]
    plan.peak_bytes = peak
    plan.buffer_bytes = sum(_nbytes(s, d) for s, d in plan.buffers)
    return plan


def _assign(n, pos, root, last, plan, free):
    """Give n a buffer if it takes `out=`; return the input storage it overwrites, if any."""
    op = REGISTRY[n.op]
    if not (op.out_arg and n.spec.is_static and n.spec.nbytes
            and last.get(n.id, pos) != OUTPUT):
        return None
    if op.ufunc or op.inplace:
        for i in n.inputs:
            sid = root[i.id]
            if (sid == i.id and sid in plan.buffer_of and last.get(sid) == pos
                    and i.spec == n.spec
                    and sum(root[j.id] == sid for j in n.inputs) == 1):
                plan.buffer_of[n.id] = plan.buffer_of[sid]
                return sid
    key = (n.spec.shape, n.spec.dtype)
    if free.get(key):
        plan.buffer_of[n.id] = free[key].pop()
    else:
        plan.buffers.append(key)
        plan.buffer_of[n.id] = len(plan.buffers) - 1
    return None


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
