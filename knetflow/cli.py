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
    """Train the seed's MLP (784-64-10) on synthetic MNIST-shaped data, Knet-style."""
    import numpy as np

    import knetflow as kf

    kf.seed(1)
    x, y = kf.datasets.mnist_like(args.samples)
    xtrn, ytrn, xtst, ytst = x[:-1000], y[:-1000], x[-1000:], y[-1000:]
    w1 = kf.Param(kf.init.xavier_uniform(784, 64))
    b1 = kf.Param(np.zeros(64, dtype="float32"))
    w2 = kf.Param(kf.init.xavier_uniform(64, 10))
    b2 = kf.Param(np.zeros(10, dtype="float32"))
    model = [w1, b1, w2, b2]

    def predict(x):
        return kf.relu(x @ w1 + b1) @ w2 + b2

    def loss(x, labels):
        return kf.nll(predict(x), labels)

    print(f"MLP 784-64-10 on {len(xtrn)} synthetic MNIST-shaped images, batch 100, SGD lr 0.1")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        for i in range(0, len(xtrn) - 99, 100):
            r = kf.diff(loss, xtrn[i:i + 100], ytrn[i:i + 100])
            total += kf.value(r)
            for p in model:
                p.value -= 0.1 * kf.grad(r, p)
        acc = kf.accuracy(predict(xtst), ytst)
        print(f"epoch {epoch + 1}: train loss {total / (len(xtrn) // 100):.4f}, "
              f"test accuracy {acc:.3f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


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
    demo = sub.add_parser("demo", help="train the seed MLP end to end and print the loss falling")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--samples", type=int, default=20000)
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
