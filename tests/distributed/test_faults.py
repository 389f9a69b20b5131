"""Lost workers and clusters that cannot train (a module cluster of 2 worker processes)."""

import os
import signal
import time

import pytest

import knetflow as kf
from knetflow.distributed import ClusterError, DaskTrainer, WorkerSetupError, connect

from .conftest import start_cluster, stop_cluster
from .test_local import data, mlp_graph
from .test_training import assert_same_params


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


def trainer(client, optimizer, **options):
    # window=1: when the client sees step s, no replica has a later step queued, so a kill
    # in the callback of step s leaves step s+1 as the last synchronized step, exactly
    return DaskTrainer(mlp_graph(), optimizer, client, poll=0.2, steps_per_call=1, **options)


def assert_recovered(run, workers, lost, at):
    """One recovery, at the step after `at`, and every step of every epoch taken once."""
    assert run.recoveries == [{"epoch": at[0], "step": at[1] + 1, "lost": [lost],
                               "workers": len(workers) - 1}]
    assert [r["steps"] for r in run.history] == [6] * len(run.history)


@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_sync_training_survives_a_killed_worker(client, workers, transport):
    x, y = data(120)
    make = lambda **kw: trainer(client, kf.optim.Momentum(lr=0.1), transport=transport, **kw)
    undisturbed = make().fit(x, y, batch_size=20, epochs=3)
    callback, killed = killer(client, workers[1], at=(1, 2))
    with pytest.warns(RuntimeWarning, match="lost worker"):
        disturbed = make(window=1).fit(x, y, batch_size=20, epochs=3,
                                       batch_end_callback=callback)
    assert killed
    assert_recovered(disturbed, workers, workers[1], at=(1, 2))
    # The survivor redid step 3 of epoch 1 on, with the lost shard's rows at the same steps:
    # the same global batches, each step once, so the undisturbed run's params up to the
    # rounding of one gradient over both shards' rows instead of two summed (~1e-15; a
    # step lost, repeated or mixed with another differs by ~1e-2).
    assert_same_params(disturbed.params, undisturbed.params)
    if os.path.isdir("/dev/shm"):  # the dead worker's shared memory was removed for it
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"kf-{killed[0]}-")]


def test_recovery_with_queued_calls_redoes_the_unsynchronized_steps(client, workers):
    """window=2: replicas may be a call ahead of the client when the worker dies; the
    survivor goes on from wherever the last synchronized step is."""
    x, y = data(120)
    make = lambda: trainer(client, kf.optim.Momentum(lr=0.1), window=2)
    undisturbed = make().fit(x, y, batch_size=20, epochs=3)
    callback, killed = killer(client, workers[0], at=(1, 2))
    with pytest.warns(RuntimeWarning, match="lost worker"):
        disturbed = make().fit(x, y, batch_size=20, epochs=3, batch_end_callback=callback)
    assert killed
    (recovery,) = disturbed.recoveries
    assert recovery["lost"] == [workers[0]] and (1, 3) <= (recovery["epoch"], recovery["step"])
    assert [r["steps"] for r in disturbed.history] == [6, 6, 6]
    assert_same_params(disturbed.params, undisturbed.params)


def test_shuffled_shards_are_read_as_the_lost_worker_would_have(client, workers):
    """With shuffle each step reads a permutation of a block's rows: the lost block goes
    whole to a survivor, which permutes it as the lost worker would have."""
    x, y = data(120)
    make = lambda: trainer(client, kf.optim.Momentum(lr=0.1), shuffle=True, seed=5, window=1)
    undisturbed = make().fit(x, y, batch_size=20, epochs=3)
    callback, killed = killer(client, workers[1], at=(1, 2))
    with pytest.warns(RuntimeWarning, match="lost worker"):
        disturbed = make().fit(x, y, batch_size=20, epochs=3, batch_end_callback=callback)
    assert killed
    assert_recovered(disturbed, workers, workers[1], at=(1, 2))
    assert_same_params(disturbed.params, undisturbed.params)


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
        stop_cluster(cluster, client)


@pytest.mark.parametrize("kind", ["dask.array", "batches"])
def test_lost_blocks_are_rebuilt(client, workers, kind):
    import dask.array as da

    x, y = data(120)
    if kind == "dask.array":
        args = (da.from_array(x, chunks=(30, 4)), da.from_array(y, chunks=30))
    else:
        args = (list(kf.minibatch(x, y, 20)), None)  # a list: its batches can be read again
    make = lambda: trainer(client, kf.optim.SGD(lr=0.2), window=1)
    undisturbed = make().fit(*args, batch_size=20, epochs=2)
    callback, killed = killer(client, workers[1], at=(0, 1))
    with pytest.warns(RuntimeWarning, match="lost worker"):
        disturbed = make().fit(*args, batch_size=20, epochs=2, batch_end_callback=callback)
    assert killed
    assert_recovered(disturbed, workers, workers[1], at=(0, 1))
    assert_same_params(disturbed.params, undisturbed.params)  # as in the tests above
