"""`kf.update`: Knet's `update!` for one array, a Param, a sequence or a dict, in place."""

from __future__ import annotations

import contextlib

import numpy as np

from knetflow.devices.base import is_device_array
from knetflow.train.autograd import Param
from knetflow.train.optim import SGD, MultiOptimizer, Optimizer, norm_scales, resolve
from knetflow.train.optimizers import like

__all__ = ["update"]


def update(weights, grads, optimizers=None, lr=0.1, gclip=0):
    """Update weights in place from their gradients (Knet `update!`).

    Forms, as in Knet:
    - `update(param, g)`: with `param.opt` (SGD(lr, gclip) when unset);
    - `update(w, g, lr=0.1, gclip=0)`: an array with SGD;
    - `update(w, g, opt)`: with an optimizer (its state kept in `opt`);
    - `update([w1, w2], [g1, g2], [opt1, opt2])` or one optimizer for all, whose
      state is then keyed by position; dicts likewise, keyed by name, and
      `optimizers` may also be a MultiOptimizer or a dict of optimizers.
    A gradient that is None (an unused parameter) leaves its weight as it is.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = np.array([1.0, 2.0])
        >>> kf.update(w, np.array([1.0, 1.0]), lr=0.5)
        array([0.5, 1.5])
    """
    default = SGD(lr=lr, gclip=gclip)
    if isinstance(weights, (Param, np.ndarray)) or is_device_array(weights):
        if grads is None:
            return weights
        _apply([_item(weights, grads, optimizers, "", default)])
        return weights
    if isinstance(weights, dict):
        if not isinstance(grads, dict):
            raise TypeError(f"weights is a dict, gradients a {type(grads).__name__}")
        unknown = [k for k in grads if k not in weights]
        if unknown:
            raise ValueError(f"gradients for {unknown}, which are not among the weights "
                             f"{list(weights)}")
        keys = list(grads)
        ws, gs = [weights[k] for k in keys], [grads[k] for k in keys]
        opts = _per_key(optimizers, keys, dict_form=True)
    else:
        ws, gs = list(weights), list(grads)
        keys = [str(k) for k in range(len(ws))]
        opts = _per_key(optimizers, keys, dict_form=False)
        if len(ws) != len(gs) or len(opts) != len(ws):
            raise ValueError(f"weights, gradients and optimizers differ in length: "
                             f"{len(ws)}, {len(gs)}, {len(opts)}")
    items = [_item(w, g, o, k, default) for w, g, o, k in zip(ws, gs, opts, keys)
             if g is not None]
    _apply(items)
    return weights


def _per_key(optimizers, keys, dict_form) -> list:
    """One entry per weight: an optimizer, a MultiOptimizer, or None."""
    if optimizers is None or isinstance(optimizers, (Optimizer, MultiOptimizer)):
        return [optimizers] * len(keys)
    if dict_form:
        if not isinstance(optimizers, dict):
            raise TypeError(f"weights is a dict, optimizers a {type(optimizers).__name__}")
        missing = [k for k in keys if k not in optimizers]
        if missing:
            return [MultiOptimizer(optimizers)] * len(keys)
        return [optimizers[k] for k in keys]
    return list(optimizers)


def _item(w, g, opt, key, default):
    """(array, gradient, optimizer, state key) for one weight."""
    if isinstance(w, Param):
        array = w.value
        if opt is None and w.opt is not None:
            opt, key = w.opt, ""  # the Param's own optimizer holds only its state
        else:
            key = w.name or key
    else:
        array = w
    opt = default if opt is None else opt
    if not (isinstance(array, np.ndarray) or is_device_array(array)):
        raise TypeError(f"cannot update a {type(array).__name__} in place; use an array "
                        "(NumPy, or a device's) or a kf.Param")
    if isinstance(opt, (MultiOptimizer, dict)):
        opt = resolve(opt, key)
    elif not isinstance(opt, Optimizer):
        raise TypeError(f"expected an optimizer for {key or 'the weight'!r}, "
                        f"got {type(opt).__name__}")
    return array, g, opt, key


def _apply(items) -> None:
    with _where(items[0][0]):  # eager ops run on the current device: make it the weights'
        scales = norm_scales([(opt, like(g, w)) for w, g, opt, _ in items])
    for (w, g, opt, key), scale in zip(items, scales):
        with _where(w):
            opt.update(w, g, key=key, norm_scale=scale)


def _where(w):
    """A context making w's device (and a GPU's stream) current; nothing for host arrays."""
    if not is_device_array(w):
        return contextlib.nullcontext()
    from knetflow.devices import transfers

    return transfers.device_of(w).activate()
