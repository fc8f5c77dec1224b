"""Tiny random-weight models for Animation tests, saved in the formats the real ones come in.

    build_tiny_motion_adapter / save_tiny_motion_adapter   a diffusers MotionAdapter folder for the tiny SD UNet
    save_tiny_motion_adapter_single_file                   the same weights as one AnimateDiff ``.safetensors``
                                                           (the original ``mm_sd_v15`` key layout)
    save_tiny_sparsectrl                                    an RGB SparseCtrl folder (SparseControlNetModel)

Each loads back offline through the studio's loaders and runs 16 frames at 64 px in well under a second
on a CPU. The motion modules' output projections start at zero in diffusers (as training starts), which
would make every frame an independent picture and let a broken motion path pass: weights are seeded
noise instead, the same rule as tests/live_action_models.py.
"""

from __future__ import annotations

from pathlib import Path

# The tiny SD UNet's widths and norm groups (tests/tiny_models.py), and AnimateDiff's 8 heads: what a single
# file's config is written with (engines/animation/motion.py), and what diffusers' from_unet2d builds.
WIDTHS = (8, 16)
MOTION_HEADS = 8
MOTION_GROUPS = 4


def _reseed(model, seed: int, scale: float) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "pos_encoder" in name:
                continue
            size = scale if param.ndim > 1 else scale / 10
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                param.copy_(1.0 + torch.randn(param.shape, generator=generator) * size / 10)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * size)


def build_tiny_motion_adapter(seed: int = 0, max_frames: int = 32, mid_block: bool = False):
    from diffusers import MotionAdapter

    adapter = MotionAdapter(block_out_channels=WIDTHS, motion_layers_per_block=1, motion_num_attention_heads=MOTION_HEADS,
                            motion_norm_num_groups=MOTION_GROUPS, motion_max_seq_length=max_frames,
                            use_motion_mid_block=mid_block)
    _reseed(adapter, seed, 0.3)
    return adapter.eval()


def save_tiny_motion_adapter(folder: Path, seed: int = 0, max_frames: int = 32, mid_block: bool = False) -> Path:
    folder = Path(folder)
    build_tiny_motion_adapter(seed, max_frames, mid_block).save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_tiny_motion_adapter_single_file(path: Path, seed: int = 0, max_frames: int = 32) -> Path:
    """The weights of :func:`save_tiny_motion_adapter` in the layout of AnimateDiff's own ``mm_sd_v15_v2.ckpt``:
    the inverse of diffusers' ``convert_animatediff_checkpoint_to_diffusers`` (``.temporal_transformer`` put back,
    ``.attnN`` -> ``.attention_blocks.N-1``, ``.normN`` -> ``.norms.N-1``, ``.norm3`` -> ``.ff_norm``), with the
    sinusoidal position table each attention block carries there."""
    import re

    from safetensors.torch import save_file

    adapter = build_tiny_motion_adapter(seed, max_frames)
    state = {}
    for key, value in adapter.state_dict().items():
        original = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        if original.endswith("pos_embed.pe"):  # AnimateDiff keeps one table per attention; diffusers rebuilds it
            for block in (0, 1):
                state[original.replace("pos_embed.pe", f"attention_blocks.{block}.pos_encoder.pe")] = value.clone()
            continue
        for new_name, old_name in ((".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1."),
                                   (".norm1.", ".norms.0."), (".norm2.", ".norms.1."), (".norm3.", ".ff_norm.")):
            original = original.replace(new_name, old_name)
        state[original] = value.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def save_tiny_sparsectrl(folder: Path, unet=None, seed: int = 0, max_frames: int = 32) -> Path:
    """An RGB SparseCtrl for the tiny UNet (its image goes straight to latent size through one convolution,
    the ``use_simplified_condition_embedding`` of the real RGB model), seeded so its residuals matter."""
    from diffusers import SparseControlNetModel

    from tiny_models import build_tiny_sd_pipeline

    unet = unet if unet is not None else build_tiny_sd_pipeline(seed).unet
    model = SparseControlNetModel(
        in_channels=4, conditioning_channels=4, block_out_channels=WIDTHS,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"), layers_per_block=1,
        cross_attention_dim=unet.config.cross_attention_dim, attention_head_dim=unet.config.attention_head_dim,
        norm_num_groups=unet.config.norm_num_groups, conditioning_embedding_out_channels=None,
        motion_max_seq_length=max_frames, motion_num_attention_heads=MOTION_HEADS, concat_conditioning_mask=True,
        use_simplified_condition_embedding=True)
    _reseed(model, seed + 11, 0.2)
    folder = Path(folder)
    model.eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_tiny_motion_lora(path: Path, seed: int = 0, rank: int = 2, scale: float = 0.5) -> Path:
    """A motion LoRA for the tiny adapter in diffusers' PEFT layout (``unet.<motion module>.to_q.lora_A.weight``):
    low-rank updates of every temporal attention's projections, seeded so the motion visibly changes."""
    import torch
    from safetensors.torch import save_file

    adapter = build_tiny_motion_adapter(seed)
    generator = torch.Generator().manual_seed(seed + 101)
    state = {}
    for name, module in adapter.named_modules():
        if ".attn" in name and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v"):
            out_features, in_features = module.weight.shape
            state[f"unet.{name}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * scale
            state[f"unet.{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * scale
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
