"""Knet's array initializers (`kf.init.xavier_uniform`, ...), drawing from `kf.seed`'s stream.

Shapes are row-major: a dense weight is (fan_out, fan_in) when used as `w @ x`
and (fan_in, fan_out) when used as `x @ w`; like Knet, fan_in and fan_out are
taken from the last and first dims for 2-D arrays and include the receptive
field for convolution filters (Cout, Cin, k...).
"""

from __future__ import annotations

import numpy as np

from knetflow import rng


def _fans(shape) -> tuple:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], 1  # Knet: a vector has fan_in = length, fan_out = 1
    if len(shape) == 2:
        return shape[1], shape[0]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def _shape(dims) -> tuple:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return tuple(int(d) for d in dims)


def xavier_uniform(*dims, gain=1, dtype="float32") -> np.ndarray:
    """Uniform in ±gain*sqrt(6/(fan_in+fan_out)) (Knet `xavier_uniform`, the default init).

    Example: `kf.init.xavier_uniform(64, 784).shape` -> `(64, 784)`.
    """
    shape = _shape(dims)
    fan_in, fan_out = _fans(shape)
    s = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.generator().uniform(-s, s, shape).astype(dtype)


xavier = xavier_uniform


def xavier_normal(*dims, gain=1, dtype="float32") -> np.ndarray:
    """Normal with std gain*sqrt(2/(fan_in+fan_out)) (Knet `xavier_normal`)."""
    shape = _shape(dims)
    fan_in, fan_out = _fans(shape)
    s = gain * np.sqrt(2.0 / (fan_in + fan_out))
    return (s * rng.generator().standard_normal(shape)).astype(dtype)


def gaussian(*dims, mean=0.0, std=0.01, dtype="float32") -> np.ndarray:
    """Normal with the given mean and std (Knet `gaussian`, std 0.01 by default)."""
    shape = _shape(dims)
    return (mean + std * rng.generator().standard_normal(shape)).astype(dtype)


def bilinear(*args, dtype="float32") -> np.ndarray:
    """Bilinear upsampling filters for a deconvolution (Knet `bilinear(T, fw, fh, IN, ON)`).

    `fw`, `fh`: the upscale factor (equal); `IN`, `ON`: channels (equal). The filter
    is (ON, IN, k, k), row-major (Cout, Cin, kh, kw), with k = 2f - f % 2 and the
    interpolation kernel on the channel diagonal. Knet's leading type argument
    may be given (`bilinear("float32", 2, 2, 3, 3)`) or passed as `dtype`.

    Example: `kf.init.bilinear(2, 2, 1, 1)[0, 0]` is the 4x4 kernel of factor 2.
    """
    if len(args) == 5:
        dtype, args = args[0], args[1:]
    if len(args) != 4:
        raise TypeError(f"bilinear(fw, fh, IN, ON): expected 4 sizes, got {len(args)}")
    fw, fh, n_in, n_out = (int(a) for a in args)
    if fw != fh:
        raise ValueError(f"bilinear: the filter must be square, got factors {fw} and {fh}")
    if n_in != n_out:
        raise ValueError(f"bilinear: input and output channels must be equal, got {n_in} "
                         f"and {n_out}")
    size = 2 * fw - fw % 2
    center = fw - 1 if size % 2 == 1 else fw - 0.5
    ramp = 1 - np.abs(np.arange(size) - center) / fw
    w = np.zeros((n_out, n_in, size, size), dtype=dtype)
    for c in range(n_in):
        w[c, c] = np.outer(ramp, ramp)
    return w


def zeros(*dims, dtype="float32") -> np.ndarray:
    """All zeros (Knet `param0`)."""
    return np.zeros(_shape(dims), dtype=dtype)


def ones(*dims, dtype="float32") -> np.ndarray:
    """All ones."""
    return np.ones(_shape(dims), dtype=dtype)


def initial_value(init, shape, dtype) -> np.ndarray:
    """The value of a parameter: `init(*shape)` (xavier_uniform when init is None)."""
    init = xavier_uniform if init is None else init
    if isinstance(init, str):
        init = {"xavier_uniform": xavier_uniform, "xavier": xavier_uniform,
                "xavier_normal": xavier_normal, "gaussian": gaussian, "zeros": zeros,
                "ones": ones}[init]
    value = np.asarray(init(*shape))
    if value.shape != tuple(shape):
        raise ValueError(f"initializer {init!r} returned shape {value.shape}, "
                         f"expected {tuple(shape)}")
    return value.astype(dtype, copy=False)
