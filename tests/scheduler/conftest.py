"""Fixtures: several CPU and strict simulated devices on any machine."""

import pytest

import knetflow as kf


@pytest.fixture
def two_cpus():
    kf.set_cpu_devices(2)
    yield ["cpu:0", "cpu:1"]
    kf.set_cpu_devices(1)


@pytest.fixture
def two_sims():
    kf.set_sim_devices(2)
    yield ["sim:0", "sim:1"]
    kf.set_sim_devices(0)
