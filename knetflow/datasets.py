"""Data sets that need no download: synthetic ones shaped like the seed benchmarks',
and the real 8x8 handwritten digits scikit-learn ships in its wheel."""

from __future__ import annotations

import numpy as np


def mnist_like(n: int = 60000, classes: int = 10, seed: int = 0, dtype="float32"):
    """MNIST-shaped, learnable data: (x of shape (n, 784), labels of shape (n,)).

    Each class has a smooth random 28x28 prototype; an image is 30% its class
    prototype and 70% uniform noise, so a model can learn it but not trivially.

    Example:
        >>> x, y = mnist_like(100)
        >>> x.shape, y.shape, int(y.max()) < 10
        ((100, 784), (100,), True)
    """
    rs = np.random.RandomState(seed)
    coarse = rs.rand(classes, 7, 7)
    prototypes = coarse.repeat(4, axis=1).repeat(4, axis=2)  # smooth at 4x4 blocks
    labels = rs.randint(0, classes, n)
    noise = rs.rand(n, 28, 28)
    images = 0.3 * prototypes[labels] + 0.7 * noise
    return images.reshape(n, 784).astype(dtype), labels.astype("int64")


def housing_like(n: int = 506, features: int = 13, seed: int = 0, dtype="float32"):
    """Housing-shaped regression data: (x (n, 13), y (n, 1)), y linear in x plus noise."""
    rs = np.random.RandomState(seed)
    x = rs.randn(n, features)
    w = rs.randn(features, 1)
    y = x @ w + 0.1 * rs.randn(n, 1)
    return x.astype(dtype), y.astype(dtype)


def digits(dtype="float32"):
    """Real handwritten digits: (x of shape (1797, 64) in [0, 1], labels (1797,) in 0..9).

    scikit-learn's bundled copy of the UCI 8x8 digits (in its wheel: nothing is
    downloaded); needs scikit-learn (`pip install 'knetflow[demo]'`).

    Example:
        >>> x, y = digits()
        >>> x.shape, y.shape, float(x.max()), sorted(set(y.tolist())) == list(range(10))
        ((1797, 64), (1797,), 1.0, True)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("kf.datasets.digits needs scikit-learn, which ships the images: "
                          "pip install 'knetflow[demo]'") from e
    data = load_digits()
    return (data.data / 16.0).astype(dtype), data.target.astype("int64")
