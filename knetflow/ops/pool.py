"""Pooling (Knet `pool`) and its inverse (`unpool`) for 1, 2 and 3 spatial
dimensions of x (N, C, X...), each channel and instance pooled on its own:

    Y = 1 + (X + 2*padding - window) ÷ stride         (stride defaults to window)

where ÷ truncates toward zero, as Knet's `div` (and cuDNN's C division) does.
Where the window fits in the padded input this is the usual floor; where it
is longer than the padded input, there is one window, cut to the padded input
(as cuDNN and Knet's CPU pooling clip windows), unless the window overshoots
by a whole stride or more: then the output is empty, an error. So a spatial
dimension of size 1 under the default window of 2 keeps its size 1, and the
seed's worked examples on Knet's 4-D arrays (6,1,1,1), (1,1,1,6) here, hold:
pool gives [2, 4, 6]; window=3 [3, 6]; padding 1 on the long dimension
[1, 3, 5, 6]; a 10-element row with stride=4 [2, 6, 10]. (The seed's printed
formula says floor, which would make those outputs empty; its examples, and
Knet's code, truncate.)

Modes (cuDNN's, as Knet names them): 0 max, 1 average counting the padding,
2 average over the real elements only, 3 deterministic max. Padding never wins
a max (cuDNN's rule; the seed's worked examples hold either way); ties go to
the first maximal element of the window in row-major order, so modes 0 and 3
agree and the gradient is deterministic. `maxpoolingNanOpt=1` propagates NaN,
0 ignores it; `alpha` scales the result.

Ops: `pool(x)`, `pool_grad(x, y, dy)` (its gradient), `pool_select(x, y, g)`
(for max modes: g at each window's maximum, the adjoint of pool_grad; for the
average modes: the average of g), `unpool(x)`, and `pool_relu_grad(x, y, dy)`,
pool_grad kept where x > 0, which the compiler makes of a relu_grad over it.
Every kernel is a loop over the prod(window) offsets of the window, each a
strided, vectorised ufunc over the whole batch; there is no loop over pixels,
batch or channels.

On the CPU, compiled plans bind the kernels of `knetflow.ops.pool_cpu` for big
batches and for the gradient of max pooling whose windows tile x. On a GPU,
compiled plans run `pool`, `pool_grad` and the average modes of
`pool_select` with cuDNN's pooling instead (same mode numbers and NaN
option; cuDNN picks among tied maxima), falling back to the kernels here for
what cuDNN cannot take: see `knetflow.ops.cudnn`.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from knetflow.ops import cpu_threads, pool_cpu
from knetflow.ops.base import Op, Spec, apply, fail, fmt, kernel, register
from knetflow.ops.conv import check_per_dim, ntuple
from knetflow.ops.elementwise import relu_grad

__all__ = ["pool", "pool_grad", "pool_select", "unpool"]

MAX_MODES = (0, 3)
_NEG_INF = float("-inf")


# ---- attributes and shape rules ----


def _ndim(x) -> int:
    spec = getattr(x, "spec", None)
    return spec.ndim if isinstance(spec, Spec) else len(getattr(x, "shape", ()))


def _attrs(x, window, padding, stride, mode, maxpoolingNanOpt, alpha) -> dict:
    nd = max(_ndim(x) - 2, 0)
    window = ntuple(window, nd)
    return {"window": window, "padding": ntuple(padding, nd),
                "stride": window if stride is None else ntuple(stride, nd), "mode": int(mode),
                "maxpoolingNanOpt": int(maxpoolingNanOpt), "alpha": float(alpha)}


def _check(opname, x: Spec, window, padding, stride, mode):
    nd = x.ndim - 2
    if nd not in (1, 2, 3):
        fail(opname, f"x must be (N, C, X...) with 1 to 3 spatial dims, got {fmt(x)}")
    x.require_float(opname)
    check_per_dim(opname, x, (("window", window, 1), ("padding", padding, 0),
                              ("stride", stride, 1)))
    if any(p >= w for p, w in zip(padding, window)):
        fail(opname, f"padding={padding} must be smaller than window={window}")
    if mode not in (0, 1, 2, 3):
        fail(opname, f"mode={mode} must be 0 (max), 1 (average with padding), "
                     "2 (average without padding) or 3 (deterministic max)")


def pool_size(x, w, p, s):
    """Output size of pool along one dim (None when x is dynamic; < 1 when empty).

    Knet's 1 + (x + 2p - w) ÷ s, ÷ truncating toward zero (see the module docstring):

        >>> pool_size(6, 2, 0, 2), pool_size(1, 2, 0, 2), pool_size(1, 3, 0, 1)
        (3, 1, -1)
    """
    if x is None:
        return None
    room = x + 2 * p - w
    return 1 + (room // s if room >= 0 else -(-room // s))


def fit_window(spatial, window, padding) -> tuple:
    """The window each spatial dim is pooled with: `window`, cut to the padded input
    (X + 2*padding) where it is longer; the kernels and cuDNN take this one."""
    return tuple(min(w, n + 2 * p) for n, w, p in zip(spatial, window, padding))


def unpool_size(x, w, p, s):
    """Output size of unpool along one dim (None when x is dynamic)."""
    return None if x is None else (x - 1) * s + w - 2 * p


def _spatial(opname, sizer, x: Spec, window, padding, stride) -> tuple:
    dims = tuple(sizer(*a) for a in zip(x.shape[2:], window, padding, stride))
    if any(y is not None and y < 1 for y in dims):
        empty = tuple(y if y is None else max(y, 0) for y in dims)
        fail(opname, f"x {fmt(x)} with window={window}, padding={padding}, stride={stride} "
                     f"gives an empty output {empty}")
    return dims


def _infer_pool(x: Spec, window=(), padding=(), stride=(), mode=0, maxpoolingNanOpt=1,
                alpha=1.0, opname="pool") -> Spec:
    _check(opname, x, window, padding, stride, mode)
    return x.with_shape(x.shape[:2] + _spatial(opname, pool_size, x, window, padding, stride))


def _infer_grad(opname, x: Spec, y: Spec, dy: Spec, attrs) -> Spec:
    """The shape rule of a gradient op reading x, y = pool(x) and dy (y's shape)."""
    want = _infer_pool(x, opname=opname, **attrs)
    _same_shape(opname, "y", y, want)
    _same_shape(opname, "dy", dy, want)
    return x.with_dtype(dy.dtype)


def _same_shape(opname, what, got: Spec, want: Spec):
    if got.ndim != want.ndim or any(a is not None and b is not None and a != b
                                    for a, b in zip(got.shape, want.shape)):
        fail(opname, f"{what} {fmt(got)} does not match pool(x) of shape {fmt(want)}")


# ---- kernels ----


def _offsets(window, stride, out):
    """Index of the padded x for each window offset: a strided slice per offset."""
    for k in itertools.product(*(range(w) for w in window)):
        yield (Ellipsis,) + tuple(slice(o, o + (y - 1) * s + 1, s)
                                  for o, s, y in zip(k, stride, out))


def _pad(xp, x, padding, fill):
    if not any(padding):
        return x
    shape = x.shape[:2] + tuple(n + 2 * p for n, p in zip(x.shape[2:], padding))
    xpad = xp.full(shape, fill, dtype=x.dtype)
    xpad[_interior(x.shape[2:], padding)] = x
    return xpad


def _interior(spatial, padding):
    return (Ellipsis,) + tuple(slice(p, p + n) for n, p in zip(spatial, padding))


def _out_shape(x_shape, window, padding, stride):
    return tuple(x_shape[:2]) + tuple(pool_size(*a) for a in zip(x_shape[2:], window, padding,
                                                                 stride))


def _divisor(xp, spatial, window, padding, stride, mode, dtype):
    """What each window's sum is divided by: prod(window), or its count of real elements."""
    if mode == 1:
        return math.prod(window)
    count = None
    for n, w, p, s in zip(spatial, window, padding, stride):
        start = xp.arange(pool_size(n, w, p, s)) * s - p
        along = xp.minimum(start + w, n) - xp.maximum(start, 0)
        count = along if count is None else count[..., None] * along
    return count.astype(dtype)


def _window_reduce(xp, x, window, padding, stride, mode, nanopt, out=None):
    """max or sum over each window (before alpha and the average's division)."""
    fill = _NEG_INF if mode in MAX_MODES else 0
    xpad = _pad(xp, x, padding, fill)
    ys = _out_shape(x.shape, window, padding, stride)
    combine = (xp.maximum if nanopt else xp.fmax) if mode in MAX_MODES else xp.add
    slices = _offsets(window, stride, ys[2:])
    first = xpad[next(slices)]
    if out is None:
        out = first.copy()
    else:
        out[...] = first
    for sl in slices:
        combine(out, xpad[sl], out=out)
    return out


def _pool(xp, x, window, padding, stride, mode, nanopt, alpha, out=None):
    out = _window_reduce(xp, x, window, padding, stride, mode, nanopt, out=out)
    if mode not in MAX_MODES:
        out /= _divisor(xp, x.shape[2:], window, padding, stride, mode, out.dtype)
    if alpha != 1:
        out *= alpha
    return out


def _first_hits(xp, xpad, ymax, slices):
    """For each window offset: its slice and where it holds the window's first maximum."""
    free = None
    for k, sl in enumerate(slices):
        hit = xp.equal(xpad[sl], ymax)
        if free is not None:
            xp.logical_and(hit, free, out=hit)
        if k + 1 < len(slices):
            if free is None:
                free = xp.logical_not(hit)
            else:
                xp.greater(free, hit, out=free)   # free and not hit
        yield sl, hit


def _spread(xp, parts, x_shape, window, padding, stride, ys, dtype, out=None):
    """Sum of the (slice, array, mask or None) `parts`, each array (times its mask) placed
    at its window offset, cropped to x_shape."""
    padded = tuple(x_shape[:2]) + tuple(n + 2 * p for n, p in zip(x_shape[2:], padding))
    tiles = all(s == w and y * s == n for s, w, y, n in zip(stride, window, ys, padded[2:]))
    direct = out is not None and not any(padding)
    acc = out if direct else (xp.empty if tiles else xp.zeros)(padded, dtype=dtype)
    if direct and not tiles:
        acc.fill(0)
    for sl, part, mask in parts:
        if tiles:   # the windows tile x: every element is written exactly once
            if mask is None:
                acc[sl] = part
            else:
                xp.multiply(part, mask, out=acc[sl])
        else:
            acc[sl] += part if mask is None else part * mask
    if direct or not any(padding):
        return acc
    result = acc[_interior(x_shape[2:], padding)]
    if out is None:
        return xp.ascontiguousarray(result)
    out[...] = result
    return out


def _window_max(xp, x, y, window, padding, stride, mode, nanopt, alpha):
    """The padded x and each window's max (y itself unless alpha rescaled it)."""
    ymax = y if alpha == 1 else _window_reduce(xp, x, window, padding, stride, mode, nanopt)
    return _pad(xp, x, padding, _NEG_INF), ymax


def _pool_grad(xp, x, y, dy, window, padding, stride, mode, nanopt, alpha, out=None):
    ys = y.shape[2:]
    if mode in MAX_MODES:
        xpad, ymax = _window_max(xp, x, y, window, padding, stride, mode, nanopt, alpha)
        g = dy * alpha if alpha != 1 else dy
        hits = _first_hits(xp, xpad, ymax, list(_offsets(window, stride, ys)))
        parts = ((sl, g, hit) for sl, hit in hits)
        return _spread(xp, parts, x.shape, window, padding, stride, ys, g.dtype, out=out)
    g = dy * (alpha / _divisor(xp, x.shape[2:], window, padding, stride, mode, dy.dtype))
    parts = ((sl, g, None) for sl in _offsets(window, stride, ys))
    return _spread(xp, parts, x.shape, window, padding, stride, ys, g.dtype, out=out)


def _pool_select(xp, x, y, g, window, padding, stride, mode, nanopt, alpha, out=None):
    if mode not in MAX_MODES:
        return _pool(xp, g, window, padding, stride, mode, nanopt, alpha, out=out)
    xpad, ymax = _window_max(xp, x, y, window, padding, stride, mode, nanopt, alpha)
    gpad = _pad(xp, g, padding, 0)
    if out is None:
        out = xp.zeros(y.shape, dtype=g.dtype)
    else:
        out.fill(0)
    for sl, hit in _first_hits(xp, xpad, ymax, list(_offsets(window, stride, y.shape[2:]))):
        out += gpad[sl] * hit
    if alpha != 1:
        out *= alpha
    return out


def _bind_pool(xp, attrs, in_specs, out_spec):
    """A plan's NumPy kernel for pool on arrays big enough to split (`cpu_threads`): the
    batch cut in parts, one per thread, each pooled by the general kernel; None (the
    forward, on one thread) for smaller or dynamic shapes."""
    (x,) = in_specs
    if xp is not np or not x.is_static or not x.size or not out_spec.is_static:
        return None
    window = fit_window(x.shape[2:], attrs["window"], attrs["padding"])
    args = (window, attrs["padding"], attrs["stride"], attrs["mode"],
            attrs["maxpoolingNanOpt"], attrs["alpha"])
    # each window offset is a strided pass that reads x's cache lines and rewrites out
    moved = 2 * x.nbytes + 2 * math.prod(window) * out_spec.nbytes
    if moved < cpu_threads.SPLIT_BYTES:
        return None
    return cpu_threads.split_batch(out_spec.shape, out_spec.dtype,
                                   lambda x, out: _pool(np, x, *args, out=out), moved)


def _bind_max_grad(xp, attrs, in_specs, out_spec, relu=False):
    """A plan's NumPy kernel (`pool_cpu.max_grad`) for the gradient of 2-D max pooling
    whose windows tile x (stride = window, no padding, sizes multiples of the window,
    alpha 1), all of one float32/float64 dtype; None (the general kernel) otherwise.
    With `relu`, pool_relu_grad's kernel: the same, kept where x > 0.
    """
    x, y, dy = in_specs
    window, stride = attrs["window"], attrs["stride"]
    if (xp is not np or x.ndim != 4 or attrs["mode"] not in MAX_MODES or attrs["alpha"] != 1
            or any(attrs["padding"]) or tuple(stride) != tuple(window)
            or any(not s.is_static or not s.size or s.dtype != out_spec.dtype
                   for s in (x, y, dy, out_spec))
            or out_spec.dtype not in ("float32", "float64")
            or fit_window(x.shape[2:], window, attrs["padding"]) != tuple(window)
            or any(n % k for n, k in zip(x.shape[2:], window))):
        return None
    general = functools.partial((PoolReluGrad if relu else PoolGrad).forward, np, **attrs)
    return pool_cpu.max_grad(x.shape, tuple(window), np.dtype(out_spec.dtype), general, relu)


# ---- ops ----


@register
class Pool(Op):
    """Max or average over windows of each channel of x (N, C, X...) (Knet `pool`)."""
    name, out_arg = "pool", True
    saves = ("out", 0)

    def infer(x: Spec, **attrs) -> Spec:
        return _infer_pool(x, **attrs)

    def forward(xp, x, window=(), padding=(), stride=(), mode=0, maxpoolingNanOpt=1, alpha=1.0,
                out=None):
        window = fit_window(x.shape[2:], window, padding)
        return _pool(xp, x, window, padding, stride, mode, maxpoolingNanOpt, alpha, out=out)

    def bind(xp, attrs, in_specs, out_spec):
        return _bind_pool(xp, attrs, in_specs, out_spec)

    def grad(g, out, x, **attrs):
        return (pool_grad(x, out, g, **attrs),)


@register
class PoolGrad(Op):
    """pool's gradient: dy sent back to each window's maximum, or spread over its average."""
    name, out_arg, nondiff = "pool_grad", True, (0, 1)
    saves = (0, 1)

    def infer(x: Spec, y: Spec, dy: Spec, **attrs) -> Spec:
        return _infer_grad("pool_grad", x, y, dy, attrs)

    def forward(xp, x, y, dy, window=(), padding=(), stride=(), mode=0, maxpoolingNanOpt=1,
                alpha=1.0, out=None):
        window = fit_window(x.shape[2:], window, padding)
        return _pool_grad(xp, x, y, dy, window, padding, stride, mode, maxpoolingNanOpt, alpha,
                          out=out)

    def bind(xp, attrs, in_specs, out_spec):
        return _bind_max_grad(xp, attrs, in_specs, out_spec)

    def grad(g, out, x, y, dy, **attrs):
        # linear in dy; piecewise constant in x (max) or free of x (average)
        return None, None, pool_select(x, y, g, **attrs)


@register
class PoolSelect(Op):
    """The adjoint of pool_grad in dy: g at each window's first maximum (max modes), or
    the pooled average of g (average modes)."""
    name, out_arg, nondiff = "pool_select", True, (0, 1)
    saves = (0, 1)

    def infer(x: Spec, y: Spec, g: Spec, **attrs) -> Spec:
        want = _infer_pool(x, opname="pool_select", **attrs)
        _same_shape("pool_select", "y", y, want)
        if g.ndim != x.ndim or any(a is not None and b is not None and a != b
                                   for a, b in zip(g.shape, x.shape)):
            fail("pool_select", f"g {fmt(g)} must have the shape of x {fmt(x)}")
        return want.with_dtype(g.dtype)

    def forward(xp, x, y, g, window=(), padding=(), stride=(), mode=0, maxpoolingNanOpt=1,
                alpha=1.0, out=None):
        window = fit_window(x.shape[2:], window, padding)
        return _pool_select(xp, x, y, g, window, padding, stride, mode, maxpoolingNanOpt,
                            alpha, out=out)

    def grad(gout, out, x, y, g, **attrs):
        return None, None, pool_grad(x, y, gout, **attrs)


@register
class PoolReluGrad(Op):
    """pool_grad(x, y, dy) where x > 0, else 0: relu_grad(pool_grad(x, y, dy), x) in one
    op, so the gradient of pool(relu(z)) is not written whole and read back to mask it.
    Made by `knetflow.graph.passes.fuse_relu_into_pool_grad`."""
    name, out_arg, nondiff = "pool_relu_grad", True, (0, 1)
    saves = (0, 1)

    def infer(x: Spec, y: Spec, dy: Spec, **attrs) -> Spec:
        return _infer_grad("pool_relu_grad", x, y, dy, attrs)

    def forward(xp, x, y, dy, window=(), padding=(), stride=(), mode=0, maxpoolingNanOpt=1,
                alpha=1.0, out=None):
        attrs = {"window": window, "padding": padding, "stride": stride, "mode": mode,
                 "maxpoolingNanOpt": maxpoolingNanOpt, "alpha": alpha}
        # pool_grad's kernel for this xp (cuDNN's on a GPU), then relu_grad's product, so
        # the numbers are the unfused ops' on every device
        grad, _ = kernel(PoolGrad, xp, attrs)
        g = grad(xp, x, y, dy, out=out, **attrs)
        return xp.multiply(g, x > 0, out=g)

    def bind(xp, attrs, in_specs, out_spec):
        return _bind_max_grad(xp, attrs, in_specs, out_spec, relu=True)

    def grad(g, out, x, y, dy, **attrs):
        # the adjoint of masking is the same mask, then pool_grad's adjoint
        return None, None, pool_select(x, y, relu_grad(g, x), **attrs)


@register
class Unpool(Op):
    """Each element of x spread over its window, divided by alpha (Knet `unpool`)."""
    name, out_arg = "unpool", True

    def infer(x: Spec, window=(), padding=(), stride=(), alpha=1.0) -> Spec:
        _check("unpool", x, window, padding, stride, 1)
        return x.with_shape(x.shape[:2] + _spatial("unpool", unpool_size, x, window, padding,
                                                   stride))

    def forward(xp, x, window=(), padding=(), stride=(), alpha=1.0, out=None):
        yshape = tuple(x.shape[:2]) + tuple(unpool_size(*a) for a in zip(
            x.shape[2:], window, padding, stride))
        v = x / alpha if alpha != 1 else x
        parts = ((sl, v, None) for sl in _offsets(window, stride, x.shape[2:]))
        return _spread(xp, parts, yshape, window, padding, stride, x.shape[2:], v.dtype, out=out)

    def grad(g, out, x, window=(), padding=(), stride=(), alpha=1.0):
        # the adjoint of spreading is summing each window: w/alpha times its average
        return (pool(g, window, padding, stride, mode=1, alpha=math.prod(window) / alpha),)


# ---- public functions ----


def pool(x, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1, alpha=1):
    """Max or average of each window of x (N, C, X...) (Knet `pool`); stride defaults to window.

    `window`, `padding`, `stride` are ints or per-dim tuples; `mode` 0 max, 1 average
    including padding, 2 average excluding padding, 3 deterministic max.

    Example (the seed's: windows [1,2], [3,4], [5,6]):
        >>> import knetflow as kf, numpy as np
        >>> kf.pool(np.arange(1., 7).reshape(1, 1, 6)).ravel()
        array([2., 4., 6.])

    The same on Knet's 4-D form (6,1,1,1), (1,1,1,6) here: the window of 2 over the
    dimension of size 1 is cut to it, so that dimension keeps its size:
        >>> kf.pool(np.arange(1., 7).reshape(1, 1, 1, 6))
        array([[[[2., 4., 6.]]]])
    """
    return apply(Pool, x, **_attrs(x, window, padding, stride, mode, maxpoolingNanOpt, alpha))


def pool_grad(x, y, dy, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1, alpha=1):
    """The gradient of sum(pool(x) * dy) w.r.t. x, given y = pool(x) (same keywords).

    In max modes, each window's dy goes to the window's first element equal to its y
    (on a GPU, cuDNN picks among tied maxima). A y that is not pool(x) is outside this
    contract: the NumPy kernels then give dy to the first element equal to y, and
    nothing to a window holding no such element; cuDNN follows its own rule.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[1., 3., 2., 0.]]])
        >>> pool_grad(x, np.array([[[3., 2.]]]), np.array([[[5., 7.]]]))
        array([[[0., 5., 7., 0.]]])
    """
    return apply(PoolGrad, x, y, dy,
                 **_attrs(x, window, padding, stride, mode, maxpoolingNanOpt, alpha))


def pool_select(x, y, g, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1,
                alpha=1):
    """alpha times g at each window's first maximum of x (max modes), else pool(g)."""
    return apply(PoolSelect, x, y, g,
                 **_attrs(x, window, padding, stride, mode, maxpoolingNanOpt, alpha))


def pool_relu_grad(x, y, dy, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1,
                   alpha=1):
    """pool_grad(x, y, dy) kept where x > 0 (same keywords): the gradient through
    pool(relu(z)) given x = relu(z), as the compiler fuses relu_grad(pool_grad(...), x).

    Example:
        >>> import numpy as np
        >>> x = np.array([[[0., 0., 3., 1.]]])
        >>> pool_relu_grad(x, np.array([[[0., 3.]]]), np.array([[[5., 7.]]]))
        array([[[0., 0., 7., 0.]]])
    """
    return apply(PoolReluGrad, x, y, dy,
                 **_attrs(x, window, padding, stride, mode, maxpoolingNanOpt, alpha))


def unpool(x, window=2, padding=0, stride=None, alpha=1):
    """The inverse of average pooling (Knet `unpool`): each element fills its window.

    The result has Y = (X - 1)*stride + window - 2*padding along each dim and
    `pool(unpool(x), mode=1) == x` for the same keywords when windows do not
    overlap. Knet's definition: the gradient of mode-1 average pooling, applied
    to x * prod(window), divided by alpha.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.unpool(np.array([[[1., 2.]]])).ravel()
        array([1., 1., 2., 2.])
    """
    nd = max(_ndim(x) - 2, 0)
    window = ntuple(window, nd)
    return apply(Unpool, x, window=window, padding=ntuple(padding, nd),
                 stride=window if stride is None else ntuple(stride, nd), alpha=float(alpha))
