"""Concurrent execution: one executor thread per device, one program each.

A multi-device plan runs every device's generated program on that device's
own thread (kept for the plan's life; the first device uses the caller's). Programs synchronise
only at `recv` nodes. If any executor fails, the run is cancelled: blocked
receives give up, every thread finishes, and the first real error is raised
naming the op, the device and the user's line. No thread is left waiting.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from knetflow.scheduler.channels import Cancelled, RunState


class MultiProgram:
    """Per-device programs run together; `fn(feeds, params)` like a single Program."""

    def __init__(self, partition, programs: dict, devices: dict, input_names: list,
                 param_names: list, explain):
        self.partition = partition
        self.programs = programs            # device name -> Program
        self.devices = devices              # device name -> Device
        self.explain = explain              # (error, program, device name) -> ExecutionError
        self.graph = None
        self._feeds = {d: [input_names.index(n.attrs["name"]) for n in p.graph.inputs]
                       for d, p in programs.items()}
        self._params = {d: [param_names.index(n.attrs["name"]) for n in p.graph.params]
                        for d, p in programs.items()}
        self._pools = {d: ThreadPoolExecutor(1, thread_name_prefix=f"knetflow-{d}")
                       for d in list(programs)[1:]}

    @property
    def memory(self):
        return {d: p.memory for d, p in self.programs.items()}

    def fn(self, feeds, params):
        state = RunState()
        for c in self.partition.channels:
            c.reset(state)
        first, *others = self.programs
        futures = {d: self._pools[d].submit(self._run_one, d, feeds, params, state)
                   for d in others}
        results, errors = {}, []
        try:  # the first device runs on the calling thread: one hand-off fewer per run
            results[first] = self._run_one(first, feeds, params, state)
        except Cancelled:
            pass
        except Exception as e:  # noqa: BLE001 - the first real error is re-raised below
            errors.append(e)
        for d, f in futures.items():
            try:
                results[d] = f.result()
            except Cancelled:
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise errors[0]
        return tuple(results[d][k] for d, k in self.partition.outputs)

    def _run_one(self, d, feeds, params, state):
        device = self.devices[d]
        program = self.programs[d]
        try:
            with device.activate():  # on a GPU: its device and stream; on a CPU: its BLAS share
                mine = [device.put(feeds[k]) for k in self._feeds[d]]
                theirs = [params[k] for k in self._params[d]]
                return program.fn(mine, theirs)
        except Cancelled:
            raise
        except Exception as e:  # noqa: BLE001
            state.cancelled.set()
            raise self.explain(e, program, d) from e

    def close(self):
        for pool in self._pools.values():
            pool.shutdown(wait=False)
