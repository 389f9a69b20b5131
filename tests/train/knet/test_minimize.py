"""minimize, sgd ... adam, converge and minibatch (train/knet/minimize.py)."""

import itertools

import numpy as np
import pytest

import knetflow as kf
from knetflow.train import optim

RS = np.random.RandomState(0)
X = RS.randn(64, 3)
W_TRUE = np.array([[1.0], [-2.0], [0.5]])
Y = X @ W_TRUE + 0.3 + 0.01 * RS.randn(64, 1)


def linreg():
    w = kf.Param(np.zeros((3, 1)), name="w")
    b = kf.Param(np.zeros(1), name="b")

    def loss(x, y):
        return kf.mean((x @ w + b - y) ** 2)

    return w, b, loss


def batches():
    return [(X[i:i + 16], Y[i:i + 16]) for i in range(0, 64, 16)]


@pytest.mark.parametrize("train, kw, epochs", [
    (kf.sgd, {}, 25), (kf.momentum, {}, 25), (kf.nesterov, {}, 25),
    (kf.adagrad, {"lr": 0.3}, 25), (kf.rmsprop, {"lr": 0.05}, 25),
    (kf.adadelta, {}, 250),  # starts with steps of about sqrt(eps)
    (kf.adam, {"lr": 0.05}, 25)],
    ids=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"])
def test_each_optimizer_lowers_the_loss_of_a_linear_regression(train, kw, epochs):
    _w, _b, loss = linreg()
    data = list(itertools.chain.from_iterable([batches()] * epochs))
    losses = list(train(loss, data, **kw))
    assert len(losses) == len(data) and all(isinstance(v, float) for v in losses)
    assert np.mean(losses[-4:]) < 0.2 * np.mean(losses[:4])


def test_iterators_are_made_from_the_optimizer_table_with_its_defaults():
    import inspect

    from knetflow.train.knet import minimize

    for name, cls in optim.OPTIMIZERS.items():
        train = getattr(kf, name)
        assert train is getattr(minimize, name) and train.__name__ == name
        params = inspect.signature(train).parameters
        own = inspect.signature(cls).parameters
        assert list(params)[:2] == ["f", "data"] and list(params)[-2:] == ["params", "kw"]
        assert {k: p.default for k, p in params.items() if k in own} == {
            k: p.default for k, p in own.items() if p.kind is p.POSITIONAL_OR_KEYWORD}
        assert f"(Knet `{name}(func, data; lr=" in train.__doc__
    adam = inspect.signature(kf.adam).parameters
    assert (adam["lr"].default, adam["beta1"].default, adam["eps"].default) == (0.001, 0.9, 1e-8)
    assert "lr=0.001, beta1=0.9, beta2=0.999" in kf.adam.__doc__


def test_iterator_arguments_reach_the_optimizer():
    w, _b, loss = linreg()
    next(iter(kf.momentum(loss, batches(), 0.2, gamma=0.5, wdecay=0.01)))
    assert (w.opt.lr, w.opt.gamma, w.opt.wdecay) == (0.2, 0.5, 0.01)
    with pytest.raises(TypeError):
        kf.sgd(loss, batches(), gamma=0.9)  # SGD has no gamma
    with pytest.raises(TypeError, match="multiple values"):
        kf.adam(loss, batches(), 0.1, lr=0.2)


def test_minimize_reaches_the_solution_and_sets_opt():
    w, b, loss = linreg()
    data = itertools.islice(itertools.cycle(batches()), 400)
    last = list(kf.minimize(loss, data, optim.Adam(lr=0.05)))[-1]
    assert last < 1e-3
    np.testing.assert_allclose(w.value, W_TRUE, atol=0.02)
    np.testing.assert_allclose(b.value, [0.3], atol=0.02)
    assert isinstance(w.opt, optim.Adam) and isinstance(b.opt, optim.Adam)
    assert w.opt is not b.opt and float(w.opt.state[""]["t"]) == 400


def test_minimize_is_lazy():
    w, _b, loss = linreg()
    itr = kf.sgd(loss, batches())
    assert w.opt is None and not w.value.any()  # nothing ran yet
    next(iter(itr))
    assert w.opt is not None and w.value.any()


def test_param_opt_is_not_overwritten():
    w, b, loss = linreg()
    mine = optim.Momentum(lr=0.01)
    w.opt = mine
    list(kf.adam(loss, batches()))
    assert w.opt is mine and "" in mine.state  # momentum updated w
    assert isinstance(b.opt, optim.Adam)


def test_stop_and_restart_keeps_optimizer_state():
    w1, _b1, loss1 = linreg()
    straight = list(kf.adam(loss1, batches() * 2, lr=0.05))
    w2, _b2, loss2 = linreg()
    first = list(kf.adam(loss2, batches(), lr=0.05))
    again = list(kf.adam(loss2, batches(), lr=0.05))  # .opt set: Adam's t goes on from 4
    np.testing.assert_allclose(first + again, straight, rtol=1e-12)
    np.testing.assert_allclose(w2.value, w1.value, rtol=1e-12)


def test_params_limits_the_update():
    w, b, loss = linreg()
    list(kf.sgd(loss, batches(), params=[w]))
    assert w.value.any() and not b.value.any() and b.opt is None


def test_multioptimizer_in_minimize_maps_by_param_name():
    w, b, loss = linreg()
    m = optim.MultiOptimizer({"default": optim.SGD(lr=0.1), "b": optim.Adam(lr=0.1)})
    list(kf.minimize(loss, batches(), m))
    assert isinstance(w.opt, optim.SGD) and isinstance(b.opt, optim.Adam)


def test_data_elements_that_are_not_tuples_are_one_argument():
    w = kf.Param(np.array([2.0]))
    losses = list(kf.sgd(lambda x: kf.sum((w - x) ** 2), [np.array([1.0])] * 30))
    assert losses[-1] < 1e-4


# ---- converge ----


def test_converge_stops_when_the_average_change_turns_positive():
    values = [4, 3, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert list(kf.converge(values)) == [4, 3, 2, 1, 2, 3, 4, 5]
    assert list(kf.converge(values, alpha=0.5)) == [4, 3, 2, 1, 2]
    assert list(kf.converge([3.0, 2.0, 1.0])) == [3.0, 2.0, 1.0]  # ends with the iterator


def test_converge_ends_training_on_cycled_data():
    _w, _b, loss = linreg()
    n = sum(1 for _ in kf.converge(kf.adam(loss, itertools.cycle(batches()), lr=0.1)))
    assert 10 < n < 5000


# ---- minibatch ----


def test_minibatch_shapes_and_partial():
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    full = list(kf.minibatch(x, y, 4))
    assert [(a.shape, b.shape) for a, b in full] == [((4, 2), (4,))] * 2
    assert len(kf.minibatch(x, y, 4)) == 2 and len(kf.minibatch(x, y, 4, partial=True)) == 3
    part = list(kf.minibatch(x, y, batchsize=4, partial=True))
    assert part[-1][0].shape == (2, 2)
    np.testing.assert_array_equal(part[-1][1], [8, 9])
    xs = list(kf.minibatch(x, batchsize=5))  # no y: batches of x alone
    assert len(xs) == 2 and xs[0].shape == (5, 2)
    assert [b.shape for b in kf.minibatch(x, 3)] == [(3, 2)] * 3  # Knet's minibatch(x, n)


def test_minibatch_types():
    x, y = np.ones((4, 2)), np.arange(4)
    xb, yb = next(iter(kf.minibatch(x, y, 2, xtype="float32", ytype=lambda a: a + 1)))
    assert xb.dtype == np.float32
    np.testing.assert_array_equal(yb, [1, 2])


def test_minibatch_shuffle_is_deterministic_under_seed_and_new_each_epoch():
    x, y = np.arange(12.0)[:, None], np.arange(12)
    kf.seed(7)
    d = kf.minibatch(x, y, 4, shuffle=True)
    epoch1 = np.concatenate([b for _, b in d])
    epoch2 = np.concatenate([b for _, b in d])
    kf.seed(7)
    again = np.concatenate([b for _, b in kf.minibatch(x, y, 4, shuffle=True)])
    np.testing.assert_array_equal(epoch1, again)
    assert sorted(epoch1) == list(range(12)) and not (epoch1 == epoch2).all()
    assert not (epoch1 == np.arange(12)).all()
    xb, yb = next(iter(kf.minibatch(x, y, 4, shuffle=True)))
    np.testing.assert_array_equal(xb[:, 0], yb)  # rows stay paired


def test_minibatch_errors():
    with pytest.raises(ValueError, match=r"x has 3 instances \(shape \(3, 2\)\) but y has 2"):
        kf.minibatch(np.ones((3, 2)), np.ones(2), 1)
    with pytest.raises(ValueError, match="batchsize must be >= 1"):
        kf.minibatch(np.ones(3), None, 0)
