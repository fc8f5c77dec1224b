"""The manga look: line-art greyscale, screentone and ink, for a panel or a whole page.

    grey = to_lineart_grey(picture, contrast=1.0)          # mode L, clean paper, crisp lines
    toned = screentone(grey, lpi=60, angle=45, dpi=300)      # mode L, only 0 and 255
    page = apply_tone(picture, Tone(mode="screentone"), dpi=300)

How the screentone is made, as a print RIP makes an amplitude-modulated halftone:
1. Every pixel gets coordinates in the rotated screen: ``u, v`` count dot cells (``dpi / lpi``
   pixels each) along the screen's axes, ``angle`` degrees from the page's.
2. Its position inside its cell looks up a threshold in one table built once per call: the
   round-dot spot function ``cos 2πu + cos 2πv`` (highest at the dot's centre) ranked into
   thresholds spread evenly over the pixels that land in the cell. Ranking is what makes the
   dot's area equal the darkness: a 30 % grey turns the 30 % of each cell nearest its centre
   black. Above 50 % the dots merge and leave round white holes, as real Euclidean dots do.
3. A pixel is black when its darkness exceeds its threshold. Near-white stays paper (no stray
   dots in the highlights) and near-black stays solid ink, as a printer's screen does.

Everything is whole-array numpy with the screen position kept in 16-bit fixed point: the
wrap-around of uint16 additions *is* the "position inside the cell", so a B5 page at 300 DPI
(6.5 million pixels) is toned in well under a tenth of a second.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from engines.errors import InvalidRequestError
from engines.manga.page_model import Tone, check_tone
from engines.manga.pictures import on_paper

# Darkness below this (lighter than ~95 % white) prints as paper, above 1 - this as solid ink:
# a screen that puts single-pixel dots in the highlights looks dirty, and pin holes in the blacks
# look like a scanning fault.
PAPER_CUTOFF = 0.05
CELL_TABLE_BITS = 8  # the threshold table samples one cell at 256 x 256 positions
# The levels stretch: paper is what the brightest 0.5 % of pixels are, ink the darkest 0.5 %.
WHITE_PERCENTILE, BLACK_PERCENTILE = 99.5, 0.5
WHITE_MARGIN = 6  # paper a little darker than its brightest pixels still goes pure white
# A mostly-light or mostly-dark picture is not stretched to the extremes.
MAX_BLACK_POINT, MIN_WHITE_POINT = 60, 160
DEFAULT_S_CURVE = 1.2  # contrast 1.0 is a gentle S curve: a little more bite than the levels alone


def _as_grey(image: Image.Image) -> Image.Image:
    image = on_paper(image)  # transparent parts become paper, not the black convert("L") makes of them
    return image if image.mode == "L" else image.convert("L")


def _percentile(histogram: list[int], percent: float) -> int:
    """The grey level below which ``percent`` of the pixels lie, from a 256-bin histogram."""
    cumulative = np.cumsum(histogram)
    return int(np.searchsorted(cumulative, cumulative[-1] * percent / 100.0))


def _levels_table(black: int, white: int, contrast: float) -> list[int]:
    """256 entries: a levels stretch from ``black``..``white`` to 0..255, then an S curve.

    The curve ``t^k / (t^k + (1-t)^k)`` keeps 0, 1/2 and 1 where they are; ``k > 1`` steepens the
    mid-tones (more contrast), ``k < 1`` flattens them."""
    t = np.clip((np.arange(256, dtype=np.float64) - black) / max(white - black, 1), 0.0, 1.0)
    k = DEFAULT_S_CURVE * float(contrast)
    curved = t**k / (t**k + (1.0 - t) ** k)
    return [int(v) for v in np.round(curved * 255.0)]


def _lineart_levels(grey: Image.Image, contrast: float) -> list[int]:
    """The 256-entry table ``to_lineart_grey`` maps ``grey`` (mode L) through."""
    if not 0.2 <= float(contrast) <= 4.0:
        raise InvalidRequestError(f"Contrast {contrast} is out of range: use 0.2 to 4.")
    histogram = grey.histogram()
    black = min(_percentile(histogram, BLACK_PERCENTILE), MAX_BLACK_POINT)
    white = max(_percentile(histogram, WHITE_PERCENTILE) - WHITE_MARGIN, MIN_WHITE_POINT)
    if white - black < 32:  # a flat picture: a stretch would only amplify its noise
        black, white = 0, 255
    return _levels_table(black, white, contrast)


def to_lineart_grey(image: Image.Image, contrast: float = 1.0) -> Image.Image:
    """Greyscale tuned for line art (mode L): luminance, slightly grey paper pushed to pure white,
    dark line tones to black, and an S curve whose strength is ``contrast`` (0.2 to 4)."""
    if not 0.2 <= float(contrast) <= 4.0:
        raise InvalidRequestError(f"Contrast {contrast} is out of range: use 0.2 to 4.")
    # Pillow's L is ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B): a pure blue line stays dark
    # instead of turning mid-grey as a plain average would make it.
    grey = _as_grey(image)
    return grey.point(_lineart_levels(grey, contrast))


@functools.lru_cache(maxsize=1)
def _spot_order() -> np.ndarray:
    """The cell's table positions (row u, column v), from lightest to darkest spot value.

    The round-dot spot function ``cos 2πu + cos 2πv`` is highest at the cell's corner, the dot's
    centre. Equal values are told apart by their direction from the dot's centre, so a dot grows
    round, then by a turn of the spiral within a ring; without that, positions that tie by symmetry
    (at 0 degrees every cell samples the same few) turn black together and print some greys 30 % off."""
    size = 1 << CELL_TABLE_BITS
    centres = (np.arange(size) + 0.5) / size
    wave, side = np.cos(2.0 * np.pi * centres), np.sin(2.0 * np.pi * centres)
    spot = wave[:, None] + wave[None, :] + 1e-6 * np.arctan2(side[None, :], side[:, None])
    return np.argsort(spot, axis=None, kind="stable")


def _screen_positions(length: int, step: float, start: int = 0) -> np.ndarray:
    """Pixel centres times ``step`` cells per pixel, as 16-bit fixed point (65536 = one cell)."""
    scaled = np.round((np.arange(start, start + length, dtype=np.float64) + 0.5) * step * 65536.0)
    return np.mod(scaled, 65536).astype(np.uint16)


def _cell_index(width: int, height: int, cos: float, sin: float, offset: tuple[int, int]) -> np.ndarray:
    """Every pixel's position in its dot cell as a table index (uint16: high byte u, low byte v).

    ``u = x cos + y sin`` and ``v = y cos - x sin`` in cells, ``cos``/``sin`` already scaled by cells
    per pixel; the uint16 sums wrap at one cell by themselves, so no floor or modulo is needed."""
    x0, y0 = offset
    u = _screen_positions(width, cos, x0)[None, :] + _screen_positions(height, sin, y0)[:, None]
    v = _screen_positions(height, cos, y0)[:, None] - _screen_positions(width, sin, x0)[None, :]
    shift = 16 - CELL_TABLE_BITS
    np.right_shift(u, shift, out=u)
    np.left_shift(u, CELL_TABLE_BITS, out=u)
    np.right_shift(v, shift, out=v)
    return np.bitwise_or(u, v, out=u)


def _thresholds(cos: float, sin: float, cell_px: float) -> np.ndarray:
    """The grey level below which each table position is ink, for this screen.

    Positions are ranked by spot value, each weighted by how often the pixels of a sample window
    land on it, so each threshold level covers the same share of the *pixels*: a flat grey's dot
    area then equals its darkness whether the screen is turned (pixels fall anywhere in the cell)
    or upright on a whole number of pixels (every cell samples the same 25 positions, say). The
    window is anchored at the page's origin, so a panel toned alone gets the same table as the page."""
    side = max(512, math.ceil(32 * cell_px))
    window = _cell_index(side, side, cos, sin, (0, 0))
    counts = np.bincount(window.ravel(), minlength=1 << (2 * CELL_TABLE_BITS))
    order = _spot_order()
    weights = counts[order].astype(np.float64)
    rank = (np.cumsum(weights) - 0.5 * weights) / weights.sum()  # in (0, 1): the share of pixels lighter
    # Darkness d = (255 - g) / 255 must exceed 1 - rank (high spot = dark first): g < 255 * rank.
    # Paper stays paper and ink stays ink: no entry asks for darker than 95 % white or lighter than 5 %.
    low, high = math.ceil(255 * PAPER_CUTOFF), math.floor(255 * (1 - PAPER_CUTOFF)) + 1
    table = np.empty(order.size, np.uint8)
    table[order] = np.clip(np.ceil(255.0 * rank), low, high).astype(np.uint8)
    return table


def _check_screen(lpi: float, dpi: int) -> None:
    if not 10.0 <= float(lpi) <= 200.0:
        raise InvalidRequestError(f"Screentone at {lpi} lines per inch is out of range: use 10 to 200.")
    if int(dpi) <= 0:
        raise InvalidRequestError(f"A page needs a positive DPI, not {dpi}.")


def screentone(grey: Image.Image, lpi: float, angle: float, dpi: int, *,
               offset: tuple[int, int] = (0, 0)) -> Image.Image:
    """An amplitude-modulated halftone of ``grey`` (mode L out, only 0 and 255): round dots on a
    screen of ``lpi`` lines per inch turned ``angle`` degrees, at ``dpi`` pixels per inch.

    The dot area of a flat grey equals its darkness; near-white stays white, near-black solid.
    ``offset`` is where the picture's top-left pixel sits on the page, so panels toned one by one
    share the page's screen. Below about 3 pixels per cell (``dpi / lpi``) there is no room to draw
    a dot and the screen behaves like an ordered dither."""
    _check_screen(lpi, dpi)
    return _halftone(_as_grey(grey), lpi, angle, dpi, offset, None)


BAND_PIXELS = 1 << 18  # pixels per band of rows: the band's index, thresholds and pixels stay in cache


def _halftone(grey: Image.Image, lpi: float, angle: float, dpi: int, offset: tuple[int, int],
              levels: list[int] | None) -> Image.Image:
    """``screentone`` of ``grey`` (mode L), or of ``grey.point(levels)`` when ``levels`` is given.

    A non-decreasing ``levels`` never needs its own pass over the picture: ``levels[g] >= t`` holds
    exactly when ``g >= first[t]``, ``first[t]`` being the lowest grey that ``levels`` lifts to ``t``
    or above, so the threshold table is mapped through ``first`` instead (65536 entries, not
    millions of pixels). The page is then toned in bands of rows, each band's screen index, threshold
    lookup and comparison done in small reused buffers that stay in the CPU cache."""
    cells_per_pixel = float(lpi) / float(dpi)
    radians = math.radians(float(angle))
    cos, sin = math.cos(radians) * cells_per_pixel, math.sin(radians) * cells_per_pixel
    table = _thresholds(cos, sin, 1.0 / cells_per_pixel)
    if levels is not None:
        curve = np.asarray(levels, dtype=np.int64)
        if np.all(curve[1:] >= curve[:-1]) and curve[-1] == 255:
            first = np.searchsorted(curve, np.arange(256), side="left").astype(np.uint8)
            table = first[table]
        else:  # never for the line-art curve, but stay exact for any other table
            grey = grey.point(levels)
    width, height = grey.size
    out = np.empty((height, width), np.uint8)
    if width == 0 or height == 0:
        return Image.fromarray(out, "L")
    x0, y0 = int(offset[0]), int(offset[1])
    # u = x cos + y sin and v = y cos - x sin (see _cell_index): 1-D pieces, summed a band at a time
    u_x, u_y = _screen_positions(width, cos, x0)[None, :], _screen_positions(height, sin, y0)[:, None]
    v_y, v_x = _screen_positions(height, cos, y0)[:, None], _screen_positions(width, sin, x0)[None, :]
    rows = max(1, min(height, BAND_PIXELS // width))
    u, v = np.empty((rows, width), np.uint16), np.empty((rows, width), np.uint16)
    limit = np.empty((rows, width), np.uint8)
    high = np.uint16(((1 << CELL_TABLE_BITS) - 1) << (16 - CELL_TABLE_BITS))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        n = bottom - top
        bu, bv, bl = u[:n], v[:n], limit[:n]
        np.add(u_x, u_y[top:bottom], out=bu)
        np.subtract(v_y[top:bottom], v_x, out=bv)
        np.bitwise_and(bu, high, out=bu)  # the table index: high byte u, low byte v
        np.right_shift(bv, 16 - CELL_TABLE_BITS, out=bv)
        np.bitwise_or(bu, bv, out=bu)
        np.take(table, bu, out=bl, mode="wrap")  # every index is in the table: no bounds check needed
        pixels = np.frombuffer(grey.crop((0, top, width, bottom)).tobytes(), np.uint8).reshape(n, width)
        band = out[top:bottom]
        np.greater_equal(pixels, bl, out=band.view(np.bool_))
        np.multiply(band, np.uint8(255), out=band)
    return Image.fromarray(out, "L")


def ink(grey: Image.Image, threshold: int) -> Image.Image:
    """Pure black and white (mode L): grey levels below ``threshold`` (0-255) become ink."""
    if not 0 <= int(threshold) <= 255:
        raise InvalidRequestError(f"Ink threshold {threshold} is out of range: use 0 to 255.")
    level = int(threshold)
    return _as_grey(grey).point([0 if g < level else 255 for g in range(256)])


def apply_tone(image: Image.Image, tone: Tone, dpi: int, *, offset: tuple[int, int] = (0, 0)) -> Image.Image:
    """The picture with ``tone``'s look: "none" gives it back unchanged, "grey" the line-art
    greyscale, "screentone" and "ink" that greyscale (with ``tone.contrast``) then the effect.
    ``offset``: where the picture sits on the page, so a panel's screen lines up with the page's."""
    check_tone(tone)
    if tone.mode == "none":
        return image
    if tone.mode == "screentone":  # the line-art levels folded into the screen: one pass, not two
        grey = _as_grey(image)
        levels = _lineart_levels(grey, tone.contrast)
        _check_screen(tone.lpi, dpi)
        return _halftone(grey, tone.lpi, tone.angle, dpi, offset, levels)
    grey = to_lineart_grey(image, tone.contrast)
    if tone.mode == "grey":
        return grey
    return ink(grey, tone.threshold)
