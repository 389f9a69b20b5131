"""SIGKILL at random moments while checkpoints are written never leaves a bad checkpoint."""

import multiprocessing
import sys

import pytest

from tests.serialize import crash


@pytest.mark.skipif(sys.platform == "win32" or "fork" not in
                    multiprocessing.get_all_start_methods(), reason="needs fork and SIGKILL")
def test_latest_checkpoint_always_loads_after_sigkill(tmp_path):
    result = crash.trials(str(tmp_path), n=20)
    assert result["latest_epoch"] > 0
