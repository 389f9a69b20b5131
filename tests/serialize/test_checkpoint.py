"""MXNet-style checkpoints, the CheckpointManager, and exact resumption of training."""

import os

import numpy as np
import pytest

import knetflow as kf
from knetflow.serialize import CheckpointManager, load_state, save_state
from tests.serialize.common import batch, mlp


def params_of(graph):
    return {n.attrs["name"]: n.attrs["value"] for n in graph.params}


def test_save_and_load_checkpoint_round_trip(tmp_path):
    g = mlp()
    prefix = tmp_path / "mlp"
    arg = params_of(g)
    aux = {"running_mean": np.arange(3.0)}
    opt = {"step": 12, "lr": 0.1, "state": {"w1": (np.ones((12, 8)), np.zeros((12, 8)))}}
    paths = kf.save_checkpoint(prefix, 3, g, arg, aux, optimizer_state=opt, run="a")
    assert [os.path.basename(p) for p in paths] == ["mlp-symbol.kfg", "mlp-0003.kfp"]
    ckpt = kf.load_checkpoint(prefix, 3, allow_extra=True)  # running_mean: no param of g
    graph, arg2, aux2 = ckpt
    assert ckpt.epoch == 3 and ckpt.metadata == {"run": "a"}
    for name in arg:
        np.testing.assert_array_equal(arg2[name], arg[name])
    np.testing.assert_array_equal(aux2["running_mean"], aux["running_mean"])
    assert ckpt.optimizer_state["step"] == 12 and type(ckpt.optimizer_state["state"]["w1"]) is tuple
    np.testing.assert_array_equal(kf.compile(graph).run({"x": batch()})[0],
                                  kf.compile(g).run({"x": batch()})[0])


def test_symbol_file_holds_no_values_and_params_must_fit_it(tmp_path):
    g = mlp()
    prefix = tmp_path / "m"
    kf.save_checkpoint(prefix, 1, g, params_of(g), {})
    symbol = kf.load(f"{prefix}-symbol.kfg")
    assert symbol.kind == "symbol" and symbol.params == {}
    assert all(n.attrs["value"] is None for n in symbol.graph.params)
    kf.save_checkpoint(prefix, 2, g, {**params_of(g), "w1": np.zeros((3, 3), "float32")}, {})
    with pytest.raises(kf.FormatError, match=r"m-symbol.kfg \(with m-0002.kfp\): .*param 'w1'"):
        kf.load_checkpoint(prefix, 2)


def test_manager_keeps_the_latest_and_the_best(tmp_path):
    g = mlp()
    manager = CheckpointManager(tmp_path, keep=2, prefix="m", best="acc", mode="max")
    accs = [0.5, 0.9, 0.6, 0.7, 0.65]
    for epoch, acc in enumerate(accs, 1):
        manager.save(epoch, g, params_of(g), metrics={"acc": acc})
    assert manager.epochs() == [2, 4, 5]
    assert manager.best_epoch() == 2 and manager.load_best().metrics == {"acc": 0.9}
    assert manager.latest() == 5 and manager.load().epoch == 5
    assert sorted(os.listdir(tmp_path)) == ["m-0002.kfp", "m-0004.kfp", "m-0005.kfp",
                                            "m-symbol.kfg"]


def test_manager_falls_back_past_a_damaged_latest_file(tmp_path):
    g = mlp()
    manager = CheckpointManager(tmp_path, keep=3)
    for epoch in (1, 2):
        manager.save(epoch, g, params_of(g))
    path = tmp_path / "checkpoint-0002.kfp"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping checkpoint 2: .*checksum mismatch"):
        assert manager.load().epoch == 1
    with pytest.raises(kf.FormatError, match="checksum mismatch"):
        manager.load(2)


def test_manager_removes_stale_temp_files(tmp_path):
    (tmp_path / ".checkpoint-0003.kfp.x1y2.tmp").write_bytes(b"half a file")
    (tmp_path / ".other.tmp").write_bytes(b"not ours")
    CheckpointManager(tmp_path)
    assert os.listdir(tmp_path) == [".other.tmp"]
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        CheckpointManager(tmp_path).load()


# ---- exact resumption: optimizer and training state ----

X = np.random.RandomState(0).randn(64, 12).astype("float32")
Y = X @ np.random.RandomState(1).randn(12, 3).astype("float32")


def loss(w, x, y):
    return kf.mean((x @ w - y) ** 2)


def train(steps, directory, stop=None, resume=False):
    """Momentum SGD on shuffled minibatches; saves everything at `stop`, or resumes."""
    w = kf.Param(np.zeros((12, 3), "float32"))
    velocity, rng, history, step = np.zeros((12, 3), "float32"), np.random.default_rng(5), [], 0
    if resume:
        ckpt = kf.load_checkpoint(os.path.join(directory, "run"), 1)
        w.value = ckpt.arg_params["w"].copy()
        velocity = ckpt.optimizer_state["velocity"].copy()
        state = load_state(os.path.join(directory, "train.kfs"))
        rng.bit_generator.state = state["rng"]
        history, step = state["history"], state["step"]
    while step < steps:
        if step == stop:
            x = kf.placeholder("x", (None, 12))
            kf.save_checkpoint(os.path.join(directory, "run"), 1, x @ kf.param("w", (12, 3)),
                               {"w": w.value}, {}, optimizer_state={"velocity": velocity})
            save_state(os.path.join(directory, "train.kfs"), {
                "rng": rng.bit_generator.state, "history": history, "step": step})
            return None
        rows = rng.permutation(len(X))[:16]
        r = kf.diff(loss, w, X[rows], Y[rows])
        velocity = 0.9 * velocity - 0.05 * kf.grad(r, w)
        w.value = w.value + velocity
        history.append(float(kf.value(r)))
        step += 1
    return w.value, history


def test_a_resumed_run_is_exact(tmp_path):
    straight = train(30, str(tmp_path))
    assert train(30, str(tmp_path), stop=17) is None
    resumed = train(30, str(tmp_path), resume=True)
    np.testing.assert_array_equal(resumed[0], straight[0])
    assert resumed[1] == straight[1] and len(resumed[1]) == 30


@pytest.mark.skipif(not hasattr(kf, "optim"), reason="needs the training layer")
def test_optimizer_state_dict_round_trips_and_resumes_exactly(tmp_path):
    w, g = np.ones((3, 2), "float32"), np.full((3, 2), 0.5, "float32")
    opt = kf.optim.Adam(lr=0.01)
    for _ in range(2):
        kf.update(w, g, opt)
    path = save_state(tmp_path / "adam.kfs", opt.state_dict())
    again = kf.optim.Adam(lr=0.5)
    again.load_state_dict(load_state(path))
    w2 = w.copy()
    kf.update(w, g, opt)
    kf.update(w2, g, again)
    np.testing.assert_array_equal(w2, w)


# ---- params that do not fit the symbol: missing, extra, partial loading ----


def dense():
    x = kf.placeholder("x", (None, 2))
    return kf.Graph([x @ kf.param("w", (2, 3)) + kf.param("b", (3,), init="zeros")])


def test_a_missing_param_is_refused_unless_allow_missing(tmp_path):
    prefix = tmp_path / "net"
    kf.save_checkpoint(prefix, 1, dense(), {"w": np.ones((2, 3), "float32")})
    with pytest.raises(kf.FormatError, match=r"net-symbol.kfg \(with net-0001.kfp\): node 3 "
                                             r"\(param\): param 'b' has no value in arg_params "
                                             r"or aux_params \(allow_missing=True initializes"):
        kf.load_checkpoint(prefix, 1)
    with pytest.warns(UserWarning, match=r"net-0001.kfp has no values for 1 param\(s\) of its "
                                         r"symbol \(allow_missing=True\); initialized them: "
                                         r"b \(zeros\)"):
        ckpt = kf.load_checkpoint(prefix, 1, allow_missing=True)
    assert list(ckpt.initialized) == ["b"] and list(ckpt.arg_params) == ["w"]
    np.testing.assert_array_equal(ckpt.graph.param("b").attrs["value"], np.zeros(3))
    out = kf.compile(ckpt.graph).run({"x": np.ones((1, 2), "float32")})[0]
    np.testing.assert_array_equal(out, [[2, 2, 2]])


def test_allow_missing_draws_from_kf_seed(tmp_path):
    prefix = tmp_path / "net"
    kf.save_checkpoint(prefix, 1, dense(), {"b": np.zeros(3, "float32")})
    drawn = []
    for _ in range(2):
        kf.seed(4)
        with pytest.warns(UserWarning, match=r"initialized them: w \(xavier_uniform\)"):
            drawn.append(kf.load_checkpoint(prefix, 1, allow_missing=True).initialized["w"])
    np.testing.assert_array_equal(drawn[0], drawn[1])
    assert drawn[0].shape == (2, 3) and drawn[0].std() > 0


def test_an_extra_value_is_refused_unless_allow_extra(tmp_path):
    prefix = tmp_path / "net"
    values = {"w": np.ones((2, 3), "float32"), "b": np.zeros(3, "float32")}
    kf.save_checkpoint(prefix, 1, dense(), values, {"moving_mean": np.ones(3)})
    with pytest.raises(kf.FormatError, match=r"net-0001.kfp holds a value for 'moving_mean', "
                                             r"which is not a param of the graph \(allow_extra"):
        kf.load_checkpoint(prefix, 1)
    graph, arg, aux = kf.load_checkpoint(prefix, 1, allow_extra=True)
    assert sorted(arg) == ["b", "w"] and list(aux) == ["moving_mean"]
    assert sorted(n.attrs["name"] for n in graph.params) == ["b", "w"]


def test_the_manager_loads_partial_checkpoints_when_asked(tmp_path):
    manager = CheckpointManager(tmp_path, best="loss")
    manager.save(1, dense(), {"w": np.ones((2, 3), "float32"), "extra": np.ones(1)},
                 metrics={"loss": 1.0})
    for load in (manager.load, manager.load_best):
        with pytest.raises(kf.FormatError, match="param 'b' has no value"):
            load()
        with pytest.warns(UserWarning, match=r"initialized them: b \(zeros\)"):
            assert list(load(allow_missing=True, allow_extra=True).initialized) == ["b"]


def test_a_name_in_both_arg_and_aux_params_is_refused_on_save(tmp_path):
    with pytest.raises(ValueError, match=r"\['b'\] in both arg_params and aux_params"):
        kf.save_checkpoint(tmp_path / "net", 1, dense(), {"b": np.zeros(3)}, {"b": np.ones(3)})
