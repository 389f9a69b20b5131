"""Linear regression, Knet-style: the seed's first model, trained two ways.

    python examples/linreg.py [--steps 10] [--quick] [--arrays]

predict(w, x) = x @ w[0] + w[1]; loss = sum((y - predict)^2) / N, on
Housing-shaped data (`kf.datasets.housing_like`: 506 neighborhoods, 13
normalized attributes), in float64 as in the seed. Rows are instances here
(x is (506, 13)), so the seed's column-major `w[1]*x .+ w[2]` is
`x @ w[0] + w[1]`. Each step moves every weight against the gradient of the
loss; the loss printed after each step falls. The two ways share `predict`
and `loss` and differ only in the training loop:

By default the weights are `kf.Param`s and `kf.diff` finds them wherever the
loss uses them (Knet's `@diff` and `grad(result, param)`):

    w = [kf.Param(0.1 * randn(13, 1)), kf.Param(0.0)]
    result = kf.diff(loss, w, x, y)
    for p in w:
        p.value -= lr * kf.grad(result, p)

With --arrays, as in the Knet manual: w is a plain list of an array and a
Python float, and `kf.grad(loss)` returns the gradient of its first argument
in the same structure (an array and a float):

    w = [0.1 * randn(13, 1), 0.0]
    lossgradient = kf.grad(loss)
    dw = lossgradient(w, x, y)
    for i in range(len(w)):
        w[i] -= lr * dw[i]

Both start from the same weights and take the same steps, so they end with
the same weights.
"""

from __future__ import annotations

import argparse

import numpy as np

import knetflow as kf


def predict(w, x):
    return x @ w[0] + w[1]


def loss(w, x, y):
    return kf.sum((y - predict(w, x)) ** 2) / len(y)


lossgradient = kf.grad(loss)


def init_weights(rs):
    """The seed's w = Any[0.1*randn(1,13), 0], transposed for rows of instances."""
    return [0.1 * rs.randn(13, 1), 0.0]


def train_params(w, data, lr=0.1):
    """One pass over data with w a list of Params: kf.diff, then each p.value moves."""
    for x, y in data:
        result = kf.diff(loss, w, x, y)
        for p in w:
            p.value -= lr * kf.grad(result, p)
    return w


def train_arrays(w, data, lr=0.1):
    """One pass over data with w a list of plain values (the seed's train function)."""
    for x, y in data:
        dw = lossgradient(w, x, y)
        for i in range(len(w)):
            w[i] -= lr * dw[i]
    return w


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--arrays", action="store_true",
                        help="w a list of plain arrays and floats, trained with kf.grad(loss)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: fewer steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 4
    x, y = kf.datasets.housing_like(506)
    x, y = x.astype("float64"), y.astype("float64")
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = 9 * y / y.std() + 22.5  # house values in $1000s: mean 22.5, std 9, as Housing
    w = init_weights(np.random.RandomState(1))
    if args.arrays:
        train, how = train_arrays, "plain arrays, kf.grad(loss)"
    else:
        w = [kf.Param(v) for v in w]
        train, how = train_params, "kf.Params, kf.diff"
    losses = [float(loss(w, x, y))]
    print(f"linear regression on {len(x)} Housing-shaped instances ({how}); "
          f"loss {losses[0]:.4f}")
    for step in range(args.steps):
        train(w, [(x, y)], lr=args.lr)
        losses.append(float(loss(w, x, y)))
        print(f"step {step + 1}: loss {losses[-1]:.4f}")
    return {"losses": losses, "weights": [np.array(kf.value(v)) for v in w]}


if __name__ == "__main__":
    main()
