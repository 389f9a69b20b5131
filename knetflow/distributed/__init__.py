"""`kf.distributed`: data-parallel training on Dask distributed.

Workers of a Dask cluster each hold a replica of the compiled training step
and a shard of the data; in sync mode their gradients are summed worker to
worker (ring or tree all-reduce) and every replica applies the same update,
in async mode a parameter server applies each replica's gradients as they
come. Losing a worker mid-training does not lose the run.

Modules, one job each:
    cluster.py        connect to a cluster or start a LocalCluster on 127.0.0.1
    data.py           blocks of rows on the workers (NumPy, dask.array, batches)
    replica_step.py   ReplicaStep: a replica's gradient and update plans, the flat buffer
    reduce.py         ring and tree all-reduce over a small transport
    worker.py         the Replica actor: plans, data, mailbox, local steps
    call_order.py     Turns: a replica runs its numbered calls in the client's order
    async_ps.py       the parameter server of mode='async'
    replica_calls.py  Fleet, the client's view of the replicas: start, call, wait
    driver.py         the client's loop over an epoch's steps
    faults.py         detecting and recovering from lost workers
    shm.py            the same sums through shared memory, for workers on one host
    report.py         metrics summed over workers, progress bars
    trainer.py        DaskTrainer: fit a kf.Graph loss with a kf.optim optimizer
    traced_loss.py    a Knet-style loss function of kf.Params traced into such a graph
    kvstore.py        DaskKVStore: FeedForward.fit(kvstore='dask')

Nothing here imports Dask until it is used.
"""

from knetflow.distributed.cluster import (
    ClusterError,
    Connection,
    WorkerSetupError,
    check_workers,
    connect,
)
from knetflow.distributed.kvstore import DaskKVStore
from knetflow.distributed.reduce import ring_allreduce, tree_allreduce
from knetflow.distributed.trainer import DaskTrainer
from knetflow.distributed.worker import PeerLost

__all__ = [
    "ClusterError",
    "Connection",
    "DaskKVStore",
    "DaskTrainer",
    "PeerLost",
    "WorkerSetupError",
    "check_workers",
    "connect",
    "ring_allreduce",
    "tree_allreduce",
]
