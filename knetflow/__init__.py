"""knetflow: a dataflow-graph runtime for deep learning.

Build a symbolic graph (op functions, layer symbols, or tracing a Python
function Knet-style), derive its backward graph, compile it into a plan and
run it many times. `import knetflow as kf`.
"""

from knetflow.errors import (  # noqa: F401
    ExecutionError, FeedError, FormatError, NumericsError, ShapeError, TracingError)
from knetflow.graph import build as _build  # noqa: F401  (installs the op dispatcher)
from knetflow.graph.build import const, param, placeholder  # noqa: F401
from knetflow.graph.node import Graph, Node  # noqa: F401
from knetflow.graph.symbol import Symbol  # noqa: F401
from knetflow.ops import *  # noqa: F401,F403
from knetflow.ops import REGISTRY  # noqa: F401
from knetflow.layers import *  # noqa: F401,F403
from knetflow.ops.base import Spec  # noqa: F401
from knetflow.rng import seed  # noqa: F401
from knetflow.graph.autodiff import backward  # noqa: F401
from knetflow.scheduler.plan import Plan, compile  # noqa: F401
from knetflow.devices.discovery import (  # noqa: F401
    cpu, device, devices, gpu, set_cpu_devices, set_sim_devices)
from knetflow import datasets  # noqa: F401

from knetflow.version import __version__  # noqa: F401,E402
from knetflow.graph.param import Param  # noqa: F401
from knetflow.train.knet.autograd import (  # noqa: F401
    DiffResult, diff, grad, gradloss, params, value)
from knetflow.train.knet.gradcheck import gradcheck  # noqa: F401
from knetflow import serialize  # noqa: F401,E402
from knetflow.serialize import (  # noqa: F401,E402
    load, load_checkpoint, load_model, save, save_checkpoint)
from knetflow.train import callback, init, metric, optim  # noqa: F401
from knetflow.train.knet.update import update  # noqa: F401
from knetflow.train.knet.minimize import (  # noqa: F401
    adadelta, adagrad, adam, converge, minibatch, minimize, momentum, nesterov, rmsprop, sgd)
from knetflow.train.progress import progress  # noqa: F401
from knetflow.train.knet.search import goldensection, hyperband  # noqa: F401
from knetflow.train.mxnet import sym  # noqa: F401,E402
from knetflow.train.mxnet.feedforward import FeedForward  # noqa: F401,E402
from knetflow.onnx import export_onnx  # noqa: F401,E402
from knetflow.onnx.importer import import_onnx  # noqa: F401,E402


def _dask_kvstore(mode):
    """A DaskKVStore (importing knetflow.distributed, and so Dask, on first use)."""
    from knetflow.distributed import DaskKVStore

    return DaskKVStore(mode=mode)


def _register_kvstores():
    import functools

    from knetflow.train import fit_loop

    for name, mode in {"dask": "sync", "dist": "sync", "dist_sync": "sync",
                       "dist_device_sync": "sync", "dask_async": "async",
                       "dist_async": "async"}.items():
        fit_loop.register_kvstore(name, functools.partial(_dask_kvstore, mode))


_register_kvstores()


def __getattr__(name):
    # kf.distributed is imported on first use, so `import knetflow` never loads Dask
    if name == "distributed":
        import importlib

        return importlib.import_module("knetflow.distributed")
    raise AttributeError(f"module 'knetflow' has no attribute {name!r}")
