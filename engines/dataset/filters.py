"""Quality checks on one downloaded file: it must decode completely and be big, sharp and colourful enough.

Cheap checks first: the size and aspect come from the header before any pixel is decoded. Then the
whole file is decoded (a truncated or corrupt file fails here and is never kept), and the rest is
measured on a box-reduced copy whose long edge is 512-1023 px: Laplacian variance for sharpness,
per-channel standard deviation for flat colour, and the perceptual hash. The analysis size is close
to the size the image is trained at, which keeps the thresholds independent of the upload's
resolution and the checks far cheaper than the decode itself (see bench/bench_dataset_filters.py).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Optional

from engines.dataset.request import QualityThresholds

ANALYSIS_EDGE = 512
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}

# Reason codes, counted per run and in dataset.json, with the words the tab shows for them.
REASONS = {
    "unsafe_rating": "unsafe rating",
    "blacklisted": "blacklisted tag or title",
    "low_score": "score below the minimum",
    "too_old": "posted before the cut-off date",
    "no_file": "no file URL (hidden or deleted post)",
    "not_still_image": "video, animation or unsupported format",
    "download_failed": "download failed",
    "md5_mismatch": "MD5 differs from the site's",
    "undecodable": "corrupt or truncated file",
    "small_long_edge": "long edge too small",
    "small_short_edge": "short edge too small",
    "aspect": "too tall or too wide",
    "blurry": "too blurry",
    "flat": "flat colour",
    "duplicate": "exact duplicate",
    "near_duplicate": "near duplicate",
}
QUALITY_REASONS = ("small_long_edge", "small_short_edge", "aspect", "blurry", "flat")


@dataclass(frozen=True)
class ImageVerdict:
    """What the checks measured; ``reason`` is None when the image is kept."""

    reason: Optional[str]
    width: int = 0
    height: int = 0
    ext: str = ""
    sharpness: Optional[float] = None
    colour_std: Optional[float] = None
    phash: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def judge_size(width: int, height: int, t: QualityThresholds) -> Optional[str]:
    """The size and aspect rules, usable before a download when the site gives the dimensions."""
    long_edge, short_edge = max(width, height), min(width, height)
    if long_edge < t.min_long_edge:
        return "small_long_edge"
    if short_edge < t.min_short_edge:
        return "small_short_edge"
    if short_edge <= 0 or long_edge / short_edge > t.max_aspect:
        return "aspect"
    return None


def judge_measurements(width: int, height: int, sharpness: Optional[float], colour_std: Optional[float],
                       t: QualityThresholds) -> Optional[str]:
    """All quality rules from stored numbers, so a re-run with new thresholds needs no download."""
    reason = judge_size(width, height, t)
    if reason or colour_std is None or sharpness is None:
        return reason
    if colour_std <= t.min_colour_std:
        return "flat"
    if sharpness <= t.min_sharpness:
        return "blurry"
    return None


def laplacian_variance(gray) -> float:
    """Variance of the 4-neighbour Laplacian: near zero for blurred or empty images."""
    import numpy as np

    g = np.asarray(gray, dtype=np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


PHASH_INPUT_EDGE = 128


def perceptual_hash(image) -> int:
    """imagehash's pHash (DCT of a 32x32 greyscale) as a 64-bit integer.

    A box reduction to ~128 px first: pHash only looks at the lowest frequencies, and imagehash's
    Lanczos resize straight from 512 px costs ten times the rest of the hash.
    """
    import imagehash

    factor = max(1, max(image.size) // PHASH_INPUT_EDGE)
    return int(str(imagehash.phash(image.reduce(factor) if factor > 1 else image)), 16)


def _eight_bit(image):
    """RGB or L, transparency flattened onto white (the way the picture looks on a page)."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        import numpy as np
        from PIL import Image

        values = np.asarray(image, dtype=np.float32)
        scale = 255.0 / max(float(values.max()), 1.0)
        return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), "L")
    if image.mode in ("P", "PA", "1"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = _white(rgba.size)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _analysis_copy(image):
    image = _eight_bit(image)
    factor = max(1, max(image.size) // ANALYSIS_EDGE)
    return image.reduce(factor) if factor > 1 else image


def _white(size):
    from PIL import Image

    return Image.new("RGB", size, (255, 255, 255))


def inspect_image(data: bytes, thresholds: QualityThresholds) -> ImageVerdict:
    """Decode ``data`` completely and run every quality check; never raises for a bad file."""
    from PIL import Image, ImageStat

    # 1. header: format, size and aspect without decoding
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - PIL raises many types for garbage; all mean "not an image"
        return ImageVerdict("undecodable")
    width, height = image.size
    ext = FORMATS.get(image.format or "")
    if ext is None or getattr(image, "is_animated", False):
        return ImageVerdict("not_still_image", width, height)
    reason = judge_size(width, height, thresholds)
    if reason:
        return ImageVerdict(reason, width, height, ext)
    # 2. the whole file must decode: a truncated download raises here and is never kept
    try:
        image.load()
    except Exception:  # noqa: BLE001
        return ImageVerdict("undecodable", width, height, ext)
    # 3. colour, sharpness and the perceptual hash on the analysis copy
    small = _analysis_copy(image)
    colour_std = float(sum(ImageStat.Stat(small).stddev) / len(small.getbands()))
    gray = small if small.mode == "L" else small.convert("L")
    sharpness = laplacian_variance(gray)
    verdict = dict(width=width, height=height, ext=ext, sharpness=sharpness, colour_std=colour_std)
    reason = judge_measurements(width, height, sharpness, colour_std, thresholds)
    if reason:
        return ImageVerdict(reason, **verdict)
    return ImageVerdict(None, phash=perceptual_hash(gray), **verdict)
