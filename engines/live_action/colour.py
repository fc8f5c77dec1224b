"""Colour integrity in CIELAB: the drawing's colours brought back onto the photo, on the character only.

CIELAB separates lightness (L*) from the two colour axes (a*: green-red, b*: blue-yellow) and spaces them
roughly as the eye does, so moving one statistic moves one thing an artist sees. Two transfers:

- "mean-std": Reinhard, Ashikhmin, Gooch and Shirley, "Color Transfer between Images" (2001), per Lab
  channel: ``out = (x - mean_result) / std_result * std_source + mean_source``. Keeps the photo's
  shading and texture, moves its average colour and contrast to the drawing's.
- "histogram": each Lab channel's distribution mapped onto the drawing's (quantile to quantile), which
  also matches the shape (skew, clusters); stronger, and flat drawings can make it look posterised.

Statistics come only from pixels where the mask is above 0.5 in both pictures, and the corrected pixels
are blended in by ``mask * strength``, so the background is never touched.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from engines.live_action.request import COLOUR_MODES

# sRGB primaries to CIE XYZ, D65 (IEC 61966-2-1). The white point is taken as the rows' sums, so sRGB
# white lands exactly on a* = b* = 0 instead of 0.002 off through rounding of the published constants.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = _RGB_TO_XYZ.sum(axis=1)
# Both matrices with the white point folded in, transposed (m[input, output]), float32 for speed.
_TO_XYZ = (_RGB_TO_XYZ / _WHITE[:, None]).T.astype(np.float32)
_FROM_XYZ = (_XYZ_TO_RGB * _WHITE).T.astype(np.float32)
_DELTA = 6.0 / 29.0  # CIE's junction between the cube root and the linear toe of f(t)
# A standard deviation below this (Lab units) is a flat channel: scaling by it would blow up noise.
_FLAT = 1e-3
# Quantiles sampled for the histogram match: finer than 8-bit steps; values between them are interpolated.
_QUANTILES = 1024


def _decode_srgb(rgb: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve undone: a linear toe below 0.04045, a 2.4 power above."""
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


# uint8 pixels (nearly every call) take their linear value from a table: 256 powers instead of millions.
_LINEAR = _decode_srgb(np.arange(256) / 255.0).astype(np.float32)


def _power(x: np.ndarray, exponent: float) -> np.ndarray:
    # exp(log) in float32 is 4-7x faster than cbrt or ** in float64 and 1e-6 relative is far below a level.
    y = np.maximum(np.asarray(x, np.float32), np.float32(1e-12))
    np.log(y, out=y)
    y *= np.float32(exponent)
    return np.exp(y, out=y)


def rgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    """sRGB (uint8 0..255, or float 0..1) of shape (..., 3) to CIELAB D65, float64 of the same shape."""
    return np.stack(lab_channels(pixels), axis=-1).astype(np.float64)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB D65 of shape (..., 3) to sRGB uint8; colours outside the sRGB gamut are clipped."""
    lab = np.asarray(lab, np.float32)
    return channels_to_rgb(lab[..., 0], lab[..., 1], lab[..., 2])


def lab_channels(pixels: np.ndarray) -> np.ndarray:
    """Like ``rgb_to_lab`` but channel first, (3, ...) float32: L*, a*, b* each contiguous, which is what
    statistics want (reducing a contiguous row is several times faster than a column of an N x 3 array)."""
    rgb = np.asarray(pixels)
    shape = rgb.shape[:-1]
    rgb = rgb.reshape(-1, 3)  # flat rows: one code path for a pixel, a list of pixels or a picture
    if rgb.dtype == np.uint8:
        r, g, b = _LINEAR[rgb[:, 0]], _LINEAR[rgb[:, 1]], _LINEAR[rgb[:, 2]]
    else:
        r, g, b = (_decode_srgb(rgb[:, c].astype(np.float64)).astype(np.float32) for c in range(3))
    m = _TO_XYZ
    fx, fy, fz = (_lab_f(r * m[0, i] + g * m[1, i] + b * m[2, i]) for i in range(3))
    lab = np.empty((3,) + fy.shape, np.float32)  # filled in place: no temporaries for 3 x 600k values
    np.multiply(fy, 116.0, out=lab[0])
    lab[0] -= 16.0
    np.subtract(fx, fy, out=lab[1])
    lab[1] *= 500.0
    np.subtract(fy, fz, out=lab[2])
    lab[2] *= 200.0
    return lab.reshape((3,) + shape)


def channels_to_rgb(lightness: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L*, a*, b* arrays (float, any one shape) to sRGB uint8 of that shape plus 3; out of gamut clipped."""
    shape = np.shape(lightness)
    lightness, a, b = (np.asarray(c, np.float32).reshape(-1) for c in (lightness, a, b))
    fy = (lightness + np.float32(16.0)) / np.float32(116.0)
    x = _lab_f_inverse(fy + a / np.float32(500.0))
    y = _lab_f_inverse(fy)
    z = _lab_f_inverse(fy - b / np.float32(200.0))
    m = _FROM_XYZ
    rgb = np.stack([_encode_srgb(x * m[0, i] + y * m[1, i] + z * m[2, i]) for i in range(3)], axis=-1)
    return rgb.reshape(shape + (3,))


def _lab_f(t: np.ndarray) -> np.ndarray:
    # CIE's f: a cube root above (6/29)^3, a straight toe below it so dark colours stay well defined.
    f = _power(t, 1.0 / 3.0)
    dark = t <= _DELTA ** 3
    if dark.any():
        f[dark] = t[dark] / np.float32(3 * _DELTA ** 2) + np.float32(4 / 29)
    return f


def _lab_f_inverse(f: np.ndarray) -> np.ndarray:
    return np.where(f > _DELTA, f * f * f, np.float32(3 * _DELTA ** 2) * (f - np.float32(4 / 29)))


def _encode_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    rgb = np.where(linear <= 0.0031308, linear * np.float32(12.92),
                   np.float32(1.055) * _power(linear, 1 / 2.4) - np.float32(0.055))
    return np.clip(rgb * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)


def transfer_colour(result: Image.Image, source: Image.Image, mask: np.ndarray, mode: str,
                    strength: float = 1.0) -> Image.Image:
    """``result`` with the character's Lab statistics moved to ``source``'s, blended in by mask * strength."""
    if mode not in COLOUR_MODES:
        raise ValueError(f"Colour transfer mode must be one of {COLOUR_MODES}, not {mode!r}.")
    if result.size != source.size:
        raise ValueError(f"The result ({result.size}) and the source ({source.size}) must be the same size.")
    mask = np.asarray(mask, np.float32)
    if mask.shape != (result.height, result.width):
        raise ValueError(f"The mask {mask.shape} does not match the picture {(result.height, result.width)}.")
    weight = np.clip(mask, 0.0, 1.0) * float(np.clip(strength, 0.0, 1.0))
    inside = mask > 0.5
    if mode == "off" or not inside.any() or not weight.any():
        return result
    out = np.asarray(result.convert("RGB")).reshape(-1, 3)
    # Only the touched pixels change, so only they go through Lab and back; integer indices and np.take
    # are several times faster than a boolean mask over HxWx3.
    touched = np.flatnonzero(weight.ravel() > 0)
    pixels = np.take(out, touched, axis=0)
    lab = lab_channels(pixels)
    lab_res = lab[:, mask.ravel()[touched] > 0.5]  # inside the character: a part of the touched pixels
    source_pixels = np.asarray(source.convert("RGB")).reshape(-1, 3)
    lab_src = lab_channels(np.take(source_pixels, np.flatnonzero(inside), axis=0))
    move = _mean_std if mode == "mean-std" else _histogram
    corrected = channels_to_rgb(*(move(lab[c], lab_res[c], lab_src[c]) for c in range(3)))
    w = weight.ravel()[touched][:, None]
    mixed = pixels * (1.0 - w) + corrected * w
    blended = out.copy()
    blended[touched] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(blended.reshape(result.height, result.width, 3), "RGB")


def _mean_std(values: np.ndarray, result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Reinhard et al. (2001) on one channel; a flat channel is only shifted, never scaled."""
    std_res, std_src = result.std(dtype=np.float64), source.std(dtype=np.float64)
    scale = std_src / std_res if std_res > _FLAT else 1.0
    return (values - result.mean(dtype=np.float64)) * scale + source.mean(dtype=np.float64)


def _histogram(values: np.ndarray, result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Each value sent from its quantile in the result's distribution to the same quantile in the source's."""
    res_q, src_q = _quantiles(result), _quantiles(source)
    # Ties (a flat-coloured region) repeat a quantile; np.interp needs rising x, so each run of equal
    # result quantiles keeps one point at the run's mean source value.
    res_q, first, runs = np.unique(res_q, return_index=True, return_counts=True)
    src_q = np.add.reduceat(src_q, first) / runs
    if res_q.size == 1:
        return values - res_q[0] + src_q[0]
    return np.interp(values, res_q, src_q)


def _quantiles(values: np.ndarray) -> np.ndarray:
    """``_QUANTILES`` evenly spaced quantiles (linear between order statistics, as np.quantile's default):
    one sort, which is ~10x faster than np.quantile's partition around a thousand points."""
    ordered = np.sort(values)
    positions = np.linspace(0.0, ordered.size - 1, _QUANTILES)
    return np.interp(positions, np.arange(ordered.size), ordered)
