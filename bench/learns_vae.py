"""A small VAE trained on the learns-benchmark's own pictures: the latent variant's autoencoder offline.

Latent Origin draws in the latent space of a pretrained VAE (SD's ``stabilityai/sd-vae-ft-mse``),
which cannot be downloaded on a machine without internet. The benchmark then trains this one: SD's
architecture (``AutoencoderKL``, 4 latent channels) at a size a CPU trains in minutes, on the
benchmark's own pictures, with the usual recipe (L1 + MSE reconstruction, a small KL term) and its
its latents standardised per channel (``latents_mean``/``latents_std`` in its config, diffusers'
convention; ``per_channel=False``: one ``scaling_factor`` of 1 / their standard deviation, as SD's
0.18215 was chosen). A small VAE trained for minutes spreads its information very unevenly over its
4 channels (measured standard deviations 0.70, 0.14, 0.13, 0.38): with one scale the weak channels
drown in the noise early in the forward process and the model barely learns them.
It is saved with ``save_pretrained`` and the trainer loads it through the model store like any VAE.

What it reports: the reconstruction PSNR, and (in the benchmark) the judge's accuracy on
reconstructions of the evaluation pictures, the ceiling any model drawing in its space can reach.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

# 4x downsampling (SD's is 8x): a 64 px picture is 16x16x4 latents, as fine a grid as the pixel run's
# 32 px model works on, so the two compare the space, not the resolution of the grid.
WIDTHS = (16, 32, 32)
KL_WEIGHT = 1e-6


def load_pictures(folder: Path, size: int) -> Any:
    """Every PNG in ``folder`` as one ``[N, 3, size, size]`` tensor in [-1, 1]."""
    import torch

    from engines.origin.model.pixels import load_image_uint8, to_model_range

    files = sorted(Path(folder).glob("*.png"))
    return torch.stack([to_model_range(load_image_uint8(f, size)) for f in files])


def build(seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    levels = len(WIDTHS)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=WIDTHS, layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, latent_channels=4, norm_num_groups=16)


def psnr(a: Any, b: Any) -> float:
    mse = float(((a.clamp(-1, 1) - b) / 2).square().mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def train_vae(data: Path, out: Path, *, size: int, steps: int, batch: int = 16, lr: float = 1e-3, seed: int = 0,
              device: Any = "cpu", kl_weight: float = KL_WEIGHT, per_channel: bool = True) -> dict[str, Any]:
    """Train on the pictures in ``data``, save to ``out`` (a diffusers folder); returns its figures."""
    import torch
    import torch.nn.functional as F

    started = time.perf_counter()
    pictures = load_pictures(data, size)
    vae = build(seed).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        index = torch.randint(0, len(pictures), (batch,), generator=generator)
        x = pictures[index].to(device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=None)).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    vae.eval()
    probe = pictures[torch.randperm(len(pictures), generator=generator)[:128]].to(device)
    with torch.no_grad():
        means = torch.cat([vae.encode(probe[i:i + 32]).latent_dist.mean for i in range(0, len(probe), 32)])
        recon = torch.cat([vae.decode(means[i:i + 32]).sample for i in range(0, len(means), 32)])
    channel_mean = [float(x) for x in means.mean(dim=(0, 2, 3))]
    channel_std = [float(x) for x in means.std(dim=(0, 2, 3))]
    if per_channel:
        scaling = 1.0
        vae.register_to_config(scaling_factor=scaling, latents_mean=channel_mean, latents_std=channel_std)
    else:
        scaling = 1.0 / float(means.std())
        vae.register_to_config(scaling_factor=scaling)
    out.mkdir(parents=True, exist_ok=True)
    vae.cpu().save_pretrained(str(out))
    return {"psnr_db": psnr(recon, probe), "scaling_factor": scaling, "steps": steps,
            "seconds": time.perf_counter() - started, "factor": 2 ** (len(WIDTHS) - 1),
            "params": sum(p.numel() for p in vae.parameters()), "kl_weight": kl_weight, "per_channel": per_channel,
            "latent_channel_mean": channel_mean, "latent_channel_std": channel_std}
