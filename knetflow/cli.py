"""The `knetflow` command: devices, inspect, predict, export, demo (more come with their layers)."""

from __future__ import annotations

import argparse
import sys


def _devices(args) -> int:
    import knetflow as kf
    from knetflow.devices.cpu import blas_report
    from knetflow.devices.gpu import unavailable_reason

    found = kf.devices()
    for d in found:
        print(d.describe())
    if not any(d.kind == "gpu" for d in found):
        print(f"no GPU: {unavailable_reason()}")
    for line in blas_report():
        print(line)
    return 0


def _demo(args) -> int:
    """The main job end to end on real digits (knetflow/demo.py says what it does)."""
    from knetflow import demo

    result = demo.run(epochs=args.epochs, out=args.out, dask=args.dask)
    return 0 if result["test_accuracy"] > 0 else 1


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


def _export(args) -> int:
    """Write a saved model as an ONNX model file (the `onnx` extra)."""
    from knetflow.errors import FormatError
    from knetflow.onnx import ExportError, export_onnx

    try:
        path = export_onnx(args.file, args.onnx, opset=args.opset)
    except (FormatError, ExportError, ImportError, OSError, ValueError) as e:
        return _fail(str(e))
    import onnx

    model = onnx.load(path)
    inputs = ", ".join(i.name for i in model.graph.input)
    outputs = ", ".join(o.name for o in model.graph.output)
    print(f"wrote {path}: ONNX opset {model.opset_import[0].version}, "
          f"{len(model.graph.node)} nodes, inputs {inputs} -> outputs {outputs}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="knetflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("devices", help="list the devices knetflow can use").set_defaults(fn=_devices)
    demo = sub.add_parser("demo", help="train on real digits data-parallel, checkpoint, "
                                       "reload, predict, export to ONNX, one Dask epoch")
    demo.add_argument("--epochs", type=int, default=20)
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
    export = sub.add_parser("export", help="write a saved model as an ONNX model file")
    export.add_argument("file", help="a model file saved by kf.save")
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument("--opset", type=int, default=None,
                        help="ONNX opset to write (default: 17)")
    export.set_defaults(fn=_export)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
