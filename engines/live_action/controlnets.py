"""The ControlNets in the HardwareManager's pool: each one entry, shared by every job that names it.

A ControlNet is a copy of the UNet's encoder that reads a control picture (a depth map, a pose
skeleton, edges) and adds its features to the UNet's skip connections; ``scale`` multiplies what
it adds, and ``start``/``end`` limit it to part of the denoising. Only the ControlNets are loaded
for Live-Action: the UNet, VAE and text encoder are the pooled SD 1.5 checkpoint's (the pipeline is
derived from it per job), so moving from Text-to-Manga to Live-Action loads nothing twice.

A ControlNet comes as an HF id, a diffusers folder, or one original-layout file (``.safetensors``
as shared on Civitai). A single file has no config, and diffusers would fetch one from the Hub; a
SD 1.5 ControlNet's config is its base UNet's (the same blocks and widths), so the config is
written from the pooled checkpoint's UNet instead, and nothing reaches for the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.errors import InvalidRequestError
from engines.hardware import MemoryPolicy
from engines.models import config_folder

# A ControlNet's activations are about half a UNet step's (the encoder only), at 512x768 in fp16.
POLICY = MemoryPolicy(working_bytes=384 * 2**20)
# What ControlNetModel takes from a UNet config (its from_unet copies the same fields).
_FROM_UNET = ("in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
              "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor",
              "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim", "transformer_layers_per_block",
              "encoder_hid_dim", "encoder_hid_dim_type", "attention_head_dim", "num_attention_heads",
              "use_linear_projection", "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
              "num_class_embeds", "upcast_attention", "resnet_time_scale_shift", "projection_class_embeddings_input_dim")


def pool_name(ref: str) -> str:
    return f"controlnet:{ref}"


def register_controlnet(hardware: Any, store: Any, ref: str, unet_config: dict[str, Any],
                        vae_scale_factor: int = 8) -> str:
    """Register the ControlNet ``ref`` in the pool (not loaded onto the device yet); returns its pool name."""
    dtype = hardware.dtype("inference")
    config = {**unet_config, "_vae_scale_factor": vae_scale_factor}
    return hardware.register_once(pool_name(ref), lambda: load_controlnet(store, ref, config, dtype), policy=POLICY,
                                  files=store.files_for(ref))


def load_controlnet(store: Any, ref: str, unet_config: dict[str, Any], dtype: Any) -> Any:
    """A ``ControlNetModel`` from an id, folder or single file, checked against the base UNet."""
    from diffusers import ControlNetModel

    source = store.resolve(ref)
    kwargs: dict[str, Any] = {}
    if source.kind == "single_file":
        kwargs["config"] = str(_config_folder(store, unet_config))
    model = store.load_model(ref, ControlNetModel, torch_dtype=dtype, **kwargs)
    if not isinstance(model, ControlNetModel):
        raise InvalidRequestError(f"'{ref}' is not a ControlNet.")
    wanted = unet_config.get("cross_attention_dim")
    if model.config.cross_attention_dim != wanted:
        raise InvalidRequestError(
            f"ControlNet '{ref}' is made for another model family (text width {model.config.cross_attention_dim}, "
            f"the checkpoint's is {wanted}): choose an SD 1.5 ControlNet.")
    model.eval()
    return model


def _config_folder(store: Any, unet_config: dict[str, Any]) -> Path:
    """A folder with the ControlNet config of this UNet, written once under models/.configs/."""
    fields = {k: unet_config[k] for k in _FROM_UNET if k in unet_config}
    # The control picture is brought down to the latents' size by stride-2 convolutions, one per halving:
    # SD 1.5's VAE halves three times (16, 32, 96, 256 channels); a smaller VAE needs fewer.
    halvings = max(0, int(unet_config.get("_vae_scale_factor", 8)).bit_length() - 1)
    fields["conditioning_embedding_out_channels"] = [16, 32, 96, 256][:halvings + 1]
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    return config_folder(store.models_dir, "controlnet", {"_class_name": "ControlNetModel", **fields})
