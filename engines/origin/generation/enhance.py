"""After generation: super-resolution, then detail, colour and a multi-scale clean-up pass.

The chain, in order:

1. **Super-resolution** 2x/4x: a small residual network with sub-pixel convolution (ESPCN's
   PixelShuffle, Shi et al. 2016; EDSR-style residual blocks without batch norm, Lim et al.
   2017), trained per artist by ``train --stage sr`` on downscaled copies of their dataset. It
   predicts a correction on top of bicubic upsampling, so an untrained or missing model means
   plain bicubic, never a worse image.
2. **Detail**: unsharp masking at three radii (fine lines, hatching, shapes), so ink lines get
   crisper without ringing on flat colour that a single large radius would add.
3. **Colour**: vibrancy (raises weak saturation more than strong, so skin and sky do not
   clip), then global saturation, contrast and brightness.
4. **Multi-scale pass**: a Laplacian pyramid whose finest band is soft-thresholded, removing the
   speckle that upscaling and sharpening leave in flat areas while keeping real edges.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from engines.errors import CorruptModelError, InvalidRequestError
from engines.files import atomic_write
from engines.origin.model.pixels import luminance, pil_to_tensor, tensor_to_pil

log = logging.getLogger(__name__)

UPSCALES = (1, 2, 4)


# -- the super-resolution network -------------------------------------------------------------
class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # EDSR's residual scaling keeps deep stacks stable without batch norm.
        return x + 0.1 * self.body(x)


class SuperResolution(nn.Module):
    """Residual blocks + PixelShuffle; input and output in [-1, 1]; output = bicubic + learned detail."""

    def __init__(self, *, scale: int = 2, channels: int = 32, num_blocks: int = 4) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise InvalidRequestError(f"A super-resolution model upscales 2x or 4x, not {scale}x.")
        self.scale, self.channels, self.num_blocks = scale, channels, num_blocks
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(_ResidualBlock(channels) for _ in range(num_blocks)))
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        up: list[nn.Module] = []
        for _ in range(2 if scale == 4 else 1):  # 4x as two 2x shuffles, as in EDSR
            up += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        # Zero-initialised output: a freshly built model is exactly bicubic, and training only
        # ever has to learn the difference.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def config(self) -> dict[str, int]:
        return {"scale": self.scale, "channels": self.channels, "num_blocks": self.num_blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        features = self.head(x)
        features = features + self.body_tail(self.blocks(features))
        return base + self.tail(self.upsample(features))

    def save(self, path: Path) -> None:
        """Write ``path`` (safetensors weights) and ``path.with_suffix('.json')`` (config), atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"config": json.dumps(self.config)}))
        atomic_write(path.with_suffix(".json"),
                lambda tmp: tmp.write_text(json.dumps(self.config, indent=2), encoding="utf-8"))

    @classmethod
    def load(cls, path: Path) -> "SuperResolution":
        """A saved model; a damaged file raises ``CorruptModelError`` with one sentence."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        try:
            config_file = path.with_suffix(".json")
            config = json.loads(config_file.read_text(encoding="utf-8"))
            model = cls(**{k: int(config[k]) for k in ("scale", "channels", "num_blocks")})
            model.load_state_dict(load_file(str(path)))
        except FileNotFoundError as error:
            raise CorruptModelError(f"The super-resolution model {path} is incomplete ({error.filename} is missing).") from error
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as error:
            raise CorruptModelError(f"The super-resolution model {path} is damaged ({error}); train it again.") from error
        return model.eval()


def find_sr_model(run_dir: Path) -> Optional[Path]:
    """``<run>/sr/sr.safetensors`` when ``train --stage sr`` has written it."""
    path = Path(run_dir) / "sr" / "sr.safetensors"
    return path if path.is_file() else None


def sr_training_pairs(image: Union[torch.Tensor, Any], scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) pairs for the SR stage: ``high`` cropped to a multiple of ``scale``, ``low`` its
    antialiased bicubic downscale. Takes a [-1, 1] tensor ([3, H, W] or [B, 3, H, W]) or a PIL image.
    """
    if scale not in (2, 4):
        raise InvalidRequestError(f"Super-resolution pairs are 2x or 4x, not {scale}x.")
    high = image if isinstance(image, torch.Tensor) else pil_to_tensor(image)
    if high.dim() == 3:
        high = high.unsqueeze(0)
    h, w = (high.shape[-2] // scale) * scale, (high.shape[-1] // scale) * scale
    if h == 0 or w == 0:
        raise InvalidRequestError(f"An image of {high.shape[-1]}x{high.shape[-2]} px is too small for {scale}x pairs.")
    high = high[..., :h, :w].float()
    # Antialiased downscaling, as a camera or a resized upload would produce; without it the
    # model learns to undo aliasing that real low-resolution images do not have.
    low = F.interpolate(high, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return low.clamp(-1, 1), high


# -- the enhancement steps ---------------------------------------------------------------------
def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    kernel = max(3, int(2 * round(3 * sigma) + 1))
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def upscale_tensor(x: torch.Tensor, factor: int, sr_model: Optional[SuperResolution]) -> torch.Tensor:
    """Upscale [1, 3, H, W] by ``factor`` with the SR model where it fits, else bicubic."""
    if factor == 1:
        return x
    if sr_model is not None and sr_model.scale in (factor, 2) and factor % sr_model.scale == 0:
        param = next(sr_model.parameters())
        with torch.no_grad():
            out = x.to(param.device, param.dtype)
            for _ in range(factor // sr_model.scale):  # a 2x model applied twice for 4x
                out = sr_model(out).clamp(-1, 1)
        return out.to(x.device, x.dtype)
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)


def describe_upscaler(factor: int, sr_model: Optional[SuperResolution]) -> str:
    """What ``upscale_tensor`` will use, for the PNG metadata and the log."""
    if factor == 1:
        return "none"
    if sr_model is not None and sr_model.scale in (factor, 2) and factor % sr_model.scale == 0:
        return f"super-resolution {sr_model.scale}x" + (" twice" if factor != sr_model.scale else "")
    return "bicubic"


def enhance_detail(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Multi-scale unsharp mask; radii follow the image size so 64 px and 2048 px look alike."""
    if strength <= 0:
        return x
    base = max(0.5, min(x.shape[-2:]) / 256)
    detail = torch.zeros_like(x)
    for sigma, weight in ((base, 0.5), (2 * base, 0.3), (4 * base, 0.2)):
        detail += weight * (x - _gaussian_blur(x, sigma))
    return (x + strength * detail).clamp(-1, 1)


def adjust_colour(x: torch.Tensor, *, vibrancy: float, saturation: float, contrast: float,
                  brightness: float) -> torch.Tensor:
    """Vibrancy, then saturation, contrast and brightness (1.0 = unchanged), in [0, 1] RGB."""
    rgb = (x + 1) / 2
    if vibrancy:
        luma = luminance(rgb)
        chroma = rgb.amax(1, keepdim=True) - rgb.amin(1, keepdim=True)  # 0 grey .. 1 pure colour
        rgb = luma + (rgb - luma) * (1 + vibrancy * (1 - chroma))
    if saturation != 1.0:
        luma = luminance(rgb)
        rgb = luma + (rgb - luma) * saturation
    if contrast != 1.0:
        mean = luminance(rgb).mean(dim=(2, 3), keepdim=True)
        rgb = mean + (rgb - mean) * contrast
    rgb = rgb * brightness
    return (rgb.clamp(0, 1) * 2 - 1)


def multiscale_clean(x: torch.Tensor, strength: float, levels: int = 3) -> torch.Tensor:
    """Laplacian pyramid with the finest band soft-thresholded: speckle goes, edges stay."""
    if strength <= 0 or min(x.shape[-2:]) < 2 ** (levels + 1):
        return x
    bands, current = [], x
    for _ in range(levels):
        low = F.avg_pool2d(current, 2)
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = low
    # Threshold from the band's own spread (median absolute deviation), so the pass adapts to
    # how noisy this image is instead of a fixed number that suits one style only.
    fine = bands[0]
    sigma = fine.abs().flatten(1).median(dim=1).values.view(-1, 1, 1, 1) / 0.6745
    threshold = strength * sigma
    bands[0] = torch.sign(fine) * (fine.abs() - threshold).clamp(min=0)
    for band in reversed(bands):
        current = F.interpolate(current, size=band.shape[-2:], mode="bilinear", align_corners=False) + band
    return current.clamp(-1, 1)


@dataclass(frozen=True)
class EnhanceSettings:
    """Strengths of the steps after super-resolution; ``EnhanceSettings.off()`` changes nothing."""

    detail: float = 0.3  # multi-scale sharpening, 0 = off, 1 = strong
    vibrancy: float = 0.15  # boosts muted colours more than vivid ones, 0 = off
    saturation: float = 1.0  # 1 = unchanged
    contrast: float = 1.0
    brightness: float = 1.0
    clean: float = 0.5  # multi-scale speckle removal, 0 = off

    @classmethod
    def off(cls) -> "EnhanceSettings":
        return cls(detail=0.0, vibrancy=0.0, saturation=1.0, contrast=1.0, brightness=1.0, clean=0.0)

    def check(self) -> None:
        limits = {"detail": (0, 2), "vibrancy": (-1, 2), "saturation": (0, 3), "contrast": (0, 3),
                  "brightness": (0, 3), "clean": (0, 3)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise InvalidRequestError(f"Enhancement '{name}' must be between {low} and {high}, not {value}.")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def enhance(image: Any, *, upscale: int = 1, sr_model: Optional[SuperResolution] = None,
            detail: float = 0.3, vibrancy: float = 0.15, saturation: float = 1.0, contrast: float = 1.0,
            brightness: float = 1.0, clean: float = 0.5) -> Any:
    """The whole chain on a PIL image; the result is ``upscale`` times larger."""
    if upscale not in UPSCALES:
        raise InvalidRequestError(f"Upscale must be one of {', '.join(map(str, UPSCALES))}, not {upscale}.")
    x = pil_to_tensor(image)
    x = upscale_tensor(x, upscale, sr_model)
    x = enhance_detail(x, detail)
    x = adjust_colour(x, vibrancy=vibrancy, saturation=saturation, contrast=contrast, brightness=brightness)
    x = multiscale_clean(x, clean)
    return tensor_to_pil(x)
