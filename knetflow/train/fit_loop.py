"""Helpers of FeedForward.fit: callbacks and the choice of a distributed kvstore.

Distributed kvstores register their names here (`register_kvstore`), so the
training layer never imports knetflow.distributed: the package's top level
registers Dask's names with a factory that imports it on first use.
"""

from __future__ import annotations

import inspect

__all__ = ["call_all", "epoch_end_extras", "kvstore_of", "register_kvstore"]

#: kvstore names that mean "train in this process" (MXNet's local kinds)
LOCAL_KVSTORES = (None, "local", "device", "local_update_cpu", "local_allreduce_cpu",
                  "local_allreduce_device")
#: kvstore name -> factory() making the store (registered by distributed layers)
_FACTORIES: dict = {}


def register_kvstore(name: str, factory) -> None:
    """Make `kvstore=name` in fit create its store with `factory()` (a distributed kvstore
    with a `train(model=..., ...)` method)."""
    _FACTORIES[name] = factory


def call_all(callbacks, *args) -> None:
    """Call one callback or each of a list of them (MXNet accepts both)."""
    if callbacks is None:
        return
    for cb in callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]:
        cb(*args)


def epoch_end_extras(callback, extras: dict) -> dict:
    """The keyword arguments among `extras` that `callback` accepts (by name or **kwargs):
    MXNet's plain `cb(epoch, symbol, arg_params, aux_params)` gets none of them."""
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(extras)
    names = {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in extras.items() if k in names}


def kvstore_of(kvstore):
    """None for in-process training, else the store whose `train(model=..., ...)` runs the fit:
    a registered name ('dask' / 'dist_sync' / 'dist_async' make a
    `knetflow.distributed.DaskKVStore`) makes its store; an object with a `train` method
    (a DaskKVStore) is used as it is."""
    if isinstance(kvstore, str) or kvstore is None:
        if kvstore in LOCAL_KVSTORES:
            return None
        factory = _FACTORIES.get(kvstore)
        if factory is None:
            raise ValueError(f"unknown kvstore {kvstore!r}; known: "
                             f"{[k for k in LOCAL_KVSTORES if k] + sorted(_FACTORIES)}")
        try:
            return factory()
        except ImportError as e:
            raise ImportError(f"kvstore={kvstore!r} trains on Dask through knetflow.distributed, "
                              f"which cannot be imported: {e}") from e
    if callable(getattr(kvstore, "train", None)):
        return kvstore
    raise TypeError(f"kvstore must be a name ({sorted(_FACTORIES)} or 'local') or a "
                    f"store with a train() method such as knetflow.distributed.DaskKVStore, "
                    f"got {type(kvstore).__name__}")
