"""CharLM of the seed's benchmark table, knetflow against PyTorch and JAX (CPU) in one run.

    python benchmarks/charlm.py [--steps 15] [--repeat 3] [--threads 2] [--profile]

One LSTM layer (hidden 256) over a 256-wide character embedding, a linear
layer back to the vocabulary and softmax cross-entropy; batch 128, BPTT 100,
on the GPL-3 text the OS ships repeated to 200,000 characters. knetflow is
trained Knet-style (`kf.Param`, `kf.diff`, an in-place SGD update), with
`kf.embedding` and `kf.RNN`; PyTorch with `torch.nn.LSTM` and autograd; JAX with the LSTM cell
written out under `lax.scan` and value_and_grad plus the update in one jitted
step (parameters donated). All start from the same weights and see the same
batches; each prints its mean loss per epoch so the runs can be compared. Each
peer's thread count is set explicitly (benchmarks/peers.py); a peer that is not
installed is skipped with a line saying so. Figures are seconds per epoch
(`--steps` BPTT steps): the median of `--repeat` epochs after a warm-up epoch,
the peers' epochs alternating so that all see the same machine load; ratios
are the median of the ratios of epochs timed back to back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import knetflow as kf  # noqa: E402
import peers as P  # noqa: E402  (benchmarks/peers.py)

TEXT = "/usr/share/common-licenses/GPL-3"
EMBED, HIDDEN, BATCH, BPTT, CHARS = 256, 256, 128, 100, 200_000


def load_batches(steps):
    """[(one-hot inputs (T*B, V), inputs (T, B), labels (T*B,))] and the vocabulary size."""
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    text = (text * (CHARS // len(text) + 1))[:CHARS]
    vocab = sorted(set(text))
    index = {ch: k for k, ch in enumerate(vocab)}
    ids = np.array([index[ch] for ch in text], dtype=np.int64)
    streams = ids[:len(ids) // BATCH * BATCH].reshape(BATCH, -1)   # one row per stream
    batches = []
    for s in range(0, streams.shape[1] - 1 - BPTT + 1, BPTT):
        x = np.ascontiguousarray(streams[:, s:s + BPTT].T)          # (T, B)
        y = np.ascontiguousarray(streams[:, s + 1:s + BPTT + 1].T).reshape(-1)
        batches.append((x, y))
    return [batches[k % len(batches)] for k in range(steps)], len(vocab)


def initial_weights(vocab):
    kf.seed(1)
    rnn = kf.RNN(EMBED, HIDDEN, rnn_type="lstm")
    rs = np.random.RandomState(2)
    return dict(emb=rs.uniform(-0.1, 0.1, (vocab, EMBED)).astype("float32"),
                w=rnn.w.value.copy(), layout=rnn,
                wout=kf.init.xavier_uniform(HIDDEN, vocab),
                bout=np.zeros(vocab, "float32"))


# ---- knetflow, Knet-style ----


def knetflow_epoch(weights, batches, lr):
    rnn = kf.RNN(EMBED, HIDDEN, rnn_type="lstm")
    rnn.w.value[...] = weights["w"]
    emb, wout, bout = (kf.Param(weights[k].copy()) for k in ("emb", "wout", "bout"))
    params = [emb, rnn.w, wout, bout]

    def loss(ids, labels):
        x = kf.embedding(emb, ids)  # (BPTT, BATCH, EMBED): rows of the table, as torch's
        y = rnn(x).reshape(BPTT * BATCH, HIDDEN)
        return kf.nll(y @ wout + bout, labels)

    losses = []

    def epoch():
        total = 0.0
        for ids, labels in batches:
            r = kf.diff(loss, ids, labels)
            for p in params:
                p.value -= lr * kf.grad(r, p)
            total += r.value
        losses.append(total / len(batches))

    return epoch, losses, (loss, params)


# ---- PyTorch ----


def torch_epoch(torch, weights, batches, lr):
    F = torch.nn.functional
    lstm = torch.nn.LSTM(EMBED, HIDDEN)
    r = weights["layout"]
    with torch.no_grad():
        # knetflow gates are x @ Wx with blocks (i, f, n, o): torch's order, transposed
        lstm.weight_ih_l0.copy_(torch.from_numpy(_block(r, "wx").T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(_block(r, "wh").T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(_block(r, "bx").copy()))
        lstm.bias_hh_l0.copy_(torch.from_numpy(_block(r, "bh").copy()))
    emb, wout, bout = (torch.tensor(weights[k], requires_grad=True)
                       for k in ("emb", "wout", "bout"))
    params = [emb, wout, bout, *lstm.parameters()]
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    losses = []

    def epoch():
        total = 0.0
        for x, y in data:
            for p in params:
                p.grad = None
            out, _ = lstm(F.embedding(x, emb))
            loss = F.cross_entropy(out.reshape(-1, HIDDEN) @ wout + bout, y)
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= lr * p.grad
            total += float(loss.detach())
        losses.append(total / len(data))

    return epoch, losses


# ---- JAX, one jitted step ----


def jax_epoch(jax, weights, batches, lr):
    """The same model as PyTorch's: gates x @ Wx + bx + h @ Wh + bh, blocks (i, f, n, o)."""
    jnp, lax = jax.numpy, jax.lax
    r = weights["layout"]
    params = [jnp.asarray(np.ascontiguousarray(a)) for a in (
        weights["emb"], _block(r, "wx"), _block(r, "wh"), _block(r, "bx"), _block(r, "bh"),
        weights["wout"], weights["bout"])]

    def loss(p, x, y):
        emb, wx, wh, bx, bh, wout, bout = p
        xs = emb[x] @ wx + bx + bh               # (T, B, 4H): the input projections at once

        def cell(carry, xt):
            h, c = carry
            i, f, n, o = jnp.split(xt + h @ wh, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(n)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((x.shape[1], HIDDEN), xs.dtype)
        _, hs = lax.scan(cell, (zeros, zeros), xs)
        logp = jax.nn.log_softmax(hs.reshape(-1, HIDDEN) @ wout + bout)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def update(p, x, y):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        return [w - lr * g for w, g in zip(p, grads)], value

    update = jax.jit(update, donate_argnums=0)
    data = [(jnp.asarray(x.astype(np.int32)), jnp.asarray(y.astype(np.int32)))
            for x, y in batches]
    losses = []

    def epoch():
        nonlocal params
        values = []
        for x, y in data:
            params, value = update(params, x, y)
            values.append(value)
        losses.append(float(sum(float(v) for v in values)) / len(values))

    return epoch, losses


def _block(r, part):
    off, shape = r.layout[(0, part)]
    return r.w.value[off:off + int(np.prod(shape))].reshape(shape)


def interleaved_times(peers, repeat):
    """Seconds of each peer's `repeat` epochs; their epochs alternate, after one warm-up each.

    Alternating keeps both peers under the same machine load when it varies.
    """
    for fn in peers:
        fn()  # warm-up: traces and compiles
    times = [[] for _ in peers]
    for _ in range(repeat):
        for fn, ts in zip(peers, times, strict=True):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return times


def profile(model, batches):
    """Time per op of the knetflow step's plan (forward and backward)."""
    loss, params = model
    ids, labels = batches[0]
    kf.diff(loss, ids, labels)
    found = P.knetflow_entry(loss, (ids, labels))
    if found is None:
        return
    entry, feed = found
    print(f"plan: {len(entry.plan.graph.nodes)} nodes")
    print(entry.plan.profile(feed, runs=3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15, help="BPTT steps per epoch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="threads of every peer")
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--profile", action="store_true", help="print the plan's time per op")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    blas = P.set_blas_threads(args.threads)
    jax = None if args.no_jax else P.import_jax(args.threads)
    torch = None if args.no_torch else P.import_torch(args.threads)
    batches, vocab = load_batches(args.steps)
    weights = initial_weights(vocab)
    print(f"CharLM: LSTM {HIDDEN}, embedding {EMBED}, batch {BATCH}, BPTT {BPTT}, vocabulary "
          f"{vocab}, {args.steps} steps per epoch, {args.threads} thread(s) per peer "
          f"({blas}); {P.load()}")
    kf_epoch, kf_losses, model = knetflow_epoch(weights, batches, args.lr)
    if args.profile:
        profile(model, batches)
    peers, losses = {"knetflow": kf_epoch}, {"knetflow": kf_losses}
    if torch is not None:
        peers["PyTorch"], losses["PyTorch"] = torch_epoch(torch, weights, batches, args.lr)
    if jax is not None:
        peers["JAX jit"], losses["JAX jit"] = jax_epoch(jax, weights, batches, args.lr)
    raw = dict(zip(peers, interleaved_times(list(peers.values()), args.repeat)))
    times = {name: statistics.median(ts) for name, ts in raw.items()}
    for name, t in times.items():
        print(f"{name:<10}{t:8.3f} s/epoch   mean loss per epoch "
              + " ".join(f"{v:.4f}" for v in losses[name]))
    firsts = [v[0] for v in losses.values()]
    if len(firsts) > 1:
        print("first epoch's mean loss " + ("agrees to 4 decimals" if max(firsts) - min(firsts)
                                            < 5e-5 else "DISAGREES") + " across the peers")
    # the median of the ratios of epochs timed back to back: load changes between rounds
    line = [f"knetflow/{name}: {P.paired_ratio(raw['knetflow'], ts):.2f}"
            for name, ts in raw.items() if name != "knetflow"]
    print("ratio " + ("; ".join(line) or "-: no peer installed") + f"; {P.load()}")


if __name__ == "__main__":
    main()
