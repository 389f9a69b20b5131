"""Each device test starts from, and leaves behind, freshly discovered devices."""

import pytest

from knetflow.devices import discovery, registry


@pytest.fixture(autouse=True)
def fresh_devices(monkeypatch):
    monkeypatch.delenv("KNETFLOW_CPU_DEVICES", raising=False)
    monkeypatch.delenv("KNETFLOW_SIM_DEVICES", raising=False)
    discovery.rediscover()
    yield
    monkeypatch.undo()  # the environment first, so the lists below are read from it again
    registry.forget()
    discovery.cpu(0)  # re-applies the BLAS limit of the restored CPU devices
