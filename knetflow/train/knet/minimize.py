"""Knet's training iterators: `minimize` and `sgd ... adam`, `converge`, `minibatch`.

They are lazy: `kf.adam(f, data)` does nothing until iterated, and each step
yields the loss. Compose them as in Knet, with itertools in place of Julia's
iterator helpers:

    kf.progress(kf.sgd(f, data))                       # a progress bar
    kf.converge(kf.adam(f, itertools.cycle(data)))     # until the loss stops falling
    kf.sgd(f, itertools.chain.from_iterable([data] * 10))   # 10 epochs
    itertools.islice(kf.sgd(f, itertools.cycle(data)), 1000)  # 1000 steps

`sgd` ... `adam` are made from the optimizer table (`kf.optim.OPTIMIZERS`):
each takes its optimizer's own hyperparameters with that class's defaults, so
a default lives in one place. A step is `knetflow.train.step.update_params`,
the Knet-style update every trainer shares.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from knetflow import rng
from knetflow.train.knet import fused_step
from knetflow.train.knet.autograd import diff, grad
from knetflow.train.optimizers import OPTIMIZERS, Adam
from knetflow.train.step import update_params

__all__ = [
    "Minibatch",
    "adadelta",
    "adagrad",
    "adam",
    "converge",
    "minibatch",
    "minimize",
    "momentum",
    "nesterov",
    "rmsprop",
    "sgd",
]


def minimize(f, data, optimizer=None, params=None):
    """Iterate `f(*args) for args in data`, updating the Params after each step, yielding
    the loss (Knet `minimize(func, data, optimizer=Adam(); params)`).

    An element of `data` that is a tuple is passed as the arguments, anything else as
    the one argument. Each Param whose `.opt` is unset gets a copy of `optimizer`
    (or, for a MultiOptimizer, of the one its name maps to); a set `.opt` is kept,
    so training can stop and restart without losing optimizer state. `params`
    limits the update to these Params (default: every Param f uses).

    Each step runs as one compiled plan (the loss, its gradients and every Param's
    update: train/knet/fused_step.py) when the Params' optimizers are kf.optim optimizers;
    otherwise as `kf.diff` followed by the update.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = kf.Param(np.array([3.0]))
        >>> losses = list(kf.minimize(lambda: kf.sum(w * w), [()] * 50, kf.optim.SGD(lr=0.1)))
        >>> losses[-1] < 1e-8
        True
    """
    optimizer = Adam() if optimizer is None else optimizer
    for args in data:
        args = args if isinstance(args, tuple) else (args,)
        # one plan per step (forward, backward, every update) where it can be fused
        loss = fused_step.step(f, args, params, optimizer)
        if loss is None:
            result = diff(f, *args)
            update_params(result.params, lambda p, r=result: grad(r, p), optimizer, params)
            loss = result.value
        yield loss


def _iterator(name: str):
    """Knet's `name(func, data; hyperparameters..., params)`: `minimize` with the optimizer
    `OPTIMIZERS[name]`, its keywords and defaults read from the class itself."""
    cls = OPTIMIZERS[name]
    own = [p for p in inspect.signature(cls).parameters.values()
           if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    arg = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter("f", arg), inspect.Parameter("data", arg), *own,
         inspect.Parameter("params", arg, default=None),
         inspect.Parameter("kw", inspect.Parameter.VAR_KEYWORD)])

    def iterator(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        f, data, params = given.pop("f"), given.pop("data"), given.pop("params")
        return minimize(f, data, cls(**given.pop("kw"), **given), params=params)

    knet = ", ".join(f"{p.name}={p.default!r}" for p in own)
    iterator.__signature__ = signature
    iterator.__name__ = iterator.__qualname__ = name
    iterator.__module__ = __name__
    iterator.__doc__ = (f"`minimize` with {cls.__name__} (Knet `{name}(func, data; {knet}, "
                        f"params)`).\n\nOther keywords go to `kf.optim.{cls.__name__}`, the "
                        f"optimizer: {inspect.getdoc(cls)}")
    return iterator


sgd = _iterator("sgd")
momentum = _iterator("momentum")
nesterov = _iterator("nesterov")
adagrad = _iterator("adagrad")
rmsprop = _iterator("rmsprop")
adadelta = _iterator("adadelta")
adam = _iterator("adam")


def converge(itr, alpha=0.1):
    """Yield from itr until its values stop decreasing (Knet `converge(itr; alpha=0.1)`).

    With x the value: p = x - avgx; avgx = alpha*x + (1-alpha)*avgx;
    avgp = alpha*p + (1-alpha)*avgp; stop (without yielding x) when avgp > 0.

    Example:
        >>> import knetflow as kf
        >>> list(kf.converge([4, 3, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
        [4, 3, 2, 1, 2, 3, 4, 5]
    """
    avgx, avgp = math.inf, 0.0
    for x in itr:
        value = float(getattr(x, "value", x))
        if avgx == math.inf:
            avgx = value
        p = value - avgx
        avgx = alpha * value + (1 - alpha) * avgx
        avgp = alpha * p + (1 - alpha) * avgp
        if avgp > 0.0:
            return
        yield x


class Minibatch:
    """An epoch of minibatches, iterable again for each epoch; see `minibatch`."""

    def __init__(self, x, y, batchsize, shuffle, partial, xtype, ytype):
        self.x, self.y = x, y
        self.batchsize, self.shuffle, self.partial = batchsize, shuffle, partial
        self.xtype, self.ytype = xtype, ytype
        self.n = len(x)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batchsize)
        return full + (1 if self.partial and rest else 0)

    def __iter__(self):
        order = rng.generator().permutation(self.n) if self.shuffle else None
        for k in range(len(self)):
            rows = slice(k * self.batchsize, min((k + 1) * self.batchsize, self.n))
            if order is not None:
                rows = order[rows]
            xb = _convert(self.x[rows], self.xtype)
            if self.y is None:
                yield xb
            else:
                yield xb, _convert(self.y[rows], self.ytype)

    def __repr__(self) -> str:
        return (f"<Minibatch {len(self)} batches of {self.batchsize} from {self.n} instances"
                f"{', shuffled' if self.shuffle else ''}>")


def minibatch(x, y=None, batchsize=100, shuffle=False, partial=False, xtype=None,
              ytype=None) -> Minibatch:
    """Minibatches [(xi, yi), ...] of x and y along axis 0, the instances (Knet `minibatch`).

    Iterating again starts a new epoch (reshuffled when `shuffle`, from `kf.seed`'s
    stream). The last partial batch is dropped unless `partial=True`. `xtype` and
    `ytype` convert each batch (a dtype, or a callable such as a device put).
    Knet's `minibatch(x, batchsize)` form works too: an int `y` is the batch size.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> [xb.shape for xb, yb in kf.minibatch(np.zeros((5, 2)), np.zeros(5), 2)]
        [(2, 2), (2, 2)]
    """
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        y, batchsize = None, int(y)
    x = np.asarray(x) if not hasattr(x, "shape") else x
    if y is not None:
        y = np.asarray(y) if not hasattr(y, "shape") else y
        if len(y) != len(x):
            raise ValueError(f"minibatch: x has {len(x)} instances (shape {tuple(x.shape)}) "
                             f"but y has {len(y)} (shape {tuple(y.shape)})")
    if int(batchsize) < 1:
        raise ValueError(f"minibatch: batchsize must be >= 1, got {batchsize}")
    return Minibatch(x, y, int(batchsize), shuffle, partial, xtype, ytype)


def _convert(a, to):
    if to is None:
        return a
    if callable(to) and not isinstance(to, (str, type, np.dtype)):
        return to(a)
    return np.asarray(a, dtype=to)
