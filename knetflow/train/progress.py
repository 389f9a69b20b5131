"""`kf.progress`: Knet's progress bar over any iterator, drawn with tqdm.

    ┣█████████████████▎  ┫ [86.83%, 903/1040, 01:36/01:50, 9.42i/s] 3.87835

percent done, iterations done/total, elapsed/estimated total time, average
speed (s/i when below one iteration per second), then the message. The bar,
percent, total and estimated total are left out when the length is unknown.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["Progress", "progress"]

STOP = "stop"


def format_time(seconds: float) -> str:
    """mm:ss, or hh:mm:ss from an hour on (Knet's format)."""
    if seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_speed(rate: float) -> str:
    """Iterations per second, or seconds per iteration when below one."""
    return f"{rate:.2f}i/s" if rate >= 1 or rate == 0 else f"{1 / rate:.2f}s/i"


class _Bar(tqdm):
    """tqdm drawing Knet's status fields; the message comes from the Progress."""

    monitor_interval = 0  # no monitor thread: refreshes follow steps/seconds only

    def __init__(self, owner, **kw):
        self.owner = owner
        super().__init__(**kw)

    @property
    def format_dict(self):
        d = super().format_dict
        n, total, elapsed = d["n"], d["total"], d["elapsed"]
        rate = n / elapsed if elapsed > 0 else 0.0
        if total:
            estimate = elapsed * total / n if n else float("inf")
            status = (f"{100 * n / max(1, total):.2f}%, {n}/{total}, {format_time(elapsed)}/"
                      f"{format_time(estimate)}, {format_speed(rate)}")
        else:
            status = f"{n}, {format_time(elapsed)}, {format_speed(rate)}"
        d.update(status=status, message=self.owner.message())
        return d

    def display(self, msg=None, pos=None):
        if self.n == 0:  # like Knet, nothing before the first iteration
            return True
        return super().display(msg, pos)


class Progress:
    """An iterator acting like `itr` while drawing a progress bar (see `progress`).

    `currval` is the last value and `curriter` the number of iterations so far.
    """

    def __init__(self, itr, msg=None, steps=None, seconds=None, io=None):
        self.itr = itr
        self.msg = msg
        self.steps, self.seconds = steps, seconds
        self.io = io
        self.currval = None
        self.curriter = 0
        self._last_message = ""

    def __len__(self) -> int:
        return len(self.itr)

    def message(self) -> str:
        if self.curriter == 0 or self.msg is None:
            return ""
        text = self.msg if isinstance(self.msg, str) else self.msg(self)
        self._last_message = "" if text is None else str(text)
        return self._last_message

    def __iter__(self):
        try:
            total = len(self.itr)
        except TypeError:
            total = None
        steps, seconds = self.steps, self.seconds
        if not steps and not seconds:
            seconds = 1.0
        fmt = "┣{bar:20}┫ [{status}] {message}" if total else "[{status}] {message}"
        bar = _Bar(self, total=total, file=self.io if self.io is not None else sys.stderr,
                   bar_format=fmt, mininterval=seconds or 0, miniters=steps or 1,
                   ascii=False, dynamic_ncols=False, leave=True)
        try:
            for value in self.itr:
                self.curriter += 1
                self.currval = value
                bar.update(1)
                if self.curriter == 1 and bar.last_print_n != 1:
                    bar.refresh()
                if self._last_message == STOP:
                    return
                yield value
        finally:
            bar.leave = self.curriter > 0
            bar.close()


def progress(itr, msg=None, steps=None, seconds=None, io=None) -> Progress:
    """An iterator like `itr` that prints Knet's progress bar (Knet `progress`).

    `msg` is a function of the Progress (with `.currval`, `.curriter`) whose result
    ends the line (none by default; returning "stop" ends the iteration), or a
    fixed string. The bar is redrawn every `steps` iterations or `seconds`
    seconds (every second by default), and after the first and last. `io` is the
    stream (default stderr).

    Example:
        >>> import io, knetflow as kf
        >>> out = io.StringIO()
        >>> sum(kf.progress(range(4), io=out))
        6
        >>> "[100.00%, 4/4," in out.getvalue()
        True
    """
    if callable(itr) and not hasattr(itr, "__iter__") and hasattr(msg, "__iter__"):
        itr, msg = msg, itr  # Knet's progress(msg, itr) order
    return Progress(itr, msg=msg, steps=steps, seconds=seconds, io=io)
