"""Canny edges for the optional third ControlNet (control_v11p_sd15_canny), without OpenCV.

Canny (1986) in four steps: 1. smooth the grey picture (Gaussian, sigma 1.4) so single noisy pixels
make no edges; 2. Sobel gradients; 3. keep only pixels whose gradient is the largest along its own
direction (thin edges, one pixel wide); 4. hysteresis: a pixel above ``high`` is an edge, one above
``low`` only when it touches such an edge. The thresholds are on OpenCV's scale (an unnormalised
3x3 Sobel of 0..255 values, L1 magnitude), 100 and 200 as the ControlNet's own annotator uses, so
maps made here look like the ones the ControlNet was trained on.
"""

from __future__ import annotations

from typing import Any


def canny(image: Any, low: float = 100.0, high: float = 200.0) -> Any:
    """White edges on black, RGB, the size of ``image``."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    grey = np.asarray(image.convert("L"), dtype=np.float64)
    # 1. smooth
    smooth = ndimage.gaussian_filter(grey, 1.4)
    # 2. gradients (rows are y)
    gx, gy = ndimage.sobel(smooth, axis=1), ndimage.sobel(smooth, axis=0)
    magnitude = np.abs(gx) + np.abs(gy)
    # 3. non-maximum suppression along the gradient direction, quantised to 0, 45, 90 and 135 degrees
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (((angle + 22.5) // 45).astype(int)) % 4
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}  # (dy, dx) for each sector
    keep = np.zeros_like(magnitude, dtype=bool)
    for index, (dy, dx) in offsets.items():
        ahead = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        behind = padded[1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
        keep |= (sector == index) & (magnitude >= ahead) & (magnitude >= behind)
    thin = np.where(keep, magnitude, 0.0)
    # 4. hysteresis
    weak = thin >= low
    labels, count = ndimage.label(weak, structure=np.ones((3, 3), bool))
    if count == 0:
        edges = np.zeros_like(weak)
    else:
        strong_labels = np.unique(labels[thin >= high])
        edges = np.isin(labels, strong_labels[strong_labels > 0])
    pixels = (edges * 255).astype(np.uint8)
    return Image.fromarray(pixels, "L").convert("RGB")
