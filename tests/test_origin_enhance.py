"""The enhancement chain: super-resolution network, bicubic fallback, detail, colour, the multi-scale pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engines.errors import CorruptModelError, InvalidRequestError
from engines.origin.generation.enhance import (EnhanceSettings, SuperResolution, adjust_colour, describe_upscaler, enhance,
                                    enhance_detail, find_sr_model, multiscale_clean, pil_to_tensor,
                                    sr_training_pairs, upscale_tensor)


def picture(width: int = 40, height: int = 24, seed: int = 0) -> Image.Image:
    """Soft colour blobs with a hard ink edge: something the enhancers can visibly act on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([0.5 + 0.2 * np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in range(3)], axis=-1)
    rgb[:, width // 2: width // 2 + 2] = 0.05  # an ink line
    rgb += rng.normal(0, 0.02, rgb.shape)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def chroma(x: torch.Tensor) -> float:
    return float((x.amax(1) - x.amin(1)).mean())


def randomised(model: SuperResolution, seed: int = 0) -> SuperResolution:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("scale", [2, 4])
def test_super_resolution_shapes_and_untrained_is_bicubic(scale: int) -> None:
    x = torch.rand(2, 3, 12, 10) * 2 - 1
    model = SuperResolution(scale=scale, channels=8, num_blocks=2)
    out = model(x)
    assert out.shape == (2, 3, 12 * scale, 10 * scale)
    bicubic = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    assert torch.allclose(out, bicubic)  # zero-initialised output layer
    with pytest.raises(InvalidRequestError, match="2x or 4x"):
        SuperResolution(scale=3)


def test_save_load_roundtrip_and_damaged_file(tmp_path: Path) -> None:
    model = randomised(SuperResolution(scale=2, channels=8, num_blocks=2)).eval()
    run = tmp_path / "run"
    path = run / "sr" / "sr.safetensors"
    model.save(path)
    assert find_sr_model(run) == path and path.with_suffix(".json").is_file()
    loaded = SuperResolution.load(path)
    assert loaded.config == {"scale": 2, "channels": 8, "num_blocks": 2}
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(path.parent.glob(".*tmp"))  # no temporary files left behind
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptModelError, match="damaged"):
        SuperResolution.load(path)
    assert find_sr_model(tmp_path / "other-run") is None


def test_bicubic_fallback_and_sr_model_choice() -> None:
    image = picture()
    x = pil_to_tensor(image)
    bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert torch.equal(upscale_tensor(x, 2, None), bicubic)
    assert describe_upscaler(2, None) == "bicubic" and describe_upscaler(1, None) == "none"
    two = randomised(SuperResolution(scale=2, channels=8, num_blocks=1)).eval()
    four = SuperResolution(scale=4, channels=8, num_blocks=1)
    assert describe_upscaler(4, two) == "super-resolution 2x twice"
    assert upscale_tensor(x, 4, two).shape[-2:] == (96, 160)
    assert not torch.equal(upscale_tensor(x, 2, two), bicubic)
    assert describe_upscaler(2, four) == "bicubic"  # a 4x model cannot do 2x: bicubic instead
    off = enhance(image, upscale=2, sr_model=None, **EnhanceSettings.off().as_dict())
    expected = ((bicubic[0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(off), expected)


def test_colour_moves_the_right_way() -> None:
    x = pil_to_tensor(picture())
    same = adjust_colour(x, vibrancy=0, saturation=1, contrast=1, brightness=1)
    assert torch.allclose(same, x, atol=1e-6)
    assert chroma(adjust_colour(x, vibrancy=0.5, saturation=1, contrast=1, brightness=1)) > chroma(x)
    assert chroma(adjust_colour(x, vibrancy=-0.5, saturation=1, contrast=1, brightness=1)) < chroma(x)
    assert chroma(adjust_colour(x, vibrancy=0, saturation=1.5, contrast=1, brightness=1)) > chroma(x)
    assert adjust_colour(x, vibrancy=0, saturation=1, contrast=1.5, brightness=1).std() > x.std()
    assert adjust_colour(x, vibrancy=0, saturation=1, contrast=1, brightness=1.2).mean() > x.mean()
    # vibrancy lifts muted colours more than vivid ones
    muted = torch.tensor([0.1, 0.0, -0.1]).view(1, 3, 1, 1)
    vivid = torch.tensor([0.9, -0.9, -0.9]).view(1, 3, 1, 1)
    gain = [chroma(adjust_colour(c, vibrancy=0.5, saturation=1, contrast=1, brightness=1)) / chroma(c)
            for c in (muted, vivid)]
    assert gain[0] > gain[1]


def test_detail_and_multiscale_pass() -> None:
    x = pil_to_tensor(picture(64, 64))

    def high_freq(t: torch.Tensor) -> float:
        return float((t - F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)).abs().mean())

    assert high_freq(enhance_detail(x, 1.0)) > high_freq(x)
    assert torch.equal(enhance_detail(x, 0.0), x)
    flat = torch.zeros(1, 3, 64, 64)
    flat[..., 32:] = 0.8  # one hard edge
    noisy = flat + 0.05 * torch.randn(flat.shape, generator=torch.Generator().manual_seed(0))
    cleaned = multiscale_clean(noisy, 1.0)
    assert (cleaned - flat)[..., 4:28].std() < (noisy - flat)[..., 4:28].std()  # speckle reduced
    assert cleaned[..., 40:].mean() - cleaned[..., :24].mean() > 0.7  # the edge survives
    assert torch.equal(multiscale_clean(noisy, 0.0), noisy)


@pytest.mark.parametrize("upscale", [1, 2, 4])
def test_chain_keeps_size_times_upscale(upscale: int) -> None:
    image = picture(40, 24)
    out = enhance(image, upscale=upscale, sr_model=None, **EnhanceSettings().as_dict())
    assert out.size == (40 * upscale, 24 * upscale) and out.mode == "RGB"
    with pytest.raises(InvalidRequestError, match="Upscale must be one of"):
        enhance(image, upscale=3)
    with pytest.raises(InvalidRequestError, match="detail"):
        EnhanceSettings(detail=5).check()


def test_sr_training_pairs() -> None:
    high = torch.rand(3, 33, 35) * 2 - 1
    low, cropped = sr_training_pairs(high, 2)
    assert low.shape == (1, 3, 16, 17) and cropped.shape == (1, 3, 32, 34)
    assert torch.equal(cropped[0], high[:, :32, :34])
    low4, high4 = sr_training_pairs(picture(40, 24), 4)
    assert low4.shape == (1, 3, 6, 10) and high4.shape == (1, 3, 24, 40)
    assert low4.min() >= -1 and low4.max() <= 1
    batch_low, _ = sr_training_pairs(torch.zeros(5, 3, 16, 16), 4)
    assert batch_low.shape == (5, 3, 4, 4)
    with pytest.raises(InvalidRequestError):
        sr_training_pairs(torch.zeros(3, 2, 2), 4)
