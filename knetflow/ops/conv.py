"""Convolution (Knet `conv4`) and transposed convolution (`deconv4`) for 1, 2
and 3 spatial dimensions, in row-major layout: x is (N, C, X...), a filter
bank w is (Cout, Cin/group, K...), the result (N, Cout, Y...) with

    Y = 1 + (X + 2*padding - ((K - 1)*dilation + 1)) // stride      (conv4)
    Y = (X - 1)*stride + (K - 1)*dilation + 1 - 2*padding           (deconv4)

`mode=0` is true convolution (the filter is flipped, Knet's default), `mode=1`
cross-correlation. Per-dimension tuples follow the array's axis order (the
reverse of Knet's column-major order).

Four ops, closed under differentiation: `conv4(w, x)`, `conv4_data(w, dy, x)`
(the gradient w.r.t. x: a transposed convolution into x's shape),
`conv4_filter(x, dy, w)` (the gradient w.r.t. w) and `deconv4(w, x)`. Each is
bilinear, so each gradient is one of the four again and second derivatives
come for free.

Kernels, written against xp: each kernel offset's strided view of the padded
input (a slice, no copy) is copied into a column matrix (G, Cin/G*prod(K),
pixels and batch), which one batched GEMM multiplies by the filters; every
gradient is one batched GEMM as well. The batch sits before the output pixels
or after them (`_batch_last` picks the cheaper copies for the shapes). The
transposed direction scatters the column gradient back with one strided,
vectorised add per kernel offset: prod(K) array operations, none over pixels,
batch or channels.

On a GPU, compiled plans run these four ops with cuDNN instead (through
CuPy, mode 0 by flipping the filter), falling back to the kernels here for
what cuDNN cannot take: see `knetflow.ops.cudnn`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from knetflow.ops.base import Op, Spec, apply, fail, fmt, register, result_dtype
from knetflow.ops.conv_cpu import bind_conv

__all__ = ["conv4", "conv4_data", "conv4_filter", "deconv4"]

#: below this many filter entries per group the filter-gradient GEMM is split into blocks
_SKINNY = 4096


# ---- attributes and shape rules ----


def _ndim(x) -> int:
    spec = getattr(x, "spec", None)
    return spec.ndim if isinstance(spec, Spec) else len(getattr(x, "shape", ()))


def ntuple(value, nd: int) -> tuple:
    """An int, or a sequence of ints, as a tuple of `nd` ints (the attribute form)."""
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),) * nd


def _attrs(x, padding, stride, dilation, mode, alpha, group) -> dict:
    nd = max(_ndim(x) - 2, 0)
    return {"padding": ntuple(padding, nd), "stride": ntuple(stride, nd),
                "dilation": ntuple(dilation, nd), "mode": int(mode), "alpha": float(alpha),
                "group": int(group)}


def check_per_dim(opname, x: Spec, checks) -> None:
    """Each (name, value, low) of a spatial op: one entry per spatial dim of x, each >= low."""
    nd = x.ndim - 2
    for name, value, low in checks:
        if len(value) != nd:
            fail(opname, f"{name}={value} needs {nd} entries for x of shape {fmt(x)}")
        if any(v < low for v in value):
            fail(opname, f"{name}={value} must be >= {low} in every dimension")


def _check_attrs(opname, x: Spec, padding, stride, dilation, mode, group):
    nd = x.ndim - 2
    if nd not in (1, 2, 3):
        fail(opname, f"x must be (N, C, X...) with 1 to 3 spatial dims, got {fmt(x)}")
    check_per_dim(opname, x, (("padding", padding, 0), ("stride", stride, 1),
                              ("dilation", dilation, 1)))
    if mode not in (0, 1):
        fail(opname, f"mode={mode} must be 0 (convolution) or 1 (cross-correlation)")
    if group < 1:
        fail(opname, f"group={group} must be >= 1")


def _check_filter(opname, w: Spec, x: Spec, group, in_axis_of_w):
    """w matches x's rank, is float, and x's channels match w's `in_axis_of_w` (0 or 1)."""
    if w.ndim != x.ndim:
        fail(opname, f"w {fmt(w)} and x {fmt(x)} must have the same rank "
                     "(w is (Cout, Cin/group, K...), x is (N, C, X...))")
    for s in (w, x):
        s.require_float(opname)
    c, cw = x.shape[1], w.shape[in_axis_of_w]
    if in_axis_of_w == 1:
        if c is not None and cw is not None and c != cw * group:
            fail(opname, f"x {fmt(x)} has {c} channels but w {fmt(w)} with group={group} "
                         f"takes {cw * group}")
        if w.shape[0] is not None and w.shape[0] % group:
            fail(opname, f"w {fmt(w)} has {w.shape[0]} output channels, not a multiple "
                         f"of group={group}")
    elif c is not None and cw is not None and c != cw:
        fail(opname, f"x {fmt(x)} has {c} channels but w {fmt(w)} expects {cw}")
    elif cw is not None and cw % group:
        fail(opname, f"w {fmt(w)} has {cw} input channels, not a multiple of group={group}")


def conv_size(x, k, p, s, d):
    """Output size of conv4 along one dim (None when x or k is dynamic)."""
    if x is None or k is None:
        return None
    return 1 + (x + 2 * p - (k - 1) * d - 1) // s


def deconv_size(x, k, p, s, d):
    """Output size of deconv4 along one dim (None when x or k is dynamic)."""
    if x is None or k is None:
        return None
    return (x - 1) * s + (k - 1) * d + 1 - 2 * p


def _out_spatial(opname, sizer, w: Spec, x: Spec, padding, stride, dilation) -> tuple:
    dims = tuple(sizer(xi, ki, p, s, d) for xi, ki, p, s, d in
                 zip(x.shape[2:], w.shape[2:], padding, stride, dilation))
    if any(y is not None and y < 1 for y in dims):
        fail(opname, f"x {fmt(x)} with w {fmt(w)}, padding={padding}, stride={stride}, "
                     f"dilation={dilation} gives an empty output {dims}")
    return dims


def _infer_conv(w: Spec, x: Spec, padding=(), stride=(), dilation=(), mode=0, alpha=1.0,
                group=1, opname="conv4") -> Spec:
    _check_attrs(opname, x, padding, stride, dilation, mode, group)
    _check_filter(opname, w, x, group, 1)
    y = _out_spatial(opname, conv_size, w, x, padding, stride, dilation)
    return Spec((x.shape[0], w.shape[0]) + y, result_dtype(w, x))


def _check_dy(opname, w: Spec, dy: Spec, x: Spec, attrs) -> Spec:
    """dy has the shape conv4(w, x) would have; returns that conv's spec."""
    want = _infer_conv(w, x, opname=opname, **attrs)
    if dy.ndim != want.ndim or any(a is not None and b is not None and a != b
                                   for a, b in zip(dy.shape, want.shape)):
        fail(opname, f"dy {fmt(dy)} does not match conv4(w {fmt(w)}, x {fmt(x)}) "
                     f"of shape {fmt(want)}")
    return dy.require_float(opname)


# ---- kernels (xp: numpy or cupy) ----


def _weights(xp, w, mode, group):
    """The filters as GEMM operands (G, Cout/G, Cin/G*prod(K)); flipped for mode 0."""
    if mode == 0:
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]
    return xp.ascontiguousarray(w).reshape(group, w.shape[0] // group, -1)


def _interior(spatial, padding) -> tuple:
    return (Ellipsis,) + tuple(slice(p, p + n) for n, p in zip(spatial, padding))


def _batch_last(x_shape, ksize, out_shape) -> bool:
    """Whether the columns put the batch last, (G, rows, pixels*N), or first, (N, G, rows,
    pixels), where rows = Cin/G*prod(K) and pixels = prod(Y).

    Batch first: a batched GEMM writes NCHW directly, but the im2col copy moves runs
    of Y[-1] elements, and the filter gradient sums N per-image products. Batch last:
    runs of Y[-1]*N and one GEMM for everything, but x and the result are transposed
    element by element. A NumPy copy pays about as much per run as for 8 transposed
    elements, hence the rule.
    """
    n, c = x_shape[:2]
    pixels = math.prod(out_shape[2:])
    runs = c * math.prod(ksize) * n * pixels // out_shape[-1]
    moved = math.prod(x_shape) + math.prod(out_shape)
    return n > 1 and (8 * runs > moved or out_shape[1] > pixels)


def _taps(ksize, dilation, ys, stride):
    """For each kernel offset k: k and the strided slices of the padded input it reads."""
    for k in itertools.product(*(range(kk) for kk in ksize)):
        yield k, tuple(slice(kk * d, kk * d + (y - 1) * s + 1, s)
                       for kk, d, y, s in zip(k, dilation, ys, stride))


def _im2col(xp, x, ksize, ys, padding, stride, dilation, group, last):
    """x's patches as GEMM columns (see _batch_last): one strided-view copy per kernel offset."""
    if any(padding):
        xpad = xp.zeros(x.shape[:2] + tuple(s + 2 * p for s, p in zip(x.shape[2:], padding)),
                        dtype=x.dtype)
        xpad[_interior(x.shape[2:], padding)] = x
        x = xpad
    n, c = x.shape[:2]
    rows, pixels, ksize, ys = c // group * math.prod(ksize), math.prod(ys), tuple(ksize), tuple(ys)
    every = slice(None)
    if last:
        x = xp.ascontiguousarray(xp.moveaxis(x, 0, -1))         # (C, X..., N)
        cols = xp.empty((c,) + ksize + ys + (n,), dtype=x.dtype)
        for k, window in _taps(ksize, dilation, ys, stride):
            cols[(every,) + k] = x[(every,) + window + (every,)]
        return cols.reshape(group, rows, pixels * n)
    cols = xp.empty((n, c) + ksize + ys, dtype=x.dtype)
    for k, window in _taps(ksize, dilation, ys, stride):
        cols[(every, every) + k] = x[(every, every) + window]
    return cols.reshape(n, group, rows, pixels)


def _dy_operand(xp, dy, group, last):
    """dy (N, Cout, Y...) as the GEMM operand matching the columns."""
    n, cout, pixels = dy.shape[0], dy.shape[1], math.prod(dy.shape[2:])
    four = dy.reshape(n, group, cout // group, pixels)
    if not last:
        return four
    moved = xp.ascontiguousarray(four.transpose(1, 2, 3, 0))
    return moved.reshape(group, cout // group, pixels * n)


def _gemm_nt(xp, a, b, lead):
    """a @ b^T per group for a (G, M, P), b (G, K, P); split P into `lead` blocks when thin."""
    g, m, _ = a.shape
    k = b.shape[1]
    if m * k >= _SKINNY or lead <= 1:
        return xp.matmul(a, b.transpose(0, 2, 1))
    # BLAS threads a long, thin product badly: block products and a sum do better
    a4 = a.reshape(g, m, lead, -1).transpose(0, 2, 1, 3)
    b4 = b.reshape(g, k, lead, -1).transpose(0, 2, 3, 1)
    return xp.matmul(a4, b4).sum(axis=1)


def _col2im(xp, cols, xshape, ys, padding, stride, dilation, last, out=None):
    """Scatter-add columns (N, G, Cin/G, K..., Y...) or (G, Cin/G, K..., Y..., N) into an
    array of shape xshape."""
    n, nd = xshape[0], len(ys)
    lead = 2 if last else 3
    g, cg, ksize = cols.shape[lead - 2], cols.shape[lead - 1], cols.shape[lead:lead + nd]
    padded = tuple(s + 2 * p for s, p in zip(xshape[2:], padding))
    direct = out is not None and not last and not any(padding)
    acc_shape = (g, cg) + padded + (n,) if last else (n, g, cg) + padded
    acc = out.reshape(acc_shape) if direct else xp.zeros(acc_shape, dtype=cols.dtype)
    if direct:
        acc.fill(0)
    tail = (slice(None),) if last else ()
    for k, window in _taps(ksize, dilation, ys, stride):
        acc[(Ellipsis,) + window + tail] += cols[(slice(None),) * lead + k]
    if direct:
        return out
    acc = acc.reshape((g * cg,) + padded + (n,)) if last else acc.reshape((n, g * cg) + padded)
    result = xp.moveaxis(acc, -1, 0) if last else acc
    if any(padding):
        result = result[_interior(xshape[2:], padding)]
    if out is None:
        return xp.ascontiguousarray(result)
    out[...] = result
    return out


def _transposed(xp, w, dy, xshape, padding, stride, dilation, mode, alpha, group, out=None):
    """The transposed convolution of dy by w into shape xshape (conv4_data and deconv4)."""
    last = _batch_last(xshape, w.shape[2:], (dy.shape[0], w.shape[0]) + tuple(dy.shape[2:]))
    wm = _weights(xp, w, mode, group)
    if alpha != 1:
        wm = wm * alpha
    cols = xp.matmul(wm.transpose(0, 2, 1), _dy_operand(xp, dy, group, last))
    n, ys, patch = dy.shape[0], tuple(dy.shape[2:]), (group, w.shape[1]) + tuple(w.shape[2:])
    cols = cols.reshape(patch + ys + (n,) if last else (n,) + patch + ys)
    return _col2im(xp, cols, xshape, ys, padding, stride, dilation, last, out=out)


def _bind(kind, xp, attrs, in_specs, out_spec, x_at, w_at):
    """A plan's NumPy kernel (knetflow.ops.conv_cpu) for a 2-D, one-group convolution op
    whose inputs and result share one float32/float64 dtype; None (the general
    forward) otherwise."""
    x, w = in_specs[x_at], in_specs[w_at]
    specs = list(in_specs) + [out_spec]
    if (xp is not np or attrs.get("group", 1) != 1 or x.ndim != 4
            or any(not s.is_static or not s.size or s.dtype != out_spec.dtype for s in specs)
            or out_spec.dtype not in ("float32", "float64")):
        return None
    ys = tuple(conv_size(*a) for a in zip(x.shape[2:], w.shape[2:], attrs["padding"],
                                          attrs["stride"], attrs["dilation"]))
    last = _batch_last(x.shape, w.shape[2:], (x.shape[0], w.shape[0]) + ys)
    return bind_conv(kind, x.shape, w.shape, out_spec.dtype, attrs["padding"], attrs["stride"],
                     attrs["dilation"], attrs["mode"], attrs["alpha"], last)


# ---- ops ----


@register
class Conv4(Op):
    """Convolution or cross-correlation of x (N, C, X...) with filters w (Knet `conv4`)."""
    name, out_arg = "conv4", True
    saves = (0, 1)

    def infer(w: Spec, x: Spec, **attrs) -> Spec:
        return _infer_conv(w, x, **attrs)

    def forward(xp, w, x, padding=(), stride=(), dilation=(), mode=0, alpha=1.0, group=1,
                out=None):
        ys = tuple(conv_size(*a) for a in zip(x.shape[2:], w.shape[2:], padding, stride,
                                              dilation))
        n, yshape = x.shape[0], (x.shape[0], w.shape[0]) + ys
        last = _batch_last(x.shape, w.shape[2:], yshape)
        cols = _im2col(xp, x, w.shape[2:], ys, padding, stride, dilation, group, last)
        wm = _weights(xp, w, mode, group)
        if out is None:
            out = xp.empty(yshape, dtype=xp.result_type(wm, cols))
        nchw = out.reshape(n, group, wm.shape[1], math.prod(ys))
        if last:
            y = xp.matmul(wm, cols).reshape(group, wm.shape[1], math.prod(ys), n)
            nchw[...] = y.transpose(3, 0, 1, 2)
        else:   # per-image products straight into NCHW
            xp.matmul(wm, cols, out=nchw)
        if alpha != 1:
            out *= alpha
        return out

    def bind(xp, attrs, in_specs, out_spec):
        return _bind("conv4", xp, attrs, in_specs, out_spec, 1, 0)

    def grad(g, out, w, x, **attrs):
        return conv4_filter(x, g, w, **attrs), conv4_data(w, g, x, **attrs)


@register
class Conv4Data(Op):
    """conv4's gradient w.r.t. x: dy (shaped like conv4(w, x)) transposed back into x's shape."""
    name, out_arg, nondiff = "conv4_data", True, (2,)
    saves = (0, 1)

    def infer(w: Spec, dy: Spec, x: Spec, **attrs) -> Spec:
        _check_dy("conv4_data", w, dy, x, attrs)
        return Spec(x.shape, result_dtype(w, dy))

    def forward(xp, w, dy, x, out=None, **attrs):
        return _transposed(xp, w, dy, x.shape, out=out, **attrs)

    def bind(xp, attrs, in_specs, out_spec):
        return _bind("conv4_data", xp, attrs, in_specs, out_spec, 2, 0)

    def grad(g, out, w, dy, x, **attrs):
        return conv4_filter(g, dy, w, **attrs), conv4(w, g, **attrs), None


@register
class Conv4Filter(Op):
    """conv4's gradient w.r.t. w: the correlation of x's patches with dy, shaped like w."""
    name, out_arg, nondiff = "conv4_filter", True, (2,)
    saves = (0, 1)

    def infer(x: Spec, dy: Spec, w: Spec, **attrs) -> Spec:
        _check_dy("conv4_filter", w, dy, x, attrs)
        return Spec(w.shape, result_dtype(x, dy))

    def forward(xp, x, dy, w, padding=(), stride=(), dilation=(), mode=0, alpha=1.0, group=1,
                out=None):
        last = _batch_last(x.shape, w.shape[2:], dy.shape)
        cols = _im2col(xp, x, w.shape[2:], dy.shape[2:], padding, stride, dilation, group, last)
        dyo = _dy_operand(xp, dy, group, last)
        if last:
            dw = _gemm_nt(xp, dyo, cols, math.prod(dy.shape[2:]))
        else:   # per-image products, summed
            dw = xp.matmul(dyo, cols.transpose(0, 1, 3, 2)).sum(axis=0)
        if alpha != 1:
            dw *= alpha
        dw = dw.reshape(w.shape)
        if mode == 0:
            dw = dw[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]
        if out is None:
            return xp.ascontiguousarray(dw)
        out[...] = dw
        return out

    def bind(xp, attrs, in_specs, out_spec):
        return _bind("conv4_filter", xp, attrs, in_specs, out_spec, 0, 2)

    def grad(g, out, x, dy, w, **attrs):
        return conv4_data(g, dy, x, **attrs), conv4(g, x, **attrs), None


@register
class Deconv4(Op):
    """Transposed convolution of x (N, Cx, X...) by w (Cx, Cy/group, K...) (Knet `deconv4`)."""
    name, out_arg = "deconv4", True
    saves = (0, 1)

    def infer(w: Spec, x: Spec, padding=(), stride=(), dilation=(), mode=0, alpha=1.0,
              group=1) -> Spec:
        _check_attrs("deconv4", x, padding, stride, dilation, mode, group)
        _check_filter("deconv4", w, x, group, 0)
        y = _out_spatial("deconv4", deconv_size, w, x, padding, stride, dilation)
        cy = None if w.shape[1] is None else w.shape[1] * group
        return Spec((x.shape[0], cy) + y, result_dtype(w, x))

    def forward(xp, w, x, padding=(), stride=(), dilation=(), mode=0, alpha=1.0, group=1,
                out=None):
        ys = tuple(deconv_size(*a) for a in zip(x.shape[2:], w.shape[2:], padding, stride,
                                                dilation))
        yshape = (x.shape[0], w.shape[1] * group) + ys
        return _transposed(xp, w, x, yshape, padding, stride, dilation, mode, alpha, group,
                           out=out)

    def grad(g, out, w, x, **attrs):
        return conv4_filter(g, x, w, **attrs), conv4(w, g, **attrs)


# ---- public functions ----


def conv4(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """Convolution of x (N, C, X...) with filters w (Cout, C/group, K...) (Knet `conv4`).

    1 to 3 spatial dims; `padding`, `stride`, `dilation` are ints or per-dim tuples;
    `mode=0` convolves (flips w), `mode=1` cross-correlates; `alpha` scales the
    result; `group` splits the channels into independent groups.

    Example (the seed's first example, w=[1,2,3] over x=1..7):
        >>> import knetflow as kf, numpy as np
        >>> w, x = np.array([[[1., 2, 3]]]), np.arange(1., 8).reshape(1, 1, 7)
        >>> kf.conv4(w, x).ravel()
        array([10., 16., 22., 28., 34.])
    """
    return apply(Conv4, w, x, **_attrs(x, padding, stride, dilation, mode, alpha, group))


def deconv4(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """Transposed convolution (Knet `deconv4`): the forward pass is conv4's x-gradient.

    x is (N, Cx, X...) and w (Cx, Cy/group, K...); the result is (N, Cy, Y...) with
    Y = (X - 1)*stride + (K - 1)*dilation + 1 - 2*padding, so padding and stride
    belong to the output, and `conv4` with the same w and keywords maps the result
    back to x's shape.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> kf.deconv4(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2).shape
        (1, 1, 4, 4)
    """
    return apply(Deconv4, w, x, **_attrs(x, padding, stride, dilation, mode, alpha, group))


def conv4_data(w, dy, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """The gradient of sum(conv4(w, x) * dy) w.r.t. x (x gives only its shape)."""
    return apply(Conv4Data, w, dy, x, **_attrs(x, padding, stride, dilation, mode, alpha, group))


def conv4_filter(x, dy, w, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1):
    """The gradient of sum(conv4(w, x) * dy) w.r.t. w (w gives only its shape)."""
    return apply(Conv4Filter, x, dy, w,
                 **_attrs(x, padding, stride, dilation, mode, alpha, group))
