"""Softmax classification, Knet-style: a linear model with the cross-entropy loss, two ways.

    python examples/softmax.py [--epochs 10] [--samples 20000] [--quick] [--arrays]

The seed's second model (Knet manual, "Softmax classification") on synthetic
MNIST-shaped data (`kf.datasets.mnist_like`): predict(w, x) = x @ w[0] + w[1],
loss = nll (cross-entropy of the softmax), trained by SGD over minibatches
of 100 (lr 0.1: the seed's 0.5 overshoots on this data), printing the loss and
the training and test accuracy after each epoch. The two ways share
`predict`, `loss` and `accuracy` and differ only in the training loop:

By default the weights are `kf.Param`s and `kf.sgd` updates the Params the
loss uses after each minibatch:

    w = [kf.Param(w1), kf.Param(b1)]
    losses = kf.sgd(loss, ((w, x, y) for x, y in dtrn), lr=0.1)

With --arrays, the seed's train function: w is a plain list of arrays, and
`kf.gradloss(loss)` (`kf.grad(loss)` that also returns the loss) gives the
gradient of its first argument in the same structure:

    w = [w1, b1]
    lossgradient = kf.gradloss(loss)
    for x, y in dtrn:
        dw, value = lossgradient(w, x, y)
        for i in range(len(w)):
            w[i] -= lr * dw[i]

Both start from the same weights and take the same steps, so they end with
the same weights.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import knetflow as kf


def predict(w, x):
    return x @ w[0] + w[1]


def loss(w, x, labels):
    return kf.nll(predict(w, x), labels)


lossgradient = kf.gradloss(loss)


def accuracy(w, data):
    """The fraction of instances classified correctly (the seed's accuracy function)."""
    correct = total = 0
    for x, y in data:
        correct += float(kf.accuracy(predict(w, x), y)) * len(y)
        total += len(y)
    return correct / total


def init_weights(rs):
    """The seed's [-0.1 + 0.2*rand(Float32, 10, 784), zeros(Float32, 10, 1)], transposed."""
    return [(-0.1 + 0.2 * rs.rand(784, 10)).astype("float32"), np.zeros(10, dtype="float32")]


def train_params(w, data, lr):
    """One epoch of kf.sgd over the Params in w; the mean minibatch loss."""
    return float(np.mean(list(kf.sgd(loss, ((w, x, y) for x, y in data), lr=lr))))


def train_arrays(w, data, lr):
    """One epoch of the seed's train over the arrays in w; the mean minibatch loss."""
    values = []
    for x, y in data:
        dw, value = lossgradient(w, x, y)
        for i in range(len(w)):
            w[i] -= lr * dw[i]
        values.append(value)
    return float(np.mean(values))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--arrays", action="store_true",
                        help="w a list of plain arrays, trained with kf.gradloss(loss)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.samples = 3, 1000
    kf.seed(1)
    x, y = kf.datasets.mnist_like(args.samples + 1000)
    dtrn = kf.minibatch(x[:-1000], y[:-1000], 100)
    dtst = kf.minibatch(x[-1000:], y[-1000:], 100)
    w = init_weights(np.random.RandomState(1))
    if args.arrays:
        train, how = train_arrays, "plain arrays, kf.gradloss(loss)"
    else:
        w = [kf.Param(v) for v in w]
        train, how = train_params, "kf.Params, kf.sgd"
    print(f"softmax classifier on {args.samples} synthetic MNIST-shaped images, SGD lr "
          f"{args.lr} ({how})")
    print(f"epoch 0: trn {accuracy(w, dtrn):.4f} tst {accuracy(w, dtst):.4f}")
    start, losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        losses.append(train(w, dtrn, args.lr))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f} trn {accuracy(w, dtrn):.4f} "
              f"tst {accuracy(w, dtst):.4f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return {"losses": losses, "accuracy": accuracy(w, dtst),
            "weights": [np.array(kf.value(v)) for v in w]}


if __name__ == "__main__":
    main()
