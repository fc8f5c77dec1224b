"""What the Origin model is trained against: the diffusion loss and the art losses.

Images are ``[B, 3, H, W]`` in [-1, 1], as the dataset gives them. The scheduler is diffusers'
``DDPMScheduler``: its ``alphas_cumprod`` (written ``ab`` below) define the noise schedule.

    x_t = sqrt(ab) * x0 + sqrt(1 - ab) * eps       SNR(t) = ab / (1 - ab)
    epsilon target: eps                           v target: sqrt(ab) * eps - sqrt(1 - ab) * x0

The art losses compare the model's *predicted clean image* with the real one. At high noise that
prediction is a blur (and, for epsilon models, divided by a tiny sqrt(ab)), so the trainer should
weight them per sample with ``art_loss_weights`` (the signal fraction ab): they then speak where the
image is already legible and stay quiet where it is mostly noise.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.origin.model.config import PREDICTION_TYPES
from engines.origin.model.pixels import chroma, gradient_magnitude, laplacian, luminance, shrink, sobel, to_unit

def per_sample_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


# --- the diffusion process -----------------------------------------------------------------------


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")


def _alpha_bar(scheduler, timesteps: Tensor, like: Tensor) -> Tensor:
    """``alphas_cumprod[t]`` shaped to broadcast over ``like``."""
    ab = scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()].to(like.device, torch.float32)
    return ab.view(-1, *([1] * (like.dim() - 1)))


def add_noise_target(scheduler, clean: Tensor, noise: Tensor, timesteps: Tensor,
                     prediction_type: str) -> Tensor:
    """What the model should output for ``x_t = scheduler.add_noise(clean, noise, timesteps)``."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(clean, noise, timesteps)


def predicted_clean(scheduler, x_t: Tensor, model_output: Tensor, timesteps: Tensor,
                    prediction_type: str) -> Tensor:
    """The clean image implied by the model's output: the exact inverse of ``add_noise``."""
    _check_prediction_type(prediction_type)
    ab = _alpha_bar(scheduler, timesteps, x_t)
    x_t, model_output = x_t.float(), model_output.float()
    if prediction_type == "epsilon":
        return (x_t - (1 - ab).sqrt() * model_output) / ab.sqrt()
    return ab.sqrt() * x_t - (1 - ab).sqrt() * model_output


def snr(scheduler, timesteps: Tensor) -> Tensor:
    ab = scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()].float()
    return ab / (1 - ab)


def min_snr_weights(snr_values: Tensor, gamma: float, prediction_type: str) -> Tensor:
    """Per-sample Min-SNR-gamma weights (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR").

    The paper's weight on the x0-loss is min(SNR, gamma). An epsilon loss equals the x0-loss
    divided by SNR, so its weight is min(SNR, gamma) / SNR. A v loss equals the x0-loss divided
    by SNR + 1; here its x0 weight is also kept at 1 or more ("truncated SNR", Salimans & Ho 2022),
    so the v weight is min(max(SNR, 1), gamma) / (SNR + 1). The paper's min(SNR, gamma) / (SNR + 1)
    goes to 0 with the SNR: on the zero_snr schedule the noisiest levels, where the picture's
    colours and layout are decided from the caption alone, would teach the model nothing
    (bench_origin_learns measured the background colour at chance with it). gamma <= 0 turns
    weighting off.
    """
    _check_prediction_type(prediction_type)
    if gamma <= 0:
        return torch.ones_like(snr_values)
    if prediction_type == "epsilon":
        return snr_values.clamp(max=gamma) / snr_values
    return snr_values.clamp(min=1.0, max=max(gamma, 1.0)) / (snr_values + 1)


def diffusion_loss(model_output: Tensor, target: Tensor, timesteps: Tensor, scheduler, min_snr_gamma: float,
                   *, prediction_type: Optional[str] = None) -> Tensor:
    """Min-SNR weighted MSE; the prediction type is the scheduler's unless given."""
    prediction_type = prediction_type or scheduler.config.prediction_type
    per_sample = per_sample_mean((model_output.float() - target.float()).square())
    weights = min_snr_weights(snr(scheduler, timesteps).to(per_sample.device), min_snr_gamma, prediction_type)
    return (per_sample * weights).mean()


def art_loss_weights(scheduler, timesteps: Tensor) -> Tensor:
    """Per-sample weights for ``ArtLosses``: the signal fraction ab = SNR / (SNR + 1), 1 at t=0, ~0 at t=T."""
    return scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()].float()


# --- the art losses --------------------------------------------------------------------------------


def line_art_loss(pred: Tensor, clean: Tensor) -> Tensor:
    """0.6 L1(Sobel edges) + 0.4 L1(Laplacian): the strokes and their crispness (second derivative)."""
    gp, gc = luminance(pred), luminance(clean)
    edges = per_sample_mean((gradient_magnitude(gp) - gradient_magnitude(gc)).abs())
    crisp = per_sample_mean((laplacian(gp) - laplacian(gc)).abs())
    return 0.6 * edges + 0.4 * crisp


def _channel_stats(rgb: Tensor) -> tuple[Tensor, Tensor]:
    flat = rgb.flatten(2)
    mean = flat.mean(dim=2)
    std = (flat.var(dim=2, unbiased=False) + 1e-8).sqrt()
    return mean, std


def color_loss(pred: Tensor, clean: Tensor) -> Tensor:
    """0.4 mean + 0.3 std (per channel) + 0.3 shading gradients (of the blurred luminance).

    Shading is the low-frequency part of the light: blurring first keeps line art out of it,
    so this term asks for the same soft light/shadow transitions, not the same strokes.
    """
    (mp, sp), (mc, sc) = _channel_stats(pred), _channel_stats(clean)
    mean_term = (mp - mc).abs().mean(dim=1)
    std_term = (sp - sc).abs().mean(dim=1)
    factor = max(1, min(pred.shape[-2:]) // 16)
    shade_p = F.avg_pool2d(luminance(pred), factor)
    shade_c = F.avg_pool2d(luminance(clean), factor)
    diff = shade_p - shade_c
    shading = (per_sample_mean((diff[..., :, 1:] - diff[..., :, :-1]).abs())
               + per_sample_mean((diff[..., 1:, :] - diff[..., :-1, :]).abs())) / 2
    # Times ``factor``: the slope per pixel, not per pooled cell, whatever the resolution.
    return 0.4 * mean_term + 0.3 * std_term + 0.3 * shading * factor


def _symmetry(gray: Tensor) -> Tensor:
    """Mean left-right difference: 0 for a perfectly mirror-symmetric image."""
    return per_sample_mean((gray - gray.flip(-1)).abs())


def _edge_proportions(gray: Tensor, cells: int = 4) -> Tensor:
    """How the edge energy divides over a cells x cells grid (sums to 1 per image)."""
    grid = F.adaptive_avg_pool2d(gradient_magnitude(gray), cells).flatten(1)
    return grid / (grid.sum(dim=1, keepdim=True) + 1e-8)


def anatomy_loss(pred: Tensor, clean: Tensor) -> Tensor:
    """Bilateral symmetry + Sobel edge proportions.

    Figures are roughly, not exactly, symmetric (a turned head, a raised arm), so the loss asks
    for the *same degree* of symmetry as the real image, and for its edges (limbs, features)
    in the same proportions across the frame.
    """
    gp, gc = luminance(pred), luminance(clean)
    symmetry = (_symmetry(gp) - _symmetry(gc)).abs()
    proportions = (_edge_proportions(gp) - _edge_proportions(gc)).abs().sum(dim=1)
    return 0.5 * symmetry + 0.5 * proportions


def _orientation_field(gray: Tensor, cells: int = 8) -> Tensor:
    """The structure tensor (gx^2 - gy^2, 2 gx gy) per cell, normalised: main line direction per region."""
    gx, gy = sobel(gray)
    field = torch.cat((gx.square() - gy.square(), 2 * gx * gy), dim=1)
    field = F.adaptive_avg_pool2d(field, cells)
    energy = F.adaptive_avg_pool2d(gx.square() + gy.square(), cells)
    return field / (energy + 1e-6)


def perspective_loss(pred: Tensor, clean: Tensor) -> Tensor:
    """Gradient-magnitude consistency at three scales, plus the orientation of lines per region.

    Perspective shows in where the structure lines are at every scale (a floor's receding
    tiles, a street's vanishing lines) and which way they run; magnitudes are normalised by
    their mean, so a lighter or darker image is not punished here.
    """
    gp, gc = luminance(pred), luminance(clean)
    total = torch.zeros(pred.shape[0], device=pred.device)
    for factor in (1, 2, 4):
        mp = gradient_magnitude(F.avg_pool2d(gp, factor) if factor > 1 else gp)
        mc = gradient_magnitude(F.avg_pool2d(gc, factor) if factor > 1 else gc)
        mp = mp / (per_sample_mean(mp).view(-1, 1, 1, 1) + 1e-3)
        mc = mc / (per_sample_mean(mc).view(-1, 1, 1, 1) + 1e-3)
        total = total + per_sample_mean((mp - mc).abs()) / 3
    orientation = per_sample_mean((_orientation_field(gp) - _orientation_field(gc)).abs())
    return 0.5 * total + 0.5 * orientation


def _chroma_histogram(rgb: Tensor, bins: int = 6, size: int = 32) -> Tensor:
    """Soft 2-D histogram of opponent colours (R-G, (R+G)/2-B), each pixel counted by its chroma.

    Grey pixels weigh nothing, so the histogram describes the palette's hues; Gaussian soft
    binning keeps it differentiable.
    """
    small = shrink(rgb, size)
    r, g, b = small.unbind(dim=1)
    a, y = (r - g).flatten(1), ((r + g) / 2 - b).flatten(1)
    weight = chroma(small).flatten(1)
    centres = torch.linspace(-1, 1, bins, device=rgb.device)
    width = 2.0 / (bins - 1)
    wa = torch.exp(-((a[..., None] - centres) / width).square())  # [B, P, bins]
    wy = torch.exp(-((y[..., None] - centres) / width).square())
    hist = torch.einsum("bp,bpi,bpj->bij", weight, wa, wy).flatten(1)
    return hist / (hist.sum(dim=1, keepdim=True) + 1e-6)


def color_harmony_loss(pred: Tensor, clean: Tensor) -> Tensor:
    """Over-saturation (chroma above the real image's, pixel by pixel) + clashing hues (hue histogram L1)."""
    over = per_sample_mean(F.relu(chroma(pred) - chroma(clean)))
    clash = (_chroma_histogram(pred) - _chroma_histogram(clean)).abs().sum(dim=1)
    return over + 0.5 * clash


class ArtLosses(nn.Module):
    """Each art loss of the predicted clean image against the real one, returned separately.

    ``forward(pred_clean, clean, sample_weights=None) -> {name: scalar}``; images in [-1, 1].
    The config's weights are applied by the trainer, so every term is logged even at weight 0.
    """

    NAMES = ("line_art", "color", "anatomy", "perspective", "color_harmony")

    def forward(self, pred_clean: Tensor, clean: Tensor,
                sample_weights: Optional[Tensor] = None) -> dict[str, Tensor]:
        if pred_clean.shape != clean.shape:
            raise ValueError(f"predicted {tuple(pred_clean.shape)} and clean {tuple(clean.shape)} "
                             "images differ in shape")
        # Sobel/Laplacian differences of nearly equal images vanish in fp16/bf16: full precision here.
        with torch.autocast(device_type=pred_clean.device.type, enabled=False):
            return self._losses(to_unit(pred_clean), to_unit(clean), sample_weights)

    def _losses(self, pred: Tensor, real: Tensor, sample_weights: Optional[Tensor]) -> dict[str, Tensor]:
        per_sample = {
            "line_art": line_art_loss(pred, real),
            "color": color_loss(pred, real),
            "anatomy": anatomy_loss(pred, real),
            "perspective": perspective_loss(pred, real),
            "color_harmony": color_harmony_loss(pred, real),
        }
        if sample_weights is None:
            return {name: value.mean() for name, value in per_sample.items()}
        w = sample_weights.to(pred.device, torch.float32)
        return {name: (value * w).mean() for name, value in per_sample.items()}
