"""`kf.update`: Knet's `update!` for one array, a Param, a sequence or a dict, in place.

This module walks the containers and pairs each weight with its gradient, optimizer
and state key; the update itself (gradient-norm groups, each optimizer's formula on
the weight's device) is `knetflow.train.step.update_arrays`, as for every trainer.
"""

from __future__ import annotations

import functools

import numpy as np

from knetflow.devices.base import is_device_array
from knetflow.graph.param import Param
from knetflow.train.optimizers import SGD, MultiOptimizer, Optimizer
from knetflow.train.step import resolve, update_arrays

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
    Containers nest (the structures `kf.grad` differentiates: lists, tuples,
    dicts); state keys join the positions (`"0.1"`). A Python or NumPy number in
    a list or dict is replaced by its updated value. A gradient that is None (an
    unused parameter, or a constant leaf) leaves its weight as it is.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = np.array([1.0, 2.0])
        >>> kf.update(w, np.array([1.0, 1.0]), lr=0.5)
        array([0.5, 1.5])
        >>> w = [np.ones(2), 0.5]
        >>> kf.update(w, [np.ones(2), 1.0], lr=0.5)
        [array([0.5, 0.5]), 0.0]
    """
    try:
        default = _default_sgd(lr, gclip)
    except TypeError:  # an unhashable learning rate (a 0-d array): a fresh SGD
        default = SGD(lr=lr, gclip=gclip)
    if optimizers is None:
        # the seed loop's `update!(p, g)` per Param, or of a list of Params: what
        # _collect and update_arrays do for such items, without the general walk
        if type(weights) is Param:
            plain = _plain(weights, grads, default)
            if plain is not None:
                plain[0].update(weights.value, grads, key=plain[1])
                return weights
        elif type(weights) in (list, tuple) and type(grads) in (list, tuple) and (
                len(weights) == len(grads)):
            plain = [_plain(w, g, default) for w, g in zip(weights, grads)]
            if None not in plain:
                for w, g, (opt, key) in zip(weights, grads, plain):
                    opt.update(w.value, g, key=key)
                return weights
    items, numbers = [], []
    _collect(weights, grads, optimizers, "", None, default, items, numbers)
    update_arrays(items)
    for store, array, kind in numbers:  # numbers in lists and dicts get their new values
        store(kind(array[()]))
    return weights


def _plain(w, g, default):
    """(optimizer, state key) of a Param on the host with a host gradient and an
    optimizer that is not part of a gradient-norm group, else None (the general path)."""
    if type(w) is not Param or type(g) is not np.ndarray or type(w.value) is not np.ndarray:
        return None
    opt = w.opt
    key = "" if opt is not None else (w.name or "")
    opt = default if opt is None else opt
    if not isinstance(opt, Optimizer) or opt.gradient_clip_norm is not None:
        return None
    return opt, key


@functools.lru_cache(maxsize=64)
def _default_sgd(lr, gclip) -> SGD:
    """The SGD of `kf.update(w, g, lr=..., gclip=...)`: made once per setting (SGD keeps no
    state, so one serves every call with those settings)."""
    return SGD(lr=lr, gclip=gclip)


def _collect(w, g, opt, key, store, default, items, numbers) -> None:
    """Add (array, gradient, optimizer, state key) for each weight in w to items."""
    if g is None:
        return
    if isinstance(w, (Param, np.ndarray)) or is_device_array(w):
        items.append(_item(w, g, opt, key, default))
    elif type(w) in (float, int) or isinstance(w, np.floating):
        if store is None:
            raise TypeError(f"cannot update a {type(w).__name__} in place; use an array "
                            "(NumPy, or a device's), a kf.Param, or keep it in a list or dict")
        array = np.array(w, dtype=w.dtype if isinstance(w, np.floating) else np.float64)
        items.append(_item(array, g, opt, key, default))
        numbers.append((store, array, float if type(w) is int else type(w)))
    elif isinstance(w, dict):
        if not isinstance(g, dict):
            raise TypeError(f"weights is a dict, gradients a {type(g).__name__}")
        unknown = [k for k in g if k not in w]
        if unknown:
            raise ValueError(f"gradients for {unknown}, which are not among the weights "
                             f"{list(w)}")
        keys = list(g)
        opts = _per_key(opt, keys, dict_form=True)
        for k, o in zip(keys, opts):
            _collect(w[k], g[k], o, _join(key, k), functools.partial(w.__setitem__, k),
                     default, items, numbers)
    elif isinstance(w, (list, tuple)) and isinstance(g, (list, tuple)):
        opts = _per_key(opt, [str(k) for k in range(len(w))], dict_form=False)
        if len(w) != len(g) or len(opts) != len(w):
            raise ValueError(f"weights, gradients and optimizers differ in length: "
                             f"{len(w)}, {len(g)}, {len(opts)}")
        for k, (wk, gk, o) in enumerate(zip(w, g, opts)):
            setter = functools.partial(w.__setitem__, k) if isinstance(w, list) else None
            _collect(wk, gk, o, _join(key, str(k)), setter, default, items, numbers)
    else:
        raise TypeError(f"cannot update a {type(w).__name__} in place with a "
                        f"{type(g).__name__} gradient; use an array (NumPy, or a device's) or "
                        "a kf.Param, and gradients of the weights' structure")


def _join(prefix, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


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
    if isinstance(opt, (MultiOptimizer, dict)):
        opt = resolve(opt, key)
    elif not isinstance(opt, Optimizer):
        raise TypeError(f"expected an optimizer for {key or 'the weight'!r}, "
                        f"got {type(opt).__name__}")
    return array, g, opt, key

