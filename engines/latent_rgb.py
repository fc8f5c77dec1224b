"""A cheap picture of latents: one linear map from the latent channels to R, G, B, fitted to any VAE.

A VAE decode costs as much as several denoising steps on a small card; this map costs nothing.
It is fitted by least squares on the latents of a chart of 64 flat colours, so it needs no data
and suits whichever VAE is in use. Origin's latent models use it for their art losses and
previews (engines/origin/model/latent.py), SD 1.5 for its live previews (engines/sd15/preview.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

CHART_LEVELS = (0.0, 0.33, 0.67, 1.0)  # 4 x 4 x 4 = 64 flat colours fit the latent -> RGB map


def chart_patch(factor: int) -> int:
    """Pixels per side of one colour patch: at least 4 latents wide, so its centre is pure colour."""
    return max(32, 4 * factor)


def colour_chart(factor: int) -> tuple[Tensor, Tensor]:
    """An 8x8 grid of flat patches in [-1, 1] ``[1, 3, 8p, 8p]`` and their colours ``[64, 3]`` in [-1, 1]."""
    levels = torch.tensor(CHART_LEVELS)
    colours = torch.cartesian_prod(levels, levels, levels) * 2 - 1  # [64, 3]
    p = chart_patch(factor)
    image = colours.view(8, 8, 3).permute(2, 0, 1)  # [3, 8, 8]
    return image.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2).unsqueeze(0), colours


def fit_rgb_map(latents: Tensor, colours: Tensor, factor: int) -> Tensor:
    """Least-squares ``[C + 1, 3]`` map from the chart's patch-centre latents to its colours."""
    cells = latents.shape[-1] // 8
    inner = max(1, cells // 2)  # the centre of each patch, away from the neighbours' colours
    start = (cells - inner) // 2
    grid = latents[0].unfold(1, cells, cells).unfold(2, cells, cells)  # [C, 8, 8, cells, cells]
    centres = grid[..., start:start + inner, start:start + inner].mean(dim=(-1, -2))  # [C, 8, 8]
    x = centres.flatten(1).T.double()  # [64, C]
    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    # A small ridge keeps the map finite for a VAE whose latents barely vary (a random test VAE).
    gram = x.T @ x + 1e-6 * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(gram, x.T @ colours.double()).float()


def latents_to_rgb(latents: Tensor, rgb_map: Tensor) -> Tensor:
    """``[B, C, h, w]`` latents through a ``[C + 1, 3]`` map (``LatentCodec.rgb_map``): ``[B, 3, h, w]``.

    Not clamped, so the losses keep their gradients; clamp for display.
    """
    weights = rgb_map.to(latents.device, latents.dtype)
    return torch.einsum("bchw,cd->bdhw", latents, weights[:-1]) + weights[-1].view(1, 3, 1, 1)
