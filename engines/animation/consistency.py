"""The temporal consistency score shown beside every video: does it hold still, and is it still the character?

Two questions, measured on every frame at a working size (long side 256 px, area-averaged: the scale
Wang's own ``ssim.m`` shrinks to, and what keeps 48 frames at 512 px well under a second):

1. stability: the mean SSIM of each frame with the next, over the whole picture. 1 is a still picture;
   flicker, boiling lines and jumps lower it (and so does fast motion: SSIM cannot tell them apart);
2. identity, on the character only (a mask), against the still the video was made from, or against
   frame 0 for a text-to-video (frame 0 is then left out of the identity numbers: it would match itself):
   - colour: the CIELAB mean/std drift of each frame from the still, ``1 / (1 + drift / 100)``, the
     Live-Action realism report's colour score (engines/live_action/metrics.py);
   - structure ("shape"): the SSIM of each frame with the still, weighted by the mask;
   - identity = sqrt(colour x structure): a character that keeps its colours but loses its shape (or the
     other way round) is not kept, so one low half pulls the whole down more than a mean would.

SSIM is Wang, Bovik, Sheikh and Simoncelli, "Image Quality Assessment: From Error Visibility to Structural
Similarity" (IEEE TIP 2004): luma, an 11-tap Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
over the window positions that lie inside the picture (the paper's "valid" map); values below 0 count as 0.
The mask is where the character is: the one given, else the still's alpha (the still is then measured
flattened onto grey, as Live-Action diffuses it), else a guess (the pixels far in Lab from a plain
border colour, split by Otsu's threshold), else the whole picture.
The words of ``summary()`` and their thresholds are in docs/animation-consistency.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

WORKING_SIDE = 256
# Wang et al. 2004: the Gaussian window and the two constants that keep dark or flat windows defined.
_WINDOW, _SIGMA = 11, 1.5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
# Frames per batch: bounds the memory of the SSIM maps (about 5 MB a frame at 256 px) for 256 frames.
_CHUNK = 16

# The words of the summary (docs/animation-consistency.md). Stability: SSIM of neighbouring frames; a
# drawing moved by one working pixel (2 px at 512) scores about 0.8, so 0.8 is still steady motion.
STEADY, LIVELY = 0.80, 0.60
# Identity: sqrt(colour x structure) against the still; a character swaying a few pixels keeps ~0.8.
KEEPS, DRIFTS = 0.75, 0.55

# The background guess: a border is plain when 80 % of its pixels lie within this many Lab units
# (CIE76 delta E; about 2.3 is a just noticeable difference) of its median colour.
_PLAIN_BORDER = 10.0
# A guessed character must cover this much of the picture, or the guess is dropped for the whole picture.
_MIN_COVER, _MAX_COVER = 0.02, 0.95


@dataclass(frozen=True)
class ConsistencyReport:
    """The score of one video; ``summary()`` is the line the artist reads, ``as_dict()`` the JSON."""

    stability: float  # mean SSIM(frame i, frame i+1), 0..1; 1 for a single frame
    identity: float  # sqrt(identity_colour * identity_structure), 0..1
    identity_colour: float  # mean of 1 / (1 + drift / 100) over the frames compared, 0..1
    identity_structure: float  # mean masked SSIM(frame, reference) over the frames compared, 0..1
    colour_drift: float  # mean Lab drift (|mean difference| + |std difference|) from the reference
    weakest_frame: int  # the frame least like the reference (lowest sqrt(colour x structure))
    biggest_jump: Optional[int]  # the frame that differs most from the one before it; None for one frame
    reference: str  # "still" or "first frame"
    frames: int
    mask_source: str  # "mask", "alpha", "background" (guessed) or "whole picture"
    mask_coverage: float  # the mask's mean at the working size, 0..1
    working_size: tuple[int, int]  # (width, height) the frames were measured at
    stability_per_step: tuple[float, ...]  # SSIM(frame i, frame i+1), len frames - 1
    colour_per_frame: tuple[float, ...]  # per frame, against the reference (1.0 for frame 0 vs itself)
    structure_per_frame: tuple[float, ...]
    identity_per_frame: tuple[float, ...]

    def as_dict(self) -> dict:
        """Plain, rounded numbers (JSON-safe); the per-frame lists to 3 places."""
        def listed(values: tuple[float, ...]) -> list[float]:
            return [round(float(v), 3) for v in values]

        return {
            "stability": round(float(self.stability), 4), "identity": round(float(self.identity), 4),
            "identity_colour": round(float(self.identity_colour), 4),
            "identity_structure": round(float(self.identity_structure), 4),
            "colour_drift": round(float(self.colour_drift), 3), "weakest_frame": int(self.weakest_frame),
            "biggest_jump": None if self.biggest_jump is None else int(self.biggest_jump),
            "reference": self.reference, "frames": int(self.frames), "mask_source": self.mask_source,
            "mask_coverage": round(float(self.mask_coverage), 4), "working_size": list(self.working_size),
            "stability_per_step": listed(self.stability_per_step),
            "colour_per_frame": listed(self.colour_per_frame),
            "structure_per_frame": listed(self.structure_per_frame),
            "identity_per_frame": listed(self.identity_per_frame),
        }

    def summary(self) -> str:
        """One line: "Steady motion (stability 0.93); keeps the character (identity 0.81: colours 0.88,
        shape 0.74); weakest frame 12." The words follow the thresholds above."""
        if self.frames < 2:
            motion = "One frame, no motion"
        else:
            motion = ("Steady motion" if self.stability >= STEADY else
                      "Some flicker or fast motion" if self.stability >= LIVELY else
                      "Strong flicker or jumps")
            jump = f", biggest jump at frame {self.biggest_jump}" if self.stability < STEADY else ""
            motion += f" (stability {self.stability:.2f}{jump})"
        if self.reference == "still":
            keeps = ("keeps the character" if self.identity >= KEEPS else
                     "drifts from the character" if self.identity >= DRIFTS else "loses the character")
        else:
            keeps = ("keeps to the first frame" if self.identity >= KEEPS else
                     "drifts from the first frame" if self.identity >= DRIFTS else
                     "strays from the first frame")
        return (f"{motion}; {keeps} (identity {self.identity:.2f}: colours {self.identity_colour:.2f}, "
                f"shape {self.identity_structure:.2f}); weakest frame {self.weakest_frame}.")


def consistency_report(frames: Sequence[Image.Image], still: Optional[Image.Image] = None,
                       mask: Optional[np.ndarray] = None) -> ConsistencyReport:
    """Score ``frames`` for stability and for identity against ``still`` (frame 0 when None), on the
    character: ``mask`` (H x W, 0..1 or bool, any size), else the still's alpha, else a guess."""
    import numpy as np

    from engines.errors import InvalidRequestError
    from engines.live_action.background import flatten

    if not frames:
        raise InvalidRequestError("There are no frames to score.")
    # 1. everything at one working size: the reference's, its long side at most WORKING_SIDE
    reference, alpha = flatten(still if still is not None else frames[0])  # a real alpha, or None
    size = working_size(reference.size)
    ref_rgb = _rgb_at(reference, size)
    rgb = np.stack([_rgb_at(frame, size) for frame in frames])
    # 2. where the character is
    weights, source = _character_mask(mask, alpha, ref_rgb, size)
    # 3. the numbers
    steps, structure = _ssim_scores(rgb, ref_rgb, weights)
    colour, drift = _colour(rgb, ref_rgb, weights > 0.5)
    per_frame = np.sqrt(colour * structure)
    compared = np.arange(len(frames)) if still is not None or len(frames) == 1 else np.arange(1, len(frames))
    colour_mean, structure_mean = float(colour[compared].mean()), float(structure[compared].mean())
    return ConsistencyReport(
        stability=float(steps.mean()) if steps.size else 1.0,
        identity=math.sqrt(colour_mean * structure_mean), identity_colour=colour_mean,
        identity_structure=structure_mean, colour_drift=float(drift[compared].mean()),
        weakest_frame=int(compared[np.argmin(per_frame[compared])]),
        biggest_jump=int(np.argmin(steps)) + 1 if steps.size else None,
        reference="still" if still is not None else "first frame", frames=len(frames), mask_source=source,
        mask_coverage=float(weights.mean()), working_size=size,
        stability_per_step=tuple(float(v) for v in steps), colour_per_frame=tuple(float(v) for v in colour),
        structure_per_frame=tuple(float(v) for v in structure),
        identity_per_frame=tuple(float(v) for v in per_frame))


# -- the working size and the mask ---------------------------------------------------------------------------


def working_size(size: tuple[int, int], side: int = WORKING_SIDE) -> tuple[int, int]:
    """``size`` shrunk so its long side is at most ``side`` (never enlarged)."""
    scale = min(1.0, side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _rgb_at(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image

    image = image.convert("RGB")
    if image.size != size:  # BOX: each working pixel the mean of the pixels it covers, no aliasing
        image = image.resize(size, Image.Resampling.BOX)
    return np.asarray(image)


def _character_mask(mask: Optional[np.ndarray], alpha: Optional[np.ndarray], ref_rgb: np.ndarray,
                    size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Weights 0..1 at the working size, and where they came from: the mask given, the alpha, or a guess."""
    import numpy as np

    if mask is not None:
        weights, source = _resized(np.asarray(mask, np.float32), size), "mask"
    elif alpha is not None:
        weights, source = _resized(alpha, size), "alpha"
    else:
        weights, source = _foreground(ref_rgb)
    if not (weights > 0.5).any():  # an empty mask: judge the whole frame rather than nothing
        return np.ones(weights.shape, np.float32), "whole picture"
    return weights, source


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image

    mask = np.clip(np.nan_to_num(mask), 0.0, 1.0).astype(np.float32)
    if mask.shape != (size[1], size[0]):
        mask = np.clip(np.asarray(Image.fromarray(mask, "F").resize(size, Image.Resampling.BILINEAR)), 0, 1)
    return mask


def _foreground(rgb: np.ndarray) -> tuple[np.ndarray, str]:
    """The character guessed as what stands out from a plain border colour: the Lab distance of every
    pixel from the border's median colour, split by Otsu's threshold. The whole picture when the border
    is not plain (a scene) or the split leaves too little or too much."""
    import numpy as np

    from engines.live_action.background import otsu_threshold
    from engines.live_action.colour import rgb_to_lab

    height, width = rgb.shape[:2]
    whole = np.ones((height, width), np.float32), "whole picture"
    if min(height, width) < 8:
        return whole
    lab = rgb_to_lab(rgb)
    ring = max(1, min(height, width) // 64)
    border = np.concatenate([lab[:ring].reshape(-1, 3), lab[-ring:].reshape(-1, 3),
                             lab[:, :ring].reshape(-1, 3), lab[:, -ring:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    if np.percentile(np.linalg.norm(border - background, axis=1), 80) > _PLAIN_BORDER:
        return whole
    distance = np.linalg.norm(lab - background, axis=-1)
    top = float(distance.max())
    levels = np.clip(distance * (255.0 / max(top, 1e-6)) + 0.5, 0, 255).astype(np.uint8)
    inside = distance > max(otsu_threshold(levels) * top / 255.0, _PLAIN_BORDER)
    if not _MIN_COVER <= inside.mean() <= _MAX_COVER:
        return whole
    return inside.astype(np.float32), "background"


# -- the measurements ----------------------------------------------------------------------------------------


def _ssim_scores(rgb: np.ndarray, ref_rgb: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SSIM of each frame with the next over the whole picture, mask-weighted SSIM of each frame with the
    reference). Each frame's local means and variances are blurred once and serve both."""
    import numpy as np

    count = len(rgb)
    reference = _padded(_luma(ref_rgb[None]))
    taps = _window()
    mu_ref, var_ref = _moments(reference, taps)
    inner = _valid(_padded(weights[None]))[0]  # the weights where the SSIM map has its values
    if inner.sum() <= 1e-6:
        inner = np.ones_like(inner)
    total = inner.sum(dtype=np.float64)
    steps, structure = np.empty(max(0, count - 1)), np.empty(count)
    for start in range(0, count, _CHUNK):
        stop = min(start + _CHUNK, count)
        luma = _padded(_luma(rgb[start:stop + 1]))  # one frame more: the pair across the chunk's end
        mu, var = _moments(luma, taps)
        own = slice(0, stop - start)
        cov_ref = _blur(luma[own] * reference, taps) - mu[own] * mu_ref
        maps = _ssim(mu[own], var[own], mu_ref, var_ref, cov_ref)
        structure[start:stop] = (maps * inner).sum(axis=(1, 2), dtype=np.float64) / total
        if len(luma) > 1:
            cov_next = _blur(luma[:-1] * luma[1:], taps) - mu[:-1] * mu[1:]
            maps = _ssim(mu[:-1], var[:-1], mu[1:], var[1:], cov_next)
            steps[start:start + len(maps)] = maps.mean(axis=(1, 2), dtype=np.float64)
    return np.clip(steps, 0.0, 1.0), np.clip(structure, 0.0, 1.0)


def _colour(rgb: np.ndarray, ref_rgb: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour score, Lab drift) of every frame's character against the reference's."""
    import numpy as np

    from engines.live_action.colour import lab_channels
    from engines.live_action.metrics import colour_drift, colour_score

    where = np.flatnonzero(inside)  # integer indices: np.take is faster than a boolean mask on HxWx3

    def lab(pixels: np.ndarray) -> np.ndarray:
        # N x 3 as a view of channel-first Lab: colour_drift reduces each channel over a contiguous row,
        # ~5x faster than down the columns of a packed N x 3 array.
        return lab_channels(np.take(pixels.reshape(-1, 3), where, axis=0)).T

    reference = lab(ref_rgb)
    drift = np.array([colour_drift(reference, lab(frame)) for frame in rgb])
    return np.array([colour_score(d) for d in drift]), drift


def _luma(rgb: np.ndarray) -> np.ndarray:
    import numpy as np

    # ITU-R 601 weights, as PIL's "L" and Wang's reference code (rgb2gray), kept in float.
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def _padded(stack: np.ndarray) -> np.ndarray:
    """Pictures under the window's 11 px get their edges repeated up to it, so every size has an SSIM."""
    import numpy as np

    short_h, short_w = max(0, _WINDOW - stack.shape[-2]), max(0, _WINDOW - stack.shape[-1])
    if not (short_h or short_w):
        return stack
    pad = [(0, 0)] * (stack.ndim - 2)
    pad += [(short_h // 2, short_h - short_h // 2), (short_w // 2, short_w - short_w // 2)]
    return np.pad(stack, pad, mode="edge")


def _valid(stack: np.ndarray) -> np.ndarray:
    half = _WINDOW // 2
    return stack[..., half:stack.shape[-2] - half, half:stack.shape[-1] - half]


def _window() -> np.ndarray:
    """The 11 taps of the Gaussian window (sigma 1.5), summing to 1."""
    import numpy as np

    taps = np.exp(-((np.arange(_WINDOW) - _WINDOW // 2) ** 2) / (2 * _SIGMA ** 2))
    return (taps / taps.sum()).astype(np.float32)


def _blur(stack: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """The valid Gaussian filter of an N x H x W stack: down the columns, then across, each pass as shifted
    slices added in pairs (the window is symmetric). Six multiply-adds a pixel and pass: ~8x faster than
    the same filter as a banded matrix product through BLAS, and no scipy."""
    half = _WINDOW // 2
    height, width = stack.shape[-2] - 2 * half, stack.shape[-1] - 2 * half
    down = stack[:, half:half + height] * taps[half]
    for k in range(half):
        pair = stack[:, k:k + height] + stack[:, _WINDOW - 1 - k:_WINDOW - 1 - k + height]
        pair *= taps[k]
        down += pair
    out = down[:, :, half:half + width] * taps[half]
    for k in range(half):
        pair = down[:, :, k:k + width] + down[:, :, _WINDOW - 1 - k:_WINDOW - 1 - k + width]
        pair *= taps[k]
        out += pair
    return out


def _moments(luma: np.ndarray, taps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local Gaussian means and variances, E[x^2] - E[x]^2 (float32 is ample: C2 is 58.5 levels^2)."""
    mu = _blur(luma, taps)
    return mu, _blur(luma * luma, taps) - mu * mu


def _ssim(mu_x: np.ndarray, var_x: np.ndarray, mu_y: np.ndarray, var_y: np.ndarray,
          cov: np.ndarray) -> np.ndarray:
    """Wang et al. (2004), eq. 13: luminance, contrast and structure in one ratio."""
    return (((2 * mu_x * mu_y + _C1) * (2 * cov + _C2))
            / ((mu_x * mu_x + mu_y * mu_y + _C1) * (var_x + var_y + _C2)))
