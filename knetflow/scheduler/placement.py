"""Placement: the device of every node of a specialized graph.

Rules, first match wins for each node:
1. the node's own annotation (`with kf.device("cpu:1"): ...`);
2. a dict from name patterns (fnmatch on the node's label: a param's or
   input's name, or a user-given name) to devices;
3. a callable `rule(node) -> device name or None`;
4. `"auto"`: list scheduling in topological order, each node to the device
   where it would finish first, counting transfers of its inputs (a
   HEFT-style heuristic), within each device's memory budget.

Parameters live on the device of their first consumer unless a rule says
otherwise, a parameter's update is computed on the parameter's device, and
the outputs (`get`) of a multi-output op on that op's device (colocation).
Inputs and constants are available on every device (fed or copied there
directly), so they cost no transfer.

The result is a side table `{node id: device name}`; nodes are not edited.
Users read it as `plan.placement` (see `reports.Placement`).
"""

from __future__ import annotations

import fnmatch

from knetflow.scheduler.costs import CostModel, work


class PlacementError(ValueError):
    """A rule named a device the plan does not have (strict mode), or nothing fits."""


def place(graph, devices: list, rule="auto", cost: CostModel | None = None,
          budgets: dict | None = None, strict: bool = False) -> dict:
    """Map each node id of `graph` to one of `devices` (names like "cpu:1")."""
    cost = cost or CostModel()
    names = [str(d) for d in devices]
    if len(names) == 1:
        return {n.id: names[0] for n in graph.nodes}
    fixed = _fixed(graph, names, rule, strict)
    return _schedule(graph, names, fixed, cost, budgets or {})


def _fixed(graph, names, rule, strict) -> dict:
    """Nodes whose device a rule decides (annotations, patterns, callables)."""
    fixed = {}
    for n in graph.nodes:
        if n.op == "get":  # an output of a multi-output node stays with it (see _schedule)
            continue
        wanted = n.device
        if wanted is None and isinstance(rule, dict):
            wanted = next((d for pat, d in rule.items() if fnmatch.fnmatchcase(n.label(), pat)),
                          None)
        elif wanted is None and callable(rule):
            wanted = rule(n)
        if wanted is None:
            continue
        wanted = str(getattr(wanted, "name", wanted))
        if wanted not in names:
            if strict:
                raise PlacementError(f"{n.label()} ({n.op} at {n.where}) is placed on {wanted}, "
                                     f"which this plan does not have: {names}")
            continue
        fixed[n.id] = wanted
    # a param's update lives with the param
    for pname, upd in graph.updates.items():
        p = graph.param(pname)
        if p.id in fixed:
            fixed.setdefault(upd.id, fixed[p.id])
    return fixed


def _schedule(graph, names, fixed, cost, budgets) -> dict:
    kinds = {d: d.split(":")[0] for d in names}
    avail = dict.fromkeys(names, 0.0)
    used = dict.fromkeys(names, 0)
    finish, where = {}, {}
    update_of = {graph.param(p).id: u.id for p, u in graph.updates.items()}
    param_homes = {}
    for n in graph.nodes:
        if n.is_leaf:
            finish[n.id] = 0.0
            if n.id in fixed:
                where[n.id] = fixed[n.id]
            continue
        if n.op == "get":  # a tuple of outputs never crosses devices; each part may
            options = [where[n.inputs[0].id]]
        elif n.id in fixed:
            options = [fixed[n.id]]
        else:
            options = _fitting(names, n, used, budgets)
        best = None
        for d in options:
            ready = 0.0
            for i in n.inputs:
                src = where.get(i.id)
                moved = src is not None and src != d and i.op != "const" and i.op != "input"
                ready = max(ready, finish[i.id] + (cost.transfer_time(i) if moved else 0.0))
            end = max(ready, avail[d]) + cost.compute_time(n, kinds[d])
            if best is None or end < best[0] - 1e-12:
                best = (end, d)
        end, d = best
        where[n.id], finish[n.id], avail[d] = d, end, end
        used[d] += n.spec.nbytes or 0
        for i in n.inputs:  # a param goes where it is first used
            if i.op == "param" and i.id not in where:
                where[i.id] = param_homes[i.id] = d
                if i.id in update_of:
                    fixed[update_of[i.id]] = d
    for n in graph.nodes:  # unused leaves, and inputs/consts with no home: the first device
        where.setdefault(n.id, names[0])
    return where


def _fitting(names, node, used, budgets):
    need = node.spec.nbytes or 0
    fits = [d for d in names if budgets.get(d) is None or used[d] + need <= budgets[d]]
    if not fits:
        raise PlacementError(f"{node.op} at {node.where} needs {need} bytes and no device has "
                             f"that much left: budgets {budgets}")
    return fits


__all__ = ["place", "PlacementError", "work"]
