"""The OpenPose body picture that lllyasviel's openpose ControlNet was trained on, drawn from COCO keypoints.

The format (OpenPose's 18-point COCO body model, as ControlNet 1.1's annotator draws it):

1. the points in OpenPose's order: nose, neck, then right before left for shoulder, elbow, wrist,
   hip, knee, ankle, then right eye, left eye, right ear, left ear. COCO's 17 have no neck: it is
   the midpoint of the shoulders, found only when both are;
2. on black, the 17 limbs as filled ellipses 4 px from axis to edge at 512 px, each in its colour at 60 %;
3. on top, the found points as filled discs of radius 4 in the same 18 colours (a hue wheel).

The ControlNet reads the colours as the body parts' identities, so left and right and the order
must be exactly these. Written from the published format; nothing is taken from controlnet_aux.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

Point = tuple[float, float]

OPENPOSE_POINTS = ("nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder",
                   "left elbow", "left wrist", "right hip", "right knee", "right ankle", "left hip",
                   "left knee", "left ankle",
                   "right eye", "left eye", "right ear", "left ear")
# The COCO index of each OpenPose point (COCO: nose, l/r eye, l/r ear, l/r shoulder, elbow, wrist, hip,
# knee, ankle); None for the neck, which COCO lacks.
_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_SHOULDERS = (5, 6)  # COCO's left and right shoulder
# Limb i joins these two OpenPose points and is drawn in COLOURS[i]: the neck to the arms, the hips and
# the nose, then the face. (OpenPose's two ear-to-shoulder links are not drawn, as in ControlNet's maps.)
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_OPACITY = 0.6
STICK_WIDTH, JOINT_RADIUS, REFERENCE_SIDE = 4, 4, 512  # px, on a 512 px picture


def openpose_points(coco: Sequence[tuple[float, float, float]], threshold: float) -> list[Optional[Point]]:
    """COCO-17 ``(x, y, score)`` as OpenPose's 18 points; a point under ``threshold`` is None."""
    def found(index: int) -> Optional[Point]:
        x, y, score = coco[index]
        return (float(x), float(y)) if score >= threshold else None

    left, right = (found(index) for index in _SHOULDERS)
    neck = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2) if left and right else None
    return [neck if index is None else found(index) for index in _FROM_COCO]


def draw_openpose(points: Sequence[Optional[Point]], size: tuple[int, int]) -> Any:
    """The 18 points (None where missing) drawn in the OpenPose format on black, as a PIL RGB picture."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    scale = min(width, height) / REFERENCE_SIDE
    stick, radius = max(1.0, STICK_WIDTH * scale), max(1.0, JOINT_RADIUS * scale)
    for (start, end), colour in zip(LIMBS, COLOURS):
        if points[start] is not None and points[end] is not None:
            dimmed = tuple(int(channel * LIMB_OPACITY) for channel in colour)  # 60 % over black
            draw.polygon(_limb_outline(points[start], points[end], stick), fill=dimmed)
    for point, colour in zip(points, COLOURS):
        if point is not None:
            x, y = point
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    return image


def _limb_outline(start: Point, end: Point, half_width: float, steps: int = 72) -> list[Point]:
    """The outline of the ellipse between two points: half as long as the limb, ``half_width`` across."""
    (x0, y0), (x1, y1) = start, end
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    half_length = math.hypot(x1 - x0, y1 - y0) / 2
    angle = math.atan2(y1 - y0, x1 - x0)
    cos, sin = math.cos(angle), math.sin(angle)
    outline = []
    for step in range(steps):
        t = 2 * math.pi * step / steps
        along, across = half_length * math.cos(t), half_width * math.sin(t)
        outline.append((centre_x + along * cos - across * sin, centre_y + along * sin + across * cos))
    return outline
