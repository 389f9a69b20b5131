"""Softmax classification, Knet-style: a linear model with the cross-entropy loss.

    python examples/softmax.py [--epochs 10] [--samples 20000] [--quick]

The seed's second model (Knet manual, "Softmax classification") on synthetic
MNIST-shaped data (`kf.datasets.mnist_like`): predict(w, x) = x @ w[0] + w[1],
loss = nll (cross-entropy of the softmax), trained by `kf.sgd` over minibatches
of 100 (lr 0.1: the seed's 0.5 overshoots on this data), printing the loss and
the training and test accuracy after each epoch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import knetflow as kf


def predict(w, x):
    return x @ w[0] + w[1]


def accuracy(w, data):
    """The fraction of instances classified correctly (the seed's accuracy function)."""
    correct = total = 0
    for x, y in data:
        correct += float(kf.accuracy(predict(w, x), y)) * len(y)
        total += len(y)
    return correct / total


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.samples = 3, 1000
    kf.seed(1)
    x, y = kf.datasets.mnist_like(args.samples + 1000)
    dtrn = kf.minibatch(x[:-1000], y[:-1000], 100)
    dtst = kf.minibatch(x[-1000:], y[-1000:], 100)
    rs = np.random.RandomState(1)
    w = [kf.Param((-0.1 + 0.2 * rs.rand(784, 10)).astype("float32")),
         kf.Param(np.zeros(10, dtype="float32"))]

    def loss(x, labels):
        return kf.nll(predict(w, x), labels)

    print(f"softmax classifier on {args.samples} synthetic MNIST-shaped images, SGD lr {args.lr}")
    print(f"epoch 0: trn {accuracy(w, dtrn):.4f} tst {accuracy(w, dtst):.4f}")
    start, losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        losses.append(float(np.mean(list(kf.sgd(loss, dtrn, lr=args.lr)))))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f} trn {accuracy(w, dtrn):.4f} "
              f"tst {accuracy(w, dtst):.4f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return {"losses": losses, "accuracy": accuracy(w, dtst)}


if __name__ == "__main__":
    main()
