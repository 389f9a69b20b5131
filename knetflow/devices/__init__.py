"""Devices: where arrays live and ops run (cpu: numpy; gpu: cupy)."""

from knetflow.devices.base import Device, cpu, device, devices  # noqa: F401
