"""What a compiled plan tells its user: where each node runs (`Placement`) and
how long each op took (`Profile`). Both are read-only views built from a
program's graph; printing either gives a table, one row per node, naming the
op, its shape, its device and the user's line that built it.
"""

from __future__ import annotations

from collections.abc import Mapping

from knetflow.ops.base import fmt


def op_text(node) -> str:
    """The node's op as a user reads it: a fused chain lists its steps (`fused[mul,exp]`),
    a transfer names the other device (`send to cpu:1`, `recv from cpu:0`)."""
    if node.op == "fused":
        return "fused[" + ",".join(step for step, _ in node.attrs["program"]) + "]"
    if node.op == "send":
        return f"send to {node.attrs['channel'].dst}"
    if node.op == "recv":
        return f"recv from {node.attrs['channel'].src}"
    return node.op


def shape_text(node) -> str:
    """The shape of the node's value (for a `send`: of the value it sends)."""
    return fmt(node.inputs[0].spec if node.op == "send" else node.spec)


def _keys(nodes) -> list:
    """A unique key per node: its label (`w`, `exp#12`, a user's name), and for a name used
    twice, `name#id` for the second and later nodes."""
    keys, seen = [], set()
    for n in nodes:
        key = n.label()
        if key in seen:
            key = f"{key}#{n.id}"
        seen.add(key)
        keys.append(key)
    return keys


def _table(header, rows, right=()) -> str:
    """Rows of strings as columns, left-aligned but for the `right` ones (numbers); the
    last column is not padded."""
    widths = [max(len(r[k]) for r in [header] + rows) for k in range(len(header) - 1)]
    lines = []
    for r in [header] + rows:
        cells = [c.rjust(w) if k in right else c.ljust(w)
                 for k, (c, w) in enumerate(zip(r, widths))]
        lines.append(("  ".join(cells) + "  " + r[-1]).rstrip())
    return "\n".join(lines)


class Placement(Mapping):
    """Which device each node of a plan runs on: node label -> device name (read-only).

    Keys are the labels of the compiled graph's nodes (params and inputs by
    name, other nodes by a user's name or `op#id`), in the order the plan runs
    them. Params map to their home device (where they live and are updated).
    Inputs and constants are left out: they are fed, or copied, to every device
    that reads them. `by_device()` groups the labels; printing gives a table.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> x = kf.placeholder("x", (2,))
        >>> w = kf.param("w", value=np.ones(2))
        >>> plan = kf.compile([kf.sum(kf.exp(x * w))])
        >>> plan.placement["w"]
        'cpu:0'
        >>> plan.placement.by_device()
        {'cpu:0': ['w', 'fused#...', 'sum#...']}
        >>> print(plan.placement)          # doctest: +NORMALIZE_WHITESPACE
        node      op               shape  device  built at
        w         param            (2,)   cpu:0
        fused#... fused[mul,exp]   (2,)   cpu:0   <doctest ...>:1
        sum#...   sum              ()     cpu:0   <doctest ...>:1
    """

    def __init__(self, graph, devices: dict):
        nodes = [n for n in graph.nodes if n.op not in ("input", "const")]
        self._nodes = dict(zip(_keys(nodes), nodes))
        self._devices = {k: devices[n.id] for k, n in self._nodes.items()}

    def __getitem__(self, key) -> str:
        try:
            return self._devices[key]
        except KeyError:
            raise KeyError(f"the plan has no node {key!r}; its nodes: "
                           f"{list(self._devices)}") from None

    def __iter__(self):
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def node(self, key):
        """The compiled graph's node under `key` (its op, spec and `where`)."""
        self[key]  # noqa: B018 - the same KeyError as a lookup
        return self._nodes[key]

    def by_device(self) -> dict:
        """Device name -> labels of its nodes, in run order."""
        out: dict = {}
        for key, device in self._devices.items():
            out.setdefault(device, []).append(key)
        return out

    def __repr__(self) -> str:
        return f"Placement({self._devices!r})"

    def __str__(self) -> str:
        rows = [[k, op_text(n), shape_text(n), self._devices[k], "" if n.is_leaf else n.where]
                for k, n in self._nodes.items()]
        return _table(["node", "op", "shape", "device", "built at"], rows)


class Profile:
    """Seconds per op of a plan's profile runs (the mean over `runs` runs), per device.

    `rows` holds `(node, seconds, device name)` for each op of the compiled
    graph in run order; on a plan with several devices they include the
    `send`s and `recv`s between them (a `recv`'s time is time spent waiting
    for its value). `total` is the sum of the rows (on several devices, which
    run at once, more than a run's wall time); `by_op()` and `by_device()` sum
    seconds per op name and per device; printing gives a table, slowest op
    first. `runs` and `feed_shapes` say what was measured.
    """

    def __init__(self, rows, runs: int, feed_shapes: dict):
        self.rows = [(n, s, d) for n, s, d in rows if not n.is_leaf]
        self.runs = runs
        self.feed_shapes = feed_shapes

    @property
    def total(self) -> float:
        return sum(s for _, s, _ in self.rows)

    @property
    def devices(self) -> list:
        """The devices the rows ran on, first one first."""
        return list(dict.fromkeys(d for _, _, d in self.rows))

    def by_op(self) -> dict:
        """Seconds per op name, summed over nodes, slowest first."""
        return _summed((n.op, s) for n, s, _ in self.rows)

    def by_device(self) -> dict:
        """Seconds per device, summed over its ops, slowest first."""
        return _summed((d, s) for _, s, d in self.rows)

    def __str__(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.feed_shapes.items())
        title = f"profile of {self.runs} run(s)" + (f" of {shapes}" if shapes else "")
        rows = [[op_text(n), f"{s * 1e6:.1f}", shape_text(n), d, n.where]
                for n, s, d in sorted(self.rows, key=lambda r: -r[1])]
        rows.append(["total", f"{self.total * 1e6:.1f}", "", ", ".join(self.devices), ""])
        return title + "\n" + _table(["op", "us", "shape", "device", "built at"], rows, right={1})


def _summed(pairs) -> dict:
    out: dict = {}
    for key, s in pairs:
        out[key] = out.get(key, 0.0) + s
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
