"""CharLM, Knet-style: a character-level LSTM language model, trained on a real text, two ways.

    python examples/charlm.py [--epochs 12] [--generate 300] [--quick] [--arrays]

The seed's model (Knet manual, "Recurrent neural network"), written as the
seed writes it: a list of weights w = [weight, bias, embedding, wout, bout]
(one lumped LSTM matrix-vector pair per layer, then the embedding and the
final linear layer), a state list s = [hidden, cell] per layer, and the
functions `lstm(weight, bias, hidden, cell, input)` and `predict(w, s, x)`.
Each character is embedded, the LSTM reads the sequence, and a linear layer
scores the next character; the loss is the average cross-entropy per
character. `lstm` runs a whole sequence as one `kf.rnn_scan` op (the op
`kf.RNN` is built on) with the gates `[input, hidden] @ weight + bias`, so a
chunk never unrolls into the graph. Training uses truncated backpropagation
through time over `--bptt` characters of `--batch` parallel streams of the
text (each chunk starts from a zero state), with Adam. The text is the GNU
GPL version 3 that the OS ships (/usr/share/common-licenses/GPL-3). After
training it samples `--generate` characters from the model, one at a time,
carrying the LSTM state in s.

The two ways share `init_weights`, `lstm`, `predict`, `loss` and `generate`
and differ only in the training loop. By default the weights are `kf.Param`s
and `kf.adam` updates the Params the loss uses (each keeps its Adam state in
`.opt` from epoch to epoch):

    w = [kf.Param(v) for v in init_weights(...)]
    losses = kf.adam(loss, ((w, x, y) for x, y in data), lr=lr)

With --arrays, the seed's way: w is a plain list of arrays, `kf.gradloss(loss)`
(`kf.grad(loss)` that also returns the loss) gives the gradient of its first
argument in the same structure, and `kf.update` (Knet's `update!`) applies
one Adam state per weight array in place of `w[i] -= lr * dw[i]`:

    w = init_weights(...)
    opts = [kf.optim.Adam(lr=lr) for _ in w]
    lossgradient = kf.gradloss(loss)
    for x, y in data:
        dw, value = lossgradient(w, x, y)
        for i in range(len(w)):
            kf.update(w[i], dw[i], opts[i])

Both start from the same weights and take the same steps, so they end with
the same weights.
"""

from __future__ import annotations

import argparse
import functools
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


def init_weights(vocab, embed, hidden, layers=1, winit=0.1, seed=1):
    """[weight1, bias1, ..., weightL, biasL, embedding, wout, bout] as float32 arrays.

    weight_l is (X_l + H, 4H) (X_1 = embed, then H), bias_l (4H,), with the
    gate blocks of H columns in kf.rnn_scan's order: input, forget, new, output;
    the forget gate's bias starts at 1. embedding (V, E), wout (H, V), bout (V,).
    """
    rs = np.random.RandomState(seed)
    w = []
    for layer in range(layers):
        inputs = embed if layer == 0 else hidden
        w.append(kf.init.xavier_uniform(inputs + hidden, 4 * hidden))
        bias = np.zeros(4 * hidden, dtype="float32")
        bias[hidden:2 * hidden] = 1.0
        w.append(bias)
    w.append(rs.uniform(-winit, winit, (vocab, embed)).astype("float32"))
    w.append(kf.init.xavier_uniform(hidden, vocab))
    w.append(np.zeros(vocab, dtype="float32"))
    return w


def lstm(weight, bias, hidden, cell, x):
    """The seed's lstm over a sequence x (T, B, X): (outputs (T, B, H), hidden, cell).

    The gates of each step are [x_t, hidden] @ weight + bias (one matrix-vector
    pair for all four gates); hidden and cell (B, H) are the initial state,
    None for zeros.
    """
    n = x.shape[-1]
    return kf.rnn_scan(x, weight[:n], weight[n:], bias, kf.zeros_like(bias), hidden, cell,
                       mode="lstm")


def predict(w, s, x):
    """The seed's predict: scores (T*B, V) of the character after each of x (T, B).

    s = [hidden1, cell1, hidden2, cell2, ...] is the state of each layer (None
    for zeros); as in the seed it is replaced by the state after x.
    """
    x = kf.embedding(w[-3], x)
    for i in range(0, len(s), 2):
        x, s[i], s[i + 1] = lstm(w[i], w[i + 1], s[i], s[i + 1], x)
    return x.reshape(-1, x.shape[-1]) @ w[-2] + w[-1]


def loss(w, x, y):
    """Average cross-entropy per character of y, the characters after x, from a zero state."""
    return kf.nll(predict(w, [None] * (len(w) - 3), x), y)


lossgradient = kf.gradloss(loss)


def generate(w, vocab, n, rs):
    """n characters sampled from the model, starting after a space, carrying the state."""
    s = [None] * (len(w) - 3)
    out, k = [], vocab.index(" ")
    for _ in range(n):
        scores = predict(w, s, np.array([[k]]))
        p = np.asarray(kf.softmax(scores, axis=-1), dtype="float64").ravel()
        k = int(rs.choice(len(p), p=p / p.sum()))
        out.append(vocab[k])
    return "".join(out)


def train_params(w, data, lr):
    """One epoch of kf.adam over the Params in w; the mean loss per chunk."""
    return float(np.mean(list(kf.adam(loss, ((w, x, y) for x, y in data), lr=lr))))


def train_arrays(w, data, opts):
    """One epoch over the arrays in w, one optimizer per array; the mean loss per chunk."""
    values = []
    for x, y in data:
        dw, value = lossgradient(w, x, y)
        for i in range(len(w)):
            kf.update(w[i], dw[i], opts[i])
        values.append(value)
    return float(np.mean(values))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--chars", type=int, default=100000, help="characters of text to use")
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--generate", type=int, default=None,
                        help="characters to sample (300; 40 with --quick)")
    parser.add_argument("--arrays", action="store_true",
                        help="w a list of plain arrays, trained with kf.gradloss(loss)")
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
    w = init_weights(len(vocab), args.embed, args.hidden, args.layers)
    if args.arrays:
        train = functools.partial(train_arrays, opts=[kf.optim.Adam(lr=args.lr) for _ in w])
        how = "plain arrays, kf.gradloss(loss)"
    else:
        w = [kf.Param(v) for v in w]
        train, how = functools.partial(train_params, lr=args.lr), "kf.Params, kf.adam"
    print(f"CharLM: {len(text)} characters of {TEXT}, vocabulary {len(vocab)}, LSTM "
          f"{args.embed}-{args.hidden} x{args.layers}, batch {args.batch}, bptt {args.bptt}, "
          f"{len(data)} steps per epoch ({how})")
    start, losses = time.perf_counter(), []
    for epoch in range(args.epochs):
        losses.append(train(w, data))
        print(f"epoch {epoch + 1}: loss {losses[-1]:.4f} "
              f"({time.perf_counter() - start:.1f}s)")
    print(f"trained in {time.perf_counter() - start:.1f}s; sampled text:")
    sample = generate(w, vocab, args.generate, np.random.RandomState(2))
    print(sample)
    return {"losses": losses, "sample": sample, "weights": [np.array(kf.value(v)) for v in w]}


if __name__ == "__main__":
    main()
