"""Multi-layer perceptron, Knet-style: the seed's MLP with one hidden layer of 64 units, two ways.

    python examples/mlp.py [--epochs 10] [--samples 20000] [--quick] [--arrays]

predict(w, x) applies relu(x @ w[i] + w[i+1]) for every layer but the last
(the seed's loop over the weight list, so more entries in w make a deeper
network), on synthetic MNIST-shaped data, trained with Adam over minibatches
of 100; prints the loss and accuracies per epoch. The two ways share
`init_weights`, `predict`, `loss` and `accuracy` and differ only in the
training loop:

By default the weights are `kf.Param`s and `kf.minimize` updates the Params
the loss uses (each Param keeps its Adam state in `.opt`, so it carries over
from epoch to epoch):

    w = [kf.Param(v) for v in init_weights(sizes, rs)]
    losses = kf.minimize(loss, ((w, x, y) for x, y in dtrn), kf.optim.Adam(lr=lr))

With --arrays, the seed's way: w is a plain list of arrays, `kf.gradloss(loss)`
(`kf.grad(loss)` that also returns the loss) gives the gradient of its first
argument in the same structure, and `kf.update` (Knet's `update!`) applies
one Adam state per weight array in place of `w[i] -= lr * dw[i]`:

    w = init_weights(sizes, rs)
    opts = [kf.optim.Adam(lr=lr) for _ in w]
    lossgradient = kf.gradloss(loss)
    for x, y in dtrn:
        dw, value = lossgradient(w, x, y)
        for i in range(len(w)):
            kf.update(w[i], dw[i], opts[i])

Both start from the same weights and take the same steps, so they end with
the same weights.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time

import numpy as np

import knetflow as kf


def init_weights(sizes, rs):
    """[w1, b1, w2, b2, ...] for layer sizes e.g. (784, 64, 10), uniform in [-0.1, 0.1]."""
    w = []
    for a, b in itertools.pairwise(sizes):
        w.append((-0.1 + 0.2 * rs.rand(a, b)).astype("float32"))
        w.append(np.zeros(b, dtype="float32"))
    return w


def predict(w, x):
    for i in range(0, len(w) - 2, 2):
        x = kf.relu(x @ w[i] + w[i + 1])
    return x @ w[-2] + w[-1]


def loss(w, x, labels):
    return kf.nll(predict(w, x), labels)


lossgradient = kf.gradloss(loss)


def accuracy(w, data):
    scores = [(float(kf.accuracy(predict(w, x), y)), len(y)) for x, y in data]
    return sum(a * n for a, n in scores) / sum(n for _, n in scores)


def train_params(w, data, optimizer):
    """One epoch of kf.minimize over the Params in w; the mean minibatch loss."""
    return float(np.mean(list(kf.minimize(loss, ((w, x, y) for x, y in data), optimizer))))


def train_arrays(w, data, opts):
    """One epoch over the arrays in w, one optimizer per array; the mean minibatch loss."""
    values = []
    for x, y in data:
        dw, value = lossgradient(w, x, y)
        for i in range(len(w)):
            kf.update(w[i], dw[i], opts[i])
        values.append(value)
    return float(np.mean(values))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--hidden", type=int, nargs="*", default=[64])
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--arrays", action="store_true",
                        help="w a list of plain arrays, trained with kf.gradloss(loss)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.samples = 3, 1000
    kf.seed(1)
    x, y = kf.datasets.mnist_like(args.samples + 1000)
    dtrn = kf.minibatch(x[:-1000], y[:-1000], 100, shuffle=True)
    dtst = kf.minibatch(x[-1000:], y[-1000:], 100)
    sizes = [784, *args.hidden, 10]
    w = init_weights(sizes, np.random.RandomState(1))
    if args.arrays:
        train = functools.partial(train_arrays, opts=[kf.optim.Adam(lr=args.lr) for _ in w])
        how = "plain arrays, kf.gradloss(loss)"
    else:
        w = [kf.Param(v) for v in w]
        train = functools.partial(train_params, optimizer=kf.optim.Adam(lr=args.lr))
        how = "kf.Params, kf.minimize"
    print(f"MLP {'-'.join(map(str, sizes))} on {args.samples} synthetic MNIST-shaped images, "
          f"Adam lr {args.lr} ({how})")
    start, losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        losses.append(train(w, dtrn))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f} trn {accuracy(w, dtrn):.4f} "
              f"tst {accuracy(w, dtst):.4f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return {"losses": losses, "accuracy": accuracy(w, dtst),
            "weights": [np.array(kf.value(v)) for v in w]}


if __name__ == "__main__":
    main()
