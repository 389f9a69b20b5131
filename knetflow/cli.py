"""The `knetflow` command: devices, demo (more subcommands come with their layers)."""

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="knetflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("devices", help="list the devices knetflow can use").set_defaults(fn=_devices)
    demo = sub.add_parser("demo", help="train the seed MLP end to end and print the loss falling")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--samples", type=int, default=20000)
    demo.set_defaults(fn=_demo)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
