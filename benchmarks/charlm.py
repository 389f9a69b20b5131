"""CharLM of the seed's benchmark table, knetflow against PyTorch (CPU) in one run.

    python benchmarks/charlm.py [--steps 15] [--repeat 3] [--threads 2] [--profile]

One LSTM layer (hidden 256) over a 256-wide character embedding, a linear
layer back to the vocabulary and softmax cross-entropy; batch 128, BPTT 100,
on the GPL-3 text the OS ships repeated to 200,000 characters. knetflow is
trained Knet-style (`kf.Param`, `kf.diff`, an in-place SGD update), with
`kf.RNN`; PyTorch with `torch.nn.LSTM` and autograd. Both start from the same
weights and see the same batches; each prints its mean loss per epoch so the
runs can be compared. Figures are seconds per epoch (`--steps` BPTT steps):
the median of `--repeat` epochs after a warm-up epoch, the two peers' epochs
alternating so that both see the same machine load.
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
    eye = np.eye(len(vocab), dtype=np.float32)
    batches = []
    for s in range(0, streams.shape[1] - 1 - BPTT + 1, BPTT):
        x = np.ascontiguousarray(streams[:, s:s + BPTT].T)          # (T, B)
        y = np.ascontiguousarray(streams[:, s + 1:s + BPTT + 1].T).reshape(-1)
        batches.append((eye[x.reshape(-1)], x, y))
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

    def loss(onehot, labels):
        x = (onehot @ emb).reshape(BPTT, BATCH, EMBED)
        y = rnn(x).reshape(BPTT * BATCH, HIDDEN)
        return kf.nll(y @ wout + bout, labels)

    losses = []

    def epoch():
        total = 0.0
        for onehot, _, labels in batches:
            r = kf.diff(loss, onehot, labels)
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
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for _, x, y in batches]
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


def _block(r, part):
    off, shape = r.layout[(0, part)]
    return r.w.value[off:off + int(np.prod(shape))].reshape(shape)


def interleaved_medians(peers, repeat):
    """Median seconds per epoch of each peer; their epochs alternate, after one warm-up each.

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
    return [statistics.median(ts) for ts in times]


def profile(model, batches):
    """Time per op of the knetflow step's plan (forward and backward)."""
    loss, params = model
    onehot, _, labels = batches[0]
    kf.diff(loss, onehot, labels)
    from knetflow.train import autograd

    entry = next(reversed(autograd._cache.values()))[0]  # the newest trace
    feed = {name: autograd._fed_value(src, (onehot, labels)) for name, src in entry.sources}
    print(f"plan: {len(entry.plan.graph.nodes)} nodes")
    print(entry.plan.profile(feed, runs=3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=15, help="BPTT steps per epoch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--profile", action="store_true", help="print the plan's time per op")
    args = ap.parse_args(argv)
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(args.threads)
    except ImportError:
        print("threadpoolctl not installed: NumPy's BLAS threads are not pinned")
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("PyTorch not installed (pip install torch==2.13.0): knetflow times only")
    batches, vocab = load_batches(args.steps)
    weights = initial_weights(vocab)
    print(f"CharLM: LSTM {HIDDEN}, embedding {EMBED}, batch {BATCH}, BPTT {BPTT}, vocabulary "
          f"{vocab}, {args.steps} steps per epoch, {args.threads} threads")
    kf_epoch, kf_losses, model = knetflow_epoch(weights, batches, args.lr)
    if args.profile:
        profile(model, batches)
    peers = [kf_epoch]
    if torch is not None:
        pt_epoch, pt_losses = torch_epoch(torch, weights, batches, args.lr)
        peers.append(pt_epoch)
    times = interleaved_medians(peers, args.repeat)
    print(f"knetflow  {times[0]:8.3f} s/epoch   mean loss per epoch "
          + " ".join(f"{v:.4f}" for v in kf_losses))
    if torch is None:
        return
    print(f"PyTorch   {times[1]:8.3f} s/epoch   mean loss per epoch "
          + " ".join(f"{v:.4f}" for v in pt_losses))
    print(f"ratio knetflow/PyTorch: {times[0] / times[1]:.2f}")


if __name__ == "__main__":
    main()
