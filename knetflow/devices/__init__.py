"""Devices: where arrays live and ops run (cpu: numpy; gpu: cupy; sim: strict NumPy for tests).

registry.py holds the device kinds and what each answers (is this array mine,
which device holds it, its array module, special functions, scatter-add, peer
copies, cost figures, fast kernels) and the devices each kind found; base.py
the Device interface; cpu.py, gpu.py (with gpu_cudnn.py) and sim.py (with
simarray.py) are the kinds, each registering itself; discovery.py imports
them, one line per kind, and names devices (`kf.devices()`, `kf.cpu(i)`,
`kf.gpu(i)`, `kf.device(name)`); transfers.py moves arrays between them. The
lookup functions `cpu`, `gpu` and `sim` are not re-exported here, so that
those names stay the modules: use `kf.cpu(i)` or
`knetflow.devices.discovery.cpu(i)`.
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
from knetflow.devices.registry import DeviceKind  # noqa: F401
from knetflow.devices.sim import (  # noqa: F401
    DeviceMismatchError,
    SimArray,
    SimDevice,
    SimOutOfMemoryError,
)
