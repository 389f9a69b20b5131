"""The pieces of a replica tested in one process: data layout, steps, shared memory, metrics."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import knetflow as kf
from knetflow.distributed.data import Block, LocalData, numpy_layout, spread
from knetflow.distributed.faults import split_block
from knetflow.distributed.reduce import Mailbox
from knetflow.distributed.report import add_counters, counters
from knetflow.distributed.shm import SharedGroup, create_segment
from knetflow.distributed.replica_step import ReplicaStep


def mlp_graph(seed=0, dtype="float64"):
    """A small classifier: outputs (mean nll, scores)."""
    rng = np.random.default_rng(seed)
    x = kf.placeholder("x", (None, 4), dtype)
    y = kf.placeholder("y", (None,), "int64")
    w1 = kf.param("w1", value=rng.standard_normal((4, 6)) * 0.5, dtype=dtype)
    b1 = kf.param("b1", value=np.zeros(6), dtype=dtype)
    w2 = kf.param("w2", value=rng.standard_normal((6, 3)) * 0.5, dtype=dtype)
    scores = kf.tanh(x @ w1 + b1) @ w2
    return kf.Graph([kf.nll(scores, y), scores])


def data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5)


def test_numpy_layout_splits_each_global_batch():
    steps, parts = numpy_layout(10, 4, 2, work_load_list=[3, 1], partial=True)
    assert steps == 3
    (rows0, sizes0), (rows1, sizes1) = parts
    assert sizes0 == (3, 3, 2) and sizes1 == (1, 1, 0)
    assert rows0.tolist() == [0, 1, 2, 4, 5, 6, 8, 9] and rows1.tolist() == [3, 7]
    assert numpy_layout(10, 4, 2)[0] == 2  # the partial batch dropped, as kf.minibatch
    with pytest.raises(ValueError, match="work_load_list has 1 entries for 2"):
        numpy_layout(10, 4, 2, work_load_list=[1])


def test_local_data_reads_each_step_from_every_block():
    local = LocalData()
    local.add((0, 0, (2, 1)), np.arange(3), np.arange(3) * 10)
    local.add((1, 1, (0, 2)), np.arange(100, 102), None)
    assert local.batch(0)[0].tolist() == [0, 1]
    assert local.batch(1)[0].tolist() == [2]
    assert local.batch(2)[0].tolist() == [100, 101]
    assert local.batch(3) == (None, None, 0)
    assert local.steps() == 3
    assert spread(5, 3) == (2, 1, 2)


def test_a_block_replacing_a_lost_one_is_shuffled_like_it():
    def order(key, rows):
        return np.random.default_rng([7, key]).permutation(rows)

    x = np.arange(6)
    original, replacement, other = LocalData(), LocalData(), LocalData()
    original.add((0, 0, (3, 3), 4), x, None)        # shuffled by its key, 4
    replacement.add((9, 0, (3, 3), 4), x, None)     # another id, the lost block's key
    other.add((4, 0, (3, 3)), x, None)              # no key: its id, 4, stands for it
    for step in (0, 1):
        got = original.batch(step, order)[0].tolist()
        assert replacement.batch(step, order)[0].tolist() == got
        assert other.batch(step, order)[0].tolist() == got
    assert sorted(original.batch(0, order)[0].tolist() + original.batch(1, order)[0].tolist()) \
        == list(range(6))
    block = Block(0, (1,))
    assert block.key == block.id  # by default; prepare() numbers a fit's blocks from 0


def test_split_block_keeps_steps():
    parts = split_block((3, 0, 2), 2)
    assert [s for _, s in parts] == [(2, 0, 1), (1, 0, 1)]
    assert sorted(np.concatenate([r for r, _ in parts]).tolist()) == [0, 1, 2, 3, 4]


def reference_step(graph, optimizer, batches):
    plan = kf.compile(kf.optim.step_graph(graph, optimizer), training=True)
    for xb, yb in batches:
        plan.run({"x": xb, "y": yb})
    return plan.params


def replicated_steps(graph_fn, optimizer_fn, batches, work, sync_every=1, fused=False):
    """Replicas in one process: accumulate, sum the buffers (or let the update add them,
    `fused`, as on shared memory), apply everywhere."""
    reps = [ReplicaStep(graph_fn(), optimizer_fn(), ("x", "y"), pred_output=1) for _ in work]
    bufs = [r.new_buffer() for r in reps]
    if fused:
        for r in reps:
            r.set_parts(len(reps))
    for k, (xb, yb) in enumerate(batches):
        start = 0
        for r, size in zip(reps, kf_split(len(xb), work)):
            if size:
                _, _, grads = r.gradients(xb[start:start + size], yb[start:start + size])
                r.accumulate(bufs[reps.index(r)], grads, size)
            start += size
        if (k + 1) % sync_every == 0:
            total = np.sum(bufs, axis=0)
            for r in reps:
                if fused:
                    r.apply(*bufs)
                else:
                    r.apply(total.copy())
            for b in bufs:
                b[...] = 0
    return reps


def kf_split(n, work):
    from knetflow.scheduler.data_parallel import split_sizes

    return split_sizes(n, work)


@pytest.mark.parametrize("make_opt", [lambda: kf.optim.SGD(lr=0.3),
                                      lambda: kf.optim.Adam(lr=0.05, gclip=1.0)],
                         ids=["sgd", "adam-gclip"])
@pytest.mark.parametrize("work", [[1, 1], [3, 1], [1, 0, 2]], ids=str)
@pytest.mark.parametrize("fused", [False, True], ids=["summed", "fused"])
def test_summed_replica_steps_equal_one_process(make_opt, work, fused):
    x, y = data()
    batches = list(kf.minibatch(x, y, 10))
    ref = reference_step(mlp_graph(), make_opt(), batches)
    for rep in replicated_steps(mlp_graph, make_opt, batches, work, fused=fused):
        for name, value in rep.params().items():
            np.testing.assert_allclose(value, ref[name], rtol=1e-10, atol=1e-12)


def test_accumulating_k_steps_equals_a_k_times_larger_batch():
    x, y = data()
    ref = reference_step(mlp_graph(), kf.optim.SGD(lr=0.3), list(kf.minibatch(x, y, 20)))
    reps = replicated_steps(mlp_graph, lambda: kf.optim.SGD(lr=0.3),
                            list(kf.minibatch(x, y, 10)), [1, 1], sync_every=2)
    np.testing.assert_allclose(reps[1].params()["w1"], ref["w1"], rtol=1e-10)


def test_update_resumes_from_the_optimizer_state():
    x, y = data()
    batches = list(kf.minibatch(x, y, 10))
    opt = kf.optim.Momentum(lr=0.1)
    plan = kf.compile(kf.optim.step_graph(mlp_graph(), opt), training=True)
    plan.run({"x": batches[0][0], "y": batches[0][1]})
    kf.optim.state_from_plan(opt, plan)
    step = ReplicaStep(mlp_graph(), opt, ("x", "y"))
    step.set_params({k: v for k, v in plan.params.items() if ":" not in k})
    plan.run({"x": batches[1][0], "y": batches[1][1]})
    buf = step.new_buffer()
    step.accumulate(buf, step.gradients(*batches[1])[2], 10, fresh=True)
    step.apply(buf)
    np.testing.assert_allclose(step.params()["w2"], plan.params["w2"], rtol=1e-10)
    state = step.optimizer_state(kf.optim.Momentum())
    np.testing.assert_allclose(state["state"]["w2:velocity"], plan.params["w2:velocity"])


@pytest.mark.parametrize("n", [2, 6], ids=["fused", "chunked"])
def test_shared_memory_group_sums_in_rank_order(n):
    size = 10
    box = Mailbox()
    owners = [create_segment(size, "float64") for _ in range(n)]
    names = [s.name for s in owners]
    groups = [SharedGroup(owners[r], names, r, size, "float64", box, 10) for r in range(n)]
    try:
        results = {}
        for step in range(3):  # both buffers of each segment, and back to the first
            for r, g in enumerate(groups):
                g.buffer()[...] = np.arange(size) * (r + 1) + step
            threads = [threading.Thread(target=lambda g=g, r=r: results.__setitem__(
                r, _reduce(g))) for r, g in enumerate(groups)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            want = np.arange(size) * (n * (n + 1) / 2) + n * step
            for r in range(n):
                np.testing.assert_array_equal(results[r], want)
    finally:
        for g in groups:
            g.close(unlink=True)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory in /dev/shm")
def test_segments_of_dead_processes_are_swept():
    from knetflow.distributed.shm import sweep_stale

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = f"/dev/shm/kf-{gone}-test{os.getpid()}"
    mine = create_segment(4, "float64")
    try:
        with open(stale, "wb") as f:
            f.write(b"x")
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        os.utime(f"/dev/shm/{mine.name}", (time.time() - 3600, time.time() - 3600))
        assert sweep_stale() >= 1
        assert not os.path.exists(stale)
        assert os.path.exists(f"/dev/shm/{mine.name}")  # its owner (this process) lives
    finally:
        mine.close()
        mine.unlink()
        if os.path.exists(stale):
            os.unlink(stale)


def _reduce(group):
    if group.fused:
        return np.sum([b.copy() for b in group.gather()], axis=0)
    return group.allreduce().copy()


def test_metric_counters_add_up_over_replicas():
    metric = kf.metric.create(["acc", "f1"])
    labels = np.array([0, 1, 1, 0])
    preds = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    metric.update([labels[:2]], [preds[:2]])
    first = counters(metric)
    metric.reset()
    metric.update([labels[2:]], [preds[2:]])
    second = counters(metric)
    whole = kf.metric.create(["acc", "f1"])
    whole.update([labels], [preds])
    total = kf.metric.create(["acc", "f1"])
    add_counters(total, first)
    add_counters(total, second)
    assert total.get() == whole.get()


def test_import_knetflow_leaves_dask_unimported():
    code = ("import sys, knetflow as kf\n"
            "loaded = lambda: [m for m in sys.modules\n"
            "                  if m.split('.')[0] in ('dask', 'distributed')]\n"
            "assert not loaded(), loaded()\n"
            "assert kf.distributed.DaskTrainer and kf.distributed.DaskKVStore\n"
            "assert not loaded(), loaded()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_connect_starts_on_loopback_and_passes_security(monkeypatch):
    import distributed

    made = {}

    class FakeCluster:
        def __init__(self, **kwargs):
            made["cluster"] = kwargs

        def close(self, timeout=None):
            made["closed"] = True

    class FakeClient:
        def __init__(self, cluster, security=None, **kwargs):
            made["client"] = security

        def close(self, timeout=None):
            pass

    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.setattr(distributed, "Client", FakeClient)
    security = object()
    with kf.distributed.connect(None, n_workers=3, security=security) as conn:
        assert conn.owned
    assert made["cluster"] == {"n_workers": 3, "threads_per_worker": 1, "processes": True,
                               "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
                               "security": security}
    assert made["client"] is security and made["closed"]


class _Closing:
    """A fake client or cluster that records its close (and may fail it)."""

    def __init__(self, log, name, fails=False):
        self.log, self.name, self.fails = log, name, fails

    def close(self, timeout=None):
        self.log.append((self.name, timeout))
        if self.fails:
            raise OSError(f"{self.name} is unreachable")


def test_connection_closes_what_knetflow_opened():
    from knetflow.distributed.cluster import Connection

    log = []
    Connection(_Closing(log, "user's client")).close()
    assert log == []  # a user's client is left open
    conn = Connection(_Closing(log, "client for an address"), own_client=True)
    conn.close()
    conn.close()  # closing twice closes once
    assert log == [("client for an address", 30)]
    log.clear()
    conn = Connection(_Closing(log, "client", fails=True), _Closing(log, "cluster"))
    with pytest.raises(OSError, match="client is unreachable"):
        conn.close()
    assert log == [("client", 30), ("cluster", 30)]  # the cluster is closed all the same


def test_fleet_close_never_raises_and_lets_go_of_the_actors():
    from knetflow.distributed.replica_calls import Fleet

    class LostActor:
        def close(self):
            raise RuntimeError("Worker holding Actor was lost.  Status: lost")

    class Held:
        released = False

        def release(self):
            self.released = True

    fleet = Fleet(client=None, timeout=1)
    held = Held()
    fleet.workers, fleet.actors, fleet._holds = ["w0"], {"w0": LostActor()}, [held]
    fleet.close()
    assert held.released and fleet.actors == {} and fleet._holds == []
