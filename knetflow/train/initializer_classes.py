"""MXNet's initializer classes: `Uniform`, `Normal`, `Xavier`, `Mixed`, ... (`kf.init`).

The classes (`Uniform`, `Normal`, `Orthogonal`, `Xavier`, `Load`, `Mixed`) are
callable MXNet-style on `(name, array)`, filling the array in place by the name's
suffix (`*_weight` by the class's rule, `*_bias`/`*_beta`/moving mean zeros,
`*_gamma`/moving variance ones), and also as a param init
`init(*shape) -> array` (the weight rule), e.g.
`kf.param("w", (64, 784), init=kf.init.Xavier())`. Filters are row-major
(Cout, Cin, k...): fan_in = Cin*k..., fan_out = Cout*k....
All randomness comes from `kf.seed`'s stream. Knet's initializer functions,
which take dims and return an array, are `knetflow/initializers.py`; the
`kf.init` namespace (train/init.py) shows both.
"""

from __future__ import annotations

import json
import re

import numpy as np

from knetflow import rng

__all__ = [
    "Constant",
    "Initializer",
    "Load",
    "Mixed",
    "Normal",
    "One",
    "Orthogonal",
    "Uniform",
    "Xavier",
    "Zero",
    "create",
]


class Initializer:
    """Base class (MXNet `Initializer`): `init(name, arr)` fills arr by its name's suffix."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs

    def __call__(self, *args, dtype="float32"):
        if args and isinstance(args[0], str):
            if len(args) != 2:
                raise TypeError(f"{type(self).__name__}: call as init(name, array)")
            name, arr = args
            self.init_named(name, arr)
            return arr
        shape = tuple(int(d) for d in (args[0] if len(args) == 1 and
                                       isinstance(args[0], (tuple, list)) else args))
        arr = np.zeros(shape, dtype=dtype)
        self.init_weight("", arr)
        return arr

    def init_named(self, name: str, arr) -> None:
        """Fill arr by the suffix of its name, as MXNet's initializers do."""
        if name.endswith(("bias", "beta", "moving_mean", "running_mean", "moving_avg")):
            arr[...] = 0.0
        elif name.endswith(("gamma", "moving_var", "running_var", "moving_inv_var")):
            arr[...] = 1.0
        elif name.endswith(("weight", "parameters")):
            self.init_weight(name, arr)
        else:
            raise ValueError(f"unknown initialization pattern for {name!r}: names should end "
                             "in weight, bias, gamma, beta, moving_mean or moving_var")

    def init_weight(self, name: str, arr) -> None:
        raise NotImplementedError

    def dumps(self) -> str:
        """The initializer as JSON: [class name, keyword arguments] (MXNet `dumps`)."""
        return json.dumps([type(self).__name__.lower(), self._kwargs])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{type(self).__name__}({args})"


class Uniform(Initializer):
    """Weights uniform in [-scale, scale] (MXNet `Uniform(scale=0.07)`)."""

    def __init__(self, scale=0.07):
        super().__init__(scale=scale)
        self.scale = float(scale)

    def init_weight(self, name, arr):
        arr[...] = rng.generator().uniform(-self.scale, self.scale, arr.shape)


class Normal(Initializer):
    """Weights normal with mean 0 and std sigma (MXNet `Normal(sigma=0.01)`)."""

    def __init__(self, sigma=0.01):
        super().__init__(sigma=sigma)
        self.sigma = float(sigma)

    def init_weight(self, name, arr):
        arr[...] = self.sigma * rng.generator().standard_normal(arr.shape)


class Zero(Initializer):
    """Every entry 0."""

    def init_weight(self, name, arr):
        arr[...] = 0.0


class One(Initializer):
    """Every entry 1."""

    def init_weight(self, name, arr):
        arr[...] = 1.0


class Constant(Initializer):
    """Every weight entry `value`."""

    def __init__(self, value):
        super().__init__(value=value)
        self.value = value

    def init_weight(self, name, arr):
        arr[...] = self.value


class Orthogonal(Initializer):
    """An orthogonal weight matrix, times scale (MXNet `Orthogonal(scale=1.414,
    rand_type='uniform')`, Saxe et al. 2013).

    The weight is seen as (shape[0], prod(shape[1:])); its rows (or columns, whichever
    are fewer) are orthonormal before scaling.
    """

    def __init__(self, scale=1.414, rand_type="uniform"):
        if rand_type not in ("uniform", "normal"):
            raise ValueError(f"Orthogonal: rand_type must be 'uniform' or 'normal', "
                             f"got {rand_type!r}")
        super().__init__(scale=scale, rand_type=rand_type)
        self.scale, self.rand_type = float(scale), rand_type

    def init_weight(self, name, arr):
        rows = arr.shape[0] if arr.ndim else 1
        cols = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
        gen = rng.generator()
        tmp = (gen.uniform(-1.0, 1.0, (rows, cols)) if self.rand_type == "uniform"
               else gen.standard_normal((rows, cols)))
        u, _, vt = np.linalg.svd(tmp, full_matrices=False)
        q = u if u.shape == tmp.shape else vt
        arr[...] = (self.scale * q).reshape(arr.shape)


class Xavier(Initializer):
    """Xavier/Glorot weights (MXNet `Xavier(rnd_type='uniform', factor_type='avg',
    magnitude=3)`): scale = sqrt(magnitude / factor), factor the average of fan_in and
    fan_out ('avg'), fan_in ('in') or fan_out ('out'); uniform in [-scale, scale] or
    normal with std scale ('gaussian').
    """

    def __init__(self, rnd_type="uniform", factor_type="avg", magnitude=3):
        if rnd_type not in ("uniform", "gaussian", "normal"):
            raise ValueError(f"Xavier: rnd_type must be 'uniform' or 'gaussian', "
                             f"got {rnd_type!r}")
        if factor_type not in ("avg", "in", "out"):
            raise ValueError(f"Xavier: factor_type must be 'avg', 'in' or 'out', "
                             f"got {factor_type!r}")
        super().__init__(rnd_type=rnd_type, factor_type=factor_type, magnitude=magnitude)
        self.rnd_type, self.factor_type = rnd_type, factor_type
        self.magnitude = float(magnitude)

    def scale(self, shape) -> float:
        """The uniform bound (or normal std) for a weight of this shape."""
        if len(shape) < 2:
            raise ValueError(f"Xavier needs a weight of at least 2 dims, got shape "
                             f"{tuple(shape)}")
        receptive = int(np.prod(shape[2:]))
        fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}
        return float(np.sqrt(self.magnitude / factor[self.factor_type]))

    def init_weight(self, name, arr):
        s = self.scale(arr.shape)
        gen = rng.generator()
        if self.rnd_type == "uniform":
            arr[...] = gen.uniform(-s, s, arr.shape)
        else:
            arr[...] = s * gen.standard_normal(arr.shape)


class Load(Initializer):
    """Values from a dict (or a `.npz` file) of pretrained arrays by name (MXNet `Load`).

    Names prefixed `arg:` or `aux:` (MXNet's files) match without the prefix. A name
    not found goes to `default_init`, or is an error.
    """

    def __init__(self, param, default_init=None, verbose=False):
        super().__init__()
        if isinstance(param, str):
            with np.load(param) as data:
                param = {k: data[k] for k in data.files}
        self.param = {_strip(k): np.asarray(v) for k, v in dict(param).items()}
        self.default_init = default_init
        self.verbose = verbose

    def __call__(self, *args, dtype="float32"):
        if not (args and isinstance(args[0], str)):
            raise TypeError("Load needs the parameter's name: call it as init(name, array)")
        return super().__call__(*args, dtype=dtype)

    def init_named(self, name, arr):
        if name in self.param:
            value = self.param[name]
            if value.shape != arr.shape:
                raise ValueError(f"parameter {name!r} cannot be loaded: shape {arr.shape} "
                                 f"expected, the loaded array has shape {value.shape}")
            arr[...] = value
            if self.verbose:
                print(f"Initialized {name} by loading")
        elif self.default_init is not None:
            self.default_init(name, arr)
            if self.verbose:
                print(f"Initialized {name} by default")
        else:
            raise ValueError(f"cannot initialize {name!r}: not among the loaded parameters "
                             f"{sorted(self.param)} and no default_init given")


def _strip(name: str) -> str:
    return name[4:] if name.startswith(("arg:", "aux:")) else name


class Mixed(Initializer):
    """The initializer of the first regular expression matching the name (MXNet `Mixed`).

    Example: `Mixed(["fc1_.*", ".*"], [kf.init.Xavier(), kf.init.Uniform(0.1)])`.
    """

    def __init__(self, patterns, initializers):
        patterns, initializers = list(patterns), list(initializers)
        if len(patterns) != len(initializers):
            raise ValueError(f"Mixed: {len(patterns)} patterns but {len(initializers)} "
                             "initializers")
        super().__init__()
        self.map = [(re.compile(p), init) for p, init in zip(patterns, initializers)]

    def __call__(self, *args, dtype="float32"):
        if not (args and isinstance(args[0], str)):
            raise TypeError("Mixed needs the parameter's name: call it as init(name, array)")
        name, arr = args
        for pattern, init in self.map:
            if pattern.match(name):
                init(name, arr)
                return arr
        raise ValueError(f"parameter {name!r} matches none of the patterns "
                         f"{[p.pattern for p, _ in self.map]}; add '.*' last for a default")


_NAMES = {"uniform": Uniform, "normal": Normal, "orthogonal": Orthogonal, "xavier": Xavier,
          "zero": Zero, "zeros": Zero, "one": One, "ones": One, "constant": Constant}


def create(name, **kwargs) -> Initializer:
    """An MXNet initializer by name ('uniform', 'normal', 'orthogonal', 'xavier', ...)."""
    if isinstance(name, Initializer) or callable(name):
        return name
    key = str(name).lower()
    if key not in _NAMES:
        raise ValueError(f"unknown initializer {name!r}; known: {sorted(_NAMES)}")
    return _NAMES[key](**kwargs)
