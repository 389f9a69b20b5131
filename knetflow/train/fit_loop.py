"""Helpers of FeedForward.fit: callbacks and the choice of a distributed kvstore."""

from __future__ import annotations

import inspect

__all__ = ["call_all", "epoch_end_extras", "kvstore_of"]

#: kvstore names that mean "train in this process" (MXNet's local kinds)
LOCAL_KVSTORES = (None, "local", "device", "local_update_cpu", "local_allreduce_cpu",
                  "local_allreduce_device")
#: kvstore names handed to knetflow.distributed, with the DaskKVStore mode they mean
DISTRIBUTED_KVSTORES = {"dask": "sync", "dist": "sync", "dist_sync": "sync",
                        "dist_device_sync": "sync", "dask_async": "async",
                        "dist_async": "async"}


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
    'dask' / 'dist_sync' / 'dist_async' make a `knetflow.distributed.DaskKVStore`; an
    object with a `train` method (a DaskKVStore) is used as it is."""
    if isinstance(kvstore, str) or kvstore is None:
        if kvstore in LOCAL_KVSTORES:
            return None
        mode = DISTRIBUTED_KVSTORES.get(kvstore)
        if mode is None:
            raise ValueError(f"unknown kvstore {kvstore!r}; known: "
                             f"{[k for k in LOCAL_KVSTORES if k] + sorted(DISTRIBUTED_KVSTORES)}")
        try:
            from knetflow.distributed import DaskKVStore
        except ImportError as e:
            raise ImportError(f"kvstore={kvstore!r} trains on Dask through knetflow.distributed, "
                              f"which cannot be imported: {e}") from e
        return DaskKVStore(mode=mode)
    if callable(getattr(kvstore, "train", None)):
        return kvstore
    raise TypeError(f"kvstore must be a name ({sorted(DISTRIBUTED_KVSTORES)} or 'local') or a "
                    f"store with a train() method such as knetflow.distributed.DaskKVStore, "
                    f"got {type(kvstore).__name__}")
