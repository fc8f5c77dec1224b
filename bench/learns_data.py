"""The captioned pictures of the "does the model learn what it is told" benchmark, and their judge.

The benchmark trains a tiny model on pictures drawn here, generates one picture per caption and
asks, pixel by pixel, whether each attribute of the caption came out right. A scene has four
attributes, each a word in the caption: the background colour, the shape, its colour and its
position ("a red circle on the left, blue background" / "青い背景、左に赤い丸").

1. The palette: six saturated flat colours, at least 62.9 ΔE (CIE76) apart (33.6 in CIEDE2000).
   No white and no grey: grey is what a washed-out model produces, and white cannot be told from
   a light grey by hue, so neither may ever count as a right answer.
2. ``draw`` paints at 4x and box-downsamples, so edges are anti-aliased like real line art: a flat
   background, the shape filled and outlined in ink (1 px), 1-2 ink strokes near the border.
3. ``judge`` reads a picture in four steps. The background is the robust mean of the border ring.
   The foreground is every pixel that is not a blend of background and ink (its distance to the
   background-ink segment in sRGB, which also drops the anti-aliased edges of the strokes), kept
   to its largest connected region. The colour is the median of the region's purest pixels. The
   shape is the circle, square or triangle of the region's area and centre of mass (its zeroth
   and first moments) that overlaps it best (IoU), "none" under ``SHAPE_MIN_IOU``. Measured at
   32 px under pixel noise of sigma 25, higher moments (E[x²y²]/(E[x²]E[y²]) is 2/3 for a disc
   and 1 for a square; triangles are skewed) named 89 % of the shapes, the templates 99 %. The
   position is the centre of mass against the image centre, along the axis where it is farther off.

Colour names follow one rule everywhere: the nearest palette colour in CIELAB, or "none" when the
colour is nearer to the neutral grey of its own lightness than to that palette colour, or more than
``NAME_LIMIT`` away from it. Only numpy and PIL: the benchmark imports this without torch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

# sRGB values; CIELAB (L*, chroma): red (47, 85), yellow (87, 82), green (58, 72), azure (61, 59),
# blue (31, 96), pink (66, 66). Closest pairs: blue-azure 62.9 CIE76, yellow-green 33.6 CIEDE2000.
# No cyan: sRGB's purest cyan has a chroma of 50, and (0, 190, 230) washed 60 % towards grey moved
# only 21 ΔE76, still within naming reach.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (240, 220, 40),
    "green": (30, 160, 50),
    "azure": (0, 150, 250),
    "blue": (60, 40, 200),
    "pink": (245, 110, 200),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom")
INK = (25, 20, 30)  # line art; L* 7, far below the darkest palette colour (blue, L* 31)

JA = {
    "red": "赤", "yellow": "黄色", "green": "緑", "azure": "水色", "blue": "青", "pink": "ピンク",
    "circle": "丸", "square": "四角", "triangle": "三角",
    "left": "左", "right": "右", "top": "上", "bottom": "下",
}
# Colour words before a noun: i-adjectives take い (赤い), nouns take の (緑の).
_JA_I_ADJECTIVES = ("red", "yellow", "blue")
_EN_POSITION = {"left": "on the left", "right": "on the right",
                "top": "at the top", "bottom": "at the bottom"}

# ΔE76; under half the closest palette pair, so a named colour is never ambiguous, and under the
# 34 that the least saturated colour (azure) moves when washed 60 % towards grey.
NAME_LIMIT = 25.0
SUPERSAMPLE = 4
_DARK_L = 20.0  # L* under this is ink, left out of the background estimate
# sRGB units from the background-ink segment. Pixel noise of sigma 10 crosses it once in ~10^5 pixels;
# the closest fill to a background-ink segment (blue on azure) is 85 away.
_FOREGROUND_DISTANCE = 48.0


# ---------------------------------------------------------------------------------------- colour maths

def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65 white) of sRGB values in 0..255, array ``[..., 3]``."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116 * f[..., 1] - 16
    return np.stack([lightness, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e(lab1: np.ndarray, lab2: np.ndarray, formula: str = "cie76") -> np.ndarray:
    """Colour difference of CIELAB arrays (broadcast): "cie76" (Euclidean; the judge's) or "ciede2000"."""
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    if formula == "cie76":
        return np.linalg.norm(lab1 - lab2, axis=-1)
    if formula == "ciede2000":
        return _ciede2000(lab1, lab2)
    raise ValueError(f"Unknown ΔE formula {formula!r}; use 'cie76' or 'ciede2000'.")


def _ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """Sharma, Wu and Dalal (2005), "The CIEDE2000 color-difference formula", equations 1-22."""
    L1, a1, b1 = np.moveaxis(lab1, -1, 0)
    L2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_bar7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p, h2p = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    chromatic = c1p * c2p != 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chromatic, dh, 0.0)
    d_l, d_c = L2 - L1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_bar, c_bar = (L1 + L2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2
    h_bar = np.where(chromatic, h_bar, h_sum)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(c_bar ** 7 / (c_bar ** 7 + 25.0 ** 7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_bar, 1 + 0.015 * c_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def _palette_lab() -> tuple[list[str], np.ndarray]:
    names = list(PALETTE)
    return names, srgb_to_lab(np.array([PALETTE[name] for name in names], dtype=np.float64))


def name_colour(rgb: np.ndarray) -> tuple[str, float]:
    """The palette name of an sRGB colour and its ΔE76 to the nearest palette colour; greys are "none"."""
    lab = srgb_to_lab(np.asarray(rgb, dtype=np.float64))
    names, palette = _palette_lab()
    distances = delta_e(lab[None, :], palette)
    nearest = int(np.argmin(distances))
    distance = float(distances[nearest])
    chroma = float(np.hypot(lab[1], lab[2]))  # the ΔE76 to the grey of the same lightness
    if chroma <= distance or distance > NAME_LIMIT:
        return "none", distance
    return names[nearest], distance


# ---------------------------------------------------------------------------------------- scenes

@dataclass(frozen=True)
class Scene:
    """One picture's content: a ``colour`` ``shape`` at ``position`` on a ``background``."""

    background: str
    shape: str
    colour: str
    position: str

    def __post_init__(self) -> None:
        for field, value, allowed in (("background", self.background, PALETTE),
                                      ("colour", self.colour, PALETTE),
                                      ("shape", self.shape, SHAPES),
                                      ("position", self.position, POSITIONS)):
            if value not in allowed:
                raise ValueError(f"Unknown {field} {value!r}; choose one of {', '.join(allowed)}.")
        if self.colour == self.background:
            raise ValueError(f"The shape's colour must differ from the background, both are {self.colour!r}.")

    def caption(self, language: str = "en") -> str:
        if language == "en":
            article = "an" if self.colour[0] in "aeiou" else "a"
            where = _EN_POSITION[self.position]
            return f"{article} {self.colour} {self.shape} {where}, {self.background} background"
        if language == "ja":
            background, colour = _ja_colour(self.background), _ja_colour(self.colour)
            return f"{background}背景、{JA[self.position]}に{colour}{JA[self.shape]}"
        raise ValueError(f"Unknown caption language {language!r}; use 'en' or 'ja'.")


def _ja_colour(colour: str) -> str:
    return JA[colour] + ("い" if colour in _JA_I_ADJECTIVES else "の")


def all_scenes() -> list[Scene]:
    """Every scene: 6 backgrounds x 3 shapes x 5 shape colours x 4 positions = 360."""
    return [Scene(background, shape, colour, position)
            for background, shape, colour, position in itertools.product(PALETTE, SHAPES, PALETTE, POSITIONS)
            if colour != background]


def split_scenes(seed: int = 0, held_out_fraction: float = 0.1) -> tuple[list[Scene], list[Scene]]:
    """(train, held out): held out are whole (colour, shape) pairs, e.g. every "green triangle".

    The pairs are picked at random (seeded), each colour and each shape at most once while that is
    possible, and never the last pair of a colour or a shape, so every word stays in training and
    only the combination is new.
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be between 0 and 1, not {held_out_fraction}.")
    pairs = list(itertools.product(PALETTE, SHAPES))
    wanted = max(1, round(held_out_fraction * len(pairs)))
    order = np.random.default_rng(seed).permutation(len(pairs))
    held: list[tuple[str, str]] = []
    for distinct in (True, False):  # first pass: new colours and shapes only; second: fill up
        for index in order:
            colour, shape = pair = pairs[index]
            if len(held) == wanted or pair in held:
                continue
            if distinct and any(colour == c or shape == s for c, s in held):
                continue
            colours_left = sum(1 for c, s in pairs if c == colour and (c, s) not in held)
            shapes_left = sum(1 for c, s in pairs if s == shape and (c, s) not in held)
            if colours_left > 1 and shapes_left > 1:
                held.append(pair)
    held_set = set(held)
    scenes = all_scenes()
    train = [s for s in scenes if (s.colour, s.shape) not in held_set]
    held_out = [s for s in scenes if (s.colour, s.shape) in held_set]
    return train, held_out


# ---------------------------------------------------------------------------------------- drawing

_CENTRES = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75)}


def _shape_box(scene: Scene, size: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the shape in output pixels: ~40 % of the side, jittered, inside the picture."""
    side = 0.40 * size * rng.uniform(0.9, 1.1)
    width, height = {"circle": (side, side), "square": (0.88 * side, 0.88 * side),
                     "triangle": (1.1 * side, side)}[scene.shape]
    fx, fy = _CENTRES[scene.position]
    cx = fx * size + rng.uniform(-0.04, 0.04) * size
    cy = fy * size + rng.uniform(-0.04, 0.04) * size
    cx = float(np.clip(cx, width / 2 + 1, size - width / 2 - 1))
    cy = float(np.clip(cy, height / 2 + 1, size - height / 2 - 1))
    return cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2


def _stroke(size: int, box: tuple[float, float, float, float],
            rng: np.random.Generator) -> Optional[list[tuple[float, float]]]:
    """A slightly bent ink line along a border, 8 % of the side clear of the shape; None if none fits."""
    gap = 0.08 * size
    for _ in range(30):
        side = POSITIONS[int(rng.integers(4))]
        inset = rng.uniform(0.04, 0.09) * size
        length = rng.uniform(0.2, 0.4) * size
        start = rng.uniform(0.05 * size, 0.95 * size - length)
        bend = rng.uniform(0.0, 0.025) * size  # towards the middle
        along = (start, start + length / 2, start + length)
        across = (inset, inset + bend, inset)
        if side in ("right", "bottom"):
            across = tuple(size - a for a in across)
        points = list(zip(along, across)) if side in ("top", "bottom") else list(zip(across, along))
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if (min(xs) > box[2] + gap or max(xs) < box[0] - gap
                or min(ys) > box[3] + gap or max(ys) < box[1] - gap):
            return points
    return None


def draw(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """The scene as flat-coloured line art, ``size`` x ``size`` RGB; the same rng state, the same pixels."""
    if size < 16:
        raise ValueError(f"Pictures must be at least 16 px, not {size}.")
    box = _shape_box(scene, size, rng)
    strokes = [_stroke(size, box, rng) for _ in range(1 + int(rng.integers(2)))]

    k = SUPERSAMPLE
    canvas = Image.new("RGB", (size * k, size * k), PALETTE[scene.background])
    pen = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = (v * k for v in box)
    fill = PALETTE[scene.colour]
    if scene.shape == "circle":
        pen.ellipse((x0, y0, x1, y1), fill=fill, outline=INK, width=k)
    elif scene.shape == "square":
        pen.rectangle((x0, y0, x1, y1), fill=fill, outline=INK, width=k)
    else:
        pen.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=INK, width=k)
    for points in strokes:
        if points is not None:
            pen.line([(x * k, y * k) for x, y in points], fill=INK, width=k, joint="curve")
    return canvas.reduce(k)  # box filter: the anti-aliased edges of art drawn at full size


def write_dataset(folder: Path, scenes: list[Scene], *, size: int, per_scene: int, seed: int,
                  languages: tuple[str, ...] = ("en", "ja")) -> int:
    """``per_scene`` pictures of each scene as ``00000.png`` + ``00000.txt`` (the trainer's layout).

    Captions take the languages in turn, shifted by one per scene, so each scene is captioned in
    every language once it has as many copies as there are languages. Returns the number of pictures.
    """
    if per_scene < 1:
        raise ValueError(f"per_scene must be at least 1, not {per_scene}.")
    if not languages:
        raise ValueError("At least one caption language is needed.")
    folder = Path(folder)
    if folder.is_dir() and any(folder.glob("*.png")):
        # The trainer reads every image under its folder: pictures of an earlier run would join in.
        raise ValueError(f"{folder} already holds pictures; write a dataset into an empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = 0
    for scene_index, scene in enumerate(scenes):
        for copy in range(per_scene):
            caption = scene.caption(languages[(scene_index + copy) % len(languages)])
            draw(scene, size, rng).save(folder / f"{index:05d}.png")
            (folder / f"{index:05d}.txt").write_text(caption + "\n", encoding="utf-8")
            index += 1
    return index


# ---------------------------------------------------------------------------------------- judging

@dataclass
class Verdict:
    """What the judge read in a picture; "none" where nothing nameable was there.

    ``delta_e`` is CIE76, of ``background_rgb`` against the scene's background colour when judged
    against a scene, else against the nearest palette colour.
    """

    background: str
    colour: str
    shape: str
    position: str
    background_rgb: tuple[float, float, float]
    delta_e: float


def _background_rgb(pixels: np.ndarray) -> np.ndarray:
    """Robust mean of the border ring (1/16 of the side, at least 1 px), ink left out."""
    size = pixels.shape[0]
    ring_width = max(1, size // 16)
    ring = np.ones(pixels.shape[:2], dtype=bool)
    ring[ring_width:-ring_width, ring_width:-ring_width] = False
    ring_pixels = pixels[ring]
    ring_lab = srgb_to_lab(ring_pixels)
    light = ring_pixels[ring_lab[:, 0] >= _DARK_L]
    if len(light) < len(ring_pixels) // 4:  # a dark picture: ink is its background
        light = ring_pixels
    median = np.median(light, axis=0)
    near = light[delta_e(srgb_to_lab(light), srgb_to_lab(median)) < 20]
    return near.mean(axis=0) if len(near) else median


def _distance_to_segment(pixels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel (sRGB) to the segment from ``a`` to ``b``."""
    ab = b - a
    t = np.clip(((pixels - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(pixels - (a + t[..., None] * ab), axis=-1)


def _foreground(pixels: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, distance): pixels that are no blend of background and ink, lone pixels removed.

    Past the fixed floor, a pixel must be at least half as far from the background-ink segment as
    the fill (half maximum): an outline that falls between two pixels blends 25 % fill into its ink,
    and against the floor alone pixel noise decided which of those pixels joined the shape.
    """
    distance = _distance_to_segment(pixels, np.array(INK, dtype=np.float64), background)
    mask = distance > _FOREGROUND_DISTANCE
    if mask.any():
        fill = float(np.percentile(distance[mask], 90))
        mask = distance > max(_FOREGROUND_DISTANCE, 0.5 * fill)
    padded = np.pad(mask, 1)
    neighbours = sum(padded[1 + dy:1 + dy + mask.shape[0], 1 + dx:1 + dx + mask.shape[1]]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return mask & (neighbours >= 2), distance


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of ``mask``: noise specks far from the shape must not move its moments.

    Labels spread as the minimum over each pixel's neighbours until nothing changes; a 64 px mask
    settles in a few dozen cheap array passes, so no scipy is needed.
    """
    height, width = mask.shape
    empty = height * width
    labels = np.where(mask, np.arange(height * width).reshape(height, width), empty)
    padded = np.full((height + 2, width + 2), empty)
    while True:
        padded[1:-1, 1:-1] = labels
        spread = labels
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                spread = np.minimum(spread, padded[dy:dy + height, dx:dx + width])
        spread = np.where(mask, spread, empty)
        if np.array_equal(spread, labels):
            break
        labels = spread
    values, counts = np.unique(labels[mask], return_counts=True)
    return labels == values[np.argmax(counts)]


def _shape_templates(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Each shape with the mask's area (zeroth moment) and centre of mass (first moments), as pixel coverage.

    The proportions are ``_shape_box``'s: a square, a disc, a triangle with its apex up, base 1.1 x
    its height and its centroid a third of the height above the base. 4 x 4 samples per pixel, in
    the window that holds the mask and every template; zero outside it.
    """
    ys, xs = np.nonzero(mask)
    area, cx, cy = float(len(xs)), xs.mean(), ys.mean()
    radius, side, height = np.sqrt(area / np.pi), np.sqrt(area), np.sqrt(area / 0.55)
    reach = max(radius, side / 2, 2 / 3 * height) + 1
    top = max(0, min(ys.min(), int(cy - reach)))
    bottom = min(mask.shape[0], max(ys.max(), int(cy + reach)) + 1)
    left = max(0, min(xs.min(), int(cx - reach)))
    right = min(mask.shape[1], max(xs.max(), int(cx + reach)) + 1)
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    rows, cols = np.mgrid[top:bottom, left:right].astype(np.float64)
    dx = cols[..., None, None] + offsets[None, None, None, :] - cx
    dy = rows[..., None, None] + offsets[None, None, :, None] - cy
    depth = dy + 2 / 3 * height  # below the apex
    inside = {
        "circle": dx ** 2 + dy ** 2 <= radius ** 2,
        "square": (np.abs(dx) <= side / 2) & (np.abs(dy) <= side / 2),
        "triangle": (depth >= 0) & (depth <= height) & (np.abs(dx) <= 0.55 * depth),
    }
    templates = {}
    for name, region in inside.items():
        coverage = np.zeros(mask.shape)
        coverage[top:bottom, left:right] = region.mean(axis=(2, 3))
        templates[name] = coverage
    return templates


# Best IoU of drawn shapes: >= 0.86 at 32 px and 0.95 at 64 px, 0.79 / 0.92 blurred (Gaussian 1.2 px);
# random blobs reach 0.47 (median) and an ellipse of 2.5:1 0.54. Below this, no shape was drawn.
SHAPE_MIN_IOU = 0.6


def shape_scores(mask: np.ndarray) -> dict[str, float]:
    """IoU of a binary mask with each shape of its own area and centre of mass."""
    m = mask.astype(np.float64)
    return {name: float(np.minimum(m, t).sum() / np.maximum(m, t).sum())
            for name, t in _shape_templates(mask).items()}


def _classify_shape(mask: np.ndarray) -> str:
    scores = shape_scores(mask)
    best = max(scores, key=scores.get)
    return best if scores[best] >= SHAPE_MIN_IOU else "none"


def _position(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    centre_y, centre_x = (mask.shape[0] - 1) / 2, (mask.shape[1] - 1) / 2
    dx, dy = xs.mean() - centre_x, ys.mean() - centre_y
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def judge(image: Image.Image, scene: Optional[Scene] = None) -> Verdict:
    """Read background, shape colour, shape and position from the pixels of ``image``."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    # 1. background: the border ring's robust mean, named by the palette rule
    background = _background_rgb(pixels)
    background_name, nearest_distance = name_colour(background)
    if scene is not None:
        distance = float(delta_e(srgb_to_lab(background), srgb_to_lab(np.array(PALETTE[scene.background]))))
    else:
        distance = nearest_distance
    background_rgb = tuple(float(v) for v in background)
    # 2. foreground: what is neither background nor ink; too little of it is no shape at all
    mask, purity = _foreground(pixels, background)
    if mask.sum() < max(4, round(0.004 * mask.size)):
        return Verdict(background_name, "none", "none", "none", background_rgb, distance)
    mask = _largest_component(mask)
    # 3. colour: the median of the purer half of the mask (the anti-aliased rim is part ink)
    values = purity[mask]
    colour_name, _ = name_colour(np.median(pixels[mask][values >= np.median(values)], axis=0))
    # 4. shape: the best-fitting template of the mask's area and centre; position: that centre
    return Verdict(background_name, colour_name, _classify_shape(mask), _position(mask),
                   background_rgb, distance)


ATTRIBUTES = ("background", "colour", "shape", "position")


def score(results: list[tuple[Scene, Verdict]]) -> dict[str, float]:
    """Accuracy per attribute, "all" (every attribute right), mean/median background ΔE76 and count."""
    if not results:
        raise ValueError("score() needs at least one (scene, verdict) pair.")
    right = {name: np.array([getattr(verdict, name) == getattr(scene, name) for scene, verdict in results])
             for name in ATTRIBUTES}
    distances = np.array([v.delta_e for _, v in results], dtype=np.float64)
    summary = {name: float(values.mean()) for name, values in right.items()}
    summary["all"] = float(np.logical_and.reduce(list(right.values())).mean())
    summary["delta_e_mean"] = float(distances.mean())
    summary["delta_e_median"] = float(np.median(distances))
    summary["count"] = float(len(results))
    return summary
