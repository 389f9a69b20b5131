"""Running moments of batchnorm (Knet `BNMoments`, `bnmoments`) and their updates.

How they behave eagerly, inside `kf.diff` and in symbolic graphs: see the
docstring of knetflow/layers/batchnorm.py. Here: the holder object, its lazy
initialization, reading the moments a call needs, and writing the new ones
(in place eagerly; as state outputs of a trace, graph/state.py).
"""

from __future__ import annotations

import itertools

import numpy as np

from knetflow.devices import transfers
from knetflow.graph import state
from knetflow.graph.build import param
from knetflow.graph.symbol import Symbol
from knetflow.layers.state_attr import StateAttribute
from knetflow.ops.base import fail
from knetflow.ops.elementwise import cast

__all__ = ["BNMoments", "bnmoments", "bnupdates"]

_names = itertools.count()


class BNMoments:
    """Running mean and variance of a batchnorm (Knet `BNMoments`); see `bnmoments`."""

    def __init__(self, momentum=0.1, mean=None, var=None, meaninit=np.zeros, varinit=np.ones,
                 name=None):
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"bnmoments: momentum must lie in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self._mean, self._var = mean, var  # see the properties: state of traces
        self.meaninit, self.varinit = meaninit, varinit
        self.name = name if name is not None else f"bnmoments{next(_names)}"
        self._symbols = None   # (mean, var) param symbols once used in a symbolic graph
        self._updates = {}     # param name -> new value, from the last symbolic training call

    mean = StateAttribute("The running mean (C,): an array, None before the first call, "
                          "or a param symbol.")
    var = StateAttribute("The running variance (C,), like `mean`.")

    @property
    def names(self) -> tuple:
        """Names of the moment params in symbolic graphs: (moving mean, moving var)."""
        return (f"{self.name}_moving_mean", f"{self.name}_moving_var")


def bnmoments(momentum=0.1, mean=None, var=None, meaninit=np.zeros, varinit=np.ones,
              name=None) -> BNMoments:
    """Running mean/variance holder for batchnorm (Knet `bnmoments`).

    `meaninit`/`varinit` are called as `init((C,), dtype=x.dtype)` at the first
    batchnorm call when `mean`/`var` are None. `name` names the moment params
    of symbolic graphs (default: a unique `bnmomentsK`).

    Example:
        >>> import knetflow as kf, numpy as np
        >>> m = kf.bnmoments()
        >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
        >>> y = kf.batchnorm(x, m, training=True)
        >>> m.mean, m.var
        (array([0.2, 0.4]), array([1. , 1.3]))
    """
    return BNMoments(momentum, mean, var, meaninit, varinit, name)


def bnupdates(*moments) -> dict:
    """`Graph(..., updates=...)` entries of the moments' last symbolic training calls.

    Example:
        >>> import knetflow as kf
        >>> x = kf.placeholder("x", (None, 3))
        >>> m = kf.bnmoments(name="bn1")
        >>> y = kf.batchnorm(x, m, training=True)
        >>> sorted(kf.bnupdates(m))
        ['bn1_moving_mean', 'bn1_moving_var']
    """
    out = {}
    for m in moments:
        out.update(m._updates)
    return out


def to_dtype(v, dtype):
    """v cast to dtype (an op on symbols, at once on arrays); None as it is."""
    return v if v is None or np.dtype(v.dtype) == dtype else cast(v, dtype)


def _moment_arrays(moments, x, channels):
    """The moments' arrays, made by meaninit/varinit at the first call (Knet's lazy init)."""
    for attr, init in (("_mean", moments.meaninit), ("_var", moments.varinit)):
        if getattr(moments, attr) is None:
            if channels is None:
                fail("batchnorm", f"the channel axis of x {tuple(x.shape)} must be static")
            value = np.asarray(init((channels,), dtype=np.dtype(x.dtype)))
            device = transfers.device_of(x)
            if device is not None:  # the moments live where x does
                value = device.put(value)
            setattr(moments, attr, value)
    return moments.mean, moments.var


def _moment_params(moments, x, channels) -> tuple:
    """The moments as non-trainable param symbols, made once per BNMoments."""
    if moments._symbols is None:
        syms = []
        for name, value in zip(moments.names, _moment_arrays(moments, x, channels)):
            sym = param(name, value=np.array(value), dtype=str(value.dtype))
            syms.append(Symbol(sym.node.replace(attrs={**sym.node.attrs, "trainable": False})))
        moments._symbols = tuple(syms)
    return moments._symbols


def moments_for(moments, x, channels, symbolic) -> tuple:
    """(mean, var) of the moments as this call needs them: param symbols, or arrays."""
    given = (moments.mean, moments.var)
    if symbolic and not all(isinstance(v, Symbol) for v in given):
        values = _moment_params(moments, x, channels)
    else:  # arrays; inside a trace, inputs fed from the moments at each call
        _moment_arrays(moments, x, channels)
        values = tuple(state.read(moments, attr, f"BNMoments.{attr[1:]}")
                       for attr in ("_mean", "_var"))
    for what, v in zip(("mean", "var"), values):
        if channels is not None and tuple(v.shape) not in ((channels,), (None,)):
            fail("batchnorm", f"running {what} {tuple(v.shape)} of moments {moments.name!r} "
                              f"does not match the {channels} channels of x {tuple(x.shape)}")
    return values


def record_updates(moments, mean, var, bmean, bvar):
    """Note the new values of moment params for `bnupdates` (symbolic training graphs)."""
    m = moments.momentum
    for old, new in ((mean, bmean), (var, bvar)):
        if old.node.op == "param":
            new = to_dtype(new, old.dtype)
            moments._updates[old.node.attrs["name"]] = old * (1 - m) + new * m


def update_moments(moments, mean, var, bmean, bvar):
    """Running moments blended with the batch's: in place eagerly, state outputs in a trace."""
    m = moments.momentum
    for attr, old, new in (("_mean", mean, bmean), ("_var", var, bvar)):
        blended = old * (1 - m) + to_dtype(new, np.dtype(old.dtype)) * m
        state.write(moments, attr, blended, f"BNMoments.{attr[1:]}", store=_store_in_place)


def _store_in_place(moments, attr, new):
    """Put a moment's new value into the array the moments hold, keeping its identity
    (Knet updates in place; `m.mean[...] = saved` loads moments); else rebind."""
    old = getattr(moments, attr)
    same_shape = bool(new.shape) and tuple(getattr(old, "shape", ())) == tuple(new.shape)
    if not same_shape or (isinstance(old, np.ndarray) and not old.flags.writeable):
        setattr(moments, attr, new)
    elif isinstance(old, np.ndarray) or type(old) is type(new):
        old[...] = new
    elif hasattr(old, "set"):  # a device array given host values (CuPy's ndarray.set)
        old.set(np.ascontiguousarray(new, dtype=old.dtype))
    else:
        setattr(moments, attr, new)
