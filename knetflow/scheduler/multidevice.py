"""Building a multi-device program: place, partition, generate per device.

Called by `Plan` for each input signature when the plan has several devices.
"""

from __future__ import annotations

from collections import Counter

from knetflow.devices import transfers
from knetflow.scheduler.codegen import generate
from knetflow.scheduler.executor import MultiProgram
from knetflow.scheduler.ordering import schedule
from knetflow.scheduler.partition import partition
from knetflow.scheduler.placement import PlacementError, place


def build(plan, graph) -> MultiProgram:
    """The MultiProgram running specialized `graph` on `plan.devices`."""
    by_name = {d.name: d for d in plan.devices}
    budgets = {d.name: getattr(d, "memory_budget", None) for d in plan.devices}
    where = place(graph, list(by_name), rule=plan.placement_rule, budgets=budgets,
                  strict=plan.strict)
    part = partition(graph, where, move=_move)
    schedule(part, {d: by_name[d].kind for d in part.graphs})
    programs = {}
    for d, g in part.graphs.items():
        with by_name[d].activate():  # a GPU's buffers and constants go on it, from its stream
            programs[d] = generate(g, by_name[d].xp, rng=plan.rng_for(by_name[d]),
                                   check_numerics=plan.check_numerics)
    for d, prog in programs.items():
        budget = budgets.get(d)
        if budget is not None and prog.memory.peak_bytes > budget:
            raise PlacementError(f"the plan needs {prog.memory.peak_bytes} bytes on {d}, "
                                 f"over its budget of {budget} bytes")
    for name, home in part.params.items():  # each param lives on its home device
        k = plan.param_names.index(name)
        plan._values[k] = by_name[home].put(plan._values[k])
    multi = MultiProgram(part, programs, by_name, plan.input_names, plan.param_names,
                         plan._explain)
    multi.graph = graph
    multi.placement = where
    return multi


def _move(x, src, dst):
    """x on dst. Between CPU devices the array itself is shared: sent values are never
    pooled buffers (see memory.liveness) and plans never write into their inputs."""
    return transfers.transfer(x, dst, src, copy=False).array


def describe(plan, program) -> str:
    """Text for `plan.explain()`."""
    if not hasattr(program, "programs"):
        peak = program.memory.peak_bytes
        ops = Counter(n.op for n in program.graph.nodes if not n.is_leaf)
        return (f"{plan.device.name}: {sum(ops.values())} ops ({_ops(ops)}), "
                f"peak {peak} bytes; no transfers")
    lines = []
    for d, prog in program.programs.items():
        ops = Counter(n.op for n in prog.graph.nodes
                      if not n.is_leaf and n.op not in ("send", "recv"))
        lines.append(f"{d}: {sum(ops.values())} ops ({_ops(ops)}), "
                     f"peak {prog.memory.peak_bytes} bytes")
    transfers = program.partition.transfers()
    total = sum(b for _, _, b in transfers)
    lines.append(f"transfers: {len(transfers)}, {total} bytes per run")
    for src, dst, nbytes in transfers:
        lines.append(f"  {src} -> {dst}: {nbytes} bytes")
    return "\n".join(lines)


def _ops(counter) -> str:
    return ", ".join(f"{op} x{k}" for op, k in counter.most_common())
