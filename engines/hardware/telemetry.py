"""Memory and device readings: psutil for RAM, nvml (nvidia-ml-py's ``pynvml``) and torch for VRAM."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from engines.hardware.devices import DeviceChoice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryReading:
    ram_total: int
    ram_used: int
    ram_available: int
    process_rss: int
    vram_total: Optional[int] = None  # whole card, as the driver sees it (other programs included)
    vram_used: Optional[int] = None
    torch_allocated: Optional[int] = None  # tensors this process holds
    torch_reserved: Optional[int] = None  # plus the caching allocator's free blocks
    gpu_utilization: Optional[int] = None  # percent
    gpu_temperature: Optional[int] = None  # degrees C

    @property
    def ram_percent(self) -> float:
        return 100.0 * self.ram_used / self.ram_total if self.ram_total else 0.0

    @property
    def vram_percent(self) -> Optional[float]:
        if not self.vram_total or self.vram_used is None:
            return None
        return 100.0 * self.vram_used / self.vram_total

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ram_percent"] = round(self.ram_percent, 1)
        vram = self.vram_percent
        data["vram_percent"] = None if vram is None else round(vram, 1)
        return data


class MemoryProbe:
    """Reads memory for one device; nvml is opened lazily and its absence is not an error."""

    def __init__(self, device: DeviceChoice) -> None:
        self.device = device
        self._nvml_handle: Any = None
        self._nvml_failed = device.type != "cuda"

    def _nvml(self) -> Any:
        if self._nvml_handle is None and not self._nvml_failed:
            try:
                import pynvml

                pynvml.nvmlInit()
                # nvml numbers GPUs physically; torch numbers them after CUDA_VISIBLE_DEVICES.
                visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
                ids = [v.strip() for v in visible.split(",") if v.strip()]
                index = int(ids[self.device.index]) if ids and ids[self.device.index].isdigit() else self.device.index
                self._nvml_handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as error:  # noqa: BLE001 - nvml is optional (WSL, old drivers)
                log.info("nvml unavailable (%s); VRAM readings come from torch only", error)
                self._nvml_failed = True
        return self._nvml_handle

    def read(self) -> MemoryReading:
        import psutil

        vm = psutil.virtual_memory()
        rss = psutil.Process().memory_info().rss
        fields: dict[str, Any] = {}
        if self.device.type == "cuda":
            fields.update(self._read_cuda())
        return MemoryReading(int(vm.total), int(vm.total - vm.available), int(vm.available), int(rss), **fields)

    def _read_cuda(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {
            "vram_total": self.device.total_bytes,
            "torch_allocated": int(torch.cuda.memory_allocated(self.device.index)),
            "torch_reserved": int(torch.cuda.memory_reserved(self.device.index)),
        }
        handle = self._nvml()
        if handle is not None:
            import pynvml

            try:
                info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                out["vram_total"], out["vram_used"] = int(info.total), int(info.used)
                out["gpu_utilization"] = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                out["gpu_temperature"] = int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError as error:
                log.debug("nvml read failed: %s", error)
        if out.get("vram_used") is None:
            free, total = torch.cuda.mem_get_info(self.device.index)
            out["vram_total"], out["vram_used"] = int(total), int(total - free)
        return out

    def close(self) -> None:
        if self._nvml_handle is not None:
            try:
                import pynvml

                pynvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down; nothing to report to the artist
                log.debug("nvml shutdown failed", exc_info=True)
            self._nvml_handle = None
