"""Numerical gradient checking (Knet `gcheck`)."""

from __future__ import annotations

import numpy as np

from knetflow.train.knet.autograd import diff, grad, params


def gradcheck(f, *args, nsample=10, eps=None, rtol=0.05, atol=0.01, verbose=False,
              **kwargs) -> bool:
    """Check the gradients of `f(*args)` against central differences (Knet `gcheck`).

    Checks up to `nsample` random entries of every Param that `f` uses (passed
    or captured). A non-scalar output is summed first. Returns True when every
    checked entry agrees within `rtol`/`atol`; with `verbose`, prints each
    disagreement. Use float64 Params for a tight check.

    Example:
        >>> import knetflow as kf, numpy as np
        >>> w = kf.Param(np.array([0.5, -1.0, 2.0]))
        >>> kf.gradcheck(lambda: kf.sum(kf.tanh(w) ** 2))
        True
    """
    import knetflow.ops as ops

    def scalar(*a, **k):
        out = f(*a, **k)
        return out if out.shape == () else ops.sum(out)

    result = diff(scalar, *args, **kwargs)
    rs = np.random.RandomState(0)
    ok = True
    for p in params(result):
        g = grad(result, p)
        g = np.zeros_like(p.value) if g is None else np.asarray(g)
        step = eps or (1e-6 if p.value.dtype == np.float64 else 1e-2)
        flat = p.value.reshape(-1)  # a view: edits below change p.value
        picks = rs.choice(flat.size, min(nsample, flat.size), replace=False)
        for i in picks:
            old = flat[i]
            flat[i] = old + step
            up = diff(scalar, *args, **kwargs).value
            flat[i] = old - step
            down = diff(scalar, *args, **kwargs).value
            flat[i] = old
            numeric = (up - down) / (2 * step)
            analytic = g.reshape(-1)[i]
            if not np.isclose(analytic, numeric, rtol=rtol, atol=atol):
                ok = False
                if verbose:
                    print(f"gradcheck: entry {i} of a {p.shape} Param: "
                          f"analytic {analytic:.6g}, numeric {numeric:.6g}")
    return ok



