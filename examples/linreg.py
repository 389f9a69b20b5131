"""Linear regression, Knet-style: the seed's first model.

    python examples/linreg.py [--steps 10] [--quick]

predict(w, x) = x @ w[0] + w[1]; loss = sum((y - predict)^2) / N, on
Housing-shaped data (`kf.datasets.housing_like`: 506 neighborhoods, 13
normalized attributes). As in the Knet manual, the gradient of the loss with
respect to each parameter (`kf.diff`, `kf.grad`) and a plain loop move each
parameter against it; the loss printed after each step falls. The parameters
are `kf.Param`s, so `kf.diff` finds them wherever the loss uses them.
"""

from __future__ import annotations

import argparse

import numpy as np

import knetflow as kf


def predict(w, x):
    return x @ w[0] + w[1]


def loss(w, x, y):
    return kf.sum((y - predict(w, x)) ** 2) / len(y)


def train(w, data, lr=0.1):
    """One pass over data: w[i] -= lr * dw[i] (the seed's train function)."""
    for x, y in data:
        result = kf.diff(loss, w, x, y)
        for p in w:
            p.value -= lr * kf.grad(result, p)
    return w


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="a few seconds: fewer steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 4
    x, y = kf.datasets.housing_like(506)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = 9 * y / y.std() + 22.5  # house values in $1000s: mean 22.5, std 9, as Housing
    rs = np.random.RandomState(1)
    w = [kf.Param(0.1 * rs.randn(13, 1).astype("float32")),
         kf.Param(np.zeros(1, dtype="float32"))]
    losses = [float(loss(w, x, y))]
    print(f"linear regression on {len(x)} Housing-shaped instances; loss {losses[0]:.4f}")
    for step in range(args.steps):
        train(w, [(x, y)], lr=args.lr)
        losses.append(float(loss(w, x, y)))
        print(f"step {step + 1}: loss {losses[-1]:.4f}")
    return {"losses": losses}


if __name__ == "__main__":
    main()
