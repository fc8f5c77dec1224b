"""The model pool: LRU eviction to CPU RAM and then out, shared components, explicit unload."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from engines.errors import ModelNotFoundError, OutOfMemoryError
from engines.hardware import HardwareManager
from engines.models import ModelStore
from engines.settings import MachineSettings
from engines.hardware.placement import components_of, module_bytes
from tiny_models import run_tiny_pipeline


def pipeline_bytes(pipe) -> int:
    return sum(module_bytes(m) for m in components_of(pipe).values())


@pytest.fixture
def store(tiny_sd_dir, tmp_path):
    return ModelStore(tmp_path / "models", offline=True)


def make_hw(tmp_path, device_budget: int, host_budget: int) -> HardwareManager:
    settings = MachineSettings(data_dir=tmp_path / "data", cpu=True)
    return HardwareManager(settings, device_budget_bytes=device_budget, host_budget_bytes=host_budget)


def register_from_disk(hw, store, name, folder):
    """Register a pipeline loaded through the real store, with a loader that reloads it from disk."""
    def loader():
        return store.load_pipeline(str(folder))

    hw.register(name, loader(), loader=loader)


def test_lru_goes_to_ram_first_then_out_of_memory(tmp_path, store, tiny_sd_dir):
    size = pipeline_bytes(store.load_pipeline(str(tiny_sd_dir)))
    hw = make_hw(tmp_path, device_budget=2 * size + size // 2, host_budget=size + size // 2)
    for name in ("a", "b", "c"):
        register_from_disk(hw, store, name, tiny_sd_dir)

    # "a" was used least recently, so it made room for "c" by moving to CPU RAM.
    assert hw.pool.tier_of("a") == "host"
    assert {hw.pool.tier_of("b"), hw.pool.tier_of("c")} == {"device"}
    assert hw.pool.device_bytes() == 2 * size and hw.pool.host_bytes() == size

    # Re-activating "a" comes back from RAM (no reload) and pushes out the now-oldest, "b".
    a_obj = hw.pool._entries["a"].obj
    with hw.use("a") as pipe:
        assert pipe is a_obj
    assert hw.pool.tier_of("b") == "host"

    # Lowering the RAM budget pushes "b" out of memory entirely, and its memory is really gone.
    b_unet = weakref.ref(hw.pool._entries["b"].obj.unet)
    hw.set_limits(None, ram_limit_gb=size / 2 / 2**30)
    gc.collect()
    assert hw.pool.tier_of("b") == "unloaded"
    assert b_unet() is None
    assert hw.pool.host_bytes() == 0

    # Using "b" again reloads it from disk through its loader, with the same pixels as before.
    with hw.use("b") as pipe:
        reloaded = run_tiny_pipeline(pipe)
    with hw.use("c") as pipe:
        reference = run_tiny_pipeline(pipe)
    np.testing.assert_array_equal(reloaded, reference)


def test_shared_components_are_counted_and_freed_once(tmp_path, store, tiny_sd_dir):
    from diffusers import StableDiffusionImg2ImgPipeline

    base = store.load_pipeline(str(tiny_sd_dir))
    size = pipeline_bytes(base)
    hw = make_hw(tmp_path, device_budget=size + size // 4, host_budget=size)
    hw.register("txt2img", base)
    hw.register("img2img", StableDiffusionImg2ImgPipeline.from_pipe(base))
    # Both fit in a budget that holds one: the second pipeline is the first's components.
    assert hw.pool.device_bytes() == size
    assert {r.name: r.shared_bytes for r in hw.pool.snapshot()} == {"txt2img": size, "img2img": size}

    report = hw.unload("img2img")
    assert report.freed_bytes == 0 and report.released  # everything it used is still txt2img's
    assert hw.pool.tier_of("txt2img") == "device"
    unet = weakref.ref(base.unet)
    del base
    report = hw.unload("txt2img")
    assert report.freed_bytes == size and report.released
    assert unet() is None and hw.pool.device_bytes() == 0


def test_explicit_unload_frees_memory(tmp_path, store, tiny_sd_dir):
    hw = make_hw(tmp_path, device_budget=10 * 2**20 * 100, host_budget=10 * 2**20 * 100)
    hw.register("panel", store.load_pipeline(str(tiny_sd_dir)))
    refs = [weakref.ref(m) for m in components_of(hw.pool._entries["panel"].obj).values()]
    report = hw.unload("panel")
    assert report.released and report.freed_bytes > 0
    assert all(r() is None for r in refs)
    assert hw.pool.device_bytes() == 0 and "panel" not in hw.pool
    with pytest.raises(ModelNotFoundError, match="unloaded and has no loader"):
        hw.pool.activate("panel")


def test_unload_reports_a_component_still_held_elsewhere(tmp_path, store, tiny_sd_dir):
    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    pipe = hw.register("held", store.load_pipeline(str(tiny_sd_dir)))
    report = hw.unload("held")  # `pipe` still references the modules
    assert not report.released and report.freed_bytes == 0
    del pipe


def test_model_in_use_is_not_evicted_and_too_big_is_refused(tmp_path, store, tiny_sd_dir):
    size = pipeline_bytes(store.load_pipeline(str(tiny_sd_dir)))
    hw = make_hw(tmp_path, device_budget=size + size // 2, host_budget=4 * size)
    register_from_disk(hw, store, "a", tiny_sd_dir)
    with hw.use("a"):
        with pytest.raises(OutOfMemoryError, match="does not fit next to models in use \\(a\\)"):
            register_from_disk(hw, store, "b", tiny_sd_dir)
        assert hw.pool.tier_of("a") == "device"
    small = make_hw(tmp_path, device_budget=size // 2, host_budget=4 * size)
    with pytest.raises(OutOfMemoryError, match="more than the .* budget"):
        register_from_disk(small, store, "big", tiny_sd_dir)


def test_offload_button_and_unload_all(tmp_path, store, tiny_sd_dir):
    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    register_from_disk(hw, store, "a", tiny_sd_dir)
    register_from_disk(hw, store, "b", tiny_sd_dir)
    hw.pool.offload("a")
    assert hw.pool.tier_of("a") == "host"
    reports = hw.unload_all()
    assert sorted(r.name for r in reports) == ["a", "b"] and all(r.released for r in reports)
    assert hw.pool.names() == []
