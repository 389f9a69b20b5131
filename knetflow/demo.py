"""`make demo` (`knetflow demo`): the main job end to end on real handwritten digits.

scikit-learn's bundled 8x8 digits (1,797 images in its wheel: nothing is
downloaded) are split into a training set and a held-out test set of 360
images. An MLP built from MXNet-style layer symbols trains data-parallel on two
CPU devices with a checkpoint per epoch; the last checkpoint is reloaded,
saved as one model file and served with `kf.load_model`; the model is exported
to ONNX and ONNX Runtime's answers are checked against knetflow's (when the
`onnx` extra is installed); and one epoch runs on an in-process Dask
LocalCluster.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

import knetflow as kf


def run(epochs: int = 20, out=None, dask: bool = True, test_size: int = 360) -> dict:
    """Run the demo; returns what it measured (test accuracies, paths, times)."""
    start = time.perf_counter()
    kf.seed(1)
    x, y = kf.datasets.digits()
    xtrn, ytrn, xtst, ytst = _split(x, y, test_size)
    prefix = os.path.join(out or tempfile.mkdtemp(prefix="knetflow-demo-"), "mlp")
    devices = kf.set_cpu_devices(2)
    try:
        result = _train(xtrn, ytrn, xtst, ytst, epochs, prefix, devices)
    finally:
        kf.set_cpu_devices(1)
    result.update(_serve(prefix, epochs, xtst, ytst))
    result.update(_export(result["model_path"], xtst, result["served"]))
    if dask:
        result["dask_accuracy"] = _dask_epoch(result["net"], xtrn, ytrn, xtst, ytst)
    result["seconds"] = time.perf_counter() - start
    print(f"done in {result['seconds']:.1f}s")
    return result


def _split(x, y, test_size):
    """A held-out test set: the same share of every class, the same draw every run."""
    rs = np.random.RandomState(0)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = int(round(test_size * len(members) / len(y)))
        test[rs.choice(members, take, replace=False)] = True
    return x[~test], y[~test], x[test], y[test]


def _network():
    net = kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=64, name="fc1")
    net = kf.sym.Activation(net, act_type="relu", name="relu1")
    net = kf.sym.FullyConnected(net, num_hidden=10, name="fc2")
    return kf.sym.SoftmaxOutput(net, name="softmax")


def _train(xtrn, ytrn, xtst, ytst, epochs, prefix, devices) -> dict:
    net = _network()
    print(f"MLP 64-64-10 from kf.sym on {len(xtrn)} real 8x8 handwritten digits "
          f"(scikit-learn's), {len(xtst)} held out for testing; batch 32, SGD lr 0.1 "
          f"momentum 0.9, data-parallel on {[d.name for d in devices]}")
    model = kf.FeedForward(net, ctx=[kf.cpu(0), kf.cpu(1)], num_epoch=epochs, optimizer="sgd",
                           learning_rate=0.1, momentum=0.9, initializer=kf.init.Xavier(),
                           numpy_batch_size=32)

    def report(epoch, symbol, arg_params, aux_params):
        h = model.history[-1]
        print(f"epoch {epoch + 1}: train loss {h['loss']:.4f}, train accuracy "
              f"{h['train']['accuracy']:.3f}, test accuracy {h['eval']['accuracy']:.3f} "
              f"({h['time']:.2f}s)")

    model.fit(xtrn, ytrn, eval_data=(xtst, ytst),
              epoch_end_callback=[kf.callback.do_checkpoint(prefix), report])
    print(f"checkpoints: {prefix}-symbol.kfg, {prefix}-0001.kfp ... {prefix}-{epochs:04d}.kfp")
    return {"net": net, "history": model.history}


def _serve(prefix, epochs, xtst, ytst) -> dict:
    loaded = kf.FeedForward.load(prefix, epochs, ctx=kf.cpu(0))
    path = kf.save(f"{prefix}.kf", loaded)
    served = kf.load_model(path)
    predictions = served.predict(xtst, batch_size=120)
    accuracy = float(np.mean(predictions.argmax(axis=1) == ytst))
    print(f"reloaded epoch {epochs} for inference (kf.load_model {path}): "
          f"test accuracy {accuracy:.3f} on {len(ytst)} held-out digits")
    return {"model_path": str(path), "test_accuracy": accuracy, "served": predictions}


def _export(model_path, xtst, served) -> dict:
    """Export to ONNX and compare ONNX Runtime's answers with knetflow's, if installed."""
    export = getattr(kf, "export_onnx", None)
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if export is None or onnxruntime is None:
        print("ONNX export skipped: install the onnx extra (pip install 'knetflow[onnx]')")
        return {}
    onnx_path = os.path.splitext(model_path)[0] + ".onnx"
    export(kf.load_model(model_path), onnx_path)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    theirs = session.run(None, {name: xtst.astype("float32")})[0]
    gap = float(np.max(np.abs(theirs - served)))
    agree = float(np.mean(theirs.argmax(axis=1) == served.argmax(axis=1)))
    print(f"exported to ONNX ({onnx_path}): ONNX Runtime agrees on {agree:.1%} of the test "
          f"digits, largest difference {gap:.1e}")
    return {"onnx_path": onnx_path, "onnx_gap": gap, "onnx_agreement": agree}


def _dask_epoch(net, xtrn, ytrn, xtst, ytst):
    """One epoch on an in-process Dask LocalCluster, if knetflow.distributed works here."""
    try:
        from knetflow.distributed import DaskKVStore  # noqa: F401
    except ImportError as e:
        print(f"Dask run skipped: knetflow.distributed is not available ({e})")
        return None
    try:
        model = kf.FeedForward(net, num_epoch=1, optimizer="sgd", learning_rate=0.1,
                               momentum=0.9, initializer=kf.init.Xavier(), numpy_batch_size=32)
        model.fit(xtrn, ytrn, kvstore="dask")
        accuracy = model.score(xtst, ytst)
        print(f"Dask LocalCluster, 1 epoch on {len(xtrn)} digits: test accuracy {accuracy:.3f}")
        return accuracy
    except Exception as e:  # noqa: BLE001 - the demo reports and goes on
        print(f"Dask run failed: {type(e).__name__}: {e}")
        return None
