"""The background around the character: read before diffusion, put back after it.

A drawing comes on one of three backgrounds, and each needs its own care:

1. transparent: flattened onto ``NEUTRAL`` grey for the diffusion (SD has no alpha), the character
   mask is the alpha itself, and the alpha is restored on the result;
2. black: the frame's border is mostly near-black. The mask is every pixel that is not near-black
   (outline gaps bridged, holes filled, specks dropped, dark hair at the edge reached with the depth
   map), feathered. After diffusion only the character is taken from the result; the background is the
   drawing's own black, so the grey haze and lifted contrast img2img spreads over dark areas never
   reach it;
3. scene: anything else. The background is part of the picture and stays the result's; the mask (for
   the pose box, the colour transfer and the report) is the near part of the depth map (Otsu's
   threshold, the largest parts, holes filled, feathered), or the whole frame without a depth map.

Every mask is float32 HxW in [0, 1], 1 = character, at the working size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image

# sRGB 128 is L* 54, the middle of the lightness scale: on white SD lights the subject as a high-key studio
# shot and bleaches the edges; on black it makes a low-key night shot and its haze darkens the hair's
# edges. Grey pulls neither way, and the mask tells every later step where the character is anyway.
NEUTRAL = (128, 128, 128)

# A pixel darker than this luma (of 255) is "black": leaves room for JPEG noise and dark vignettes.
BLACK_LUMA = 24
# The outer part of the frame read for the border test (of each side). The border is black when this share
# of it is near-black: a full figure fitted to the working size is often cropped through the head and the
# feet, which leaves ~80 % of the border black; a dark scene has lit parts all along its edges.
BORDER = 0.04
BLACK_BORDER_SHARE = 0.75
# ... or when three sides are this black: a bust cut off by the bottom edge.
BLACK_SIDE_SHARE = 0.95
# How far beyond the light part of the figure the depth map may add dark parts (of the short side): a
# head of black hair, not the black of the frame.
DARK_REACH = 0.08
# An alpha counts when at least this share of pixels is more than half transparent; a stray 254 does not.
TRANSPARENT_SHARE = 0.001
# Pieces of a mask smaller than this share of the frame are specks (noise, dust in the black).
SPECK_SHARE = 0.0005
# A depth part is kept beside the largest when at least this share of it (a second character).
SECOND_PART_SHARE = 0.25
# The feather's Gaussian sigma as a share of the long side: 2.6 px at 640.
FEATHER = 0.004

DESCRIPTIONS = {
    "transparent": "Transparent background: flattened onto grey for diffusion, transparency restored after.",
    "black": "Black background: only the character is diffused into the result, the black stays pure.",
    "scene": "Scenic background: kept as the photo makes it; the character found with the depth map.",
    "frame": "Scenic background: kept as the photo makes it; the whole frame counts as the character.",
}


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields have no single truth value to compare
class Background:
    """What surrounds the character, its mask at the working size, and the alpha to restore."""

    kind: str  # "transparent", "black" or "scene"
    mask: np.ndarray  # float32 HxW in [0, 1], 1 = character, soft edges
    alpha: Optional[np.ndarray]  # float32 HxW: the drawing's alpha, only for "transparent"
    description: str  # one sentence for the artist

    @property
    def coverage(self) -> float:
        """The share of the frame the character covers (0..1)."""
        return float(np.mean(self.mask)) if self.mask.size else 0.0


# -- before diffusion ---------------------------------------------------------------------------------------


def flatten(image: Image.Image) -> tuple[Image.Image, Optional[np.ndarray]]:
    """``image`` as RGB composited onto ``NEUTRAL``, and its alpha (float32 HxW) when it has a real one."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB"), None
    rgba = np.asarray(image.convert("RGBA"))
    if rgba[..., 3].min() == 255:  # an alpha channel that is opaque everywhere is just RGB
        return Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB"), None
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha[..., None]
    rgb += np.asarray(NEUTRAL, np.float32) * (1.0 - alpha[..., None])
    return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB"), alpha


def analyse_background(rgb: Image.Image, alpha: Optional[np.ndarray],
                       depth: Optional[Image.Image | np.ndarray] = None) -> Background:
    """Which background the picture has, and the character's mask (see the module docstring)."""
    height, width = rgb.height, rgb.width
    if alpha is not None and _has_transparency(alpha):
        mask = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
        return Background("transparent", mask, mask, DESCRIPTIONS["transparent"])
    luma = _luma(rgb)
    near = None if depth is None else _depth_near(_depth_array(depth, (width, height)))
    if _border_is_black(luma):
        found = _fill(_reach_dark_edges(_keep_parts(_fill(luma >= BLACK_LUMA)), near))
        if found.mean() >= SPECK_SHARE:  # an all-black frame has no character to keep: treat as a scene
            return Background("black", feather(found), None, DESCRIPTIONS["black"])
    if near is not None:
        found = _fill(_keep_parts(near, largest=True))
        if SPECK_SHARE <= found.mean() <= 0.98:  # a flat depth map separates nothing
            return Background("scene", feather(found), None, DESCRIPTIONS["scene"])
    return Background("scene", np.ones((height, width), np.float32), None, DESCRIPTIONS["frame"])


def feather(mask: np.ndarray, sigma: Optional[float] = None) -> np.ndarray:
    """A hard mask softened by a small Gaussian (float32 in [0, 1]); values under 1/255 become exactly 0."""
    from scipy.ndimage import gaussian_filter

    sigma = FEATHER * max(mask.shape) if sigma is None else sigma
    soft = gaussian_filter(mask.astype(np.float32), max(0.5, sigma), mode="nearest")
    soft[soft < 1.0 / 255.0] = 0.0  # so "black stays black" holds exactly far from the character
    return np.clip(soft, 0.0, 1.0)


def _has_transparency(alpha: np.ndarray) -> bool:
    return float(np.mean(np.asarray(alpha) < 0.5)) >= TRANSPARENT_SHARE


def _luma(rgb: Image.Image) -> np.ndarray:
    # PIL's own "L" conversion (ITU-R 601 weights), so the thresholds match what an artist measures.
    return np.asarray(rgb.convert("L"), np.float32)


def _border_is_black(luma: np.ndarray) -> bool:
    height, width = luma.shape
    dy, dx = max(1, round(BORDER * height)), max(1, round(BORDER * width))
    frame = np.ones_like(luma, bool)
    frame[dy:height - dy, dx:width - dx] = False
    dark = luma < BLACK_LUMA
    sides = [dark[:dy].mean(), dark[-dy:].mean(), dark[:, :dx].mean(), dark[:, -dx:].mean()]
    return float(dark[frame].mean()) >= BLACK_BORDER_SHARE or sum(s >= BLACK_SIDE_SHARE for s in sides) >= 3


def _fill(mask: np.ndarray) -> np.ndarray:
    """Outline gaps of a pixel or two bridged, then enclosed holes (dark eyes, black clothes) filled."""
    from scipy.ndimage import binary_closing, binary_fill_holes

    closed = binary_closing(mask, iterations=2, border_value=0) | mask
    return binary_fill_holes(closed)


def _keep_parts(mask: np.ndarray, largest: bool = False) -> np.ndarray:
    """Specks dropped; with ``largest``, only the largest part and those at least a quarter its size.
    Parts are judged by size, not by an opening, which would also cut strands of hair and sword blades."""
    from scipy.ndimage import label

    labels, count = label(mask)
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    floor = max(8.0, SPECK_SHARE * mask.size)
    if largest:
        floor = max(floor, SECOND_PART_SHARE * sizes.max())
    return (sizes >= floor)[labels]


def _reach_dark_edges(mask: np.ndarray, near: Optional[np.ndarray]) -> np.ndarray:
    """Dark hair or clothes on the silhouette's edge, which the luma threshold calls background, taken
    back where the depth map says they are near and they lie within a short reach of the character.
    The reach keeps a poor depth map from pulling in the black far from the figure."""
    if near is None or not mask.any():
        return mask
    from scipy.ndimage import distance_transform_edt

    around = distance_transform_edt(~mask) <= max(1.0, DARK_REACH * min(mask.shape))
    return mask | (near & around)


def _depth_array(depth: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if isinstance(depth, np.ndarray):
        array = depth.astype(np.float32)
        if array.ndim == 3:
            array = array.mean(axis=2)
        if array.shape != (size[1], size[0]):
            array = np.asarray(Image.fromarray(array, "F").resize(size, Image.Resampling.BILINEAR))
        return array
    grey = depth.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(grey, np.float32)


def _depth_near(depth: np.ndarray) -> Optional[np.ndarray]:
    """The near part of a depth map (near = bright) by Otsu's threshold; None when the map is flat."""
    low, high = float(depth.min()), float(depth.max())
    if high - low < 1e-6:
        return None
    levels = np.clip((depth - low) / (high - low) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return levels > otsu_threshold(levels)


def otsu_threshold(levels: np.ndarray) -> int:
    """Otsu (1979): the grey level (0..255) that maximises the between-class variance of ``levels``."""
    counts = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    grey = np.arange(256, dtype=np.float64)
    below = np.cumsum(counts)  # pixels at or below each level
    above = below[-1] - below
    sum_below = np.cumsum(counts * grey)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = sum_below / below
        mean_above = (sum_below[-1] - sum_below) / above
        between = below * above * (mean_below - mean_above) ** 2
    between[~np.isfinite(between)] = -1.0
    return int(np.argmax(between))


# -- after diffusion ----------------------------------------------------------------------------------------


def restore(result: Image.Image, background: Background, diffused: Image.Image) -> Image.Image:
    """The background put back: the alpha for "transparent", the drawing's black for "black"; else as is."""
    if background.kind == "transparent" and background.alpha is not None:
        alpha = _fit_mask(background.alpha, result.size)
        rgba = result.convert("RGB")
        rgba.putalpha(Image.fromarray(np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8), "L"))
        return rgba
    if background.kind == "black":
        return protect_dark(result, background.mask, diffused)
    return result


def protect_dark(result: Image.Image, mask: np.ndarray, dark: Image.Image) -> Image.Image:
    """``result`` on the character, ``dark`` (the drawing's black background) elsewhere, through the
    feathered mask: img2img lifts blacks into a grey haze and spreads contrast across dark areas, and
    this keeps every pixel outside the character exactly as dark as it was drawn."""
    result = result.convert("RGB")
    weight = _fit_mask(mask, result.size)[..., None]
    below = dark.convert("RGB")
    if below.size != result.size:
        below = below.resize(result.size, Image.Resampling.LANCZOS)
    mixed = np.asarray(result, np.float32) * weight + np.asarray(below, np.float32) * (1.0 - weight)
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), "RGB")


def _fit_mask(mask: Any, size: tuple[int, int]) -> np.ndarray:
    array = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    if array.shape != (size[1], size[0]):
        array = np.asarray(Image.fromarray(array, "F").resize(size, Image.Resampling.LANCZOS))
        array = np.clip(array, 0.0, 1.0)
    return array
