"""Each test starts with an empty trace cache, so counts of traces are its own."""

import pytest

from knetflow.train.knet import trace_cache


@pytest.fixture(autouse=True)
def _fresh_trace_cache():
    trace_cache.clear()
    yield
