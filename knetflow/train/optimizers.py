"""The optimizers' formulas: Knet's SGD ... Adam with neon's and MXNet's gradient options.

Each optimizer writes its update formula once, in knetflow ops, as
`rule(w, g, state) -> (new_w, new_state)`. Op functions run at once on arrays
and build nodes on Symbols, so the same formula serves `kf.update` (eager, in
place) and compiled training (`kf.optim.step_graph`, where it becomes part of
the step plan); `knetflow.train.step` wires it to parameters either way.
`OPTIMIZERS` is the table by name: `kf.optim.create` reads it, and Knet's
iterators (`kf.sgd` ... `kf.adam`) are made from it with each class's own
defaults. `MultiOptimizer` routes parameters to optimizers by name or kind.

State lives per parameter. An optimizer keeps `state[key] = {slot: array}`,
keyed by the parameter's name in a step graph or a dict, its index in a
sequence, and `""` for a lone array or a `Param`'s own optimizer (Knet's
`Param.opt`: each Param gets its own copy). `state_dict()` /
`load_state_dict()` carry hyperparameters and state as plain dicts, with state
keys flattened to a step plan's names (`"w:m"`, or the bare slot for key `""`).

Float16 weights are updated in float32: their state is float32, and the weight and
gradient are cast up for the formula and the new weight cast back. In float16 Adam's
eps (1e-8) is 0 and a small g*g is 0, so a zero or small gradient would give a NaN or
infinite weight; PyTorch's mixed precision keeps optimizer math in float32 likewise.

Before the formula, the gradient is prepared in this order: `rescale_grad`
(MXNet), `gradient_clip_value` (neon: clip each element to [-k, k]),
`gradient_clip_norm` (neon: scale every gradient of one update by
k / global norm when that norm exceeds k; as in neon, the norm is taken of the
gradients after `rescale_grad` and before the value clipping, and the scale
applied after it), `gclip` (Knet: scale each gradient to norm gclip when its
norm exceeds it), then `wdecay` (neon: add wdecay * w).
"""

from __future__ import annotations

import fnmatch

import numpy as np

from knetflow.devices.base import is_device_array
from knetflow.ops.binary import maximum, minimum
from knetflow.ops.elementwise import sqrt
from knetflow.ops.reduce import in_dtype, mean_dtype
from knetflow.ops.reduce import sum as _sum

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "Momentum",
    "MultiOptimizer",
    "Nesterov",
    "Optimizer",
    "Rmsprop",
    "clip_norm",
    "clip_value",
    "create",
    "optimizer_from_state",
]


def clip_value(g, k):
    """Each element of g clipped to [-k, k] (neon `gradient_clip_value`)."""
    return minimum(maximum(g, -k), k)


def clip_norm(g, k):
    """g scaled to norm k when norm(g) > k > 0, else g (Knet `gclip`)."""
    norm = sqrt(_sum(g * g))
    return g * (k / maximum(norm, k))


class Optimizer:
    """Base class: hyperparameters, per-parameter state, gradient preparation.

    Subclasses set `slots` (state arrays shaped like w), `scalar_slots` (0-d
    state) and write `rule(w, g, state)` with knetflow ops.
    """

    slots: tuple = ()
    scalar_slots: tuple = ()

    def __init__(self, hyper: dict, gclip=0, wdecay=0, gradient_clip_value=None,
                 gradient_clip_norm=None, rescale_grad=1.0):
        common = {"gclip": gclip, "wdecay": wdecay, "gradient_clip_value": gradient_clip_value,
                  "gradient_clip_norm": gradient_clip_norm, "rescale_grad": rescale_grad}
        self._names = tuple(hyper) + tuple(common)
        for name, value in {**hyper, **common}.items():
            setattr(self, name, None if value is None else float(value))
        for name in ("gclip", "wdecay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{type(self).__name__}: {name} must be >= 0, "
                                 f"got {getattr(self, name)}")
        for name in ("gradient_clip_value", "gradient_clip_norm"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{type(self).__name__}: {name} must be > 0 or None, "
                                 f"got {getattr(self, name)}")
        self.state: dict = {}
        self._group = object()  # copies share it: gradient_clip_norm's norm spans a group

    # -- the formula --
    def rule(self, w, g, state):
        """The seed's update formula: (w, g, state) -> (new_w, new_state)."""
        raise NotImplementedError

    def prepare(self, w, g, norm_scale=None):
        """The gradient the formula sees (see the module docstring for the order)."""
        if self.rescale_grad != 1.0:
            g = g * self.rescale_grad
        if self.gradient_clip_value is not None:
            g = clip_value(g, self.gradient_clip_value)
        if norm_scale is not None:
            g = g * norm_scale
        if self.gclip > 0:
            g = clip_norm(g, self.gclip)
        if self.wdecay:
            g = g + self.wdecay * w
        return g

    def apply(self, w, g, state, norm_scale=None):
        """prepare + rule, on arrays (eager) or Symbols (graph); a float16 weight in float32
        (see the module docstring)."""
        up = mean_dtype(w.dtype)
        if up != np.dtype(w.dtype):
            wide, g = in_dtype(w, up), in_dtype(g, up)
            new_w, new_state = self.rule(wide, self.prepare(wide, g, norm_scale), state)
            return in_dtype(new_w, w.dtype), new_state
        return self.rule(w, self.prepare(w, g, norm_scale), state)

    def init_state(self, shape, dtype) -> dict:
        """Fresh state for a parameter of this shape and dtype (zeros of `mean_dtype`:
        float32 for float16)."""
        dtype = mean_dtype(dtype)
        state = {s: np.zeros(shape, dtype) for s in self.slots}
        state.update((s, np.zeros((), dtype)) for s in self.scalar_slots)
        return state

    # -- eager use --
    def update(self, w, g, key="", norm_scale=None):
        """Update the array w in place from its gradient g (Knet `update!(w, g, opt)`)."""
        # the gradient as the formula's dtype: a float32 gradient of a float16 weight
        # must not pass through float16 (1e5 would be inf, 1e-8 zero)
        g = like(g, w, mean_dtype(w.dtype))
        if g.shape != w.shape:
            raise ValueError(f"{type(self).__name__}: gradient shape {g.shape} does not match "
                             f"weight shape {w.shape}" + (f" for {key!r}" if key else ""))
        state = self.state.get(key)
        if state is None:
            state = {k: like(v, w, v.dtype) for k, v in self.init_state(w.shape, w.dtype).items()}
        new_w, new_state = self.apply(w, g, state, norm_scale)
        w[...] = new_w
        for slot, value in new_state.items():
            state[slot][...] = value
        self.state[key] = state
        return w

    # -- copies and checkpoints --
    def hyper(self) -> dict:
        """The hyperparameters by name."""
        return {name: getattr(self, name) for name in self._names}

    def copy(self) -> Optimizer:
        """The same optimizer with no state (Knet's `clone`, used for `Param.opt`)."""
        new = type(self)(**self.hyper())
        new._group = self._group
        return new

    def for_param(self, name=None, kind=None) -> Optimizer:
        """The optimizer a Param gets when its `.opt` is unset: a copy of this one."""
        return self.copy()

    def all_slots(self) -> tuple:
        return self.slots + self.scalar_slots

    def state_dict(self) -> dict:
        """Hyperparameters and state as a plain dict of numbers and arrays."""
        flat = {}
        for key, slots in self.state.items():
            for slot, value in slots.items():
                flat[f"{key}:{slot}" if key else slot] = np.array(value)
        return {"type": type(self).__name__, "hyper": self.hyper(), "state": flat}

    def load_state_dict(self, data: dict) -> None:
        """Restore what `state_dict()` returned (the type must match)."""
        if data.get("type", type(self).__name__) != type(self).__name__:
            raise ValueError(f"state of a {data['type']} cannot load into {type(self).__name__}")
        for name, value in data.get("hyper", {}).items():
            if name not in self._names:
                raise ValueError(f"{type(self).__name__} has no hyperparameter {name!r}; "
                                 f"it has {list(self._names)}")
            setattr(self, name, None if value is None else float(value))
        state: dict = {}
        for flat, value in data.get("state", {}).items():
            key, _, slot = flat.rpartition(":")
            if slot not in self.all_slots():
                raise ValueError(f"{type(self).__name__} has no state slot {slot!r} "
                                 f"(in {flat!r}); its slots are {list(self.all_slots())}")
            state.setdefault(key, {})[slot] = np.array(value)
        self.state = state

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, w = w - lr * g (Knet `SGD(; lr=0.1, gclip=0)`)."""

    def __init__(self, lr=0.1, gclip=0, **common):
        super().__init__({"lr": lr}, gclip=gclip, **common)

    def rule(self, w, g, state):
        return w - self.lr * g, {}

    def update(self, w, g, key="", norm_scale=None):
        """As `Optimizer.update`; the plain rule on host arrays runs as `w -= lr * g`
        (the same arithmetic, without the new array and its copy into w), and on an array
        of one element (a bias of one output) as the same float operations on its element:
        NumPy's in-place ufunc on one element costs about 1 us, the element's 0.2 us."""
        if (type(w) is np.ndarray and type(g) is np.ndarray and g.dtype == w.dtype
                and w.dtype.char != "e"  # float16: in float32, as every optimizer (apply)
                and g.shape == w.shape and norm_scale is None and self.rescale_grad == 1.0
                and self.gradient_clip_value is None and not self.gclip and not self.wdecay):
            if w.size == 1:
                at = (0,) * w.ndim
                w[at] -= self.lr * g[at]
            else:
                w -= self.lr * g
            if key not in self.state:
                self.state[key] = {}  # as the general path leaves it: no slots
            return w
        return super().update(w, g, key, norm_scale)


class Momentum(Optimizer):
    """Momentum (Knet `Momentum(; lr=0.05, gamma=0.95)`): v = gamma*v - lr*g; w = w + v.

    With `wdecay` this is neon's GradientDescentMomentum: v = gamma*v - lr*(g + wdecay*w).
    """

    slots = ("velocity",)

    def __init__(self, lr=0.05, gamma=0.95, gclip=0, **common):
        super().__init__({"lr": lr, "gamma": gamma}, gclip=gclip, **common)

    def rule(self, w, g, state):
        v = self.gamma * state["velocity"] - self.lr * g
        return w + v, {"velocity": v}


class Nesterov(Optimizer):
    """Nesterov momentum (Knet `Nesterov(; lr=0.05, gamma=0.95)`).

    w = w - gamma*v; v = gamma*v - lr*g; w = w + (1 + gamma)*v.
    """

    slots = ("velocity",)

    def __init__(self, lr=0.05, gamma=0.95, gclip=0, **common):
        super().__init__({"lr": lr, "gamma": gamma}, gclip=gclip, **common)

    def rule(self, w, g, state):
        v_old = self.gamma * state["velocity"]
        v = v_old - self.lr * g
        return w - v_old + (1 + self.gamma) * v, {"velocity": v}


class Adagrad(Optimizer):
    """Adagrad (Knet `Adagrad(; lr=0.05, eps=1e-6)`): G = G + g^2; w = w - lr*g/sqrt(G + eps)."""

    slots = ("G",)

    def __init__(self, lr=0.05, eps=1e-6, gclip=0, **common):
        super().__init__({"lr": lr, "eps": eps}, gclip=gclip, **common)

    def rule(self, w, g, state):
        G = state["G"] + g * g
        return w - self.lr * g / sqrt(G + self.eps), {"G": G}


class Rmsprop(Optimizer):
    """RMSprop (Knet `Rmsprop(; lr=0.01, rho=0.9, eps=1e-6)`).

    G = rho*G + (1 - rho)*g^2; w = w - lr*g/sqrt(G + eps).
    """

    slots = ("G",)

    def __init__(self, lr=0.01, rho=0.9, eps=1e-6, gclip=0, **common):
        super().__init__({"lr": lr, "rho": rho, "eps": eps}, gclip=gclip, **common)

    def rule(self, w, g, state):
        G = self.rho * state["G"] + (1 - self.rho) * (g * g)
        return w - self.lr * g / sqrt(G + self.eps), {"G": G}


class Adadelta(Optimizer):
    """Adadelta (Knet `Adadelta(; lr=1.0, rho=0.9, eps=1e-6)`).

    G = rho*G + (1 - rho)*g^2; update = g*sqrt(delta + eps)/sqrt(G + eps);
    w = w - lr*update; delta = rho*delta + (1 - rho)*update^2.
    """

    slots = ("G", "delta")

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, gclip=0, **common):
        super().__init__({"lr": lr, "rho": rho, "eps": eps}, gclip=gclip, **common)

    def rule(self, w, g, state):
        G = self.rho * state["G"] + (1 - self.rho) * (g * g)
        step = g * sqrt(state["delta"] + self.eps) / sqrt(G + self.eps)
        delta = self.rho * state["delta"] + (1 - self.rho) * (step * step)
        return w - self.lr * step, {"G": G, "delta": delta}


class Adam(Optimizer):
    """Adam (Knet `Adam(; lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8)`).

    m = beta1*m + (1 - beta1)*g; v = beta2*v + (1 - beta2)*g^2; t = t + 1;
    w = w - lr/(sqrt(v/(1 - beta2^t)) + eps) * m/(1 - beta1^t).
    """

    slots = ("m", "v")
    scalar_slots = ("t",)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, gclip=0, **common):
        super().__init__({"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps}, gclip=gclip,
                         **common)

    def rule(self, w, g, state):
        t = state["t"] + 1
        m = self.beta1 * state["m"] + (1 - self.beta1) * g
        v = self.beta2 * state["v"] + (1 - self.beta2) * (g * g)
        mhat = m / (1 - self.beta1 ** t)
        vhat = v / (1 - self.beta2 ** t)
        return w - self.lr / (sqrt(vhat) + self.eps) * mhat, {"m": m, "v": v, "t": t}


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": Adagrad,
              "rmsprop": Rmsprop, "adadelta": Adadelta, "adam": Adam}



class MultiOptimizer:
    """Different optimizers for different parameters (neon `MultiOptimizer`).

    Keys are `'default'`, a layer kind (e.g. `'bias'`, `'FullyConnected'`) or a
    parameter-name pattern (`'fc2'` matches `fc2_weight` and `fc2_bias`; glob
    patterns such as `'fc*_weight'` work too). A name match beats a kind match,
    which beats `'default'`; among name patterns the exact name wins, then the
    first match in mapping order. A parameter's kinds are its `kind` (given by
    layer symbols or `kinds=`) and its name's last `_` part (`fc1_bias` -> `bias`).

    Example:
        >>> import knetflow as kf
        >>> opt = kf.optim.MultiOptimizer({"default": kf.optim.SGD(),
        ...                                "bias": kf.optim.Adam(), "fc2": kf.optim.Momentum()})
        >>> [type(opt.resolve(n)).__name__ for n in ("fc1_weight", "fc1_bias", "fc2_bias")]
        ['SGD', 'Adam', 'Momentum']
    """

    def __init__(self, mapping: dict):
        for key, opt in mapping.items():
            if not isinstance(opt, Optimizer):
                raise TypeError(f"MultiOptimizer: {key!r} maps to {type(opt).__name__}, "
                                "not an optimizer")
        self.mapping = dict(mapping)

    def resolve(self, name, kind=None) -> Optimizer:
        """The optimizer for the parameter `name` (of layer kind `kind`)."""
        name = "" if name is None else str(name)
        if name in self.mapping and name != "default":
            return self.mapping[name]
        for key, opt in self.mapping.items():
            if key != "default" and name and (fnmatch.fnmatchcase(name, key)
                                              or name.startswith(key + "_")):
                return opt
        kinds = {k.lower() for k in _kinds(name, kind)}
        for key, opt in self.mapping.items():
            if key.lower() in kinds:
                return opt
        if "default" in self.mapping:
            return self.mapping["default"]
        raise ValueError(f"MultiOptimizer has no optimizer for param {name!r} "
                         f"(kinds {sorted(kinds)}); keys: {list(self.mapping)}; "
                         "add a 'default'")

    def for_param(self, name=None, kind=None) -> Optimizer:
        """A copy of the optimizer for this parameter (for `Param.opt`)."""
        return self.resolve(name, kind).copy()

    def state_dict(self) -> dict:
        """Every mapped optimizer's state_dict, by key."""
        return {"type": "MultiOptimizer",
                "optimizers": {k: o.state_dict() for k, o in self.mapping.items()}}

    def load_state_dict(self, data: dict) -> None:
        """Restore what `state_dict()` returned."""
        missing = set(self.mapping) ^ set(data.get("optimizers", {}))
        if missing:
            raise ValueError(f"MultiOptimizer keys {sorted(self.mapping)} do not match the "
                             f"saved keys {sorted(data.get('optimizers', {}))}")
        for key, opt in self.mapping.items():
            opt.load_state_dict(data["optimizers"][key])

    def optimizers(self) -> list:
        """The distinct optimizers, in mapping order."""
        out: list = []
        for opt in self.mapping.values():
            if all(opt is not o for o in out):
                out.append(opt)
        return out

    def __repr__(self) -> str:
        return f"MultiOptimizer({self.mapping!r})"


# MXNet's optimizer keyword names -> ours
_MXNET_NAMES = {"learning_rate": "lr", "wd": "wdecay", "clip_gradient": "gradient_clip_value",
                "epsilon": "eps"}


def create(name, **kwargs) -> Optimizer:
    """An optimizer by name: 'sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adadelta',
    'adam' (MXNet `optimizer.create`); MXNet keywords (learning_rate, wd, clip_gradient,
    epsilon, momentum for 'sgd') are accepted.

    Example: `kf.optim.create("sgd", learning_rate=0.1, momentum=0.9)` -> a Momentum.
    """
    if isinstance(name, (Optimizer, MultiOptimizer)):
        return name
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    kwargs = {_MXNET_NAMES.get(k, k): v for k, v in kwargs.items()}
    if key == "sgd" and kwargs.get("momentum"):
        key, kwargs["gamma"] = "momentum", kwargs.pop("momentum")
    kwargs.pop("momentum", None)
    return OPTIMIZERS[key](**kwargs)


def optimizer_from_state(state: dict):
    """A new optimizer of the type and hyperparameters a `state_dict()` holds, with its state
    (a MultiOptimizer's too)."""
    if state.get("type") == "MultiOptimizer":
        return MultiOptimizer({k: optimizer_from_state(v)
                               for k, v in state["optimizers"].items()})
    classes = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    if state.get("type") not in classes:
        raise ValueError(f"saved optimizer state of unknown type {state.get('type')!r}; "
                         f"known: {sorted(classes)}")
    opt = classes[state["type"]]()
    opt.load_state_dict(state)
    return opt


def _kinds(name, kind) -> list:
    out = [kind] if kind else []
    if "_" in name:
        out.append(name.rsplit("_", 1)[1])
    return out


def like(value, w, dtype=None):
    """`value` as an array of `dtype` (default w's) where w lives (host, a GPU or a sim
    device)."""
    dtype = w.dtype if dtype is None else np.dtype(dtype)
    if not is_device_array(w):
        return np.asarray(value, dtype=dtype)
    if not is_device_array(value):
        from knetflow.devices import transfers

        value = transfers.copy(np.asarray(value, dtype=dtype), transfers.device_of(w))
    return value if value.dtype == dtype else value.astype(dtype)

