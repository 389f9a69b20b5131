"""Transfers between every pair of CPU and sim devices, with the bytes moved."""

import itertools

import numpy as np
import pytest

import knetflow as kf
from knetflow.devices import transfers
from knetflow.devices.sim import SimArray

NAMES = ["cpu:0", "cpu:1", "sim:0", "sim:1"]


@pytest.fixture(autouse=True)
def four_devices():
    kf.set_cpu_devices(2)
    kf.set_sim_devices(2)


def on(name, host):
    return kf.device(name).put(host)


@pytest.mark.parametrize("src, dst", list(itertools.product(NAMES, NAMES)), ids=str)
def test_every_pair(src, dst):
    host = np.arange(12, dtype="float32").reshape(3, 4)
    x = on(src, host)
    moved = transfers.transfer(x, dst, src=src)
    assert (moved.src, moved.dst) == (src, dst)
    assert kf.device(dst).owns(moved.array)
    np.testing.assert_array_equal(kf.device(dst).get(moved.array), host)
    if src == dst:
        assert moved.nbytes == 0 and moved.array is x
    else:
        assert moved.nbytes == host.nbytes == 48
        if dst.startswith("sim"):  # device memory is separate: changing one leaves the other
            moved.array[0, 0] = -1.0
            assert kf.device(src).get(x)[0, 0] == 0.0


def test_cpu_to_cpu_copies_unless_asked_to_share():
    x = np.ones(4)
    copied = transfers.transfer(x, "cpu:1", src="cpu:0")
    assert copied.array is not x and copied.nbytes == 32
    shared = transfers.transfer(x, "cpu:1", src="cpu:0", copy=False)
    assert shared.array is x and shared.nbytes == 0


def test_copy_returns_just_the_array_and_sim_arrays_know_their_device():
    x = on("sim:0", np.ones(2))
    y = transfers.copy(x, kf.device("sim:1"))
    assert type(y) is SimArray and y.device == "sim:1"
    assert transfers.device_of(y) == "sim:1" and transfers.device_of(np.ones(2)) is None


def test_a_source_that_disagrees_with_the_array_fails():
    x = on("sim:0", np.ones(2))
    with pytest.raises(ValueError, match="the array lives on sim:0"):
        transfers.transfer(x, "cpu:0", src="sim:1")
    with pytest.raises(ValueError, match="host .*NumPy.* data, not an array on sim:0"):
        transfers.transfer(np.ones(2), "cpu:0", src="sim:0")


def test_put_and_get_move_device_arrays_explicitly():
    x = on("sim:0", np.arange(3.0))
    assert kf.device("sim:1").put(x).device == "sim:1"
    np.testing.assert_array_equal(kf.cpu(0).get(x), [0.0, 1.0, 2.0])
    assert isinstance(kf.cpu(1).put(x), np.ndarray)
