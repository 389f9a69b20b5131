"""LeNet, MXNet-style: convolution layer symbols and FeedForward on two CPU devices.

    python examples/lenet_mxnet.py [--epochs 1] [--samples 6000] [--quick]

MXNet's LeNet from `kf.sym` symbols (Convolution 5x5 with 20 then 50 filters,
tanh, 2x2 max Pooling with stride 2, Flatten, FullyConnected 500, tanh,
FullyConnected 10, SoftmaxOutput) on synthetic MNIST-shaped NCHW images,
trained by `kf.FeedForward` data-parallel over ctx=[kf.cpu(0), kf.cpu(1)],
checkpointed, reloaded with `FeedForward.load` and scored.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile

import knetflow as kf


def build():
    data = kf.sym.Variable("data")
    net = kf.sym.Convolution(data, kernel=(5, 5), num_filter=20, name="conv1")
    net = kf.sym.Activation(net, act_type="tanh", name="tanh1")
    net = kf.sym.Pooling(net, pool_type="max", kernel=(2, 2), stride=(2, 2), name="pool1")
    net = kf.sym.Convolution(net, kernel=(5, 5), num_filter=50, name="conv2")
    net = kf.sym.Activation(net, act_type="tanh", name="tanh2")
    net = kf.sym.Pooling(net, pool_type="max", kernel=(2, 2), stride=(2, 2), name="pool2")
    net = kf.sym.Flatten(net, name="flatten")
    net = kf.sym.FullyConnected(net, num_hidden=500, name="fc1")
    net = kf.sym.Activation(net, act_type="tanh", name="tanh3")
    net = kf.sym.FullyConnected(net, num_hidden=10, name="fc2")
    return kf.sym.SoftmaxOutput(net, name="softmax")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--out", default=None, help="checkpoint directory (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples = 600
    kf.seed(1)
    kf.set_cpu_devices(2)
    ntest = 200 if args.quick else 1000
    x, y = kf.datasets.mnist_like(args.samples + ntest)
    x = x.reshape(-1, 1, 28, 28)
    xtrn, ytrn, xtst, ytst = x[:-ntest], y[:-ntest], x[-ntest:], y[-ntest:]
    prefix = os.path.join(args.out or tempfile.mkdtemp(prefix="knetflow-lenet-"), "lenet")

    net = build()
    shapes = dict(zip(net.list_arguments(), net.infer_shape(data=(100, 1, 28, 28))[0]))
    print("parameter shapes:", {k: v for k, v in shapes.items() if k.endswith("weight")})
    model = kf.FeedForward(net, ctx=[kf.cpu(0), kf.cpu(1)], num_epoch=args.epochs,
                           optimizer="adam", learning_rate=0.001,
                           initializer=kf.init.Xavier(), numpy_batch_size=100)
    losses = []
    every = max(1, len(xtrn) // 100 // 6)

    def report(param):
        losses.append(param.locals["loss"])
        if (param.nbatch + 1) % every == 0:
            print(f"epoch {param.epoch} batch {param.nbatch + 1}: loss {losses[-1]:.4f}")

    model.fit(xtrn, ytrn, eval_data=(xtst, ytst), batch_end_callback=report,
              epoch_end_callback=kf.callback.do_checkpoint(prefix))
    loaded = kf.FeedForward.load(prefix, args.epochs)
    accuracy = loaded.score(xtst, ytst)
    print(f"reloaded {prefix}-{args.epochs:04d}.kfp: test accuracy {accuracy:.4f}")
    kf.set_cpu_devices(1)
    return {"losses": losses, "accuracy": accuracy}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # FeedForward's epoch logs
    main()
