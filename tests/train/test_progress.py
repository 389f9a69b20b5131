"""kf.progress (train/progress.py): Knet's progress bar on tqdm."""

import io
import re

import numpy as np

import knetflow as kf
from knetflow.train.progress import format_speed, format_time


def lines(out):
    return [s for s in out.getvalue().split("\r") if s.strip()]


def test_bar_with_known_length():
    out = io.StringIO()
    values = list(kf.progress(range(5), msg=lambda p: f"{p.currval * 1.5:.1f}", steps=1, io=out))
    assert values == [0, 1, 2, 3, 4]
    shown = lines(out)
    assert len(shown) == 5 + 1  # every step, then the final line on close
    last = shown[-1]
    assert re.fullmatch(r"┣█{20}┫ \[100\.00%, 5/5, 00:00/00:00, [\d.]+(i/s|s/i)\] 6\.0 *\n", last)
    assert shown[0].startswith("┣████ ") and "[20.00%, 1/5," in shown[0] and shown[0].endswith(
        "] 0.0")


def test_partial_cells_use_eighths():
    out = io.StringIO()
    list(kf.progress(range(160), steps=13, io=out))
    first = lines(out)[1]  # after 13 of 160 iterations: 1.625 of 20 cells
    assert first.startswith(("┣█▋ ", "┣█▌ "))


def test_unknown_length_leaves_out_bar_percent_and_total():
    out = io.StringIO()
    assert sum(kf.progress(iter(range(4)), io=out)) == 6
    final = lines(out)[-1]
    assert re.fullmatch(r"\[4, 00:00, [\d.]+(i/s|s/i)\] +\n", final)
    assert "┣" not in out.getvalue() and "%" not in out.getvalue()


def test_message_function_sees_the_progress_and_can_stop():
    out = io.StringIO()
    seen = []

    def msg(p):
        seen.append((p.curriter, p.currval))
        return "stop" if p.curriter == 3 else p.curriter

    assert list(kf.progress(range(10), msg, steps=1, io=out)) == [0, 1]
    assert seen[:3] == [(1, 0), (2, 1), (3, 2)]


def test_knet_argument_order_and_fixed_message():
    out = io.StringIO()
    list(kf.progress(lambda p: "m", range(2), io=out))
    assert lines(out)[-1].rstrip().endswith("] m")
    out = io.StringIO()
    list(kf.progress(range(2), "epoch 1", io=out))
    assert lines(out)[-1].rstrip().endswith("] epoch 1")


def test_empty_iterator_prints_nothing_and_len_passes_through():
    out = io.StringIO()
    assert list(kf.progress([], io=out)) == []
    assert out.getvalue().strip() == ""
    assert len(kf.progress(range(7))) == 7


def test_progress_of_training_shows_the_loss():
    w = kf.Param(np.array([3.0]))
    out = io.StringIO()
    losses = list(kf.progress(kf.sgd(lambda: kf.sum(w * w), [()] * 5),
                              lambda p: f"{p.currval:.4f}", io=out))
    assert lines(out)[-1].rstrip().endswith(f"{losses[-1]:.4f}")


def test_time_and_speed_formats():
    assert format_time(96) == "01:36" and format_time(3725) == "01:02:05"
    assert format_speed(9.4213) == "9.42i/s" and format_speed(0.5) == "2.00s/i"
    assert format_speed(0) == "0.00i/s"
