"""LeNet, Knet-style: two convolution + pooling layers and two dense layers, trained two ways.

    python examples/lenet.py [--epochs 1] [--samples 6000] [--quick] [--arrays]

The seed's model (Knet manual, "Convolutional neural network"), on synthetic
MNIST-shaped images (`kf.datasets.mnist_like`), in NCHW layout: conv4 with
20 then 50 filters of 5x5 (Knet's true convolution, mode 0), relu and 2x2
max pooling after each, then 800 -> 500 -> 10. Trained with Adam over
minibatches of 100; prints the loss as it falls and the test accuracy. The
two ways share `init_weights`, `predict` and `loss` and differ only in the
training loop:

By default the weights are `kf.Param`s and `kf.adam` updates the Params the
loss uses after each minibatch (each keeps its Adam state in `.opt`):

    w = [kf.Param(v) for v in init_weights()]
    for value in kf.adam(loss, ((w, x, y) for x, y in dtrn), lr=lr): ...

With --arrays, the seed's way: w is a plain list of arrays, `kf.gradloss(loss)`
(`kf.grad(loss)` that also returns the loss) gives the gradient of its first
argument in the same structure, and `kf.update` (Knet's `update!`) applies
one Adam state per weight array in place of `w[i] -= lr * dw[i]`:

    w = init_weights()
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
import time

import numpy as np

import knetflow as kf


def init_weights():
    """[w1, b1, w2, b2, w3, b3, w4, b4] as float32 arrays (filters (Cout, Cin, 5, 5))."""
    shapes = [(20, 1, 5, 5), (1, 20, 1, 1), (50, 20, 5, 5), (1, 50, 1, 1), (800, 500), (500,),
              (500, 10), (10,)]
    return [kf.init.xavier_uniform(*s) if len(s) != 1 and s[0] != 1
            else np.zeros(s, dtype="float32") for s in shapes]


def predict(w, x):
    x = kf.pool(kf.relu(kf.conv4(w[0], x) + w[1]))
    x = kf.pool(kf.relu(kf.conv4(w[2], x) + w[3]))
    x = kf.relu(kf.mat(x) @ w[4] + w[5])
    return x @ w[6] + w[7]


def loss(w, x, labels):
    return kf.nll(predict(w, x), labels)


lossgradient = kf.gradloss(loss)


def steps_params(w, data, lr):
    """kf.adam over the Params in w: the loss of each minibatch, lazily."""
    return kf.adam(loss, ((w, x, y) for x, y in data), lr=lr)


def steps_arrays(w, data, opts):
    """The seed's loop over the arrays in w, one optimizer per array: each minibatch's loss."""
    for x, y in data:
        dw, value = lossgradient(w, x, y)
        for i in range(len(w)):
            kf.update(w[i], dw[i], opts[i])
        yield value


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--arrays", action="store_true",
                        help="w a list of plain arrays, trained with kf.gradloss(loss)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples = 400
    kf.seed(1)
    x, y = kf.datasets.mnist_like(args.samples + 1000 if not args.quick else args.samples + 200)
    x = x.reshape(-1, 1, 28, 28)
    ntest = 1000 if not args.quick else 200
    xtrn, ytrn, xtst, ytst = x[:-ntest], y[:-ntest], x[-ntest:], y[-ntest:]
    w = init_weights()
    if args.arrays:
        steps = functools.partial(steps_arrays, opts=[kf.optim.Adam(lr=args.lr) for _ in w])
        how = "plain arrays, kf.gradloss(loss)"
    else:
        w = [kf.Param(v) for v in w]
        steps, how = functools.partial(steps_params, lr=args.lr), "kf.Params, kf.adam"
    print(f"LeNet on {len(xtrn)} synthetic MNIST-shaped images, batch 100, Adam lr {args.lr} "
          f"({how})")
    start, losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        window = []
        data = kf.minibatch(xtrn, ytrn, 100, shuffle=True)
        every = max(1, len(data) // 6)
        for step, value in enumerate(steps(w, data)):
            window.append(value)
            if (step + 1) % every == 0 or step + 1 == len(data):
                losses.append(float(np.mean(window)))
                print(f"epoch {epoch + 1} batch {step + 1}/{len(data)}: loss {losses[-1]:.4f}")
                window = []
    acc = float(np.mean([kf.accuracy(predict(w, xb), yb)
                         for xb, yb in kf.minibatch(xtst, ytst, 100)]))
    print(f"test accuracy {acc:.3f} ({time.perf_counter() - start:.1f}s)")
    return {"losses": losses, "accuracy": acc, "weights": [np.array(kf.value(v)) for v in w]}


if __name__ == "__main__":
    main()
