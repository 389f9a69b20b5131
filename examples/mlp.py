"""Multi-layer perceptron, Knet-style: the seed's MLP with one hidden layer of 64 units.

    python examples/mlp.py [--epochs 10] [--samples 20000] [--quick]

predict(w, x) applies relu(x @ w[i] + w[i+1]) for every layer but the last
(the seed's loop over the parameter list, so more entries in w make a deeper
network), on synthetic MNIST-shaped data. Trained with `kf.minimize` and
`kf.optim.Adam` over minibatches of 100 (Adam state lives on each Param, so
it carries over from epoch to epoch); prints the loss and accuracies per
epoch.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

import knetflow as kf


def init_weights(sizes, rs):
    """[w1, b1, w2, b2, ...] for layer sizes e.g. (784, 64, 10), uniform in [-0.1, 0.1]."""
    w = []
    for a, b in itertools.pairwise(sizes):
        w.append(kf.Param((-0.1 + 0.2 * rs.rand(a, b)).astype("float32")))
        w.append(kf.Param(np.zeros(b, dtype="float32")))
    return w


def predict(w, x):
    for i in range(0, len(w) - 2, 2):
        x = kf.relu(x @ w[i] + w[i + 1])
    return x @ w[-2] + w[-1]


def accuracy(w, data):
    scores = [(float(kf.accuracy(predict(w, x), y)), len(y)) for x, y in data]
    return sum(a * n for a, n in scores) / sum(n for _, n in scores)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--hidden", type=int, nargs="*", default=[64])
    parser.add_argument("--lr", type=float, default=0.001)
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

    def loss(x, labels):
        return kf.nll(predict(w, x), labels)

    print(f"MLP {'-'.join(map(str, sizes))} on {args.samples} synthetic MNIST-shaped images, "
          f"Adam lr {args.lr}")
    start, losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        steps = kf.minimize(loss, dtrn, kf.optim.Adam(lr=args.lr))
        losses.append(float(np.mean(list(steps))))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f} trn {accuracy(w, dtrn):.4f} "
              f"tst {accuracy(w, dtst):.4f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return {"losses": losses, "accuracy": accuracy(w, dtst)}


if __name__ == "__main__":
    main()
