"""Lost workers and clusters that cannot train (a module cluster of 2 worker processes)."""

import os
import signal
import time

import pytest

import knetflow as kf
from knetflow.distributed import ClusterError, DaskTrainer, WorkerSetupError, connect

from .conftest import start_cluster
from .test_local import data, mlp_graph


def killer(client, worker, at):
    """A batch-end callback that SIGKILLs `worker`'s process at (epoch, step) `at`."""
    pid = client.run(os.getpid, workers=[worker])[worker]
    done = []

    def callback(param):
        if (param.epoch, param.nbatch) == at and not done:
            done.append(pid)
            os.kill(pid, signal.SIGKILL)

    return callback, done


def full_loss(params):
    x, y = data(120)
    return float(kf.compile(mlp_graph()).run({"x": x, "y": y, **params})[0])


@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_sync_training_survives_a_killed_worker(client, workers, transport):
    x, y = data(120)
    make = lambda: DaskTrainer(mlp_graph(), kf.optim.Momentum(lr=0.1), client,
                               transport=transport, poll=0.2, steps_per_call=1)
    undisturbed = make().fit(x, y, batch_size=20, epochs=3)
    callback, killed = killer(client, workers[1], at=(1, 2))
    with pytest.warns(RuntimeWarning, match="lost worker"):
        disturbed = make().fit(x, y, batch_size=20, epochs=3, batch_end_callback=callback)
    assert killed
    # The lost shard is trained by the survivor at the same steps, so the run usually ends
    # with exactly the undisturbed parameters; in about one run in five (timing of the
    # kill) a step near it differs slightly, so what is asserted is the promise:
    # a loss near the undisturbed run, and every step taken.
    assert full_loss(disturbed.params) == pytest.approx(full_loss(undisturbed.params), rel=0.05)
    assert [r["steps"] for r in disturbed.history] == [6, 6, 6]
    if os.path.isdir("/dev/shm"):  # the dead worker's shared memory was removed for it
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"kf-{killed[0]}-")]


@pytest.mark.parametrize("victim", [0, 1], ids=["server's worker", "other worker"])
def test_async_training_survives_a_killed_worker(client, workers, victim):
    x, y = data(120)
    callback, killed = killer(client, workers[victim], at=(1, 1))
    start = full_loss(mlp_graph_params())
    trainer = DaskTrainer(mlp_graph(), kf.optim.Adam(lr=0.02), client, mode="async",
                          steps_per_call=1, poll=0.2)
    with pytest.warns(RuntimeWarning, match="lost worker"):
        trainer.fit(x, y, batch_size=20, epochs=3, batch_end_callback=callback)
    assert killed
    assert full_loss(trainer.params) < 0.8 * start


def mlp_graph_params():
    return {p.attrs["name"]: p.attrs["value"] for p in mlp_graph().params}


def test_unreachable_scheduler_is_named():
    address = "tcp://127.0.0.1:9"
    tic = time.monotonic()
    with pytest.raises(ClusterError, match="tcp://127.0.0.1:9"):
        connect(address, timeout=1)
    assert time.monotonic() - tic < 30
    trainer = DaskTrainer(mlp_graph(), client_or_address=address, connect_timeout=1)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at 'tcp://127"):
        trainer.fit(*data(20), batch_size=10)


def test_worker_without_knetflow_is_named():
    preload = os.path.join(os.path.dirname(__file__), "hide_knetflow.py")
    cluster, client = start_cluster(n_workers=1, preload=[preload])
    try:
        (worker,) = client.scheduler_info()["workers"]
        trainer = DaskTrainer(mlp_graph(), client_or_address=client)
        with pytest.raises(WorkerSetupError, match=f"cannot be imported.*{worker}.*knetflow"):
            trainer.fit(*data(20), batch_size=10)
    finally:
        client.close()
        cluster.close()


@pytest.mark.parametrize("kind", ["dask.array", "batches"])
def test_lost_blocks_are_rebuilt(client, workers, kind):
    import dask.array as da

    x, y = data(120)
    if kind == "dask.array":
        args = (da.from_array(x, chunks=(30, 4)), da.from_array(y, chunks=30))
    else:
        args = (list(kf.minibatch(x, y, 20)), None)  # a list: its batches can be read again
    make = lambda: DaskTrainer(mlp_graph(), kf.optim.SGD(lr=0.2), client, poll=0.2,
                               steps_per_call=1)
    undisturbed = make().fit(*args, batch_size=20, epochs=2)
    callback, killed = killer(client, workers[1], at=(0, 1))
    with pytest.warns(RuntimeWarning, match="lost worker"):
        disturbed = make().fit(*args, batch_size=20, epochs=2, batch_end_callback=callback)
    assert killed
    # usually exact; a step near the kill may differ slightly (see the sync test above)
    assert full_loss(disturbed.params) == pytest.approx(full_loss(undisturbed.params), rel=0.05)
