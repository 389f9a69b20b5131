"""Instruction order of a partitioned graph: one global order, chosen by simulation.

Each executor runs its device's instructions in a fixed order, so the order
decides how long devices wait for each other. The partitioner's order (the
graph's topological order) can make a device idle for no reason: cpu:0 sends
a parameter only after its own first matmul, and cpu:1, which needs it, waits
that long; or cpu:0 blocks on a late `recv` while work it could do piles up.

`schedule(part, kinds)` simulates the executors with the cost model and
orders each device's nodes by simulated start time: at every step the device
that can start soonest takes its next node, a `send` first among those ready
(its peer may be waiting), then the earliest in the graph's order; a node
waiting for a `recv` yields to nodes that can run now. Every device's order
is the restriction of one global topological order (start times, ties broken
by the graph's order), so executors following their own orders never wait on
each other in a cycle (sends never block).

    before:  cpu:0  mm0 send(b0) add ...   cpu:1  recv(b0) ......... add
    after:   cpu:0  send(b0) mm0 add ...   cpu:1  recv(b0) mm0 add ...
"""

from __future__ import annotations

import heapq

from knetflow.scheduler.costs import CostModel


def schedule(part, kinds: dict, cost: CostModel | None = None) -> None:
    """Reorder every graph of `part` in place (see module docstring).

    `kinds` maps a device name to its kind ("cpu", "gpu", "sim") for the cost model.
    """
    cost = cost or CostModel()
    device_of, preds, rank = {}, {}, {}
    for d, g in part.graphs.items():
        for k, n in enumerate(g.nodes):
            if n.id not in device_of:
                device_of[n.id] = d
                preds[n.id] = [i.id for i in n.inputs]
                rank[n.id] = (k, n)
    nodes = list(_nodes(part))
    sends = {id(n.attrs["channel"]): n.id for n in nodes if n.op == "send"}
    for n in nodes:
        if n.op == "recv":  # a recv runs after its send on the other device
            preds[n.id].append(sends[id(n.attrs["channel"])])
    start = _simulate(part, device_of, preds, rank, kinds, cost)
    for g in part.graphs.values():  # leaves (inputs, params) are bound before anything runs
        g.nodes = tuple(sorted(g.nodes, key=lambda n: (-1.0 if n.is_leaf else start[n.id],
                                                       rank[n.id][0])))


def _nodes(part):
    seen = set()
    for g in part.graphs.values():
        for n in g.nodes:
            if n.id not in seen:
                seen.add(n.id)
                yield n


def _simulate(part, device_of, preds, rank, kinds, cost) -> dict:
    """Simulated start time of every node (leaves: 0, ahead of everything)."""
    users: dict = {i: [] for i in preds}
    waiting = {}
    for i, ps in preds.items():
        ps = [p for p in ps if p in preds]
        waiting[i] = len(ps)
        for p in ps:
            users[p].append(i)
    devices = list(part.graphs)
    free = dict.fromkeys(devices, 0.0)
    pending = {d: [] for d in devices}      # (ready time, order, id): inputs not there yet
    ready = {d: [] for d in devices}        # (not a send, order, id): can run now
    ready_at = dict.fromkeys(preds, 0.0)
    start, finish = {}, {}
    for i, w in waiting.items():
        if w == 0:
            heapq.heappush(pending[device_of[i]], (0.0, rank[i][0], i))
    remaining = len(preds)
    while remaining:
        best = None
        for d in devices:  # the device that can start a node soonest
            while pending[d] and pending[d][0][0] <= free[d]:
                _, order, i = heapq.heappop(pending[d])
                heapq.heappush(ready[d], (rank[i][1].op != "send", order, i))
            if ready[d]:
                when = free[d]
            elif pending[d]:
                when = pending[d][0][0]
            else:
                continue
            if best is None or when < best[0]:
                best = (when, d)
        when, d = best
        if not ready[d]:
            _, order, i = heapq.heappop(pending[d])
        else:
            _, order, i = heapq.heappop(ready[d])
        node = rank[i][1]
        start[i] = when
        finish[i] = when + _duration(node, kinds[d], cost)
        free[d] = finish[i]
        remaining -= 1
        for u in users[i]:
            arrival = finish[i]
            if node.op == "send":
                arrival += cost.transfer_time(node.inputs[0])
            ready_at[u] = max(ready_at[u], arrival)
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(pending[device_of[u]], (ready_at[u], rank[u][0], u))
    return start


def _duration(node, kind, cost) -> float:
    if node.is_leaf or node.op == "recv":
        return 0.0
    return cost.compute_time(node, kind)
