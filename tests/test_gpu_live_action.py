"""On a real CUDA GPU: Live-Action with the checkpoint whole or offloaded beside its pooled ControlNets
gives the CPU's picture, and the ControlNets and the checkpoint share the device under a tight budget."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.hardware import HardwareManager
from engines.hardware.placement import MemoryPolicy
from engines.live_action.photoreal import make_live_action
from engines.live_action.request import LiveActionRequest
from engines.models import ModelStore
from engines.settings import MachineSettings
from live_action_models import save_tiny_controlnet, save_tiny_depth_model, save_tiny_pose_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    data = tmp_path_factory.mktemp("live-gpu")
    models = data / "models"
    shutil.copytree(tiny_sd_dir, models / "tiny-real")
    save_tiny_controlnet(models / "cn-depth", seed=1)
    save_tiny_controlnet(models / "cn-pose", seed=2)
    save_tiny_depth_model(models / "depth-est")
    save_tiny_pose_model(models / "pose-est")
    picture = Image.new("RGBA", (96, 128), (0, 0, 0, 0))
    picture.paste((200, 60, 50, 255), (30, 40, 66, 120))
    picture.save(data / "hero.png")
    return data


def run(data: Path, out: Path, **settings) -> np.ndarray:
    hardware = HardwareManager(MachineSettings(data_dir=data, offline=True, precision="fp32", **settings))
    request = LiveActionRequest(image=data / "hero.png", output=out, base_model="tiny-real", vae="",
                                controlnet_depth="cn-depth", controlnet_pose="cn-pose", depth_model="depth-est",
                                pose_model="pose-est", steps=4, strength=0.6, cfg=2.0, sampler="DDIM", seed=3,
                                long_side=64, prompt="ink manga", negative="")
    make_live_action(request, hardware, ModelStore(data / "models", offline=True))
    names = set(hardware.pool.names())
    assert {"controlnet:cn-depth", "controlnet:cn-pose", "sd15:tiny-real"} <= names
    hardware.unload_all()
    return np.asarray(Image.open(out).convert("RGBA"), dtype=np.float32)


@pytest.mark.parametrize("placement", ["whole", "model_offload", "group_offload"])
def test_live_action_on_the_gpu_matches_the_cpu(data_dir: Path, tmp_path: Path, monkeypatch, placement: str) -> None:
    import engines.sd15.checkpoint as checkpoint

    reference = run(data_dir, tmp_path / "cpu.png", cpu=True)
    monkeypatch.setattr(checkpoint, "POLICY", MemoryPolicy(placement=placement, working_bytes=64 * 2**20))
    image = run(data_dir, tmp_path / f"{placement}.png")
    assert np.abs(image - reference).mean() < 2.0
