"""The Origin losses: diffusion targets and their inverse, Min-SNR weights, the art losses, expert targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from engines.origin.model.expert_targets import EXPERT_TARGETS, compute_targets
from engines.origin.training.losses import (
    ArtLosses,
    add_noise_target,
    art_loss_weights,
    diffusion_loss,
    min_snr_weights,
    predicted_clean,
    snr,
)


def manga_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Flat-coloured circles with dark outlines and a box on tinted paper: ``[n, 3, size, size]``, [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        img = torch.ones(3, size, size) * (0.8 + 0.2 * torch.rand(3, 1, 1, generator=g))
        for _ in range(3):
            cx, cy, r = torch.rand(3, generator=g) * torch.tensor([1, 1, 0.25]) + torch.tensor([0, 0, 0.1])
            dist = ((xs - cx) ** 2 + (ys - cy) ** 2).sqrt()
            img = torch.where(dist < r, torch.rand(3, 1, 1, generator=g).expand(3, size, size), img)
            img = torch.where((dist - r).abs() < 1.5 / size, torch.zeros_like(img), img)
        x0, y0 = (torch.rand(2, generator=g) * 0.6).tolist()
        box = (xs > x0) & (xs < x0 + 0.3) & (ys > y0) & (ys < y0 + 0.3)
        img = torch.where(box, torch.rand(3, 1, 1, generator=g).expand(3, size, size), img)
        images.append(img * 2 - 1)
    return torch.stack(images)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return manga_images(4, 64)


def scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)


# --- diffusion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_clean_inverts_add_noise(images: torch.Tensor, prediction_type: str) -> None:
    sched = scheduler(prediction_type)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([0, 10, 500, 999])
    x_t = sched.add_noise(images, noise, timesteps)
    target = add_noise_target(sched, images, noise, timesteps, prediction_type)
    recovered = predicted_clean(sched, x_t, target, timesteps, prediction_type)
    # At t=999 an epsilon model divides by sqrt(ab) ~ 0.006: float32 rounding grows 150-fold.
    torch.testing.assert_close(recovered, images, atol=2e-3, rtol=0)


def test_targets_are_noise_and_velocity(images: torch.Tensor) -> None:
    sched = scheduler("v_prediction")
    noise = torch.randn_like(images)
    timesteps = torch.tensor([1, 250, 600, 900])
    assert add_noise_target(sched, images, noise, timesteps, "epsilon") is noise
    ab = sched.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = ab.sqrt() * noise - (1 - ab).sqrt() * images
    torch.testing.assert_close(add_noise_target(sched, images, noise, timesteps, "v_prediction"), expected)


def test_unknown_prediction_type_is_one_clear_error(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="sample"):
        add_noise_target(scheduler(), images, images, torch.zeros(4, dtype=torch.long), "sample")


def test_min_snr_weights_follow_the_papers_for_each_prediction_type() -> None:
    sched = scheduler()
    timesteps = torch.tensor([0, 50, 200, 500, 999])
    ab = sched.alphas_cumprod[timesteps]
    expected_snr = ab / (1 - ab)
    torch.testing.assert_close(snr(sched, timesteps), expected_snr)
    gamma = 5.0
    eps = min_snr_weights(expected_snr, gamma, "epsilon")
    v = min_snr_weights(expected_snr, gamma, "v_prediction")
    torch.testing.assert_close(eps, torch.minimum(expected_snr, torch.tensor(gamma)) / expected_snr)
    truncated = expected_snr.clamp(min=1.0, max=gamma)  # Min-SNR's clip with Salimans & Ho's floor of 1
    torch.testing.assert_close(v, truncated / (expected_snr + 1))
    # Low noise (SNR > gamma) is down-weighted; at high noise both keep (almost) weight 1: the
    # noisiest levels, where the caption alone decides the colours, still teach the model.
    assert eps[0] < 0.01 and eps[-1] == 1.0
    assert v[0] < 0.01 and v[-1] > 0.99 and (v <= 1).all()
    zero_snr = min_snr_weights(torch.tensor([0.0, 0.5, 1.0, 4.0]), gamma, "v_prediction")
    torch.testing.assert_close(zero_snr, torch.tensor([1.0, 1 / 1.5, 0.5, 0.8]))
    assert (min_snr_weights(expected_snr, 0.0, "epsilon") == 1).all()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusion_loss_is_the_weighted_mse(prediction_type: str) -> None:
    sched = scheduler(prediction_type)
    g = torch.Generator().manual_seed(0)
    output, target = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    timesteps = torch.tensor([5, 300, 990])
    weights = min_snr_weights(snr(sched, timesteps), 5.0, prediction_type)
    expected = ((output - target).square().mean(dim=(1, 2, 3)) * weights).mean()
    torch.testing.assert_close(diffusion_loss(output, target, timesteps, sched, 5.0), expected)
    plain = diffusion_loss(output, target, timesteps, sched, 0.0)
    torch.testing.assert_close(plain, F.mse_loss(output, target))


def test_art_loss_weights_are_the_signal_fraction() -> None:
    sched = scheduler()
    w = art_loss_weights(sched, torch.tensor([0, 999]))
    assert w[0] > 0.99 and w[1] < 1e-3


# --- art losses ---------------------------------------------------------------------------------


def test_art_losses_are_zero_for_identical_images(images: torch.Tensor) -> None:
    losses = ArtLosses()(images, images.clone())
    assert set(losses) == set(ArtLosses.NAMES)
    for name, value in losses.items():
        assert value.item() == pytest.approx(0.0, abs=1e-6), name


@pytest.mark.parametrize("distortion", ["noise", "blur"])
def test_each_art_loss_grows_with_distortion(images: torch.Tensor, distortion: str) -> None:
    art = ArtLosses()
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))

    def distort(amount: int) -> torch.Tensor:
        if distortion == "noise":
            return images + 0.1 * amount * noise
        k = 2 * amount + 1
        return F.avg_pool2d(F.pad(images, (k // 2,) * 4, mode="replicate"), k, stride=1)

    series = [art(distort(a), images) for a in (1, 2, 4)]
    for name in ArtLosses.NAMES:
        values = [s[name].item() for s in series]
        assert 0 < values[0] < values[1] < values[2], (name, values)


def test_colour_harmony_punishes_over_saturation(images: torch.Tensor) -> None:
    art = ArtLosses()
    grey = images.mean(dim=1, keepdim=True)
    louder = (grey + (images - grey) * 1.8).clamp(-1, 1)
    quieter = grey + (images - grey) * 0.5
    assert art(louder, images)["color_harmony"] > art(quieter, images)["color_harmony"] * 0.5 > 0


def test_art_losses_have_finite_gradients_on_a_flat_image() -> None:
    pred = torch.zeros(2, 3, 32, 32, requires_grad=True)  # sqrt(0) and 0/0 are where losses go NaN
    clean = manga_images(2, 32)
    losses = ArtLosses()(pred, clean)
    sum(losses.values()).backward()
    assert torch.isfinite(pred.grad).all()
    assert all(torch.isfinite(v) for v in losses.values())


def test_sample_weights_scale_each_sample(images: torch.Tensor) -> None:
    art = ArtLosses()
    noisy = images + 0.2
    full = art(noisy, images)
    none = art(noisy, images, torch.zeros(4))
    assert all(v.item() == 0 for v in none.values())
    half = art(noisy, images, torch.full((4,), 0.5))
    for name in ArtLosses.NAMES:
        assert half[name].item() == pytest.approx(full[name].item() / 2, rel=1e-5)


# --- expert targets -----------------------------------------------------------------------------


def test_expert_targets_have_their_sizes_and_are_deterministic(images: torch.Tensor) -> None:
    names = tuple(EXPERT_TARGETS)
    first, second = compute_targets(images, names), compute_targets(images.clone(), names)
    for name in names:
        assert first[name].shape == (4, EXPERT_TARGETS[name].size), name
        assert torch.isfinite(first[name]).all(), name
        assert torch.equal(first[name], second[name]), name
        # A target that is the same for every image teaches its expert nothing.
        assert first[name].std(dim=0).max() > 1e-3, name


def test_expert_targets_do_not_depend_on_training_resolution(images: torch.Tensor) -> None:
    names = ("line_art", "color", "light", "scene", "structure", "style")
    small = compute_targets(images, names)
    large = compute_targets(F.interpolate(images, scale_factor=2.0, mode="nearest"), names)
    for name in names:
        torch.testing.assert_close(small[name], large[name], atol=0.05, rtol=0.05, msg=name)
