"""The model pool: LRU eviction to CPU RAM and then out, shared components, explicit unload,
honest byte counts and model files replaced on disk while loaded."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from engines.errors import CorruptModelError, ModelNotFoundError, OutOfMemoryError
from engines.files import FileStamp, atomic_write_bytes
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


def test_a_derived_pipeline_keeps_the_base_dtype_and_the_pool_counts_what_is_held(tmp_path, store, tiny_sd_dir):
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from engines.hardware.placement import module_bytes
    from engines.models import derive_pipeline

    base = store.load_pipeline(str(tiny_sd_dir), torch_dtype=torch.float16)
    size = pipeline_bytes(base)
    hw = make_hw(tmp_path, device_budget=4 * size, host_budget=4 * size)
    hw.register("txt2img", base)
    img2img = derive_pipeline(StableDiffusionImg2ImgPipeline, base)
    hw.register("img2img", img2img)
    # the same weights, still fp16: diffusers' own from_pipe would have cast them to fp32 in place
    assert img2img.unet is base.unet and base.unet.dtype == torch.float16
    assert hw.pool.device_bytes() == size
    # a component cast behind the pool's back (a plain from_pipe) is measured again when it is shared
    base.unet.to(torch.float32)
    hw.register("img2img", StableDiffusionImg2ImgPipeline(**img2img.components))
    grown = size + module_bytes(base.unet) // 2
    assert hw.pool.device_bytes() == grown
    assert {r.name: r.size_bytes for r in hw.pool.snapshot()} == {"txt2img": grown, "img2img": grown}


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


def test_a_model_is_placed_around_what_a_running_job_holds(tmp_path):
    """A job's ControlNets are activated before its checkpoint: the checkpoint's placement is planned for
    the budget left beside them, not the whole budget (which would pick "whole" and then find no room)."""
    import torch

    from engines.hardware.placement import PlacementPlan, Placement

    net, base = torch.nn.Linear(64, 64), torch.nn.Linear(128, 128)
    hw = make_hw(tmp_path, device_budget=10 * 2**20, host_budget=2**30)
    budgets: list[int] = []

    def plan_for(sizes, budget):
        budgets.append(budget)
        return PlacementPlan(Placement.WHOLE, sum(sizes.values()))

    hw.pool.add("controlnet", net, plan_for=plan_for, activate=False)
    hw.pool.add("base", base, plan_for=plan_for, activate=False)
    with hw.use("controlnet"):
        with hw.use("base"):
            pass
    assert budgets == [10 * 2**20, 10 * 2**20 - module_bytes(net)]
    hw.pool.offload("base")
    with hw.use("base"):  # nothing else in use now: the whole budget again
        pass
    assert budgets[-1] == 10 * 2**20


def test_offload_button_and_unload_all(tmp_path, store, tiny_sd_dir):
    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    register_from_disk(hw, store, "a", tiny_sd_dir)
    register_from_disk(hw, store, "b", tiny_sd_dir)
    hw.pool.offload("a")
    assert hw.pool.tier_of("a") == "host"
    reports = hw.unload_all()
    assert sorted(r.name for r in reports) == ["a", "b"] and all(r.released for r in reports)
    assert hw.pool.names() == []


# --- honest counts, and model files replaced while the studio runs -------------------------------------

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture
def own_copy(tiny_sd_dir, tmp_path) -> Path:
    """A copy of the tiny pipeline that a test may overwrite."""
    return shutil.copytree(tiny_sd_dir, tmp_path / "models" / "tiny-sd")


def register_watched(hw, store, name, folder, *, with_loader=True):
    """Register a pipeline the way the studio does: loaded through the store, its files watched."""
    def loader():
        return store.load_pipeline(str(folder))

    return hw.register(name, loader(), loader=loader if with_loader else None, files=store.files_for(str(folder)))


def scaled_weights(path: Path, factor: float) -> bytes:
    """The same safetensors file with every weight multiplied: same size, other numbers."""
    from safetensors.torch import load_file, save

    return save({key: tensor * factor for key, tensor in load_file(path).items()})


def test_the_pool_counts_bytes_that_are_really_in_memory(tmp_path, store, tiny_sd_dir):
    from engines.models.residency import file_mapped_bytes

    pipe = store.load_pipeline(str(tiny_sd_dir))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage()
                for m in components_of(pipe).values() for t in (*m.parameters(), *m.buffers())}
    allocated = sum(s.nbytes() for s in storages.values() if s.resizable())  # torch's own memory
    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    hw.register("panel", pipe)
    assert file_mapped_bytes(pipe) == 0
    assert hw.pool.device_bytes() + hw.pool.host_bytes() == allocated == pipeline_bytes(pipe)


@pytest.mark.parametrize("how", ["in place", "by rename"])
def test_a_model_file_replaced_while_loaded_is_reloaded_on_next_use(tmp_path, store, own_copy, how):
    import torch

    from engines.models.residency import file_mapped_bytes

    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    old = register_watched(hw, store, "panel", own_copy)
    before = old.unet.conv_in.weight.detach().clone()
    assert file_mapped_bytes(old) == 0  # else the in-place case below would kill the process (SIGBUS)
    weights = own_copy / UNET_WEIGHTS
    new_file = scaled_weights(weights, 2.0)
    if how == "in place":  # a copy tool writing over the file
        with open(weights, "r+b") as handle:
            handle.truncate(0)
            run_tiny_pipeline(old)  # a job still running on the loaded copy
            handle.write(new_file)
    else:  # a download renamed over it
        atomic_write_bytes(weights, new_file)
        run_tiny_pipeline(old)

    with hw.use("panel") as pipe:
        assert pipe is not old
        torch.testing.assert_close(pipe.unet.conv_in.weight, before * 2)
        run_tiny_pipeline(pipe)
    assert "panel changed on disk; reloaded" in hw.events
    with hw.use("panel") as again:  # the new file is the known one now
        assert again is pipe
    assert hw.events.count("panel changed on disk; reloaded") == 1


def test_a_file_caught_half_written_fails_clearly_and_loads_once_whole(tmp_path, store, own_copy):
    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    register_watched(hw, store, "panel", own_copy)
    weights = own_copy / UNET_WEIGHTS
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptModelError, match="is truncated"):
        with hw.use("panel"):
            pass
    weights.write_bytes(whole)
    with hw.use("panel") as pipe:
        run_tiny_pipeline(pipe)


def test_without_a_loader_the_loaded_copy_stays_and_one_warning_is_logged(tmp_path, store, own_copy, caplog):
    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    pipe = register_watched(hw, store, "panel", own_copy, with_loader=False)
    weights = own_copy / UNET_WEIGHTS
    atomic_write_bytes(weights, scaled_weights(weights, 2.0))
    with caplog.at_level(logging.WARNING, logger="engines.hardware.pool"):
        for _ in range(2):
            with hw.use("panel") as used:
                assert used is pipe
    assert sum("changed on disk" in r.getMessage() for r in caplog.records) == 1


def test_a_deleted_model_file_keeps_the_loaded_copy(tmp_path, store, own_copy):
    hw = make_hw(tmp_path, device_budget=2**30, host_budget=2**30)
    pipe = register_watched(hw, store, "panel", own_copy)
    (own_copy / UNET_WEIGHTS).unlink()  # mid-replacement, or the artist tidying up
    with hw.use("panel") as used:
        assert used is pipe
        run_tiny_pipeline(used)
    assert not any("changed on disk" in event for event in hw.events)


def test_file_stamp_notices_rewrites_renames_and_deletions(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"1234")
    b.write_bytes(b"5678")
    minute_ago = time.time_ns() - 60 * 10**9
    for path in (a, b):
        os.utime(path, ns=(minute_ago, minute_ago))  # saved a while ago, as models are
    stamp = FileStamp.of([a, str(b)])
    assert not stamp.changed() and stamp.again() == stamp and stamp.missing == ()

    with open(a, "r+b") as handle:  # same size, written in place
        handle.write(b"9999")
    assert stamp.changed()
    stamp = stamp.again()
    other = tmp_path / "download.tmp"
    other.write_bytes(b"5678")
    os.utime(other, ns=(minute_ago, minute_ago))
    os.replace(other, b)  # same size and time, another file
    assert stamp.changed()
    stamp = stamp.again()
    b.unlink()
    assert stamp.changed() and stamp.again().missing == (b,)
    gone = stamp.again()
    b.write_bytes(b"back")
    assert gone.changed() and not gone.again().changed()
