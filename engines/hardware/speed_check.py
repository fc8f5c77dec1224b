"""A one-minute device check for the System tab: is the GPU really used, and how fast is it?

Measures matrix-multiply throughput in the studio's dtype and host-to-device copy bandwidth,
the two numbers that decide generation speed and model-swap speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engines.progress import CancelToken, OnStep, no_progress


@dataclass(frozen=True)
class DeviceCheckResult:
    device: str
    dtype: str
    matmul_tflops: float
    copy_gb_per_s: float
    matrix_size: int
    seconds: float

    def summary(self) -> str:
        copy = (f"{self.copy_gb_per_s:.1f} GB/s from RAM" if self.copy_gb_per_s
                else "no copy needed (CPU)")
        return (f"{self.device} computes {self.matmul_tflops:.2f} TFLOP/s in {self.dtype} "
                f"({self.matrix_size}×{self.matrix_size} matmul) and loads models at {copy}.")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def run_device_check(hardware, on_step: OnStep = no_progress, cancel: CancelToken | None = None,
                     repeats: int = 5) -> DeviceCheckResult:
    import torch

    start = time.perf_counter()
    device = hardware.device.torch_device
    dtype = hardware.dtype("inference")
    # Small on CPU so the check stays quick on a laptop; big enough on a GPU to fill it.
    n = 1024 if device == "cpu" else 4096
    total = repeats + 2
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    (a @ b).sum().item()  # warm-up: kernels, allocator
    _sync(device)
    on_step(1, total, "warming up")
    elapsed = 0.0
    for i in range(repeats):
        if cancel is not None:
            cancel.raise_if_cancelled()
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        elapsed += time.perf_counter() - t0
        on_step(2 + i, total, f"matmul {i + 1}/{repeats}")
    tflops = 2 * n**3 * repeats / elapsed / 1e12
    copy = 0.0
    if device != "cpu":
        host = torch.empty(64 * 2**20, dtype=torch.uint8).pin_memory() if device.startswith("cuda") \
            else torch.empty(64 * 2**20, dtype=torch.uint8)
        host.to(device)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            host.to(device, non_blocking=True)
        _sync(device)
        copy = 4 * host.numel() / (time.perf_counter() - t0) / 1e9
    on_step(total, total, "done")
    name = str(dtype).replace("torch.", "")
    return DeviceCheckResult(hardware.device.name, name, tflops, copy, n, time.perf_counter() - start)
