"""Optimizers (train/optimizers.py, shown as kf.optim by train/optim.py): each formula
against a NumPy transcription of the seed, eager (kf.update) and compiled (step graph,
one plan run per step) alike, in float64; MultiOptimizer; state dicts; create. The
step graph itself is tested in test_step.py."""

import numpy as np
import pytest

import knetflow as kf
from knetflow.train import optim

C = np.array([1.0, 2.0, 0.5, 4.0])
D = np.array([0.3, -1.0, 2.0, 0.0])
W0 = np.array([1.0, -2.0, 0.5, 3.0])
STEPS = 5


def loss_grad(w):
    """Gradient of sum(C*w*w/2 + D*w)."""
    return C * w + D


# ---- the seed's formulas, written out in NumPy (Knet update!, defaults from the seed) ----


def ref_sgd(w, g, s, lr=0.1):
    return w - lr * g


def ref_momentum(w, g, s, lr=0.05, gamma=0.95):
    s["v"] = gamma * s.get("v", 0 * w) - lr * g
    return w + s["v"]


def ref_nesterov(w, g, s, lr=0.05, gamma=0.95):
    v = s.get("v", 0 * w)
    w = w - gamma * v
    s["v"] = gamma * v - lr * g
    return w + (1 + gamma) * s["v"]


def ref_adagrad(w, g, s, lr=0.05, eps=1e-6):
    s["G"] = s.get("G", 0 * w) + g ** 2
    return w - lr * g / np.sqrt(s["G"] + eps)


def ref_rmsprop(w, g, s, lr=0.01, rho=0.9, eps=1e-6):
    s["G"] = rho * s.get("G", 0 * w) + (1 - rho) * g ** 2
    return w - lr * g / np.sqrt(s["G"] + eps)


def ref_adadelta(w, g, s, lr=1.0, rho=0.9, eps=1e-6):
    s["G"] = rho * s.get("G", 0 * w) + (1 - rho) * g ** 2
    delta = s.get("delta", 0 * w)
    upd = np.sqrt(delta + eps) * g / np.sqrt(s["G"] + eps)
    s["delta"] = rho * delta + (1 - rho) * upd ** 2
    return w - lr * upd


def ref_adam(w, g, s, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
    s["t"] = s.get("t", 0) + 1
    s["v"] = beta1 * s.get("v", 0 * w) + (1 - beta1) * g
    s["G"] = beta2 * s.get("G", 0 * w) + (1 - beta2) * g ** 2
    vhat = s["v"] / (1 - beta1 ** s["t"])
    ghat = s["G"] / (1 - beta2 ** s["t"])
    return w - (lr / (np.sqrt(ghat) + eps)) * vhat


CASES = [(optim.SGD, ref_sgd), (optim.Momentum, ref_momentum), (optim.Nesterov, ref_nesterov),
         (optim.Adagrad, ref_adagrad), (optim.Rmsprop, ref_rmsprop),
         (optim.Adadelta, ref_adadelta), (optim.Adam, ref_adam)]
IDS = [c.__name__ for c, _ in CASES]


def reference(ref, steps=STEPS, prepare=lambda w, g: g):
    w, s, out = W0.copy(), {}, []
    for _ in range(steps):
        w = ref(w, prepare(w, loss_grad(w)), s)
        out.append(w.copy())
    return out


def eager(opt, steps=STEPS):
    w, out = W0.copy(), []
    for _ in range(steps):
        kf.update(w, loss_grad(w), opt)
        out.append(w.copy())
    return out


def compiled(opt, steps=STEPS):
    w = kf.param("w", value=W0, dtype="float64")
    loss = kf.sum(0.5 * C * w * w + D * w)
    plan = kf.compile(optim.step_graph(kf.Graph([loss]), opt))
    out = []
    for _ in range(steps):
        plan.run({})
        out.append(np.array(plan.params["w"]))
    return out, plan


@pytest.mark.parametrize("cls, ref", CASES, ids=IDS)
def test_formula_eager_and_compiled(cls, ref):
    expected = reference(ref)
    np.testing.assert_allclose(eager(cls()), expected, rtol=1e-12, atol=1e-14)
    got, plan = compiled(cls())
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    # state params named "<param>:<slot>", one per slot
    assert {n for n in plan.params if n != "w"} == {f"w:{s}" for s in cls().all_slots()}


def test_seed_defaults():
    assert optim.SGD().hyper()["lr"] == 0.1
    assert (optim.Momentum().lr, optim.Momentum().gamma) == (0.05, 0.95)
    assert (optim.Nesterov().lr, optim.Nesterov().gamma) == (0.05, 0.95)
    assert (optim.Adagrad().lr, optim.Adagrad().eps) == (0.05, 1e-6)
    assert (optim.Rmsprop().lr, optim.Rmsprop().rho, optim.Rmsprop().eps) == (0.01, 0.9, 1e-6)
    assert (optim.Adadelta().lr, optim.Adadelta().rho, optim.Adadelta().eps) == (1.0, 0.9, 1e-6)
    a = optim.Adam()
    assert (a.lr, a.beta1, a.beta2, a.eps, a.gclip) == (0.001, 0.9, 0.999, 1e-8, 0)


# ---- gradient preparation: gclip, clip value, clip norm, weight decay ----


def _knet_gclip(g, c):
    n = np.linalg.norm(g)
    return g * (c / n) if n > c > 0 else g


PREP_CASES = [
    ({"gclip": 1.5}, lambda w, g: _knet_gclip(g, 1.5)),
    ({"gclip": 100.0}, lambda w, g: g),
    ({"gradient_clip_value": 0.7}, lambda w, g: np.clip(g, -0.7, 0.7)),
    ({"wdecay": 0.01}, lambda w, g: g + 0.01 * w),
    ({"rescale_grad": 0.5, "gclip": 1.0}, lambda w, g: _knet_gclip(0.5 * g, 1.0)),
    ({"gradient_clip_norm": 2.0}, lambda w, g: _knet_gclip(g, 2.0)),  # one param: global = own
]


@pytest.mark.parametrize("kw, prep", PREP_CASES, ids=[str(k) for k, _ in PREP_CASES])
@pytest.mark.parametrize("cls, ref", [CASES[1], CASES[6]], ids=["Momentum", "Adam"])
def test_gradient_preparation(cls, ref, kw, prep):
    expected = reference(ref, prepare=prep)
    np.testing.assert_allclose(eager(cls(**kw)), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(compiled(cls(**kw))[0], expected, rtol=1e-12, atol=1e-14)


def test_neon_momentum_with_weight_decay():
    # neon: v' = gamma v - alpha (grad + lambda theta); theta' = theta + v'
    w, v = W0.copy(), np.zeros(4)
    ours = W0.copy()
    opt = optim.Momentum(lr=0.01, gamma=0.9, wdecay=0.001)
    for _ in range(3):
        v = 0.9 * v - 0.01 * (loss_grad(w) + 0.001 * w)
        w = w + v
        kf.update(ours, loss_grad(ours), opt)
    np.testing.assert_allclose(ours, w, rtol=1e-12)


def test_gradient_clip_norm_is_global_over_the_update():
    ws = [np.array([3.0, 0.0]), np.array([0.0, 4.0])]
    gs = [np.array([3.0, 0.0]), np.array([0.0, 4.0])]  # global norm 5
    kf.update(ws, gs, optim.SGD(lr=1.0, gradient_clip_norm=1.0))
    np.testing.assert_allclose(ws[0], [3.0 - 0.6, 0.0])
    np.testing.assert_allclose(ws[1], [0.0, 4.0 - 0.8])
    # the same in a step graph over two params
    a = kf.param("a", value=np.array([3.0, 0.0]), dtype="float64")
    b = kf.param("b", value=np.array([0.0, 4.0]), dtype="float64")
    loss = 0.5 * kf.sum(a * a) + 0.5 * kf.sum(b * b)
    plan = kf.compile(optim.step_graph(kf.Graph([loss]), optim.SGD(lr=1.0, gradient_clip_norm=1.0)))
    plan.run({})
    np.testing.assert_allclose(plan.params["a"], [2.4, 0.0])
    np.testing.assert_allclose(plan.params["b"], [0.0, 3.2])


def test_gclip_is_per_parameter():
    ws = [np.array([3.0, 0.0]), np.array([0.0, 0.5])]
    kf.update(ws, [w.copy() for w in ws], optim.SGD(lr=1.0, gclip=1.0))
    np.testing.assert_allclose(ws[0], [2.0, 0.0])  # norm 3 -> 1
    np.testing.assert_allclose(ws[1], [0.0, 0.0])  # norm 0.5, untouched


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="gclip must be >= 0"):
        optim.SGD(gclip=-1)
    with pytest.raises(ValueError, match="gradient_clip_value must be > 0"):
        optim.Adam(gradient_clip_value=0)
    with pytest.raises(TypeError):
        optim.SGD(gamma=0.9)


# ---- MultiOptimizer ----


def test_multioptimizer_name_beats_kind_beats_default():
    a, b, c = optim.SGD(), optim.Momentum(), optim.Adam()
    m = optim.MultiOptimizer({"default": a, "bias": b, "fc2": c})
    assert m.resolve("fc1_weight") is a
    assert m.resolve("fc1_bias") is b          # kind from the name's suffix
    assert m.resolve("fc2_bias") is c          # the layer name beats the kind
    assert m.resolve("fc2_weight") is c
    assert m.resolve("w", kind="Bias") is b    # an explicit kind, case-insensitive
    exact = optim.Rmsprop()
    m2 = optim.MultiOptimizer({"fc*": a, "fc2_weight": exact, "default": c})
    assert m2.resolve("fc2_weight") is exact   # the exact name beats a pattern
    assert m2.resolve("fc3_bias") is a         # glob pattern


def test_multioptimizer_without_default_names_the_param():
    m = optim.MultiOptimizer({"bias": optim.SGD()})
    with pytest.raises(ValueError, match="no optimizer for param 'fc1_weight'.*'default'"):
        m.resolve("fc1_weight")
    with pytest.raises(TypeError, match="not an optimizer"):
        optim.MultiOptimizer({"default": "sgd"})


# ---- state: checkpoints and resuming ----


@pytest.mark.parametrize("cls", [optim.Adam, optim.Adadelta, optim.Nesterov], ids=str)
def test_state_dict_round_trip_resumes_exactly(cls):
    straight = eager(cls(), steps=5)
    opt = cls()
    w = W0.copy()
    for _ in range(3):
        kf.update(w, loss_grad(w), opt)
    saved = opt.state_dict()
    assert saved["type"] == cls.__name__ and set(saved["state"]) == set(cls().all_slots())
    assert all(isinstance(v, (float, type(None))) for v in saved["hyper"].values())
    fresh = cls(lr=123.0)
    fresh.load_state_dict(saved)
    assert fresh.lr == opt.lr
    for _ in range(2):
        kf.update(w, loss_grad(w), fresh)
    np.testing.assert_allclose(w, straight[-1], rtol=1e-12)


def test_load_state_dict_errors():
    with pytest.raises(ValueError, match="state of a SGD cannot load into Adam"):
        optim.Adam().load_state_dict(optim.SGD().state_dict())
    with pytest.raises(ValueError, match="no state slot 'velocity'"):
        optim.Adam().load_state_dict({"type": "Adam", "state": {"w:velocity": np.zeros(2)}})
    m = optim.MultiOptimizer({"default": optim.SGD()})
    with pytest.raises(ValueError, match="do not match"):
        m.load_state_dict({"optimizers": {"bias": optim.SGD().state_dict()}})


def test_multioptimizer_state_dict():
    m = optim.MultiOptimizer({"default": optim.Adam(), "bias": optim.Momentum()})
    kf.update({"w": W0.copy(), "fc_bias": W0.copy()}, {"w": D, "fc_bias": D}, m)
    saved = m.state_dict()
    assert set(saved["optimizers"]["default"]["state"]) == {"w:m", "w:v", "w:t"}
    assert set(saved["optimizers"]["bias"]["state"]) == {"fc_bias:velocity"}
    m2 = optim.MultiOptimizer({"default": optim.Adam(), "bias": optim.Momentum()})
    m2.load_state_dict(saved)
    np.testing.assert_array_equal(m2.mapping["bias"].state["fc_bias"]["velocity"],
                                  m.mapping["bias"].state["fc_bias"]["velocity"])


def test_copy_has_no_state_and_create_by_name():
    opt = optim.Adam(lr=0.1)
    kf.update(W0.copy(), D, opt)
    twin = opt.copy()
    assert twin.state == {} and twin.lr == 0.1
    assert isinstance(optim.create("ADAM"), optim.Adam)
    mom = optim.create("sgd", learning_rate=0.2, momentum=0.9, wd=1e-4)
    assert isinstance(mom, optim.Momentum) and (mom.lr, mom.gamma, mom.wdecay) == (0.2, 0.9, 1e-4)
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; known: .*'adam'"):
        optim.create("adamw")
