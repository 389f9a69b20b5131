"""Kill trials: a child process writes checkpoints in a loop and is SIGKILLed at random.

After each kill, every checkpoint in the directory must load, the latest one
included, with consistent contents: every array of epoch e holds e, the
optimizer step is e, and the metadata says e. The next child resumes from the
latest checkpoint, as a restarted training run would. Used by
tests/serialize/test_kill.py (20 trials) and benchmarks/serialize.py (more).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np

import knetflow as kf
from knetflow.serialize import CheckpointManager


def graph():
    x = kf.placeholder("x", (None, 16))
    w = kf.param("w", (16, 16), init="zeros")
    return kf.Graph([x @ w])


def _writer(directory: str, start: int, size: int) -> None:
    manager = CheckpointManager(directory, keep=3, prefix="run", best="loss")
    g = graph()
    epoch = start
    while True:
        epoch += 1
        v = float(epoch)
        manager.save(epoch, g, {"w": np.full((16, 16), v, "float32")},
                     {"stats": np.full(size, v)},
                     optimizer_state={"step": epoch, "m": [np.full(size, v, "float32")],
                                      "rng": np.random.default_rng(epoch).bit_generator.state},
                     metrics={"loss": 1.0 / epoch}, tag=epoch)


def check(directory: str) -> int:
    """Load every checkpoint in `directory` and check it; the latest epoch (0 if none)."""
    manager = CheckpointManager(directory, keep=3, prefix="run", best="loss")
    for epoch in manager.epochs():
        ckpt = manager.load(epoch, allow_extra=True)  # "stats" is no param of the graph
        assert ckpt.epoch == epoch and ckpt.metadata == {"tag": epoch}
        assert ckpt.optimizer_state["step"] == epoch
        for array in (ckpt.arg_params["w"], ckpt.aux_params["stats"],
                      ckpt.optimizer_state["m"][0], ckpt.graph.param("w").attrs["value"]):
            assert (array == epoch).all(), f"epoch {epoch} holds other values"
        assert ckpt.optimizer_state["rng"] == np.random.default_rng(epoch).bit_generator.state
    latest = manager.latest()
    if latest is not None:
        assert manager.load(allow_extra=True).epoch == latest
    return latest or 0


def trials(directory: str, n: int, seed: int = 0, size: int = 20_000,
           max_delay: float = 0.08) -> dict:
    """Run `n` kill trials in `directory`; counts of kills, epochs saved and stray temp files."""
    ctx = multiprocessing.get_context("fork")
    rs = np.random.RandomState(seed)
    latest, stray = check(directory), 0
    for _ in range(n):
        child = ctx.Process(target=_writer, args=(directory, latest, size), daemon=True)
        child.start()
        time.sleep(rs.uniform(0.002, max_delay))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL, f"writer died by itself: {child.exitcode}"
        stray += sum(name.endswith(".tmp") for name in os.listdir(directory))
        latest = check(directory)  # also removes the stray temp files
    return {"trials": n, "latest_epoch": latest, "kills_mid_write": stray}
