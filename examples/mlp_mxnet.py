"""MLP, MXNet-style: layer symbols and FeedForward, data-parallel on two CPU devices.

    python examples/mlp_mxnet.py [--epochs 4] [--samples 20000] [--quick]

The seed's two-layer network (MXNet model API) built from `kf.sym` symbols,
trained by `kf.FeedForward` with ctx=[kf.cpu(0), kf.cpu(1)] (each batch split
over the two devices, gradients summed, parameters identical on both),
checkpointed every epoch with `kf.callback.do_checkpoint`, reloaded with
`FeedForward.load` and scored; then saved as one model file and run by
`kf.load_model`, as a program without this code would.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import numpy as np

import knetflow as kf


def build(hidden=128):
    """data -> fc1 -> relu -> fc2 -> relu -> fc3 -> softmax (MXNet's example network)."""
    data = kf.sym.Variable("data")
    net = kf.sym.FullyConnected(data, num_hidden=hidden, name="fc1")
    net = kf.sym.Activation(net, act_type="relu", name="relu1")
    net = kf.sym.FullyConnected(net, num_hidden=64, name="fc2")
    net = kf.sym.Activation(net, act_type="relu", name="relu2")
    net = kf.sym.FullyConnected(net, num_hidden=10, name="fc3")
    return kf.sym.SoftmaxOutput(net, name="softmax")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--out", default=None, help="checkpoint directory (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.samples = 2, 1200
    kf.seed(1)
    kf.set_cpu_devices(2)
    x, y = kf.datasets.mnist_like(args.samples + 1000)
    xtrn, ytrn, xtst, ytst = x[:-1000], y[:-1000], x[-1000:], y[-1000:]
    out = args.out or tempfile.mkdtemp(prefix="knetflow-mlp-")
    prefix = os.path.join(out, "mlp")

    net = build()
    print("arguments:", net.list_arguments())
    print("shapes:", dict(zip(net.list_arguments(), net.infer_shape(data=(100, 784))[0])))
    model = kf.FeedForward(net, ctx=[kf.cpu(0), kf.cpu(1)], num_epoch=args.epochs,
                           optimizer="sgd", learning_rate=0.02, momentum=0.9,
                           initializer=kf.init.Xavier(), numpy_batch_size=100)
    model.fit(xtrn, ytrn, eval_data=(xtst, ytst),
              epoch_end_callback=kf.callback.do_checkpoint(prefix))
    losses = [h["loss"] for h in model.history]
    print("training loss per epoch:", " ".join(f"{v:.4f}" for v in losses))

    loaded = kf.FeedForward.load(prefix, args.epochs, ctx=kf.cpu(0))
    accuracy = loaded.score(xtst, ytst)
    print(f"checkpoint {prefix}-{args.epochs:04d}.kfp reloaded: test accuracy {accuracy:.4f}")
    path = kf.save(os.path.join(out, "mlp.kf"), loaded)
    served = kf.load_model(path)
    agree = float(np.mean(served.predict(xtst).argmax(axis=1) == loaded.predict(xtst).argmax(1)))
    print(f"kf.load_model({os.path.basename(path)}) agrees with the model on {agree:.0%} of "
          "the test set")
    kf.set_cpu_devices(1)
    return {"losses": losses, "accuracy": accuracy}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # FeedForward's epoch logs
    main()
