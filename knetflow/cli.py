"""The `knetflow` command: devices, inspect, predict, demo (more come with their layers)."""

from __future__ import annotations

import argparse
import sys
import time


def _devices(args) -> int:
    import knetflow as kf
    from knetflow.devices.gpu import unavailable_reason

    found = kf.devices()
    for d in found:
        print(d.describe())
    if not any(d.kind == "gpu" for d in found):
        print(f"no GPU: {unavailable_reason()}")
    return 0


def _demo(args) -> int:
    """The main job end to end: build an MLP from layer symbols, train it data-parallel on
    two CPU devices with a checkpoint per epoch, reload it for inference, print accuracy;
    then, when knetflow.distributed works here, a short run on a Dask LocalCluster."""
    import os
    import tempfile

    import numpy as np

    import knetflow as kf

    start = time.perf_counter()
    kf.seed(1)
    devices = kf.set_cpu_devices(2)
    x, y = kf.datasets.mnist_like(args.samples + 1000)
    xtrn, ytrn, xtst, ytst = x[:-1000], y[:-1000], x[-1000:], y[-1000:]
    prefix = os.path.join(args.out or tempfile.mkdtemp(prefix="knetflow-demo-"), "mlp")

    net = kf.sym.FullyConnected(kf.sym.Variable("data"), num_hidden=64, name="fc1")
    net = kf.sym.Activation(net, act_type="relu", name="relu1")
    net = kf.sym.FullyConnected(net, num_hidden=10, name="fc2")
    net = kf.sym.SoftmaxOutput(net, name="softmax")
    ctx = [kf.cpu(0), kf.cpu(1)]
    print(f"MLP 784-64-10 from kf.sym on {len(xtrn)} synthetic MNIST-shaped images, batch 100, "
          f"SGD lr 0.02 momentum 0.9, data-parallel on {[d.name for d in devices]}")
    model = kf.FeedForward(net, ctx=ctx, num_epoch=args.epochs, optimizer="sgd",
                           learning_rate=0.02, momentum=0.9, initializer=kf.init.Xavier(),
                           numpy_batch_size=100)

    def report(epoch, symbol, arg_params, aux_params):
        h = model.history[-1]
        print(f"epoch {epoch + 1}: train loss {h['loss']:.4f}, train accuracy "
              f"{h['train']['accuracy']:.3f}, test accuracy {h['eval']['accuracy']:.3f} "
              f"({h['time']:.1f}s)")

    model.fit(xtrn, ytrn, eval_data=(xtst, ytst),
              epoch_end_callback=[kf.callback.do_checkpoint(prefix), report])
    print(f"checkpoints: {prefix}-symbol.kfg, {prefix}-0001.kfp ... "
          f"{prefix}-{args.epochs:04d}.kfp")
    loaded = kf.FeedForward.load(prefix, args.epochs, ctx=kf.cpu(0))
    path = kf.save(f"{prefix}.kf", loaded)
    served = kf.load_model(path)
    acc = float(np.mean(served.predict(xtst, batch_size=500).argmax(axis=1) == ytst))
    print(f"reloaded epoch {args.epochs} for inference (kf.load_model {path}): "
          f"test accuracy {acc:.3f}")
    kf.set_cpu_devices(1)
    if args.dask:
        _demo_dask(net, xtrn, ytrn, xtst, ytst)
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


def _demo_dask(net, xtrn, ytrn, xtst, ytst) -> None:
    """One short epoch on an in-process Dask LocalCluster, if knetflow.distributed works."""
    import knetflow as kf

    try:
        from knetflow.distributed import DaskKVStore  # noqa: F401
    except ImportError as e:
        print(f"Dask run skipped: knetflow.distributed is not available ({e})")
        return
    try:
        model = kf.FeedForward(net, num_epoch=1, optimizer="sgd", learning_rate=0.02,
                               momentum=0.9, initializer=kf.init.Xavier(), numpy_batch_size=100)
        model.fit(xtrn[:4000], ytrn[:4000], kvstore="dask")
        print(f"Dask LocalCluster, 1 epoch on 4000 images: test accuracy "
              f"{model.score(xtst, ytst):.3f}")
    except Exception as e:  # noqa: BLE001 - the demo reports and goes on
        print(f"Dask run failed: {type(e).__name__}: {e}")


def _fail(message: str) -> int:
    print(f"knetflow: error: {message}", file=sys.stderr)
    return 1


def _inspect(args) -> int:
    """Print what a saved file holds: graph, params (shapes, dtypes, bytes), metadata."""
    from knetflow.errors import FormatError
    from knetflow.serialize import describe

    try:
        print(describe(args.file))
    except (FormatError, OSError) as e:
        return _fail(str(e))
    return 0


def _read_inputs(specs, input_names) -> dict:
    """Feed from --input values: X.npy (the single input), NAME=X.npy, or X.npz (by name)."""
    import numpy as np

    from knetflow.serialize import load_npz

    feed = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = None, spec
        if path.endswith(".npz"):
            feed.update(load_npz(path))
            continue
        if name is None:
            if len(input_names) != 1:
                raise ValueError(f"the model has inputs {input_names}: give --input NAME=X.npy "
                                 f"for each, or one .npz holding them by name")
            name = input_names[0]
        feed[name] = np.load(path, allow_pickle=False)
    return feed


def _write_outputs(path, names, outs) -> None:
    import numpy as np

    from knetflow.serialize import atomic_write, save_npz

    if path.endswith(".npz"):
        save_npz(path, dict(zip(names, outs)))
        return
    if len(outs) != 1:
        raise ValueError(f"the model has {len(outs)} outputs {names}: give --output Y.npz")
    with atomic_write(path) as f:
        np.save(f, outs[0])


def _predict(args) -> int:
    """Run a saved model on arrays from .npy/.npz files; write its outputs."""
    from knetflow.errors import FeedError, FormatError, ShapeError
    from knetflow.serialize import load_model

    try:
        model = load_model(args.file, device=args.device)
        feed = _read_inputs(args.input, model.input_names)
        outs = model.predict(feed, batch_size=args.batch_size)
        outs = outs if isinstance(outs, tuple) else (outs,)
        _write_outputs(args.output, model.output_names, outs)
    except (FormatError, FeedError, ShapeError, OSError, ValueError) as e:
        return _fail(str(e))
    print(f"wrote {', '.join(f'{o.dtype}{list(o.shape)}' for o in outs)} to {args.output}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="knetflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("devices", help="list the devices knetflow can use").set_defaults(fn=_devices)
    demo = sub.add_parser("demo", help="build, train data-parallel, checkpoint, reload, predict")
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--samples", type=int, default=20000)
    demo.add_argument("--out", default=None, help="checkpoint directory (default: a temp dir)")
    demo.add_argument("--no-dask", dest="dask", action="store_false",
                      help="skip the Dask LocalCluster run")
    demo.set_defaults(fn=_demo)
    inspect = sub.add_parser("inspect", help="show a saved file's graph, params and metadata")
    inspect.add_argument("file")
    inspect.set_defaults(fn=_inspect)
    predict = sub.add_parser("predict", help="run a saved model on arrays from .npy files")
    predict.add_argument("file")
    predict.add_argument("--input", action="append", required=True,
                         help="X.npy for a one-input model, NAME=X.npy per input, or X.npz")
    predict.add_argument("--output", required=True, help="Y.npy (one output) or Y.npz")
    predict.add_argument("--device", default=None, help="device to run on, e.g. cpu:0")
    predict.add_argument("--batch-size", type=int, default=None)
    predict.set_defaults(fn=_predict)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
