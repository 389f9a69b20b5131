"""CharLM, Knet-style: a character-level LSTM language model, trained on a real text.

    python examples/charlm.py [--epochs 12] [--generate 300] [--quick]

The seed's model (Knet manual, "Recurrent neural network"): each character is
embedded, an LSTM (`kf.RNN`) reads the sequence, and a linear layer scores
the next character; the loss is the average cross-entropy per character.
Training uses truncated backpropagation through time over `--bptt`
characters of `--batch` parallel streams of the text, with `kf.adam` over the
model's `kf.Param`s. The text is the GNU GPL version 3 that the OS ships
(/usr/share/common-licenses/GPL-3). After training it samples `--generate`
characters from the model, one at a time, carrying the LSTM state.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import knetflow as kf

TEXT = "/usr/share/common-licenses/GPL-3"


def read_text(path, chars):
    """The first `chars` characters of the file, its vocabulary and the ids."""
    with open(path, encoding="utf-8") as f:
        text = f.read()[:chars]
    vocab = sorted(set(text))
    index = {ch: k for k, ch in enumerate(vocab)}
    return text, vocab, np.array([index[ch] for ch in text], dtype=np.int64)


def batches(ids, batch, bptt):
    """[(x, y)]: x (T, B) character ids, y (T*B,) the ids that follow them."""
    streams = ids[:len(ids) // batch * batch].reshape(batch, -1)
    out = []
    for s in range(0, streams.shape[1] - bptt - 1, bptt):
        x = np.ascontiguousarray(streams[:, s:s + bptt].T)
        y = np.ascontiguousarray(streams[:, s + 1:s + bptt + 1].T).reshape(-1)
        out.append((x, y))
    return out


class CharLM:
    """Embedding (V, E) -> LSTM(E, H) -> linear (H, V): the model's Params and functions."""

    def __init__(self, vocab, embed, hidden, winit=0.1):
        rs = np.random.RandomState(1)
        self.emb = kf.Param(rs.uniform(-winit, winit, (vocab, embed)).astype("float32"))
        self.rnn = kf.RNN(embed, hidden, rnn_type="lstm")
        self.wout = kf.Param(kf.init.xavier_uniform(hidden, vocab))
        self.bout = kf.Param(np.zeros(vocab, dtype="float32"))
        self.hidden = hidden

    def predict(self, x):
        """Scores (T*B, V) of the next character after each of x (T, B)."""
        h = self.rnn(kf.embedding(self.emb, x))
        return h.reshape(-1, self.hidden) @ self.wout + self.bout

    def loss(self, x, y):
        return kf.nll(self.predict(x), y)

    def generate(self, vocab, n, rs):
        """n characters sampled from the model, starting after a space."""
        self.rnn.h, self.rnn.c = 0, 0  # carry the state from one character to the next
        out, k = [], vocab.index(" ")
        for _ in range(n):
            scores = self.predict(np.array([[k]]))
            p = np.asarray(kf.softmax(scores, axis=-1), dtype="float64").ravel()
            k = int(rs.choice(len(p), p=p / p.sum()))
            out.append(vocab[k])
        self.rnn.h, self.rnn.c = None, None
        return "".join(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--chars", type=int, default=100000, help="characters of text to use")
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--generate", type=int, default=None,
                        help="characters to sample (300; 40 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.chars, args.embed, args.hidden, args.batch, args.bptt = 6000, 32, 32, 16, 25
        args.epochs = 3
    if args.generate is None:
        args.generate = 40 if args.quick else 300
    kf.seed(1)
    text, vocab, ids = read_text(TEXT, args.chars)
    data = batches(ids, args.batch, args.bptt)
    model = CharLM(len(vocab), args.embed, args.hidden)
    print(f"CharLM: {len(text)} characters of {TEXT}, vocabulary {len(vocab)}, LSTM "
          f"{args.embed}-{args.hidden}, batch {args.batch}, bptt {args.bptt}, "
          f"{len(data)} steps per epoch")
    start, losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        # each Param keeps its Adam state between epochs (Knet's Param.opt)
        losses.append(float(np.mean(list(kf.adam(model.loss, data, lr=args.lr)))))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f} "
              f"({time.perf_counter() - start:.1f}s)")
    print(f"trained in {time.perf_counter() - start:.1f}s; sampled text:")
    sample = model.generate(vocab, args.generate, np.random.RandomState(2))
    print(sample)
    return {"losses": losses, "sample": sample}


if __name__ == "__main__":
    main()
