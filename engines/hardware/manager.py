"""The one HardwareManager per process: device, precision, memory budget, model pool, GPU lock.

Every memory decision in the studio is made here (ComfyUI's model_management idea, as one
object instead of module globals). Engines ask it for a dtype, register what they load, take a
model with ``use(name)`` inside ``gpu_job(...)``, and never call ``.to("cuda")`` themselves.
On a CPU-only machine the same code runs with RAM as the budgeted memory.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar, Union

from engines.hardware.devices import DeviceChoice, PrecisionChoice, select_device, select_precision, torch_dtype
from engines.errors import OutOfMemoryError, is_torch_oom
from engines.hardware.gpu_lock import GpuLock, Reservations
from engines.hardware.placement import (MemoryPolicy, TorchMover, decode_with_tiled_retry, empty_device_cache,
                               plan_placement)
from engines.hardware.pool import DEVICE, HOST, ModelPool, PoolRecord, UnloadReport
from engines.settings import MachineSettings
from engines.hardware.telemetry import MemoryProbe, MemoryReading

log = logging.getLogger(__name__)
T = TypeVar("T")
GB = 2**30

# Graduated clean-up thresholds (percent of the whole RAM / VRAM).
RAM_SOFT, VRAM_SOFT, AGGRESSIVE = 90.0, 92.0, 95.0


@dataclass(frozen=True)
class Budget:
    """How much memory the studio may use, and how it was decided."""

    device_cap: int  # the hard cap for this process on the device (enforced on CUDA)
    reserve: int  # left to the driver, the desktop and other programs
    floor: int  # kept free for activations while a model runs
    reserved_by_training: int  # held by a training process
    models: int  # what the pool may fill with weights on the device
    host: int  # CPU RAM for models evicted from the device
    source: str  # "--vram-limit", "auto" or "test"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Telemetry:
    device: str
    device_type: str
    precision: str
    precision_reason: str
    memory: MemoryReading
    budget: Budget
    models: list[PoolRecord]
    busy: Optional[str]
    cleanup: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "device_type": self.device_type, "precision": self.precision,
            "precision_reason": self.precision_reason, "memory": self.memory.as_dict(),
            "budget": self.budget.as_dict(), "models": [asdict(m) for m in self.models],
            "busy": self.busy, "cleanup": self.cleanup,
        }


class HardwareManager:
    """Owns the device, the budget, the model pool, the GPU lock and telemetry for one process."""

    def __init__(
        self,
        settings: MachineSettings,
        *,
        device: Optional[DeviceChoice] = None,
        device_budget_bytes: Optional[int] = None,
        host_budget_bytes: Optional[int] = None,
    ) -> None:
        self.settings = settings
        self._device = device
        self._test_budgets = (device_budget_bytes, host_budget_bytes)
        self._pool: Optional[ModelPool] = None
        self._probe: Optional[MemoryProbe] = None
        self._init_lock = threading.RLock()
        self.events: list[str] = []  # recent pool events for the System tab's log
        runtime = settings.paths.runtime
        self.gpu_lock = GpuLock(runtime)
        self.reservations = Reservations(runtime)

    # -- device and precision --------------------------------------------------------------
    @property
    def device(self) -> DeviceChoice:
        if self._device is None:
            with self._init_lock:
                if self._device is None:
                    self._device = select_device(force_cpu=self.settings.cpu)
        return self._device

    @property
    def precision(self) -> PrecisionChoice:
        return select_precision(self.device, self.settings.precision)

    def dtype(self, purpose: str = "inference") -> Any:
        """The torch dtype for inference or training on this device."""
        choice = self.precision
        return torch_dtype(choice.training if purpose == "training" else choice.inference)

    # -- budget --------------------------------------------------------------------------
    def budget(self) -> Budget:
        import psutil

        ram_total = int(psutil.virtual_memory().total)
        ram_cap = int(self.settings.ram_limit_gb * GB) if self.settings.ram_limit_gb else int(ram_total * 0.85)
        training = sum(b for _, b in self.reservations.held_by_others())
        dev_test, host_test = self._test_budgets
        if dev_test is not None:  # a fake budget from a test; explicit limits still win
            cap = int(self.settings.vram_limit_gb * GB) if self.settings.vram_limit_gb else dev_test
            host = ram_cap if self.settings.ram_limit_gb or host_test is None else host_test
            return Budget(cap, 0, 0, training, max(0, cap - training), host, "test")
        device = self.device
        if self.settings.vram_limit_gb:
            cap, reserve, source = int(self.settings.vram_limit_gb * GB), 0, "--vram-limit"
        elif device.total_bytes:
            # The desktop, the driver's context and other programs live in VRAM too (WDDM on
            # Windows keeps several hundred MB): leave them a reserve.
            reserve = max(512 * 2**20, int(device.total_bytes * 0.06))
            cap, source = device.total_bytes - reserve, "auto"
        else:
            cap, reserve, source = ram_cap, ram_total - ram_cap, "auto (RAM)"
        if device.total_bytes:
            cap = min(cap, device.total_bytes)
        # SD 1.5 at 512 px needs ~0.8 GB of activations in fp16; smaller budgets keep 15 %.
        floor = min(GB, int(cap * 0.15))
        models = max(0, cap - floor - training)
        host = ram_cap if device.type == "cpu" else max(0, ram_cap - 2 * GB)
        return Budget(cap, reserve, floor, training, models, host, source)

    def _enforce(self, budget: Budget) -> None:
        if self.device.type != "cuda" or not self.device.total_bytes:
            return
        import torch

        fraction = min(1.0, budget.device_cap / self.device.total_bytes)
        # torch raises OOM past this fraction, so a wrong estimate fails fast in our process
        # instead of pushing the whole desktop into shared-memory paging on Windows.
        torch.cuda.set_per_process_memory_fraction(fraction, self.device.index)

    def set_limits(self, vram_limit_gb: Optional[float], ram_limit_gb: Optional[float]) -> Budget:
        """Change the budget at run time (System tab); evicts what no longer fits."""
        from dataclasses import replace

        self.settings = replace(self.settings, vram_limit_gb=vram_limit_gb or None,
                                ram_limit_gb=ram_limit_gb or None)
        return self.refresh_budget()

    def refresh_budget(self) -> Budget:
        budget = self.budget()
        self._enforce(budget)
        pool = self.pool
        pool.device_budget, pool.host_budget = budget.models, budget.host
        while pool.device_bytes() > pool.device_budget and pool.evict_for_pressure(DEVICE):
            pass
        while pool.host_bytes() > pool.host_budget and pool.evict_for_pressure(HOST):
            pass
        return budget

    # -- the model pool --------------------------------------------------------------------
    @property
    def pool(self) -> ModelPool:
        if self._pool is None:
            with self._init_lock:
                if self._pool is None:
                    budget = self.budget()
                    self._pool = ModelPool(
                        device_budget=budget.models, host_budget=budget.host,
                        mover=TorchMover(self.device.torch_device), on_event=self._log_event,
                    )
                    self._enforce(budget)
        return self._pool

    def _log_event(self, message: str) -> None:
        log.info("pool: %s", message)
        self.events = (self.events + [message])[-50:]

    def register(
        self,
        name: str,
        obj: Any,
        *,
        loader: Optional[Callable[[], Any]] = None,
        policy: MemoryPolicy = MemoryPolicy(),
        activate: bool = True,
        files: Iterable[Union[Path, str]] = (),
    ) -> Any:
        """Add a loaded model/pipeline under ``name``; ``loader`` brings it back after eviction.

        ``files`` (``ModelStore.files_for(ref)``) are watched: when one is replaced on disk, the
        next ``use`` reloads the model through ``loader``.
        """
        accelerator = self.device.is_accelerator

        def plan_for(sizes: dict[str, int], budget: int):
            return plan_placement(sizes, budget, policy, accelerator)

        return self.pool.add(name, obj, loader=loader, plan_for=plan_for, activate=activate, files=files)

    def register_once(self, name: str, loader: Callable[[], Any], *, policy: MemoryPolicy = MemoryPolicy(),
                      files: Iterable[Union[Path, str]] = ()) -> str:
        """Load and register ``name`` through ``loader`` unless it is registered already (not activated);
        returns ``name``. The loader stays with the pool, which calls it again after an eviction."""
        if not self.is_registered(name):
            self.register(name, loader(), loader=loader, policy=policy, activate=False, files=files)
        return name

    def is_registered(self, name: str) -> bool:
        """Whether ``hw.use(name)`` can give the model (loaded now, or reloadable through its loader)."""
        return self.pool.registered(name)

    def use(self, name: str):
        """``with hw.use(name) as pipe:`` activates a model and pins it for the job's duration."""
        return self.pool.use(name)

    def unload(self, name: str) -> UnloadReport:
        return self.pool.unload(name)

    def unload_all(self) -> list[UnloadReport]:
        return self.pool.unload_all()

    def decode_latents(self, vae: Any, latents: Any) -> Any:
        """VAE decode with the tiled out-of-memory retry, for pictures: no autograd graph is kept (the VAE's
        weights require gradients as loaded, and a graph would hold every activation of the decode)."""
        import torch

        with torch.no_grad():
            return decode_with_tiled_retry(vae, latents, empty_cache=self.free_cached_memory)

    def free_cached_memory(self) -> None:
        gc.collect()
        empty_device_cache(self.device.torch_device)

    # -- the GPU lock --------------------------------------------------------------------
    @contextmanager
    def gpu_job(self, job: str, timeout: Optional[float] = None, *, out_of_memory: str = "") -> Iterator[None]:
        """Run one GPU job at a time, app-wide; memory is tidied after each job.

        With ``out_of_memory`` (one sentence saying what to lower), torch running out of memory inside the
        job frees the cached memory and becomes ``OutOfMemoryError(out_of_memory)``."""
        with self.gpu_lock.hold(job, timeout=timeout), self._out_of_memory_as(out_of_memory):
            self.refresh_budget()
            cuda = self.device.type == "cuda"
            if cuda:
                import torch

                torch.cuda.reset_peak_memory_stats(self.device.index)
            started = time.perf_counter()
            try:
                yield
            finally:
                reading = self.read_memory()
                peak = f", peak {torch.cuda.max_memory_allocated(self.device.index) / GB:.2f} GB VRAM" if cuda else ""
                log.info("job '%s' took %.1f s; RAM %.0f %%%s", job, time.perf_counter() - started,
                         reading.ram_percent, peak)
                self.cleanup_if_needed(reading)

    @contextmanager
    def _out_of_memory_as(self, sentence: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as error:  # torch's OutOfMemoryError is one
            if not sentence or not is_torch_oom(error):
                raise
            self.free_cached_memory()
            raise OutOfMemoryError(sentence) from error

    @property
    def busy(self) -> Optional[str]:
        owner = self.gpu_lock.owner
        return owner.job if owner else None

    @contextmanager
    def reserve_for_training(self, nbytes: int, name: str = "training") -> Iterator[None]:
        """Held by a training process: inference in other processes budgets around it."""
        with self.reservations.reserve(name, nbytes):
            yield

    # -- telemetry and clean-up -------------------------------------------------------------
    def read_memory(self) -> MemoryReading:
        if self._probe is None:
            self._probe = MemoryProbe(self.device)
        return self._probe.read()

    def cleanup_if_needed(self, reading: Optional[MemoryReading] = None) -> str:
        """Soft clean-up at 90 % RAM / 92 % VRAM, evict least recently used models at 95 %."""
        reading = reading or self.read_memory()
        level = "ok"
        vram = reading.vram_percent
        if reading.ram_percent >= RAM_SOFT or (vram is not None and vram >= VRAM_SOFT):
            level = "soft"
            self.free_cached_memory()
        if reading.ram_percent >= AGGRESSIVE or (vram is not None and vram >= AGGRESSIVE):
            level = "aggressive"
            tier = DEVICE if vram is not None and vram >= AGGRESSIVE else HOST
            name = self.pool.evict_for_pressure(tier)
            if name:
                log.warning("memory at %.0f %% RAM / %s VRAM: evicted %s", reading.ram_percent,
                            f"{vram:.0f} %" if vram is not None else "-", name)
            self.free_cached_memory()
        return level

    def telemetry(self) -> Telemetry:
        reading = self.read_memory()
        level = self.cleanup_if_needed(reading)
        precision = self.precision
        label = precision.inference if precision.inference == precision.training else (
            f"{precision.inference} inference / {precision.training} training")
        return Telemetry(self.device.name, self.device.type, label, precision.reason, reading,
                         self.budget(), self.pool.snapshot(), self.busy, level)

    # -- training helpers ----------------------------------------------------------------
    def batch_size_for(
        self, resolution: int, bytes_per_sample_at_64: int, *, max_batch: int = 64, headroom: float = 0.85
    ) -> int:
        """Largest batch whose activations fit what the budget leaves free; memory grows with pixels."""
        budget = self.budget()
        free = max(0, budget.device_cap - budget.reserved_by_training - self.pool.device_bytes())
        per_sample = bytes_per_sample_at_64 * (resolution / 64) ** 2
        return max(1, min(max_batch, int(free * headroom // max(1.0, per_sample))))

    def run_with_oom_recovery(
        self,
        step: Callable[[int], T],
        batch_size: int,
        *,
        min_batch_size: int = 1,
        on_oom: Optional[Callable[[int, BaseException], None]] = None,
    ) -> tuple[T, int]:
        """Run ``step(batch_size)``; on out-of-memory free memory, halve the batch and retry.

        ``on_oom(new_batch_size, error)`` runs before each retry (the trainer writes its
        emergency checkpoint there). Returns the result and the batch size that worked.
        """
        while True:
            try:
                return step(batch_size), batch_size
            except Exception as error:  # noqa: BLE001 - only OOM is handled
                if not is_torch_oom(error):
                    raise
                self.free_cached_memory()
                if batch_size <= min_batch_size:
                    raise OutOfMemoryError(
                        f"Out of memory even at batch size {batch_size}; lower the resolution "
                        "or the model size, or close other programs using the GPU."
                    ) from error
                batch_size = max(min_batch_size, batch_size // 2)
                log.warning("out of memory; retrying with batch size %d", batch_size)
                if on_oom is not None:
                    on_oom(batch_size, error)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.unload_all()
        if self._probe is not None:
            self._probe.close()
