"""HardwareManager rules: device/dtype, budget, placement, clean-up, batch sizing, OOM recovery."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from engines.hardware.devices import DeviceChoice, GpuFacts, select_precision
from engines.errors import OutOfMemoryError, is_torch_oom
from engines.hardware.gpu_lock import GpuBusyError
from engines.hardware import HardwareManager
from engines.hardware.placement import MemoryPolicy, Placement, decode_with_tiled_retry, plan_placement
from engines.settings import MachineSettings
from engines.hardware.telemetry import MemoryReading

GB = 2**30
MB = 2**20


def gpu(name: str, major: int, minor: int = 0, gb: float = 12) -> DeviceChoice:
    facts = GpuFacts(name, (major, minor), int(gb * GB))
    return DeviceChoice("cuda", 0, name, facts.total_bytes, facts)


@pytest.mark.parametrize("device, requested, inference, training", [
    (DeviceChoice("cpu"), "auto", "fp32", "fp32"),
    (DeviceChoice("cpu"), "fp16", "fp32", "fp32"),
    (gpu("NVIDIA GeForce GTX 1660 SUPER", 7, 5, 6), "auto", "fp32", "fp32"),
    (gpu("NVIDIA GeForce GTX 1660 SUPER", 7, 5, 6), "fp16", "fp32", "fp32"),
    (gpu("NVIDIA GeForce GTX 1060 6GB", 6, 1, 6), "auto", "fp16", "fp32"),
    (gpu("NVIDIA GeForce RTX 2070", 7, 5, 8), "bf16", "fp16", "fp32"),
    (gpu("NVIDIA GeForce RTX 3060", 8, 6, 12), "auto", "fp16", "bf16"),
    (gpu("NVIDIA GeForce RTX 3060", 8, 6, 12), "fp32", "fp32", "fp32"),
])
def test_precision_rules(device, requested, inference, training):
    choice = select_precision(device, requested)
    assert (choice.inference, choice.training) == (inference, training)
    assert choice.reason


def test_budget_reserve_floor_and_vram_limit(tmp_path):
    settings = MachineSettings(data_dir=tmp_path, precision="auto")
    auto = HardwareManager(settings, device=gpu("RTX 3060", 8, 6, 12)).budget()
    assert auto.source == "auto"
    assert auto.device_cap == 12 * GB - auto.reserve and auto.reserve >= 512 * MB
    assert auto.models == auto.device_cap - auto.floor and auto.floor == GB
    limited = HardwareManager(MachineSettings(data_dir=tmp_path, vram_limit_gb=6),
                              device=gpu("H100", 9, 0, 80)).budget()
    # A 6 GB cap keeps 15 % (0.9 GB) free for activations rather than the 1 GB of larger cards.
    assert (limited.source, limited.device_cap) == ("--vram-limit", 6 * GB)
    assert limited.floor == int(6 * GB * 0.15) and limited.models == 6 * GB - limited.floor
    cpu = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True, ram_limit_gb=4)).budget()
    assert cpu.device_cap == 4 * GB and cpu.host == 4 * GB  # RAM is the budgeted memory


def test_training_reservation_in_another_process_shrinks_the_budget(tmp_path):
    settings = MachineSettings(data_dir=tmp_path, cpu=True)
    hw = HardwareManager(settings, device_budget_bytes=4 * GB, host_budget_bytes=4 * GB)
    script = textwrap.dedent(f"""
        import sys, time
        from engines.hardware import HardwareManager
        from engines.settings import MachineSettings
        hw = HardwareManager(MachineSettings(data_dir={str(tmp_path)!r}, cpu=True))
        with hw.reserve_for_training({GB}, "train run"):
            print("reserved", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "reserved"
        budget = hw.budget()
        assert budget.reserved_by_training == GB and budget.models == 3 * GB
    finally:
        proc.communicate("\n", timeout=30)
    assert hw.budget().models == 4 * GB


SD15 = {"unet": int(1.72 * GB), "text_encoder": 246 * MB, "vae": 167 * MB}


@pytest.mark.parametrize("budget_gb, expected", [
    (6, Placement.WHOLE), (2.4, Placement.MODEL_OFFLOAD),
    (0.9, Placement.GROUP_OFFLOAD), (0.3, Placement.SEQUENTIAL_OFFLOAD),
])
def test_placement_picks_the_fastest_that_fits(budget_gb, expected):
    plan = plan_placement(SD15, int(budget_gb * GB), MemoryPolicy(working_bytes=300 * MB), accelerator=True)
    assert plan.placement == expected
    assert plan.device_bytes <= budget_gb * GB or expected == Placement.SEQUENTIAL_OFFLOAD
    assert plan.vae_tiling == (expected != Placement.WHOLE)


def test_placement_on_cpu_and_forced_policy():
    assert plan_placement(SD15, 1, MemoryPolicy(), accelerator=False).placement == Placement.WHOLE
    forced = plan_placement(SD15, 100 * GB, MemoryPolicy(placement="model_offload"), accelerator=True)
    assert forced.placement == Placement.MODEL_OFFLOAD and forced.device_bytes == SD15["unet"]


class FlakyVae:
    """A real tiny VAE that runs out of memory unless it decodes in tiles of at most ``max_tile`` px."""

    def __init__(self, vae, max_tile):
        self.vae, self.max_tile, self.calls = vae, max_tile, []

    def __getattr__(self, name):
        return getattr(self.vae, name)

    def __setattr__(self, name, value):
        if name in ("tile_sample_min_size", "tile_latent_min_size"):
            setattr(self.vae, name, value)
        else:
            super().__setattr__(name, value)

    def decode(self, latents, return_dict=True):
        self.calls.append((self.vae.use_tiling, self.vae.tile_sample_min_size))
        if not self.vae.use_tiling or self.vae.tile_sample_min_size > self.max_tile:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.vae.decode(latents, return_dict=return_dict)


def test_vae_decode_retries_tiled_then_smaller_tiles():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(sample_size=64, block_out_channels=(8, 16), norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    latents = torch.randn(1, 4, 64, 64)
    flaky = FlakyVae(vae, max_tile=32)
    image = decode_with_tiled_retry(flaky, latents, empty_cache=lambda: None, min_tile=16)
    assert image.shape == (1, 3, 128, 128)
    assert flaky.calls == [(False, 64), (True, 64), (True, 32)]
    with pytest.raises(OutOfMemoryError, match="smallest tiles"):
        decode_with_tiled_retry(FlakyVae(vae, max_tile=4), latents, empty_cache=lambda: None, min_tile=16)
    assert is_torch_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_torch_oom(ValueError("bad value"))


def test_oom_recovery_halves_batch_and_calls_back(tmp_path):
    hw = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True), device_budget_bytes=GB)
    seen = []

    def step(batch):
        if batch > 4:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return f"trained {batch}"

    result, batch = hw.run_with_oom_recovery(step, 16, on_oom=lambda b, e: seen.append(b))
    assert (result, batch, seen) == ("trained 4", 4, [8, 4])
    with pytest.raises(OutOfMemoryError, match="even at batch size 1"):
        hw.run_with_oom_recovery(lambda b: step(99), 2)
    with pytest.raises(ValueError):
        hw.run_with_oom_recovery(lambda b: (_ for _ in ()).throw(ValueError("not memory")), 8)


def test_a_gpu_job_says_out_of_memory_in_its_own_words_and_frees_the_lock(tmp_path):
    hw = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True), device_budget_bytes=GB)
    with pytest.raises(OutOfMemoryError, match="lower the frames"):
        with hw.gpu_job("animation", out_of_memory="Out of memory; lower the frames."):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(torch.OutOfMemoryError):  # without a sentence torch's error passes through
        with hw.gpu_job("plain"):
            raise torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(ValueError):
        with hw.gpu_job("other", out_of_memory="never said"):
            raise ValueError("not memory")
    assert hw.busy is None


def test_batch_size_scales_with_resolution(tmp_path):
    hw = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True), device_budget_bytes=GB)
    small = hw.batch_size_for(64, 10 * MB, max_batch=1000)
    large = hw.batch_size_for(256, 10 * MB, max_batch=1000)
    assert small == int(GB * 0.85 // (10 * MB)) and large == int(GB * 0.85 // (160 * MB))
    assert hw.batch_size_for(4096, 10 * MB) == 1 and hw.batch_size_for(64, 1, max_batch=8) == 8


def reading(ram_percent: float) -> MemoryReading:
    total = 100 * GB
    used = int(total * ram_percent / 100)
    return MemoryReading(total, used, total - used, GB)


def test_graduated_cleanup(tmp_path):
    hw = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True),
                         device_budget_bytes=GB, host_budget_bytes=GB)
    hw.register("old", torch.nn.Linear(64, 64), loader=lambda: torch.nn.Linear(64, 64))
    hw.pool.offload("old")
    assert hw.cleanup_if_needed(reading(50)) == "ok"
    assert hw.cleanup_if_needed(reading(91)) == "soft" and hw.pool.tier_of("old") == "host"
    assert hw.cleanup_if_needed(reading(96)) == "aggressive" and hw.pool.tier_of("old") == "unloaded"


def test_gpu_jobs_are_serialised_and_a_failure_releases_the_lock(tmp_path):
    hw = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True), device_budget_bytes=GB)
    active, peak, order = [0], [0], []
    guard = threading.Lock()

    def job(i):
        with hw.gpu_job(f"job {i}"):
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            assert hw.busy == f"job {i}"
            time.sleep(0.02)
            order.append(i)
            with guard:
                active[0] -= 1

    threads = [threading.Thread(target=job, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1 and sorted(order) == list(range(6))

    with pytest.raises(RuntimeError, match="boom"):
        with hw.gpu_job("failing"):
            raise RuntimeError("boom")
    assert hw.busy is None
    with hw.gpu_job("after the failure", timeout=1):
        assert hw.busy == "after the failure"


def test_gpu_lock_is_shared_with_cli_processes(tmp_path):
    hw = HardwareManager(MachineSettings(data_dir=tmp_path, cpu=True), device_budget_bytes=GB)
    script = textwrap.dedent(f"""
        import sys
        from engines.hardware import HardwareManager
        from engines.settings import MachineSettings
        hw = HardwareManager(MachineSettings(data_dir={str(tmp_path)!r}, cpu=True), device_budget_bytes=1)
        with hw.gpu_lock.hold("generate from the terminal"):
            print("holding", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(GpuBusyError, match="generate from the terminal"):
            with hw.gpu_job("preview", timeout=0.2):
                pass
    finally:
        proc.communicate("\n", timeout=30)
    with hw.gpu_job("preview", timeout=5):
        pass
