"""What each expert learns to know about the picture: one small target vector per expert.

Every expert has an auxiliary head (``experts.ExpertHeads``) that predicts its target from the
expert's state; the target is computed here from the *clean* training image. That is what makes
an expert "the light expert" rather than one more MLP: its state must carry the light.

All targets are cheap (a few convolutions and poolings on a 64 px copy of the image, however
large the training images are), deterministic (no k-means, no randomness: the same image gives
the same target on every machine) and computed without gradients. Each is scaled by a fixed
constant so the typical target has values of order 0.1 to 1, which keeps the 14 auxiliary
losses on comparable scales.

| expert    | target                                                                  | size |
|-----------|-------------------------------------------------------------------------|------|
| line_art  | Sobel edge-magnitude map, 8x8                                            | 64   |
| color     | mean and std of R, G, B + a 4-colour palette (means of luminance quartiles) | 18 |
| light     | luminance map 4x4 + 8-bin luminance histogram                            | 24   |
| anatomy   | left-right symmetry profile of luminance and of edges, 8 horizontal bands | 16  |
| scene     | colour layout: R, G, B at 4x4                                            | 48   |
| camera    | gradient-orientation histogram (8 bins) per image quadrant               | 32   |
| story     | where the eye goes: edge-energy centroid, spread, and 4x4 distribution   | 20   |
| structure | contrast-normalised luminance layout, 8x8 (shape without the lighting)   | 64   |
| precision | high-frequency energy per octave (3) + finest-octave energy map 4x4      | 19   |
| memory    | 8x8 low-frequency DCT of a 32x32 grey copy (the perceptual-hash fingerprint) | 64 |
| safety    | skin-tone coverage map 4x4 + clipped highlight and shadow fractions      | 18   |
| editing   | local contrast (luminance std) per cell, 8x8: where detail must survive edits | 64 |
| quality   | sharpness, noise, contrast, colourfulness, dynamic range                 | 5    |
| style     | RGB colour histogram, 4x4x4 bins (square-rooted)                         | 64   |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from engines.origin.model.pixels import laplacian, luminance, sobel, to_unit

WORK_SIZE = 64  # every target is computed on a copy this size: its cost does not grow with resolution


@dataclass
class ImageViews:
    """The shared pieces every target is built from, computed once per batch."""

    rgb: Tensor  # [B, 3, 64, 64] in [0, 1]
    gray: Tensor  # [B, 1, 64, 64]
    gx: Tensor
    gy: Tensor
    edges: Tensor  # Sobel magnitude

    @classmethod
    def of(cls, clean: Tensor) -> "ImageViews":
        rgb = F.interpolate(to_unit(clean), size=(WORK_SIZE, WORK_SIZE), mode="area").clamp(0, 1)
        gray = luminance(rgb)
        gx, gy = sobel(gray)
        return cls(rgb, gray, gx, gy, torch.sqrt(gx.square() + gy.square()))


def _grid(x: Tensor, cells: int) -> Tensor:
    return F.adaptive_avg_pool2d(x, cells).flatten(1)


def _soft_histogram(values: Tensor, bins: int, weights: Tensor | None = None, *,
                    circular: bool = False) -> Tensor:
    """Histogram of ``[B, N]`` values in [0, 1] with linear (two-bin) assignment, normalised to sum 1.

    ``circular``: 1 wraps round to 0 (angles), so the last bin neighbours the first.
    """
    if circular:
        pos = values.clamp(0, 1) * bins
        low = pos.floor()
        high = (low + 1) % bins
        low = low % bins
    else:
        pos = values.clamp(0, 1) * (bins - 1)
        low = pos.floor().clamp(max=bins - 1)
        high = (low + 1).clamp(max=bins - 1)
    frac = pos - pos.floor()
    w = torch.ones_like(values) if weights is None else weights
    hist = torch.zeros(values.shape[0], bins, device=values.device)
    hist.scatter_add_(1, low.long(), w * (1 - frac))
    hist.scatter_add_(1, high.long(), w * frac)
    return hist / (hist.sum(dim=1, keepdim=True) + 1e-8)


def _quadrants(x: Tensor) -> list[Tensor]:
    return [block.flatten(1) for rows in x.chunk(2, dim=2) for block in rows.chunk(2, dim=3)]


# --- one function per expert ----------------------------------------------------------------------


def line_art_target(v: ImageViews) -> Tensor:
    return _grid(v.edges, 8) * 8


def color_target(v: ImageViews) -> Tensor:
    flat = v.rgb.flatten(2)  # [B, 3, P]
    order = v.gray.flatten(1).argsort(dim=1)  # stable enough: ties only reorder equal-brightness pixels
    sorted_rgb = flat.gather(2, order[:, None].expand_as(flat))
    palette = torch.stack([chunk.mean(dim=2) for chunk in sorted_rgb.chunk(4, dim=2)], dim=1).flatten(1)
    return torch.cat((flat.mean(dim=2), flat.std(dim=2, unbiased=False) * 2, palette), dim=1)


def light_target(v: ImageViews) -> Tensor:
    return torch.cat((_grid(v.gray, 4), _soft_histogram(v.gray.flatten(1), 8) * 4), dim=1)


def anatomy_target(v: ImageViews) -> Tensor:
    def profile(x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d((x - x.flip(-1)).abs(), (8, 1)).flatten(1)

    return torch.cat((profile(v.gray) * 4, profile(v.edges) * 8), dim=1)


def scene_target(v: ImageViews) -> Tensor:
    return _grid(v.rgb, 4)


def camera_target(v: ImageViews) -> Tensor:
    # Orientation mod pi (a line has no direction), weighted by edge strength: dominant line
    # directions per quadrant tell eye level, tilt and vanishing directions apart.
    angle = (torch.atan2(v.gy, v.gx) % math.pi) / math.pi
    hists = [_soft_histogram(a, 8, w, circular=True) for a, w in zip(_quadrants(angle), _quadrants(v.edges))]
    return torch.cat(hists, dim=1) * 2


def story_target(v: ImageViews) -> Tensor:
    energy = v.edges.flatten(1)
    energy = energy / (energy.sum(dim=1, keepdim=True) + 1e-8)
    coords = torch.linspace(0, 1, WORK_SIZE, device=energy.device)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    cx, cy = (energy * xs).sum(1), (energy * ys).sum(1)
    sx = ((energy * (xs - cx[:, None]).square()).sum(1) + 1e-8).sqrt()
    sy = ((energy * (ys - cy[:, None]).square()).sum(1) + 1e-8).sqrt()
    layout = _grid(v.edges / (v.edges.mean(dim=(1, 2, 3), keepdim=True) + 1e-6), 4) / 4
    return torch.cat((torch.stack((cx, cy, sx * 2, sy * 2), dim=1), layout), dim=1)


def structure_target(v: ImageViews) -> Tensor:
    grid = _grid(v.gray, 8)
    return (grid - grid.mean(dim=1, keepdim=True)) / (grid.std(dim=1, keepdim=True) + 0.05)


def precision_target(v: ImageViews) -> Tensor:
    # A Laplacian pyramid: each octave's residual is detail the coarser copy cannot hold.
    bands, image = [], v.gray
    for _ in range(3):
        coarse = F.avg_pool2d(image, 2)
        up = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)
        bands.append((image - up).abs())
        image = coarse
    energies = torch.stack([band.flatten(1).mean(1) for band in bands], dim=1)
    return torch.cat((energies * 10, _grid(bands[0], 4) * 10), dim=1)


def _dct_matrix(n: int, device: torch.device) -> Tensor:
    k = torch.arange(n, device=device, dtype=torch.float32)
    basis = torch.cos(math.pi / n * (k[None] + 0.5) * k[:, None])
    basis[0] /= math.sqrt(2)
    return basis * math.sqrt(2 / n)


def memory_target(v: ImageViews) -> Tensor:
    # The perceptual-hash idea (pHash): the lowest DCT frequencies of a small grey copy identify
    # an image (a character, a recurring background) while ignoring detail and noise.
    small = F.interpolate(v.gray, size=(32, 32), mode="area")[:, 0]
    d = _dct_matrix(32, small.device)
    coeffs = (d @ small @ d.T)[:, :8, :8].flatten(1)
    return coeffs / 8


def safety_target(v: ImageViews) -> Tensor:
    # Skin-tone pixels by the YCbCr rule of Chai & Ngan (1999): Cb in [77, 127], Cr in [133, 173]
    # on the 0-255 scale; soft edges (sigmoids) instead of hard thresholds.
    r, g, b = (v.rgb * 255).unbind(dim=1)
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b

    def inside(x: Tensor, lo: float, hi: float) -> Tensor:
        return torch.sigmoid((x - lo) / 3) * torch.sigmoid((hi - x) / 3)

    skin = (inside(cb, 77, 127) * inside(cr, 133, 173))[:, None]
    clipped_high = (v.rgb.amax(dim=1) > 0.98).float().flatten(1).mean(1)
    clipped_low = (v.rgb.amin(dim=1) < 0.02).float().flatten(1).mean(1)
    return torch.cat((_grid(skin, 4), torch.stack((clipped_high, clipped_low), dim=1)), dim=1)


def editing_target(v: ImageViews) -> Tensor:
    mean = F.avg_pool2d(v.gray, 8)
    var = F.avg_pool2d(v.gray.square(), 8) - mean.square()
    return (var.clamp(min=0) + 1e-8).sqrt().flatten(1) * 4


def quality_target(v: ImageViews) -> Tensor:
    lap = laplacian(v.gray).flatten(1)
    sharpness = lap.var(dim=1, unbiased=False).sqrt()
    # Immerkaer (1996): the median absolute Laplacian over flat pixels estimates the noise level.
    noise = lap.abs().median(dim=1).values
    gray = v.gray.flatten(1)
    contrast = gray.std(dim=1, unbiased=False)
    r, g, b = v.rgb.flatten(2).unbind(dim=1)
    rg, yb = r - g, (r + g) / 2 - b  # Hasler & Suesstrunk (2003) colourfulness
    colourful = (rg.std(1, unbiased=False).square() + yb.std(1, unbiased=False).square()).sqrt() \
        + 0.3 * (rg.mean(1).square() + yb.mean(1).square()).sqrt()
    q = torch.quantile(gray, torch.tensor([0.02, 0.98], device=gray.device), dim=1)
    dynamic_range = q[1] - q[0]
    return torch.stack((sharpness * 4, noise * 10, contrast * 2, colourful * 2, dynamic_range), dim=1)


def style_target(v: ImageViews) -> Tensor:
    index = (v.rgb * 3.999).floor().long()  # 4 levels per channel
    flat = (index[:, 0] * 16 + index[:, 1] * 4 + index[:, 2]).flatten(1)
    hist = torch.zeros(flat.shape[0], 64, device=flat.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    return (hist / flat.shape[1]).sqrt() * 2


@dataclass(frozen=True)
class ExpertTarget:
    size: int
    fn: Callable[[ImageViews], Tensor]


EXPERT_TARGETS: dict[str, ExpertTarget] = {
    "line_art": ExpertTarget(64, line_art_target),
    "color": ExpertTarget(18, color_target),
    "light": ExpertTarget(24, light_target),
    "anatomy": ExpertTarget(16, anatomy_target),
    "scene": ExpertTarget(48, scene_target),
    "camera": ExpertTarget(32, camera_target),
    "story": ExpertTarget(20, story_target),
    "structure": ExpertTarget(64, structure_target),
    "precision": ExpertTarget(19, precision_target),
    "memory": ExpertTarget(64, memory_target),
    "safety": ExpertTarget(18, safety_target),
    "editing": ExpertTarget(64, editing_target),
    "quality": ExpertTarget(5, quality_target),
    "style": ExpertTarget(64, style_target),
}


def check_expert_names(names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in EXPERT_TARGETS]
    if unknown:
        raise ValueError(f"unknown expert {unknown[0]!r}: each expert needs a target, "
                         f"choose from {', '.join(EXPERT_TARGETS)}")


@torch.no_grad()
def compute_targets(clean: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
    """``{expert: [B, size]}`` float32 targets of clean images in [-1, 1]."""
    check_expert_names(names)
    with torch.autocast(device_type=clean.device.type, enabled=False):
        views = ImageViews.of(clean)
        return {name: EXPERT_TARGETS[name].fn(views).float() for name in names}
