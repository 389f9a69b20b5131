"""Training on a LocalCluster of 2 worker processes (one cluster for the module)."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.distributed import DaskKVStore, DaskTrainer
from knetflow.distributed.data import spread

from .test_local import data, mlp_graph


def single_process(batches_per_epoch, optimizer, epochs, graph=None):
    """Params, and per epoch (mean loss, accuracy), of training in this process."""
    plan = kf.compile(kf.optim.step_graph(graph or mlp_graph(), optimizer), training=True)
    history = []
    for epoch in range(epochs):
        metric, total, rows = kf.metric.Accuracy(), 0.0, 0
        for xb, yb in batches_per_epoch(epoch):
            loss, scores = plan.run({"x": xb, "y": yb})
            metric.update([yb], [scores])
            total, rows = total + float(loss) * len(xb), rows + len(xb)
        history.append((total / rows, metric.get()[1]))
    return plan.params, history


def assert_same_params(got, want, rtol=1e-10):
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name], rtol=rtol, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("options", [
    {},                                                      # shared memory between workers
    {"transport": "tcp", "work_load_list": [3, 1], "partial": True},   # ring, uneven shards
    {"transport": "tcp", "reduce": "tree"},
], ids=["shm", "ring-uneven", "tree"])
def test_sync_equals_single_process(client, workers, options):
    options = dict(options)
    fit_kw = {k: options.pop(k) for k in ("work_load_list", "partial") if k in options}
    x, y = data(50)
    partial = fit_kw.get("partial", False)
    want, history = single_process(lambda e: kf.minibatch(x, y, 12, partial=partial),
                                   kf.optim.Momentum(lr=0.2), 2)
    trainer = DaskTrainer(mlp_graph(), kf.optim.Momentum(lr=0.2), client, pred_output=1,
                          eval_metric="acc", **options)
    trainer.fit(x, y, batch_size=12, epochs=2, **fit_kw)
    assert_same_params(trainer.params, want)
    for record, (loss, accuracy) in zip(trainer.history, history):
        assert record["loss"] == pytest.approx(loss, rel=1e-10)
        assert record["train"]["accuracy"] == accuracy  # summed over both workers
    state = trainer.optimizer.state_dict()["state"]
    assert set(state) == {"w1:velocity", "b1:velocity", "w2:velocity"}


def test_progress_bar_per_epoch(client, workers, capsys):
    x, y = data(40)
    DaskTrainer(mlp_graph(), kf.optim.SGD(lr=0.3), client, progress=True).fit(
        x, y, batch_size=10, epochs=2)
    err = capsys.readouterr().err
    assert err.count("[100.00%, 4/4,") == 2  # one bar per epoch
    assert "loss=" in err


def test_local_accumulation_every_k_steps(client, workers):
    x, y = data(48)
    want, _ = single_process(lambda e: kf.minibatch(x, y, 16), kf.optim.SGD(lr=0.5), 1)
    trainer = DaskTrainer(mlp_graph(), kf.optim.SGD(lr=0.5), client, sync_every=2)
    trainer.fit(x, y, batch_size=8, epochs=1)
    assert_same_params(trainer.params, want)


def test_iterable_of_batches_and_eval_data(client, workers):
    x, y = data(40)
    batches = list(kf.minibatch(x, y, 10))
    want, _ = single_process(lambda e: batches, kf.optim.SGD(lr=0.3), 2)
    seen = []
    trainer = DaskTrainer(mlp_graph(), kf.optim.SGD(lr=0.3), client, pred_output=1,
                          eval_metric="acc")
    trainer.fit(batches, epochs=2, eval_data=(x, y),
                batch_end_callback=lambda p: seen.append((p.epoch, p.nbatch)))
    assert_same_params(trainer.params, want)
    assert seen == [(e, s) for e in range(2) for s in range(4)]
    plan = kf.compile(mlp_graph())
    loss, scores = plan.run({"x": x, "y": y, **trainer.params})
    assert trainer.history[-1]["eval"]["loss"] == pytest.approx(float(loss), rel=1e-10)
    assert trainer.history[-1]["eval"]["accuracy"] == np.mean(scores.argmax(-1) == y)
    # the fit loop's record, as FeedForward's
    assert set(trainer.history[-1]) == {"epoch", "loss", "time", "steps", "train", "eval"}
    assert [r["steps"] for r in trainer.history] == [4, 4]


def test_resume_from_checkpoint_equals_uninterrupted(client, workers, tmp_path):
    x, y = data(36)
    make = lambda: DaskTrainer(mlp_graph(), kf.optim.Adam(lr=0.05), client,
                               checkpoint=str(tmp_path / "run"))
    whole = make().fit(x, y, batch_size=12, epochs=3)
    make().fit(x, y, batch_size=12, epochs=2)   # the client "dies" after epoch 2
    resumed = make().fit(x, y, batch_size=12, epochs=3, begin_epoch=2)
    assert_same_params(resumed.params, whole.params)
    assert resumed.optimizer.state_dict()["state"]["w1:t"] == 9  # 3 epochs of 3 steps


def test_dask_array_chunks_train_where_they_are(client, workers, monkeypatch):
    import dask.array as da
    from distributed import futures_of, wait

    x, y = data(80)
    w0, w1 = workers
    # two chunks persisted on each worker
    halves = [client.persist(da.from_array(x[a:b], chunks=(20, 4)), workers=[w])
              for (a, b), w in zip([(0, 40), (40, 80)], [w0, w1])]
    dx = da.concatenate(halves)
    chunks = futures_of(halves[0]) + futures_of(halves[1])
    wait(chunks)
    assert {w for ws in client.who_has(chunks).values() for w in ws} == {w0, w1}

    def no_gather(*args, **kwargs):
        raise AssertionError("training data gathered to the client")

    monkeypatch.setattr(client, "gather", no_gather)
    steps = 80 // 16
    trainer = DaskTrainer(mlp_graph(), kf.optim.SGD(lr=0.3), client)
    trainer.fit(dx, da.from_array(y, chunks=20), batch_size=16, epochs=1)
    # the global batch of step s: rows of step s of every chunk of 20, read evenly
    offsets = np.cumsum((0,) + spread(20, steps))
    batches = [(np.concatenate([x[c + offsets[s]:c + offsets[s + 1]] for c in range(0, 80, 20)]),
                np.concatenate([y[c + offsets[s]:c + offsets[s + 1]] for c in range(0, 80, 20)]))
               for s in range(steps)]
    want, _ = single_process(lambda e: batches, kf.optim.SGD(lr=0.3), 1)
    assert_same_params(trainer.params, want)


def test_async_lowers_the_loss(client, workers):
    x, y = data(200)
    trainer = DaskTrainer(mlp_graph(), kf.optim.Adam(lr=0.02), client, mode="async")
    trainer.fit(x, y, batch_size=20, epochs=4)
    losses = [record["loss"] for record in trainer.history]
    assert losses[-1] < 0.7 * losses[0]
    start = kf.compile(mlp_graph()).run({"x": x, "y": y})[0]
    end = kf.compile(mlp_graph()).run({"x": x, "y": y, **trainer.params})[0]
    assert float(end) < 0.7 * float(start)


def softmax_model(**kwargs):
    net = kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=10, name="fc")
    return kf.FeedForward(kf.sym.SoftmaxOutput(net), optimizer="adam", learning_rate=0.02,
                          numpy_batch_size=32, **kwargs)


def test_feedforward_fit_with_a_dask_kvstore(client, workers, tmp_path):
    kf.seed(0)
    x, y = kf.datasets.mnist_like(256)
    model = softmax_model(num_epoch=6)
    prefix = str(tmp_path / "ff")
    model.fit(x, y, kvstore=DaskKVStore(client), eval_data=(x, y),
              epoch_end_callback=kf.callback.do_checkpoint(prefix))
    assert model.score(x, y) > 0.9
    assert [h["epoch"] for h in model.history] == list(range(6))
    assert model.history[-1]["eval"]["accuracy"] == pytest.approx(model.score(x, y))
    assert set(model.history[-1]) == {"epoch", "loss", "time", "steps", "train", "eval"}
    resumed = kf.FeedForward.load(prefix, 6, num_epoch=7)  # with its optimizer state
    resumed.fit(x, y, kvstore=DaskKVStore(client, mode="async"))
    assert resumed.score(x, y) > 0.9


def test_feedforward_kvstore_dask_starts_and_closes_a_local_cluster(monkeypatch):
    from knetflow.distributed import trainer

    opened, connect = [], trainer.connect

    def spy(*args, **kwargs):
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(trainer, "connect", spy)
    kf.seed(1)
    x, y = kf.datasets.mnist_like(128)
    model = softmax_model(num_epoch=2).fit(x, y, kvstore="dask")
    assert model.predict(x).shape == (128, 10)
    (conn,) = opened
    assert conn.client.status == "closed" and conn.cluster is None


def test_an_error_in_a_replica_is_raised_naming_its_worker(client, workers):
    x, y = data(20)
    trainer = DaskTrainer(mlp_graph(), client_or_address=client)
    with pytest.raises(kf.FeedError, match=r"on worker tcp://127\.0\.0\.1:\d+: input .x. expects"):
        trainer.fit(np.hstack([x, x]), y, batch_size=10)  # 8 columns for a graph of 4
    # the cluster is left fit to train again
    assert trainer.fit(x, y, batch_size=10).params["w1"].shape == (4, 6)


def test_dashboard_address_only_when_served(client, workers, capsys):
    import importlib.util

    from knetflow.distributed.cluster import Connection

    link = Connection(client).dashboard()
    if importlib.util.find_spec("bokeh") is None:
        assert link is None  # the scheduler's HTTP server runs, but serves no dashboard
    else:
        assert link.startswith("http://127.0.0.1:")
        DaskTrainer(mlp_graph(), client_or_address=client).fit(*data(20), batch_size=10)
        assert f"Dask dashboard at {link}" in capsys.readouterr().err


def test_knet_style_loss_of_params(client, workers):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.25
    w, b = kf.Param(np.zeros(3), name="w"), kf.Param(np.zeros(1), name="b")

    def loss(x, y):
        return kf.mean((x @ w + b - y) ** 2)

    before = w.value
    trainer = DaskTrainer.from_loss(loss, x, y, kf.optim.SGD(lr=0.2), client_or_address=client)
    trainer.fit(x, y, batch_size=16, epochs=30)
    assert w.value is before  # updated in place, as kf.update does
    np.testing.assert_allclose(w.value, [1.0, -2.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(b.value, [0.25], atol=1e-3)


@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_calls_arriving_out_of_order_run_in_order(client, workers, transport, monkeypatch):
    """Dask may deliver two queued run_steps calls in either order; here the first
    replica's even-numbered calls are held back so that each reaches it after the next
    one. Run in arrival order they mixed steps on shared memory and stalled the TCP ring
    until its timeout; in the order the client numbered them, training is unchanged."""
    import asyncio

    from knetflow.distributed.replica_calls import Fleet

    def late_run_steps(fleet, worker, epoch, start, stop, sync_at):
        ticket = fleet.tickets[worker]
        fleet.tickets[worker] += 1
        actor, generation = fleet.actors[worker], fleet.generation

        async def call():
            if worker == fleet.workers[0] and ticket % 2 == 0:
                await asyncio.sleep(0.05)
            return await actor.run_steps(generation, ticket, epoch, start, stop, sync_at)

        return fleet.watch(worker, call())

    monkeypatch.setattr(Fleet, "run_steps", late_run_steps)
    x, y = data(48)
    want, _ = single_process(lambda e: kf.minibatch(x, y, 12), kf.optim.Momentum(lr=0.2), 2)
    trainer = DaskTrainer(mlp_graph(), kf.optim.Momentum(lr=0.2), client, transport=transport,
                          steps_per_call=1, window=2, timeout=20)
    trainer.fit(x, y, batch_size=12, epochs=2)
    assert_same_params(trainer.params, want)


def test_a_seeded_shuffle_is_the_same_in_every_fit(client, workers):
    x, y = data(48)
    make = lambda: DaskTrainer(mlp_graph(), kf.optim.SGD(lr=0.2), client, shuffle=True, seed=3)
    first, second = make().fit(x, y, batch_size=12), make().fit(x, y, batch_size=12)
    for name, value in first.params.items():
        np.testing.assert_array_equal(second.params[name], value, err_msg=name)
    unshuffled = DaskTrainer(mlp_graph(), kf.optim.SGD(lr=0.2), client).fit(x, y, batch_size=12)
    assert not np.array_equal(unshuffled.params["w1"], first.params["w1"])
