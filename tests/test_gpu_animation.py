"""On a real CUDA GPU: Animation with the pooled checkpoint whole or offloaded (model, group, sequential) gives the
CPU's frames: the motion UNet, made of the pooled UNet's layers, runs under the placement the pool chose for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animation_models import save_tiny_motion_adapter
from engines.animation.animate import make_animation
from engines.animation.request import AnimationRequest
from engines.hardware import HardwareManager
from engines.hardware.placement import MemoryPolicy
from engines.models import ModelStore
from engines.settings import MachineSettings

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    data = tmp_path_factory.mktemp("animation-gpu")
    shutil.copytree(tiny_sd_dir, data / "models" / "tiny-anime")
    save_tiny_motion_adapter(data / "models" / "tiny-motion", seed=1)
    return data


def run(data: Path, out: Path, **settings) -> np.ndarray:
    hardware = HardwareManager(MachineSettings(data_dir=data, offline=True, precision="fp32", **settings))
    request = AnimationRequest(output=out, base_model="tiny-anime", vae="", motion_adapter="tiny-motion", frames=20,
                               context=8, stride=4, steps=3, cfg=2.0, seed=3, width=64, height=64, prompt="ink",
                               negative="", clip_skip=1)
    result = make_animation(request, hardware, ModelStore(data / "models", offline=True))
    assert {"motion:tiny-motion", "sd15:tiny-anime"} <= set(hardware.pool.names())
    hardware.unload_all()
    return np.asarray(Image.open(result.first_frame).convert("RGB"), dtype=np.float32)


@pytest.mark.parametrize("placement", ["whole", "model_offload", "group_offload", "sequential_offload"])
def test_animation_on_the_gpu_matches_the_cpu(data_dir: Path, tmp_path: Path, monkeypatch, placement: str) -> None:
    import engines.sd15.checkpoint as checkpoint

    reference = run(data_dir, tmp_path / "cpu.gif", cpu=True)
    monkeypatch.setattr(checkpoint, "POLICY", MemoryPolicy(placement=placement, working_bytes=64 * 2**20))
    frame = run(data_dir, tmp_path / f"{placement}.gif")
    assert np.abs(frame - reference).mean() < 2.0
