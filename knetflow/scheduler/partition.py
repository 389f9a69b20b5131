"""Partitioning: a placed graph cut into one graph per device.

Every cross-device edge becomes a `send` on the producer's device and a
`recv` on the consumer's, one pair per (value, destination) however many
consumers read it there. Inputs are fed to every device that reads them and
constants are copied to each, so they need no transfer. Each device graph
keeps the global topological order, so executors that each follow their own
order never wait on each other in a cycle; `ordering.schedule` then picks a
better global order (sends early, recvs late) with the same guarantee.

    cpu:0:  x ─ a=exp ─ send(a→cpu:1) ─ c=add(a, b_recv) ─> out
    cpu:1:  x ─ b=tanh ─ send(b→cpu:0)      a_recv ─ d=mul(a_recv, b) ─> out
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knetflow.graph.node import Graph, Node
from knetflow.scheduler.channels import Channel


@dataclass
class Partition:
    """The per-device graphs and the channels between them."""

    graphs: dict = field(default_factory=dict)     # device -> Graph
    channels: list = field(default_factory=list)   # Channel per cross-device edge
    outputs: list = field(default_factory=list)    # per graph result: (device, index)
    params: dict = field(default_factory=dict)     # param name -> home device
    origin: dict = field(default_factory=dict)     # id of a node rebuilt here -> the original

    def transfers(self):
        """(source, destination, bytes) of every transfer in one run."""
        return [(c.src, c.dst, c.nbytes) for c in self.channels]


def partition(graph: Graph, placement: dict, move) -> Partition:
    """Cut `graph` by `placement` ({node id: device}); `move(x, src, dst)` copies a value.

    The memory planner never pools a sent value, so `move` may share it between CPU devices.
    """
    part = Partition()
    pos = {n.id: float(k) for k, n in enumerate(graph.nodes)}
    # a device holding only params (a rule put them there) still sends them
    devices = sorted({placement[n.id] for n in graph.nodes if n.op not in ("input", "const")}
                     | {placement[n.id] for n in graph.results})
    local: dict = {d: {} for d in devices}   # device -> {original id: node there}
    sends: dict = {d: [] for d in devices}
    for n in graph.nodes:
        if n.op in ("input", "const"):
            continue  # materialized lazily where read
        home = placement[n.id]
        if n.op == "param":
            part.params[n.attrs["name"]] = home
            local[home][n.id] = n
            continue
        inputs = tuple(_value_on(i, home, placement, local, sends, part, move, pos)
                       for i in n.inputs)
        local[home][n.id] = new = n.replace(inputs=inputs) if inputs != n.inputs else n
        pos[new.id] = pos[n.id]
        if new is not n:  # reading a recv: a new node, reported as the one placed
            part.origin[new.id] = n
    results = {d: [] for d in devices}
    for r in graph.results:
        d = placement[r.id]
        node = _value_on(r, d, placement, local, sends, part, move, pos)
        part.outputs.append((d, len(results[d])))
        results[d].append(node)
    for d in devices:
        feeds = [n for n in graph.inputs if n.id in local[d]]
        g = Graph(results[d] + sends[d], inputs=feeds)
        # the global order, not the DFS order: see the module docstring on deadlock
        g.nodes = tuple(sorted(g.nodes, key=lambda n: pos.get(n.id, -1.0)))
        part.graphs[d] = g
    return part


def _value_on(node, device, placement, local, sends, part, move, pos) -> Node:
    """The node standing for `node`'s value on `device` (adding send/recv if needed)."""
    here = local[device]
    if node.id in here:  # already here, or already received: one transfer per destination
        return here[node.id]
    if node.op in ("input", "const"):
        here[node.id] = node
        return node
    src = placement[node.id]
    channel = Channel(src, device, node.spec.nbytes or 0)
    part.channels.append(channel)
    producer = local[src][node.id]
    send = Node("send", (producer,), {"channel": channel, "move": _mover(move, src, device)},
                _token(), where=node.where, device=src)
    sends[src].append(send)
    recv = Node("recv", (), {"channel": channel, "spec": node.spec}, node.spec,
                name=node.name, where=node.where, device=device)
    pos[send.id], pos[recv.id] = pos[node.id] + 0.25, pos[node.id] + 0.5
    here[node.id] = recv
    return recv


def _mover(move, src, dst):
    def move_to(x):
        return move(x, src, dst)

    return move_to


def _token():
    from knetflow.ops.base import Spec

    return Spec((), "bool")
