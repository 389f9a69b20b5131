"""Devices: where arrays live and ops run (cpu: numpy; gpu: cupy; sim: strict NumPy for tests).

base.py holds the Device interface, discovery.py finds devices (`kf.devices()`,
`kf.cpu(i)`, `kf.gpu(i)`, `kf.device(name)`), transfers.py moves arrays
between them; cpu.py, gpu.py and sim.py are the kinds. The lookup functions
`cpu`, `gpu` and `sim` are not re-exported here, so that those names stay the
modules: use `kf.cpu(i)` or `knetflow.devices.discovery.cpu(i)`.
"""

from knetflow.devices.base import Device  # noqa: F401
from knetflow.devices.cpu import CpuDevice  # noqa: F401
from knetflow.devices.discovery import (  # noqa: F401
    DeviceNotFoundError,
    device,
    devices,
    rediscover,
    set_cpu_devices,
    set_sim_devices,
)
from knetflow.devices.gpu import GpuDevice  # noqa: F401
from knetflow.devices.sim import (  # noqa: F401
    DeviceMismatchError,
    SimArray,
    SimDevice,
    SimOutOfMemoryError,
)
