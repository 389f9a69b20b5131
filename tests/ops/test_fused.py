"""The fused kernel: a chain run whole, or on NumPy in cache-sized blocks of rows."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knetflow.ops import fused
from knetflow.ops.fused import StepError, _kernel

# (x * a + b) then tanh then * x: refs index the inputs, -1 is the running value
PROGRAM = (("mul", (0, 1)), ("add", (-1, 2)), ("tanh", (-1,)), ("mul", (-1, 0)))


def _reference(x, a, b):
    return np.tanh(x * a + b) * x


def _shapes(draw):
    rows = draw(st.integers(1, 40))
    tail = tuple(draw(st.lists(st.integers(1, 6), min_size=0, max_size=2)))
    out = (rows,) + tail
    # each input: the full shape, a trailing suffix (broadcast over rows), a single row,
    # or a scalar; a 1-D input as long as the rows is the trap (it broadcasts on the last
    # axis, not over rows)
    choices = [out, out[1:], (1,) + out[1:], ()]
    if tail:
        choices.append((tail[-1],))
    return out, draw(st.sampled_from(choices)), draw(st.sampled_from(choices))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_blocks_give_what_the_whole_chain_gives(data):
    out_shape, a_shape, b_shape = _shapes(data.draw)
    rs = np.random.RandomState(0)
    x = rs.randn(*out_shape)
    a, b = rs.randn(*a_shape), rs.randn(*b_shape)
    out = np.empty(out_shape)  # every choice broadcasts to out_shape
    with mock.patch.object(fused, "BLOCK_BYTES", data.draw(st.sampled_from([8, 64, 512]))):
        got = _kernel(np, PROGRAM)([x, a, b], out)
    assert got is out
    np.testing.assert_array_equal(out, _reference(x, a, b))


def test_big_outputs_are_cut_into_blocks_of_rows_that_fit_the_budget(monkeypatch):
    monkeypatch.setattr(fused, "BLOCK_BYTES", 1024)
    x = np.random.RandomState(1).randn(64, 16)  # 128 bytes a row: 8 rows a block
    out = np.empty_like(x)
    assert fused._block_rows([x, 2.0, 1.0], out) == 8
    np.testing.assert_array_equal(_kernel(np, PROGRAM)([x, 2.0, 1.0], out),
                                  _reference(x, 2.0, 1.0))


def test_an_input_overlapping_the_output_otherwise_runs_whole(monkeypatch):
    # plans never alias a fused node's inputs and output; the kernel still refuses to cut
    # into blocks a chain whose input is a differently laid-out view of its output
    monkeypatch.setattr(fused, "BLOCK_BYTES", 256)
    buf = np.zeros((32, 32))
    assert fused._block_rows([buf.T, 1.5], buf) is None
    assert fused._block_rows([buf[1:], 1.5], buf[:-1]) is None
    assert fused._block_rows([buf, 1.5], buf) == 1
    assert fused._block_rows([buf.copy(), 1.5], buf) == 1


def test_small_scalar_and_one_row_outputs_run_whole():
    x = np.ones((1, 10 ** 6))
    assert fused._block_rows([x], np.empty_like(x)) is None   # one row
    assert fused._block_rows([x], np.empty((4, 4))) is None   # small
    assert fused._block_rows([x], None) is None               # a scalar result


def test_a_failing_step_is_named_in_blocks_too(monkeypatch):
    monkeypatch.setattr(fused, "BLOCK_BYTES", 256)
    program = (("mul", (0, 1)), ("add", (-1, 2)))
    x = np.ones((64, 8))
    with pytest.raises(StepError, match="step 1 of a fused chain failed"):
        _kernel(np, program)([x, 2.0, np.ones((64, 3))], np.empty((64, 8)))
