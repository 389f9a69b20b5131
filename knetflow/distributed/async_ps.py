"""mode='async': a parameter server (a Dask actor) that replicas push gradients to.

Each replica runs its own steps at its own pace: after a step (or after
`sync_every` steps of accumulated gradients) it pushes its flat buffer
(steps.py: rows-weighted gradients, aux values, row count) and gets back the
current params in one call, never waiting for the other replicas. The
server applies each push as it comes, with the same compiled update plan as
sync training, so a push is the mean gradient of that replica's rows.

The server's methods are coroutines that hand the work to its own thread:
a worker runs one actor method at a time on its actor thread, and the
server shares a worker with a replica whose long `run_steps` call holds
that thread. Pushes are applied one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from knetflow.distributed.replica_step import ReplicaStep

__all__ = ["ParameterServer"]


class ParameterServer:
    """The params and optimizer state of async training, updated on every push."""

    def __init__(self, model: bytes, config: dict):
        from knetflow.serialize import loads

        graph = loads(model).graph
        self.optimizer = config["optimizer"]
        self.step = ReplicaStep(graph, self.optimizer, config["inputs"],
                                 config["loss_reduction"], None, update=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="knetflow-ps")
        self.pushes = 0

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def push(self, buffer):
        """Apply one replica's summed gradients; the params after the update (flat)."""
        return await self._run(self._push, buffer)

    def _push(self, buffer):
        self.step.apply(buffer)
        self.pushes += 1
        return self.step.flat_params()

    async def pull(self):
        """The current params (flat, in the layout of the gradient buffer)."""
        return await self._run(self.step.flat_params)

    async def get_state(self) -> dict:
        return await self._run(lambda: {"state": self.step.state(), "pushes": self.pushes})

    async def set_state(self, state: dict) -> bool:
        await self._run(self.step.load_state, state)
        return True

    async def snapshot(self) -> dict:
        """Params and the optimizer's state_dict, for the client."""
        def take():
            return {"params": self.step.params(),
                    "optimizer": self.step.optimizer_state(self.optimizer)}

        return await self._run(take)

    async def close(self) -> bool:
        self._pool.shutdown(wait=False)
        return True
