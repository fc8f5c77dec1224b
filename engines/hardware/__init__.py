"""The one HardwareManager per process and everything it owns.

    manager.py      HardwareManager: device, precision, the memory budget, clean-up, training helpers
    pool.py         the model pool: what is loaded, where it lives, who is evicted first
    placement.py    placement policies as data (whole, model / group / sequential offload, VAE tiling)
    gpu_lock.py     one GPU job at a time across threads and processes; training reservations
    devices.py      which device and which number format (fp32 / fp16 / bf16) this machine runs well
    telemetry.py    RAM and VRAM readings (psutil, nvidia-ml-py, torch)
    speed_check.py  the System tab's device speed check

Engines import what they use from here: ``from engines.hardware import HardwareManager, MemoryPolicy``.
Nothing heavy is imported with this package: torch loads when a model does.
"""

from engines.hardware.manager import Budget, HardwareManager, Telemetry
from engines.hardware.placement import MemoryPolicy, Placement
from engines.hardware.pool import PoolRecord, UnloadReport

__all__ = ["Budget", "HardwareManager", "MemoryPolicy", "Placement", "PoolRecord", "Telemetry", "UnloadReport"]
