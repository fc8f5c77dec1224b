"""Pixels in and out of the Origin model, and the measurements every room of it shares.

The model works on ``[B, 3, H, W]`` float tensors in [-1, 1]. Here: decoding an image file into
that range (``load_image_uint8`` + ``to_model_range``) and back to a PIL image (``tensor_to_pil``),
and the small image measurements (BT.601 luminance, Sobel and Laplacian filters, chroma) that the
expert targets (model), the art losses (training) and the enhancement chain (generation) all use:
one definition of "brightness" and "edge" for the whole model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

# What PIL raises for a file it cannot decode (SyntaxError: some plugins' malformed headers; the
# bomb error: a scan so large that decoding it would exhaust RAM).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what "brightness" means to an artist's eye


# --- measurements ------------------------------------------------------------------------------


def to_unit(image: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], float32 (the losses are computed in full precision under autocast)."""
    return (image.float() + 1) / 2


def luminance(rgb: Tensor) -> Tensor:
    weights = torch.tensor(LUMA, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def _filter(gray: Tensor, kernel: list[list[float]]) -> Tensor:
    k = torch.tensor(kernel, device=gray.device, dtype=gray.dtype)[None, None]
    # Replicate padding: a zero border would draw a false edge round every image.
    return F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), k)


def sobel(gray: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical Sobel derivatives of ``[B, 1, H, W]`` (kernel normalised by 1/8)."""
    gx = _filter(gray, [[-0.125, 0.0, 0.125], [-0.25, 0.0, 0.25], [-0.125, 0.0, 0.125]])
    gy = _filter(gray, [[-0.125, -0.25, -0.125], [0.0, 0.0, 0.0], [0.125, 0.25, 0.125]])
    return gx, gy


def gradient_magnitude(gray: Tensor) -> Tensor:
    gx, gy = sobel(gray)
    return torch.sqrt(gx.square() + gy.square() + 1e-8)  # eps: finite gradient on flat areas


def laplacian(gray: Tensor) -> Tensor:
    return _filter(gray, [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def chroma(rgb: Tensor) -> Tensor:
    """HSV chroma (max - min of R, G, B): how saturated a pixel looks, ``[B, 1, H, W]``."""
    return (rgb.amax(dim=1, keepdim=True) - rgb.amin(dim=1, keepdim=True))


def shrink(image: Tensor, size: int) -> Tensor:
    """Area-average down to at most ``size`` pixels on the long side (statistics need no more)."""
    h, w = image.shape[-2:]
    if max(h, w) <= size:
        return image
    scale = size / max(h, w)
    return F.interpolate(image, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")


# --- image files and PIL images ----------------------------------------------------------------


def load_image_uint8(path: Path, resolution: int) -> torch.Tensor:
    """Decode, flatten transparency onto white, resize the short side and centre-crop: uint8 [3, R, R]."""
    import numpy as np
    from PIL import ImageOps

    with Image.open(path) as image:
        if image.format == "JPEG":
            # Let libjpeg decode at a reduced scale (DCT scaling) when the file is much larger than
            # needed; keeping at least 2x the target leaves the final resize enough pixels to
            # antialias, so quality is unchanged and a 2048 px JPEG decodes several times faster.
            image.draft("RGB", (resolution * 2, resolution * 2))
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Manga pages and sprites with alpha sit on white paper, not on black.
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        else:
            image = image.convert("RGB")
        image = ImageOps.fit(image, (resolution, resolution), method=Image.Resampling.LANCZOS,
                             centering=(0.5, 0.5))
        array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range the diffusion model is trained in."""
    return pixels.to(torch.float32).div_(127.5).sub_(1.0)


def pil_to_tensor(image: Any) -> torch.Tensor:
    """PIL image -> float32 [1, 3, H, W] in [-1, 1]."""
    import numpy as np

    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).div(127.5).sub(1.0)


def tensor_to_pil(tensor: torch.Tensor) -> Any:
    """[1, 3, H, W] or [3, H, W] in [-1, 1] -> PIL RGB image (clamped, rounded)."""
    if tensor.dim() == 4:
        tensor = tensor[0]
    pixels = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), "RGB")
