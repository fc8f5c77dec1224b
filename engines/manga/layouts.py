"""Where the panels of a page are: paper sizes, layout templates, rows like "1; 2 1", and the pixel geometry.

    geometry = page_geometry(PageSpec(size="B5", dpi=300, layout="5-panel-z", reading="rtl"))
    geometry.panels[0].polygon   # panel 1 (read first), corners in page pixels, gutters cut out

A layout is a list of convex polygons in fractions of the live area (the paper inside its margins),
in left-to-right reading order: a template from ``assets/page_layouts/`` or rows written as text.
Right-to-left pages mirror the geometry rather than renumber it, so panel N is always the N-th
read and a right-to-left page is the mirror image of its left-to-right twin.

Gutters are cut out of the shared edges (half a gutter from each side), never from the edges on the
live area's border; bleeding panels (a splash) run their border edges out to the paper's edge.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engines.errors import InvalidRequestError

LAYOUTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "page_layouts"
MM_PER_INCH = 25.4
# Trim sizes: JIS B5 and A5 are the Japanese magazine and tankobon-ish sizes; US comic is the
# standard 6.625 x 10.25 inch trim.
PAPER_MM = {"B5": (182.0, 257.0), "A5": (148.0, 210.0), "A4": (210.0, 297.0), "US comic": (168.3, 260.35)}
MIN_DPI, MAX_DPI = 72, 600
MAX_PANELS = 24
EPS = 1e-6

Point = tuple[float, float]


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    about: str
    panels: tuple[tuple[Point, ...], ...]  # fractions of the live area, left-to-right reading order
    bleed: bool = False


@dataclass(frozen=True)
class PanelGeometry:
    number: int  # 1-based, reading order
    polygon: tuple[Point, ...]  # the panel's outer edge (its border's outside), page pixels
    inner: tuple[Point, ...]  # inside the border: where the picture goes
    box: tuple[int, int, int, int]  # bounding box of ``polygon`` (left, top, right, bottom), page pixels
    text_box: tuple[int, int, int, int]  # an upright rectangle inside the border, where lettering goes

    @property
    def is_rectangle(self) -> bool:
        xs = {round(x, 3) for x, _ in self.inner}
        ys = {round(y, 3) for _, y in self.inner}
        return len(self.inner) == 4 and len(xs) == 2 and len(ys) == 2


@dataclass(frozen=True)
class PageGeometry:
    width: int  # the whole canvas: paper plus bleed on every side, pixels
    height: int
    dpi: int
    trim: tuple[int, int, int, int]  # the paper's edge inside the bleed
    live: tuple[int, int, int, int]  # inside the margins
    panels: tuple[PanelGeometry, ...]

    def panel_at(self, x: float, y: float) -> int | None:
        """The number of the panel under a page pixel, None in a gutter or margin."""
        for panel in self.panels:
            if point_in_polygon((x, y), panel.polygon):
                return panel.number
        return None


# --- paper -------------------------------------------------------------------------------------

def paper_mm(size: str) -> tuple[float, float]:
    """A paper name (B5, A5, A4, US comic) or a custom "182x257mm" / "7x10in"; one sentence otherwise."""
    text = str(size or "").strip()
    for name, mm in PAPER_MM.items():
        if text.lower() == name.lower():
            return mm
    match = re.fullmatch(r"\s*([0-9.]+)\s*[x×]\s*([0-9.]+)\s*(mm|in|inch|inches|\")?\s*", text.lower())
    if not match:
        raise InvalidRequestError(f"Unknown page size {text!r}: use B5, A5, A4, US comic, or a size like "
                                  "182x257mm or 7x10in.")
    try:
        width, height = float(match.group(1)), float(match.group(2))
    except ValueError:
        raise InvalidRequestError(f"The page size {text!r} has a number that is not one.") from None
    if (match.group(3) or "mm") != "mm":
        width, height = width * MM_PER_INCH, height * MM_PER_INCH
    if not (50.0 <= width <= 500.0 and 50.0 <= height <= 500.0):
        raise InvalidRequestError(f"A page of {width:.0f} x {height:.0f} mm is out of range: each side 50 to 500 mm.")
    return width, height


def mm_to_px(mm: float, dpi: int) -> float:
    return mm * dpi / MM_PER_INCH


# --- layouts -----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _templates(folder: Path) -> dict[str, Layout]:
    found = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        panels = tuple(tuple((float(x), float(y)) for x, y in polygon) for polygon in data["panels"])
        found[path.stem] = Layout(path.stem, data.get("title", path.stem), data.get("about", ""), panels,
                                  bool(data.get("bleed", False)))
    return found


def templates() -> dict[str, Layout]:
    """The layout templates in ``assets/page_layouts/``, by name."""
    return dict(_templates(LAYOUTS_DIR))


def parse_rows(text: str) -> Layout:
    """Rows separated by ";" or new lines, each a list of panel widths: "1; 2 1; 1 1 1".

    A row may start with its height and a colon ("2: 1 1" is twice as tall as a "1: ..." row).
    """
    rows = [row.strip() for row in re.split(r"[;\n]", text) if row.strip()]
    if not rows:
        raise InvalidRequestError('The layout is empty: write rows like "1; 2 1; 1 1 1", or choose a template.')
    parsed: list[tuple[float, list[float]]] = []
    for number, row in enumerate(rows, start=1):
        height_text, sep, widths_text = row.rpartition(":")
        words = widths_text.split()
        try:
            height = float(height_text) if sep else 1.0
            widths = [float(word) for word in words]
        except ValueError:
            raise InvalidRequestError(f'Row {number} of the layout, "{row}", is not numbers: write rows like '
                                      '"1; 2 1; 1 1 1".') from None
        if not widths or any(not (0 < v <= 100) or math.isnan(v) for v in widths + [height]):
            raise InvalidRequestError(f'Row {number} of the layout, "{row}", needs panel widths between 0 and 100.')
        parsed.append((height, widths))
    count = sum(len(widths) for _, widths in parsed)
    if count > MAX_PANELS:
        raise InvalidRequestError(f"The layout has {count} panels; a page holds at most {MAX_PANELS}.")
    total_height = sum(height for height, _ in parsed)
    panels = []
    top = 0.0
    for height, widths in parsed:
        bottom = top + height / total_height
        left = 0.0
        for width in widths:
            right = left + width / sum(widths)
            panels.append(((left, top), (right, top), (right, bottom), (left, bottom)))
            left = right
        top = bottom
    return Layout(name=text.strip(), title="Rows", about=text.strip(), panels=tuple(panels))


def resolve_layout(name_or_rows: str) -> Layout:
    """A template by name, else rows; one sentence naming the templates when it is neither."""
    text = str(name_or_rows or "").strip()
    found = templates()
    for name, layout in found.items():
        if text.lower() in (name.lower(), layout.title.lower()):
            return layout
    if re.match(r"[0-9.]", text) and (";" in text or "\n" in text or re.fullmatch(r"[0-9.\s:]+", text)):
        return parse_rows(text)
    raise InvalidRequestError(f"Unknown layout {text!r}: use one of {', '.join(found)}, "
                              'or rows like "1; 2 1; 1 1 1".')


# --- geometry ----------------------------------------------------------------------------------

def point_in_polygon(point: Point, polygon: tuple[Point, ...]) -> bool:
    x, y = point
    inside = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        (xi, yi), (xj, yj) = polygon[i], polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _intersect(p1: Point, d1: Point, p2: Point, d2: Point) -> Point:
    cross = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(cross) < EPS:  # parallel neighbours (a degenerate corner): keep the shifted point
        return p2
    t = ((p2[0] - p1[0]) * d2[1] - (p2[1] - p1[1]) * d2[0]) / cross
    return p1[0] + t * d1[0], p1[1] + t * d1[1]


def inset_polygon(polygon: tuple[Point, ...], offsets: list[float]) -> tuple[Point, ...]:
    """Move edge i of a convex polygon inward by ``offsets[i]`` pixels and rejoin the corners.

    Edge i runs from corner i to corner i+1; corner i of the result is where the shifted edges i-1
    and i meet, so corners stay mitred at any angle (a slanted gutter keeps its width)."""
    n = len(polygon)
    cx = sum(x for x, _ in polygon) / n
    cy = sum(y for _, y in polygon) / n
    lines = []
    for i in range(n):
        (x0, y0), (x1, y1) = polygon[i], polygon[(i + 1) % n]
        dx, dy = x1 - x0, y1 - y0
        length = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / length, dx / length
        if (cx - x0) * nx + (cy - y0) * ny < 0:  # the normal must point inside
            nx, ny = -nx, -ny
        lines.append(((x0 + nx * offsets[i], y0 + ny * offsets[i]), (dx, dy)))
    return tuple(_intersect(*lines[i - 1], *lines[i]) for i in range(n))


def upright_box_inside(polygon: tuple[Point, ...]) -> tuple[int, int, int, int]:
    """An axis-aligned rectangle inside a convex panel, for lettering: each edge pulls the side it faces
    in to its innermost end, so a slanted gutter never cuts through a bubble. For a rectangle it is the
    rectangle itself."""
    n = len(polygon)
    cx = sum(x for x, _ in polygon) / n
    cy = sum(y for _, y in polygon) / n
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
    for i in range(n):
        (x0, y0), (x1, y1) = polygon[i], polygon[(i + 1) % n]
        mx, my = (x0 + x1) / 2 - cx, (y0 + y1) / 2 - cy  # which way the edge faces, seen from the middle
        if abs(x1 - x0) >= abs(y1 - y0):  # a top or bottom edge
            top, bottom = (max(top, y0, y1), bottom) if my < 0 else (top, min(bottom, y0, y1))
        else:
            left, right = (max(left, x0, x1), right) if mx < 0 else (left, min(right, x0, x1))
    return math.ceil(left), math.ceil(top), max(math.ceil(left) + 1, math.floor(right)), \
        max(math.ceil(top) + 1, math.floor(bottom))


def _on_border(a: Point, b: Point) -> bool:
    """Both ends of an edge on the same side of the unit square: an outer edge, no gutter there."""
    return any(abs(a[k] - side) < 1e-4 and abs(b[k] - side) < 1e-4 for k in (0, 1) for side in (0.0, 1.0))


def page_geometry(size: str, dpi: int, layout: Layout, *, reading: str = "rtl", margin_mm: float = 10.0,
                  gutter_mm: float = 4.0, bleed_mm: float = 0.0, border_mm: float = 0.6) -> PageGeometry:
    """The page's canvas and its panels in pixels, panel 1 first in reading order."""
    if not MIN_DPI <= int(dpi) <= MAX_DPI:
        raise InvalidRequestError(f"{dpi} DPI is out of range: use {MIN_DPI} to {MAX_DPI} (300 is print quality).")
    width_mm, height_mm = paper_mm(size)
    for label, value, top in (("margin", margin_mm, 40), ("gutter", gutter_mm, 30), ("bleed", bleed_mm, 10),
                              ("border", border_mm, 5)):
        if not 0 <= float(value) <= top:
            raise InvalidRequestError(f"A {label} of {value} mm is out of range: use 0 to {top} mm.")
    if 2 * margin_mm >= min(width_mm, height_mm) - 20:
        raise InvalidRequestError(f"Margins of {margin_mm} mm leave no room for panels on a {width_mm:.0f} mm page.")
    bleed = mm_to_px(bleed_mm, dpi)
    width = round(mm_to_px(width_mm, dpi) + 2 * bleed)
    height = round(mm_to_px(height_mm, dpi) + 2 * bleed)
    trim = (bleed, bleed, width - bleed, height - bleed)
    margin = mm_to_px(margin_mm, dpi)
    live = (trim[0] + margin, trim[1] + margin, trim[2] - margin, trim[3] - margin)
    half_gutter = mm_to_px(gutter_mm, dpi) / 2
    border = mm_to_px(border_mm, dpi)

    def to_px(point: Point) -> Point:
        x, y = point
        px, py = live[0] + x * (live[2] - live[0]), live[1] + y * (live[3] - live[1])
        if layout.bleed:  # edges on the live area's border go out to the canvas edge
            px = 0.0 if x < 1e-4 else float(width) if x > 1 - 1e-4 else px
            py = 0.0 if y < 1e-4 else float(height) if y > 1 - 1e-4 else py
        return px, py

    panels = []
    for number, fractions in enumerate(layout.panels, start=1):
        if reading == "rtl":
            fractions = tuple((1.0 - x, y) for x, y in reversed(fractions))
        outer_edges = [_on_border(fractions[i], fractions[(i + 1) % len(fractions)]) for i in range(len(fractions))]
        pixels = tuple(to_px(p) for p in fractions)
        polygon = inset_polygon(pixels, [0.0 if edge else half_gutter for edge in outer_edges])
        at_paper_edge = [edge and layout.bleed for edge in outer_edges]
        inner = inset_polygon(polygon, [0.0 if edge else border for edge in at_paper_edge])
        xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
        box = (max(0, math.floor(min(xs))), max(0, math.floor(min(ys))), min(width, math.ceil(max(xs))),
               min(height, math.ceil(max(ys))))
        panels.append(PanelGeometry(number, polygon, inner, box, upright_box_inside(inner)))
    return PageGeometry(width, height, int(dpi), tuple(round(v) for v in trim),  # type: ignore[arg-type]
                        tuple(round(v) for v in live), tuple(panels))  # type: ignore[arg-type]
