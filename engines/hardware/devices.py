"""Device and dtype rules: which accelerator to use and which precision it runs well.

Pure functions over a small ``GpuFacts`` record so the rules are testable without a GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuFacts:
    name: str
    capability: tuple[int, int]
    total_bytes: int


@dataclass(frozen=True)
class DeviceChoice:
    """What the studio will compute on and why."""

    type: str  # "cuda", "mps" or "cpu"
    index: int = 0
    name: str = "CPU"
    total_bytes: Optional[int] = None  # accelerator memory; None on CPU
    gpu: Optional[GpuFacts] = None
    reason: str = ""

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.type == "cuda" else self.type

    @property
    def is_accelerator(self) -> bool:
        return self.type != "cpu"


@dataclass(frozen=True)
class PrecisionChoice:
    inference: str  # "fp32", "fp16" or "bf16"
    training: str
    reason: str


def probe_gpu(index: int = 0) -> Optional[GpuFacts]:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    return GpuFacts(props.name, (props.major, props.minor), int(props.total_memory))


def select_device(force_cpu: bool = False) -> DeviceChoice:
    """CUDA, then Apple MPS, then CPU; ``--cpu`` forces the CPU."""
    if force_cpu:
        return DeviceChoice("cpu", reason="--cpu was given")
    import torch

    gpu = probe_gpu(0)
    if gpu is not None:
        return DeviceChoice("cuda", 0, gpu.name, gpu.total_bytes, gpu, reason="CUDA GPU found")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        import psutil

        # MPS shares system memory; budget it like a GPU with the machine's RAM.
        total = int(psutil.virtual_memory().total)
        return DeviceChoice("mps", 0, "Apple GPU (MPS)", total, reason="Apple MPS found")
    return DeviceChoice("cpu", reason="no CUDA or MPS device found")


def _is_turing_gtx16(name: str) -> bool:
    # GTX 16xx cards report fp16 support but produce NaNs/black images in half precision
    # (the same rule ComfyUI and A1111 apply); they must run fp32.
    upper = name.upper()
    return "GTX 16" in upper or "GTX16" in upper or "MX450" in upper or "T600" in upper


def select_precision(device: DeviceChoice, requested: str = "auto") -> PrecisionChoice:
    """Pick inference and training precision for a device; an explicit request wins where it can run."""
    if device.type == "cpu":
        if requested in ("fp16", "bf16"):
            if requested == "bf16":
                return PrecisionChoice("bf16", "bf16", "bf16 requested on CPU (slower than fp32 on most CPUs)")
            return PrecisionChoice("fp32", "fp32", "fp16 is not supported on CPU; using fp32")
        return PrecisionChoice("fp32", "fp32", "CPU computes in fp32")
    if device.type == "mps":
        if requested == "bf16":
            return PrecisionChoice("fp16", "fp32", "bf16 is unreliable on MPS; using fp16")
        if requested == "fp32":
            return PrecisionChoice("fp32", "fp32", "fp32 requested")
        return PrecisionChoice("fp16", "fp32", "Apple GPUs run fp16 well; training in fp32")

    gpu = device.gpu
    major = gpu.capability[0] if gpu else 0
    bf16_ok = major >= 8
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32", "fp32 requested")
    if requested == "bf16":
        if bf16_ok:
            return PrecisionChoice("bf16", "bf16", "bf16 requested")
        return PrecisionChoice("fp16" if not _is_turing_gtx16(device.name) else "fp32", "fp32",
                               f"{device.name} has no bf16 units; falling back")
    if gpu is not None and _is_turing_gtx16(gpu.name):
        return PrecisionChoice("fp32", "fp32", f"{gpu.name} produces NaNs in fp16; using fp32")
    if requested == "fp16":
        return PrecisionChoice("fp16", "fp16", "fp16 requested")
    if major >= 8:
        # Ampere+: fp16 is the SD 1.5 norm for inference; bf16 trains without loss scaling.
        return PrecisionChoice("fp16", "bf16", f"{device.name} (sm_{major}x) runs fp16 and bf16")
    if major >= 7:
        return PrecisionChoice("fp16", "fp16", f"{device.name} has tensor cores for fp16")
    # Pascal (GTX 10xx): fp16 math is slow, but fp16 weights halve memory on 6 GB cards and
    # compute is upcast inside cuDNN, so storage in fp16 is still the better trade for inference.
    return PrecisionChoice("fp16", "fp32", f"{device.name} (sm_{major}x): fp16 weights, fp32 training")


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
