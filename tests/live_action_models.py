"""Tiny random-weight models for Live-Action tests, saved in the formats the real ones come in.

    save_tiny_depth_model             a Depth Anything folder (Dinov2 backbone) + its DPT image processor
    save_tiny_pose_model              a ViTPose folder (ViTPose backbone, simple decoder) + its processor
    save_tiny_controlnet              a diffusers ControlNet folder from the tiny SD UNet (tiny_models.py)
    save_tiny_controlnet_single_file  the same weights as one original-layout (cldm) ``.safetensors``
    save_live_action_defaults         all of them (and the tiny SD checkpoint) where Live-Action's defaults are found

Each loads back offline through the loaders the studio uses (``AutoModelForDepthEstimation``,
``VitPoseForPoseEstimation``, ``AutoImageProcessor``, ``ControlNetModel``) and runs in milliseconds on a CPU.
Weights are seeded and scaled up from the default initialisation, which leaves these heads near zero:
a depth map of zeros or a ControlNet that adds nothing would let broken plumbing pass.
"""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

from tiny_models import _RESNET_PARTS, _rename, _unet_to_ldm, build_tiny_sd_pipeline

DEPTH_INPUT = 28  # two Dinov2 patches of 14 px a side
POSE_INPUT = (32, 24)  # height, width: ViTPose's 4:3 portrait crop, 4 x 3 patches of 8 px


def _reseed(model, seed: int, scale: float) -> None:
    """Replace every weight with seeded noise (``scale`` for matrices, a tenth of it for vectors)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            size = scale if param.ndim > 1 else scale / 10
            param.copy_(torch.randn(param.shape, generator=generator) * size)


def save_tiny_depth_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Depth Anything, 8-wide Dinov2 backbone, with a 28 px DPT processor; returns the folder."""
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config,
                              DPTImageProcessor)

    backbone = Dinov2Config(image_size=DEPTH_INPUT, patch_size=14, hidden_size=8, num_hidden_layers=2,
                            num_attention_heads=2, out_indices=[1, 2], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=8,
                                 reassemble_factors=[2, 1], neck_hidden_sizes=[4, 8], fusion_hidden_size=8,
                                 head_hidden_size=4)
    model = DepthAnythingForDepthEstimation(config).eval()
    _reseed(model, seed, 0.5)
    folder = Path(folder)
    model.save_pretrained(str(folder), safe_serialization=True)
    # Depth-Anything-V2-Small-hf's processor settings, at 28 px instead of 518.
    DPTImageProcessor(size={"height": DEPTH_INPUT, "width": DEPTH_INPUT}, keep_aspect_ratio=True,
                      ensure_multiple_of=14, do_pad=False, resample=3).save_pretrained(str(folder))
    return folder


def save_tiny_pose_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 8-wide ViTPose (COCO's 17 keypoints, 16x12 heatmaps) + its processor; returns the folder."""
    from transformers import (VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation,
                              VitPoseImageProcessor)

    backbone = VitPoseBackboneConfig(image_size=list(POSE_INPUT), patch_size=[8, 8], hidden_size=8,
                                     num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, out_indices=[2])
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).eval()
    _reseed(model, seed, 0.5)
    folder = Path(folder)
    model.save_pretrained(str(folder), safe_serialization=True)
    VitPoseImageProcessor(size={"height": POSE_INPUT[0], "width": POSE_INPUT[1]}).save_pretrained(str(folder))
    return folder


def build_tiny_controlnet(unet=None, seed: int = 0, vae_scale_factor: int = 2):
    """``ControlNetModel.from_unet`` of the tiny SD UNet, with seeded noise in its zero convolutions.

    ``from_unet`` zero-initialises the hint block's last convolution and the zero convs (as training
    starts), so the ControlNet would add nothing and a wrong control picture could not be noticed.
    The hint block halves the control picture once per halving of the VAE (the tiny one halves once,
    SD's three times), the rule engines/live_action/controlnets.py writes single-file configs by.
    """
    import torch
    from diffusers import ControlNetModel

    unet = unet if unet is not None else build_tiny_sd_pipeline(seed).unet
    halvings = vae_scale_factor.bit_length() - 1
    widths = (16, 32, 96, 256)[:halvings + 1]
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=widths)
    generator = torch.Generator().manual_seed(seed)
    zeroed = [controlnet.controlnet_cond_embedding.conv_out, controlnet.controlnet_mid_block,
              *controlnet.controlnet_down_blocks]
    with torch.no_grad():
        for module in zeroed:
            for param in module.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return controlnet.eval()


def save_tiny_controlnet(folder: Path, unet=None, seed: int = 0, vae_scale_factor: int = 2) -> Path:
    """The tiny ControlNet as a diffusers folder (config.json + safetensors); returns the folder."""
    folder = Path(folder)
    build_tiny_controlnet(unet, seed, vae_scale_factor).save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_tiny_controlnet_single_file(path: Path, unet=None, seed: int = 0, vae_scale_factor: int = 2) -> Path:
    """The same weights as :func:`save_tiny_controlnet`, as one ``control_model.*`` (cldm) ``.safetensors``.

    The inverse of diffusers' ``convert_controlnet_checkpoint``. Its hint block is SD's Sequential of
    8 convolutions with SiLUs between (indices 0, 2, ..., 14); the converter reads the last one from
    index 14 whatever the depth, so the tiny block's middle convolutions sit at 2, 4... and its last at 14.
    """
    from safetensors.torch import save_file

    unet = unet if unet is not None else build_tiny_sd_pipeline(seed).unet
    controlnet = build_tiny_controlnet(unet, seed, vae_scale_factor)
    renames = _unet_to_ldm(unet)  # the encoder half of the UNet's renames fits the ControlNet's copy
    renames.update({"controlnet_mid_block.": "middle_block_out.0.",
                    "controlnet_cond_embedding.conv_in.": "input_hint_block.0.",
                    "controlnet_cond_embedding.conv_out.": "input_hint_block.14."})
    for index in range(len(controlnet.controlnet_down_blocks)):
        renames[f"controlnet_down_blocks.{index}."] = f"zero_convs.{index}.0."
    for index in range(len(controlnet.controlnet_cond_embedding.blocks)):
        renames[f"controlnet_cond_embedding.blocks.{index}."] = f"input_hint_block.{2 * index + 2}."
    state = {}
    for key, value in controlnet.state_dict().items():
        new = _rename(key, renames)
        if ".resnets." in key:
            head, _, leaf = new.rpartition(".")
            head, _, part = head.rpartition(".")
            new = f"{head}.{_RESNET_PARTS.get(part, part)}.{leaf}"
        state["control_model." + new] = value.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def default_folder(models: Path, field: str) -> Path:
    """Where the model store finds Live-Action's default hub id for ``field`` offline."""
    from engines.live_action.request import LiveActionRequest

    default = {f.name: f.default for f in fields(LiveActionRequest)}[field]
    return models / str(default).replace("/", "--")


def save_live_action_defaults(models: Path, tiny_sd_dir: Path) -> Path:
    """The tiny checkpoint, VAE, ControlNets and estimators saved where Live-Action's defaults resolve."""
    shutil.copytree(tiny_sd_dir, default_folder(models, "base_model"))
    shutil.copytree(tiny_sd_dir / "vae", default_folder(models, "vae"))
    save_tiny_controlnet(default_folder(models, "controlnet_depth"), seed=1)
    save_tiny_controlnet(default_folder(models, "controlnet_pose"), seed=2)
    save_tiny_depth_model(default_folder(models, "depth_model"))
    save_tiny_pose_model(default_folder(models, "pose_model"))
    return models
