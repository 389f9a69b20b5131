"""The small GEMMs of the seed's Softmax and MLP steps: NumPy (OpenBLAS) against XLA.

    python benchmarks/gemm.py [--threads 1,2] [--rounds 15] [--calls 200]

For each thread count (a fresh process each: XLA sizes its thread pools once), times
the batch-100 products of benchmarks/run.py's models with NumPy's matmul (`out=`, BLAS
limited by threadpoolctl) and with a jitted JAX matmul (PJRT_NPROC), alternating call
batches; prints the median, the fastest and the slowest microseconds per call of each,
and the NumPy / JAX ratio. JAX's calls are queued and the batch waits for the last, as
a training loop runs them (waiting for each call instead adds a thread hand-off of
tens of microseconds on this VM). On a shared machine the spread shows what other jobs do to
small multi-threaded GEMMs. JAX not installed: NumPy's times alone.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers as P  # noqa: E402  (benchmarks/peers.py)

SHAPES = [  # (name, a's shape, b's shape, whether a is used transposed)
    ("x @ W1 (MLP forward)", (100, 784), (784, 64), False),
    ("x.T @ dh (MLP dW1)", (100, 784), (100, 64), True),
    ("x @ W (Softmax forward)", (100, 784), (784, 10), False),
    ("x.T @ ds (Softmax dW)", (100, 784), (100, 10), True),
]


def run_one(args):
    n = int(args.threads)
    blas = P.set_blas_threads(n)
    jax = P.import_jax(n)
    print(f"{n} thread(s): {blas}, JAX PJRT_NPROC={os.environ.get('PJRT_NPROC')}; {P.load()}")
    rs = np.random.RandomState(0)
    print(f"{'product':<26}{'NumPy us':>10}{'(min-max)':>14}{'JAX us':>9}{'(min-max)':>14}"
          f"{'NumPy/JAX':>11}")
    for name, sa, sb, transposed in SHAPES:
        a, b = rs.rand(*sa).astype("float32"), rs.rand(*sb).astype("float32")
        left = a.T if transposed else a
        out = np.empty((left.shape[0], b.shape[1]), "float32")
        fns = {"numpy": lambda: np.matmul(left, b, out=out)}
        if jax is not None:
            ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
            f = jax.jit((lambda a, b: a.T @ b) if transposed else (lambda a, b: a @ b))
            fns["jax"] = lambda: f(ja, jb)
        calls = args.calls

        def batch(fn):
            def run():
                for _ in range(calls):
                    r = fn()
                if hasattr(r, "block_until_ready"):  # JAX: calls queue up, as in training
                    r.block_until_ready()
            return run

        times = P.interleaved({k: batch(fn) for k, fn in fns.items()}, args.rounds)
        us = {k: [t / calls * 1e6 for t in v] for k, v in times.items()}
        cells = ""
        for k in ("numpy", "jax"):
            if k in us:
                v = us[k]
                cells += f"{P.median(v):>10.1f}{f'({min(v):.0f}-{max(v):.0f})':>14}"
            else:
                cells += f"{'-':>10}{'':>14}"
        ratio = P.paired_ratio(us["numpy"], us["jax"]) if "jax" in us else float("nan")
        print(f"{name:<26}{cells}{P.fmt_ratio(ratio, 11)}")
    print(f"({P.load()} at the end)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="thread count(s), one process each")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=200, help="calls per timed batch")
    args = ap.parse_args(argv)
    counts = args.threads.split(",")
    if len(counts) > 1:
        P.per_thread_count(os.path.abspath(__file__), counts, argv)
    else:
        run_one(args)


if __name__ == "__main__":
    main()
