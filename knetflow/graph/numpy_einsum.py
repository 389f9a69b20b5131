"""`np.einsum` on symbols: a small parser and an evaluator built from knetflow ops.

Both of NumPy's call forms are read: `np.einsum("ij,jk->ik", a, b)` and the
interleaved `np.einsum(a, [0, 1], b, [1, 2], [0, 2])`, with `...` (broadcast
axes, right-aligned as in NumPy) and the implicit output (the ellipsis axes,
then the labels used once, in alphabetical order).

Evaluation, one operand pair at a time from the left:
1. a label repeated within one operand is its diagonal (`ii->i`, traces);
2. a label no other operand and not the output needs is summed away;
3. two operands are joined: labels both keep are batch axes, labels both
   drop are contracted. With static, equal contracted sizes this is one
   (batched) matmul of transposed, reshaped operands; otherwise (sizes that
   broadcast, no contracted label) a broadcast multiply and a sum;
4. the result is summed down to the output's labels and transposed to them.
"""

from __future__ import annotations

import string

import numpy as np

import knetflow.ops as ops
from knetflow.graph.numpy_shape import diagonal
from knetflow.graph.numpy_table import (
    as_symbol, cast_to, is_arraylike, ndim, numpy_function, shape)

_LETTERS = string.ascii_letters
_NAME = "np.einsum"


# ---- parsing ----


def _interleaved(operands) -> tuple:
    """(subscripts, arrays) from einsum(op0, sublist0, op1, sublist1, ..., [out])."""
    operands = list(operands)
    output = operands.pop() if len(operands) % 2 == 1 else None
    arrays, terms = operands[0::2], operands[1::2]
    text = ",".join(_sublist(t) for t in terms)
    if output is not None:
        text += "->" + _sublist(output)
    return text, arrays


def _sublist(labels) -> str:
    out = []
    for k in labels:
        if k is Ellipsis:
            out.append("...")
        elif isinstance(k, (int, np.integer)) and 0 <= k < 52:
            out.append(string.ascii_uppercase[k] if k < 26 else string.ascii_lowercase[k - 26])
        else:
            raise ValueError(f"{_NAME}: subscript {k!r} in a sublist is not an int in 0..51")
    return "".join(out)


def _term(text: str, rank: int | None, width: int):
    """The labels of one term; `...` becomes the last `rank - letters` of `width` ints."""
    if text.count("...") > 1 or "." in text.replace("...", ""):
        raise ValueError(f"{_NAME}: invalid ellipsis in subscripts {text!r}")
    head, dots, tail = text.partition("...")
    for c in head + tail:
        if c not in _LETTERS:
            raise ValueError(f"{_NAME}: invalid subscript {c!r} in {text!r}; use letters a-zA-Z")
    letters = len(head) + len(tail)
    if rank is None:   # the output: all ellipsis axes
        k = width if dots else 0
    elif dots:
        k = rank - letters
        if k < 0:
            raise ValueError(f"{_NAME}: operand has fewer dimensions than subscripts {text!r}")
    else:
        if rank != letters:
            raise ValueError(f"{_NAME}: operand has {rank} dimensions but subscripts {text!r} "
                             f"give {letters}; use '...' to broadcast the extra dimensions")
        k = 0
    return tuple(head) + tuple(range(width - k, width)) + tuple(tail)


def parse(subscripts: str, ranks: list) -> tuple:
    """(terms of the inputs, term of the output) as tuples of labels."""
    text = subscripts.replace(" ", "")
    lhs, arrow, rhs = text.partition("->")
    parts = lhs.split(",")
    if len(parts) != len(ranks):
        raise ValueError(f"{_NAME}: {len(parts)} subscript terms for {len(ranks)} operands")
    width = max([r - len(p.replace("...", "")) for p, r in zip(parts, ranks) if "..." in p],
                default=0)
    terms = [_term(p, r, width) for p, r in zip(parts, ranks)]
    if arrow:
        output = _term(rhs, None, width)
        if width and "..." not in rhs and any(isinstance(x, int) for t in terms for x in t):
            raise ValueError(f"{_NAME}: output has more dimensions than subscripts given; "
                             "add '...' to the output to keep the broadcast dimensions")
    else:
        counts = {}
        for t in terms:
            for label in t:
                counts[label] = counts.get(label, 0) + 1
        once = sorted(label for label, c in counts.items() if c == 1 and isinstance(label, str))
        output = tuple(range(width)) + tuple(once)
    if len(set(output)) != len(output):
        raise ValueError(f"{_NAME}: output subscript {rhs!r} repeats a label")
    used = {label for t in terms for label in t}
    for label in output:
        if label not in used:
            raise ValueError(f"{_NAME}: output label {label!r} is in no input")
    return terms, output


# ---- evaluation ----


def _undiagonal(x, term):
    """x with each label repeated in `term` reduced to its diagonal."""
    while len(set(term)) < len(term):
        i = next(k for k, label in enumerate(term) if term.index(label) != k)
        first = term.index(term[i])
        x = diagonal(_NAME, x, 0, first, i)
        term = tuple(label for k, label in enumerate(term) if k not in (first, i)) + (term[i],)
    return x, term


def _sum_out(x, term, needed):
    axes = tuple(k for k, label in enumerate(term) if label not in needed)
    if not axes:
        return x, term
    return ops.sum(x, axis=axes), tuple(label for label in term if label in needed)


def _arrange(x, term, order):
    """x transposed and expanded to the labels `order` (labels it lacks become size 1)."""
    present = [label for label in order if label in term]
    perm = tuple(term.index(label) for label in present)
    if perm != tuple(range(len(term))):
        x = ops.transpose(x, perm)
    missing = tuple(k for k, label in enumerate(order) if label not in term)
    return ops.expand_dims(x, missing) if missing else x


def _dims(x, term) -> dict:
    return dict(zip(term, shape(x)))


def _matmul_ok(da, db, batch, contracted, free) -> bool:
    if not contracted:
        return False
    if any(da[label] != db[label] for label in batch + contracted):
        return False
    return all(da.get(label, db.get(label)) is not None for label in contracted + free)


def _pair(xa, ta, xb, tb, keep):
    """The product of two operands, summed over shared labels not in `keep`."""
    shared = [label for label in ta if label in tb]
    batch = [label for label in shared if label in keep]
    contracted = [label for label in shared if label not in keep]
    free_a = [label for label in ta if label not in tb]
    free_b = [label for label in tb if label not in ta]
    da, db = _dims(xa, ta), _dims(xb, tb)
    if not _matmul_ok(da, db, batch, contracted, free_a + free_b):
        order = tuple(batch + free_a + contracted + free_b)
        prod = _arrange(xa, ta, order) * _arrange(xb, tb, order)
        first = len(batch) + len(free_a)
        if contracted:
            prod = ops.sum(prod, axis=tuple(range(first, first + len(contracted))))
        return prod, tuple(batch + free_a + free_b)
    nb = len(batch)
    k = _prod(da[label] for label in contracted)
    fa, fb = _prod(da[label] for label in free_a), _prod(db[label] for label in free_b)
    lead = tuple(da[label] for label in batch)
    lhs = ops.reshape(_arrange(xa, ta, tuple(batch + free_a + contracted)), lead + (fa, k))
    rhs = ops.reshape(_arrange(xb, tb, tuple(batch + contracted + free_b)), lead + (k, fb))
    out = ops.matmul(lhs, rhs)
    dims = lead + tuple(da[label] for label in free_a) + tuple(db[label] for label in free_b)
    out = ops.reshape(out, dims) if len(dims) != nb + 2 or (fa, fb) != dims[nb:] else out
    return out, tuple(batch + free_a + free_b)


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def evaluate(arrays: list, terms: list, output: tuple):
    """The einsum of `arrays` with input `terms` and `output` labels."""
    items = [_undiagonal(x, t) for x, t in zip(arrays, terms)]
    x, term = items[0]
    for k in range(1, len(items)):
        y, tb = items[k]
        keep = set(output).union(*[t for _, t in items[k + 1:]])  # needed after this pair
        x, term = _sum_out(x, term, keep | set(tb))
        y, tb = _sum_out(y, tb, keep | set(term))
        x, term = _pair(x, term, y, tb, keep)
    x, term = _sum_out(x, term, set(output))
    return as_symbol(_arrange(x, term, output))


@numpy_function("einsum")
def _einsum(*operands, dtype=None):
    if not operands:
        raise ValueError(f"{_NAME}: no operands given")
    if isinstance(operands[0], str):
        subscripts, arrays = operands[0], list(operands[1:])
    else:
        subscripts, arrays = _interleaved(operands)
    arrays = [a if is_arraylike(a) else np.asarray(a) for a in arrays]
    if dtype is not None:
        arrays = [cast_to(a, dtype) for a in arrays]
    terms, output = parse(subscripts, [ndim(a) for a in arrays])
    return evaluate(arrays, terms, output)
