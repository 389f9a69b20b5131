"""The NumPy kernel that compiled plans bind for the gradient of 2-D max pooling whose
windows tile x (LeNet's; `knetflow.ops.pool` decides when): a few contiguous passes
instead of a strided pass per window offset, big batches split between the calling
thread and a thread of OpenBLAS's own pool (`knetflow.ops.cpu_threads.split_batch`, as
for pool's own forward). `pool`'s general kernels stay the reference: tests compare
these with them.

    >>> import numpy as np
    >>> x = np.array([[[[1., 5.], [2., 0.]]]])
    >>> grad = max_grad(x.shape, (2, 2), x.dtype, general=None)
    >>> grad(x, np.array([[[[5.]]]]), np.array([[[[3.]]]]))[0, 0]
    array([[0., 3.],
           [0., 0.]])
"""

from __future__ import annotations

import math
import sys

import numpy as np

from knetflow.ops import cpu_threads
from knetflow.ops.cpu_threads import scratch


def max_grad(shape, window, dtype, general, relu=False):
    """pool_grad(x, y, dy, out=None) for 2-D max pooling of x of `shape` (N, C, H, W)
    whose `window`s tile it, y = pool(x); `general(x, y, dy, out=)` takes the calls
    with ties or NaN. Big batches are cut in parts, one per thread, each through
    `_max_grad_part`. With `relu`, pool_relu_grad's kernel: the same, kept where x > 0.
    """
    dtype = np.dtype(dtype)
    parts = {}      # a kernel per part size (two at most)
    # about eight passes over x's size: repeats, compares, tie masks, the product
    moved = 8 * math.prod(shape) * dtype.itemsize

    def part(x, y, dy, out):
        if len(x) not in parts:
            parts[len(x)] = _max_grad_part(x.shape, window, dtype, general, relu)
        return parts[len(x)](x, y, dy, out)

    return cpu_threads.split_batch(shape, dtype, part, moved)


def _max_grad_part(shape, window, dtype, general, relu=False):
    """The tiled max-pool gradient for x of `shape` (N, C, H, W): fn(x, y, dy, out).

    y and dy are repeated to x's shape (along W by strided copies, or for float32 pairs
    by one integer multiply that writes each 32-bit pattern twice into 64 bits; along
    H by row `take`), so every pass runs over contiguous memory: mask = (x == y up),
    result = dy up * mask. Ties and NaN, where the first maximum rule matters, go to
    `general`: for 2x2 windows, after keeping each window's first hit, one count (as
    many hits as windows means one each); for other windows, the hits counted window
    by window (y need not be pool(x): a window may hold two hits and another none).

    With `relu` (pool_relu_grad), dy is first kept where y > 0: at its window's hit x
    equals y, so that is where x > 0, and the product is relu_grad's of the result bit
    for bit (a zero keeps dy's sign, inf or NaN gives NaN) at a quarter of the size.
    """
    (n, c, h, w), (kh, kw) = shape, window
    rows, wo = n * c * (h // kh), w // kw
    pairs = kw == 2 and dtype.itemsize == 4
    again = np.repeat(np.arange(rows), kh)          # row r of the result is row r // kh
    twice = np.uint64(0x100000001)
    sizes = ((rows * w, dtype), (n * c * h * w, np.bool_))
    first_only = _first_hit_2x2(rows, w) if (kh, kw) == (2, 2) else None
    counted = np.uint8 if kh * kw < 256 else np.intp

    def up(src, wide, dst):
        """src (N, C, Ho, Wo) repeated to dst (N*C*H, W) through wide (N*C*Ho, W)."""
        if pairs and src.flags.c_contiguous:
            np.multiply(src.reshape(rows, wo).view(np.uint32), twice, out=wide.view(np.uint64))
        else:
            for q in range(kw):
                wide.reshape(rows, wo, kw)[:, :, q] = src.reshape(rows, wo)
        np.take(wide, again, axis=0, out=dst, mode="clip")

    def where_positive(dy, y, wide, out):
        """dy where y > 0, else 0 (times False, as relu_grad), written over the start of
        out, the mask over the start of wide: both are free until `up` reads dy, so the
        fused kernel takes no more scratch than pool_grad's."""
        positive = wide.reshape(-1).view(np.bool_)[:y.size].reshape(y.shape)
        np.greater(y, 0, out=positive)
        return np.multiply(dy, positive, out=out.reshape(-1)[:y.size].reshape(y.shape))

    def pool_grad(x, y, dy, out):
        wide, hit = scratch(sizes)
        wide, hit = wide.reshape(rows, w), hit.reshape(shape)
        # `take` writes only into a contiguous out; a part of a C-contiguous out is one
        flat = out.reshape(-1, w)
        up(y, wide, flat)
        np.equal(x, out, out=hit)
        if first_only is not None:
            first_only(hit)
            one_each = np.count_nonzero(hit) == y.size
        else:  # a count of hits proves one a window only where y = pool(x), which a
            # caller of kf.pool_grad need not give: count them window by window
            per = np.add.reduce(hit.reshape(rows, kh, wo, kw), axis=(1, 3), dtype=counted)
            one_each = bool((per == 1).all())
        if not one_each or np.isnan(np.add.reduce(y, axis=None)):
            return general(x, y, dy, out=out)
        if relu:
            dy = where_positive(dy, y, wide, out)
        up(dy, wide, flat)
        return np.multiply(out, hit, out=out)

    return pool_grad


def _first_hit_2x2(rows, w):
    """For 2x2 windows: a function keeping, in a C-contiguous bool mask of hits (x == its
    window's maximum) shaped (rows * 2, w), only each window's first hit in row-major
    order, the general kernel's rule for ties (after a relu, windows of zeros tie).

    Bools two by two are one uint16 (little-endian: the left one in the low byte), so
    both steps are contiguous integer passes: a left hit clears the right one, then a
    hit in a window's top row clears its bottom row. None on a big-endian machine.
    """
    if sys.byteorder != "little":
        return None
    low, high = np.uint16(0x00FF), np.uint8(8)

    def first_only(hit):
        pairs = hit.view(np.uint16)                      # (N, C, H, W / 2)
        left = np.bitwise_and(pairs, low)
        np.left_shift(left, high, out=left)
        np.invert(left, out=left)
        np.bitwise_and(pairs, left, out=pairs)           # a left hit: no right one
        both = pairs.reshape(rows, 2, w // 2)
        np.multiply(both[:, 1], both[:, 0] == 0, out=both[:, 1])  # a top hit: no bottom

    return first_only
