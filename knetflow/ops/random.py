"""Random ops: dropout (Knet `dropout`).

`dropout(x, p)` is `x * dropout_mask(x, p)`. The mask op is random (its
forward receives `rng=`, a numpy/cupy Generator owned by the caller: the plan,
or `knetflow.rng.generator()` for eager calls) and impure (never folded or
merged), and it takes no gradient: the gradient reaches x through the
multiplication, as g * mask.

Knet drops by default only while differentiating (`drop=true` inside `@diff`).
Here `drop=None` means the same: an eager call on arrays returns x unchanged,
while in a graph the mask node carries `training_only=True` so that compiling
with `training=False` can replace it by ones (`strip_dropout`). `drop=True`
drops always (`training_only=False`); `drop=False` or `p == 0` return x.
"""

from __future__ import annotations

from knetflow.ops.base import Op, Spec, float_dtype, register

__all__: list = []  # the public `kf.dropout` is a layer: knetflow/layers/dropout.py


@register
class DropoutMask(Op):
    """Random mask shaped like x: 0 with probability p, else 1/(1-p).

    With `seed` set the mask is the same on every run (a Generator made from it).
    """
    name, random, pure, nondiff = "dropout_mask", True, False, (0,)

    def infer(x: Spec, p=0.5, seed=None, training_only=True) -> Spec:
        return x.with_dtype(float_dtype(x))

    def forward(xp, x, p=0.5, seed=None, training_only=True, rng=None):
        if seed is not None:
            rng = xp.random.default_rng(seed)
        dtype = x.dtype if x.dtype.kind == "f" else "float64"
        draw = dtype if dtype in ("float32", "float64") else "float32"
        u = rng.random(x.shape, dtype=draw)
        # u >= p keeps an element with probability 1 - p; written into u to save a buffer
        xp.greater_equal(u, p, out=u)
        u *= 1.0 / (1.0 - p) if p < 1 else 0.0
        return u.astype(dtype, copy=False)

    def grad(g, out, x, p=0.5, seed=None, training_only=True):
        return (None,)
