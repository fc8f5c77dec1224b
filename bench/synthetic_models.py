"""Random-weight Stable Diffusion pipelines of three sizes, built from config classes, never downloaded.

``tiny`` is the test suite's pipeline (tests/tiny_models.py); ``small`` is a ~140 MB pipeline (fp32) whose
disk load takes measurable time on a CPU; ``sd15`` has the real SD 1.5 UNet, VAE and CLIP text
encoder shapes (about 1.07 B parameters: 4.3 GB in fp32, 2.1 GB in fp16) with random weights, so
moves and loads cost what they cost with a real checkpoint. The images are noise; only time,
memory and pixel identity are measured.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("tiny", "small", "sd15")


@dataclass(frozen=True)
class SizeSpec:
    """What a size builds and the generation settings that suit it."""

    name: str
    image_px: int  # height and width of a generated image
    steps: int  # denoising steps of a full benchmark run
    quick_steps: int


SPECS = {
    "tiny": SizeSpec("tiny", 32, 4, 2),
    "small": SizeSpec("small", 128, 10, 3),
    "sd15": SizeSpec("sd15", 512, 20, 4),
}

# SD 1.5's block layout; the sizes differ only in widths and depths.
_UNET_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UNET_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
_VAE_DOWN = ("DownEncoderBlock2D",) * 4
_VAE_UP = ("UpDecoderBlock2D",) * 4

_WIDTHS = {
    # unet channels, unet head dim, vae channels, clip hidden, clip layers, clip heads, vocab
    "small": dict(unet=(64, 128, 192, 256), head_dim=8, vae=(32, 64, 128, 128), hidden=256, layers=4,
                  heads=4, vocab=None),
    # The real SD 1.5 shapes (runwayml/stable-diffusion-v1-5 configs); vocab 49408 as in CLIP ViT-L/14.
    "sd15": dict(unet=(320, 640, 1280, 1280), head_dim=8, vae=(128, 256, 512, 512), hidden=768, layers=12,
                 heads=12, vocab=49408),
}


def tiny_models() -> Any:
    """The test suite's ``tests/tiny_models.py`` module (tiny pipelines, tiny Origin checkpoints)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)  # appended, so nothing in tests/ shadows an installed module
    import tiny_models

    return tiny_models


def build_pipeline(size: str, seed: int = 0) -> Any:
    """A seeded random-weight ``StableDiffusionPipeline`` of the given size, in fp32 on the CPU."""
    tests_models = tiny_models()
    if size == "tiny":
        return tests_models.build_tiny_sd_pipeline(seed)
    if size not in _WIDTHS:
        raise ValueError(f"Unknown size '{size}': choose one of {', '.join(SIZES)}.")
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    w = _WIDTHS[size]
    # A local byte-level BPE tokenizer: real CLIP vocabularies cannot be fetched offline, and the
    # text encoder's embedding table keeps its real size (vocab) whatever ids the tokenizer emits.
    tokenizer = tests_models.build_tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=SPECS[size].image_px // 8, in_channels=4, out_channels=4,
        block_out_channels=w["unet"], layers_per_block=2,
        down_block_types=_UNET_DOWN, up_block_types=_UNET_UP,
        cross_attention_dim=w["hidden"], attention_head_dim=w["head_dim"], norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        sample_size=SPECS[size].image_px, in_channels=3, out_channels=3,
        block_out_channels=w["vae"], layers_per_block=2,
        down_block_types=_VAE_DOWN, up_block_types=_VAE_UP, latent_channels=4, norm_num_groups=32,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=w["vocab"] or len(tokenizer), hidden_size=w["hidden"], intermediate_size=4 * w["hidden"],
        num_hidden_layers=w["layers"], num_attention_heads=w["heads"], max_position_embeddings=77,
        hidden_act="quick_gelu", projection_dim=w["hidden"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )


def save_pipeline(size: str, folder: Path, dtype: Any = None, seed: int = 0) -> Path:
    """Build a pipeline and save it as a diffusers folder (safetensors), already in ``dtype``.

    Saved in the dtype it will be loaded in, so a cold load measures reading, not casting.
    """
    pipe = build_pipeline(size, seed)
    if dtype is not None:
        pipe.to(dtype=dtype)
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def folder_bytes(folder: Path) -> int:
    """Bytes of the weight files in a saved pipeline."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors"))


def parameter_count(pipe: Any) -> int:
    return sum(p.numel() for m in pipe.components.values() if hasattr(m, "parameters") for p in m.parameters())


def build_controlnet(pipe: Any, seed: int = 0) -> Any:
    """A seeded random-weight ControlNet for ``pipe``'s UNet (SD 1.5's ControlNet shapes for ``sd15``).

    ``from_unet`` copies the UNet's encoder and zeroes the convolutions that feed the UNet, which makes
    a fresh ControlNet change nothing; they get small random weights here so the control picture
    really steers the result, as a trained one does.
    """
    import torch
    from diffusers import ControlNetModel

    halvings = int(pipe.vae_scale_factor).bit_length() - 1  # the control picture is brought to latent size
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 96, 256)[:halvings + 1])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return net.eval()


def save_controlnet(pipe: Any, folder: Path, dtype: Any = None, seed: int = 0) -> Path:
    net = build_controlnet(pipe, seed)
    if dtype is not None:
        net.to(dtype=dtype)
    net.save_pretrained(Path(folder), safe_serialization=True)
    return Path(folder)


def build_motion_adapter(pipe: Any, seed: int = 0, max_frames: int = 32) -> Any:
    """A seeded random-weight AnimateDiff motion adapter for ``pipe``'s UNet (v1-5-3's shapes for ``sd15``:
    two motion modules per block, no mid block, 8 heads, 32 frames)."""
    import torch
    from diffusers import MotionAdapter

    unet = pipe.unet.config
    torch.manual_seed(seed)
    return MotionAdapter(block_out_channels=tuple(unet.block_out_channels), motion_layers_per_block=unet.layers_per_block,
                         motion_num_attention_heads=8, motion_norm_num_groups=unet.norm_num_groups,
                         motion_max_seq_length=max_frames, use_motion_mid_block=False).eval()


def save_motion_adapter(pipe: Any, folder: Path, dtype: Any = None, seed: int = 0) -> Path:
    adapter = build_motion_adapter(pipe, seed)
    if dtype is not None:
        adapter.to(dtype=dtype)
    adapter.save_pretrained(Path(folder), safe_serialization=True)
    return Path(folder)
