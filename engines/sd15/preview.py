"""The live preview: a cheap picture of the latents every few steps, without running the VAE.

A decode costs as much as several denoising steps on a small card; a linear map from the four
latent channels to R, G, B costs nothing. The map is fitted to the checkpoint's own VAE the first
time a preview is asked for (least squares over the latents of a chart of flat colours, the same
fit Origin's latent models use: engines/latent_rgb.py), so it suits any VAE override, and
is kept on the pipeline until the pipeline is reloaded.
"""

from __future__ import annotations

from typing import Any


def _rgb_map(pipe: Any) -> Any:
    cached = pipe.__dict__.get("_inkframe_rgb_map")
    if cached is not None:
        return cached
    import torch

    from engines.latent_rgb import colour_chart, fit_rgb_map

    vae = pipe.vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    chart, colours = colour_chart(factor)
    with torch.no_grad():
        latents = vae.encode(chart.to(pipe._execution_device, vae.dtype)).latent_dist.mean
    scaled = latents.float().cpu() * float(vae.config.scaling_factor)
    pipe.__dict__["_inkframe_rgb_map"] = rgb_map = fit_rgb_map(scaled, colours, factor)
    return rgb_map


def latent_preview(pipe: Any, latents: Any, upscale: int = 4) -> Any:
    """The first picture of a batch of (scaled) latents as a small PIL image."""
    import torch
    from PIL import Image

    from engines.latent_rgb import latents_to_rgb

    with torch.no_grad():
        rgb = latents_to_rgb(latents[:1].float().cpu(), _rgb_map(pipe))[0]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels)
    return image.resize((image.width * upscale, image.height * upscale), Image.Resampling.BILINEAR)


def latent_strip(pipe: Any, latents: Any, upscale: int = 4) -> Any:
    """Every picture of a batch of (scaled) latents side by side, as one small PIL image (a video's frames)."""
    import numpy as np
    import torch
    from PIL import Image

    from engines.latent_rgb import latents_to_rgb

    with torch.no_grad():
        rgb = latents_to_rgb(latents.float().cpu(), _rgb_map(pipe))
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    image = Image.fromarray(np.concatenate(list(pixels), axis=1))
    return image.resize((image.width * upscale, image.height * upscale), Image.Resampling.BILINEAR)
