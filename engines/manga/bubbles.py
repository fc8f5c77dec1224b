"""Drawing speech bubbles: a shape that grows to its text, a tail, and the lettering inside.

    box = draw_bubble(page_image, bubble, panel_box, dpi=300, fonts=book)   # drawn box, page pixels
    box = measure_bubble(bubble, panel_box, dpi=300, fonts=book)            # same box, nothing drawn

Every shape is built as closed polygons in page pixels, then drawn in three steps:
1. plan: fit the text inside what the panel allows, size the shape around it, clamp the centre and
   the tail point so shape and tail stay inside the panel box;
2. rasterise the polygons at 4x into a small canvas the size of the bubble (a paper mask and an ink
   mask; the outline is drawn inside each polygon, so a tail spliced into the outline has no seam);
3. shrink the masks (box filter: anti-aliasing), paste white paper and black ink, letter the text.
Shapes: speech = ellipse with a wedge tail; thought = cloud of overlapping circles with a tail of
shrinking circles; shout = jagged burst with a zigzag spike for a tail; whisper = ellipse with a
dashed outline; narration = a box, never a tail. A tail points toward its point and reaches it
unless it is farther than the bubble's own size from the centre (then it stops there, as lettered
tails do). An empty text draws nothing and returns
(0, 0, 0, 0). Everything is a function of its inputs (the burst's jitter is seeded from the text).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageChops, ImageColor, ImageDraw

from engines.errors import InvalidRequestError
from engines.manga.fonts import FontBook
from engines.manga.lettering import TextLayout, draw_text, fit_text, is_mostly_japanese
from engines.manga.page_model import BUBBLE_STYLES, Bubble

Point = tuple[float, float]
Box = tuple[int, int, int, int]
SUPERSAMPLE = 3  # 9 coverage steps on an outline: no visible difference from 4, at less than half the cost
LINE_MM = 0.3  # outline width, the usual fine pen of printed manga
_ROOT2 = math.sqrt(2.0)  # an ellipse with semi-axes sqrt(2) * (w/2, h/2) holds a w x h rectangle


@dataclass(frozen=True)
class BubblePlan:
    """Where everything goes, in page pixels: the outline polygons, the text and the drawn box."""

    box: Box
    polygons: tuple[tuple[Point, ...], ...]
    dashed: bool
    line_px: float
    text: TextLayout
    text_at: tuple[int, int]


def _ellipse(cx: float, cy: float, a: float, b: float, n: int, t0: float = 0.0) -> list[Point]:
    return [(cx + a * math.cos(t0 + 2 * math.pi * i / n), cy + b * math.sin(t0 + 2 * math.pi * i / n))
            for i in range(n)]


def _segments(a: float, b: float, per: float) -> int:
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
    return int(min(720, max(48, perimeter / per)))


def _cloud(a: float, b: float, em: float) -> list[Point]:
    """The outer edge of overlapping circles centred on an ellipse, as seen from its centre: for each
    direction the farthest crossing of the ellipse or any circle (the cloud is star-shaped)."""
    bumps = max(8, round(_segments(a, b, 1.0) / max(em * 1.1, 0.3 * min(a, b))))
    radius = 0.62 * _segments(a, b, 1.0) / bumps  # > half the spacing: neighbours overlap, notches stay
    t = 2 * np.pi * (np.arange(bumps) + 0.5) / bumps
    centres = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    phi = 2 * np.pi * np.arange(720) / 720
    u = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    along = u @ centres.T
    disc = radius ** 2 - (np.sum(centres ** 2, axis=1)[None, :] - along ** 2)
    reach = np.where(disc >= 0, along + np.sqrt(np.maximum(disc, 0)), 0).max(axis=1)
    ellipse = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
    r = np.maximum(reach, ellipse)
    return [(float(x), float(y)) for x, y in zip(r * np.cos(phi), r * np.sin(phi))]


def _burst(a: float, b: float, em: float, seed: int) -> list[Point]:
    """A jagged star: inner corners just outside the text's ellipse, spikes 20-40 % beyond it."""
    spikes = int(min(28, max(12, round(_segments(a, b, 1.0) / (1.7 * em)))))
    rng = np.random.default_rng(seed)
    points = []
    for i in range(spikes):
        for j, (lo, hi) in enumerate(((1.03, 1.03), (1.22, 1.40))):
            t = 2 * math.pi * (i + 0.5 * j + (rng.uniform(-0.12, 0.12) if j else 0.0)) / spikes
            k = rng.uniform(lo, hi)
            points.append((k * a * math.cos(t), k * b * math.sin(t)))
    return points


def _body(style: str, tw: int, th: int, em: float, seed: int) -> list[Point]:
    """The shape around a ``tw`` x ``th`` text block, centred on (0, 0)."""
    if style == "narration":
        w, h = tw / 2 + 0.5 * em, th / 2 + 0.45 * em
        return [(-w, -h), (w, -h), (w, h), (-w, h)]
    a, b = _ROOT2 * (tw / 2 + 0.3 * em), _ROOT2 * (th / 2 + 0.3 * em)
    if style == "thought":
        return _cloud(a, b, em)
    if style == "shout":
        return _burst(a, b, em, seed)
    return _ellipse(0, 0, a, b, _segments(a, b, 3.0))


def _splice_tail(body: list[Point], centre: Point, tip: Point, style: str, em: float) -> list[Point]:
    """Replace the stretch of outline facing ``tip`` with a wedge (or a zigzag spike) to ``tip``."""
    cx, cy = centre
    aim = math.atan2(tip[1] - cy, tip[0] - cx)
    angles = [math.atan2(y - cy, x - cx) for x, y in body]
    radius = [math.hypot(x - cx, y - cy) for x, y in body]
    half = 0.22 if style != "shout" else 0.3
    near = [abs((ang - aim + math.pi) % (2 * math.pi) - math.pi) < half for ang in angles]
    if all(near) or not any(near):
        return body
    first = next(i for i in range(len(body)) if near[i] and not near[i - 1])
    last = next(i for i in range(len(body)) if near[i] and not near[(i + 1) % len(body)])
    facing = min(range(len(body)), key=lambda i: abs((angles[i] - aim + math.pi) % (2 * math.pi) - math.pi))
    if math.hypot(tip[0] - cx, tip[1] - cy) <= radius[facing] * 1.08:
        return body  # the tail point is under the bubble: no tail
    b1, b2 = body[first - 1], body[(last + 1) % len(body)]
    wedge = [b1, tip, b2]
    if style == "shout":  # a lightning spike: both edges kinked the same way
        nx, ny = -math.sin(aim) * 0.35 * em, math.cos(aim) * 0.35 * em
        mid1 = ((b1[0] + tip[0]) / 2 + nx, (b1[1] + tip[1]) / 2 + ny)
        mid2 = ((b2[0] + tip[0]) / 2 + nx, (b2[1] + tip[1]) / 2 + ny)
        wedge = [b1, mid1, tip, mid2, b2]
    keep = [i for i in range(len(body)) if not near[i]]
    start = keep.index((last + 1) % len(body))
    ordered = [body[i] for i in keep[start:] + keep[:start]]  # from b2 round to b1
    return ordered + wedge[1:-1]


def _bbox(points) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _tail_tip(bubble: Bubble, panel: Box, centre: Point, reach: float, margin: float) -> Optional[Point]:
    """The tail point in page pixels, inside the panel, at most ``reach`` from the bubble's centre."""
    if bubble.style == "narration" or bubble.tail_x is None or bubble.tail_y is None:
        return None
    x0, y0, x1, y1 = panel
    tx = min(max(x0 + bubble.tail_x * (x1 - x0), x0 + margin), x1 - margin)
    ty = min(max(y0 + bubble.tail_y * (y1 - y0), y0 + margin), y1 - margin)
    dx, dy = tx - centre[0], ty - centre[1]
    dist = math.hypot(dx, dy)
    if dist > reach:
        tx, ty = centre[0] + dx * reach / dist, centre[1] + dy * reach / dist
    return tx, ty


def _thought_tail(body: list[Point], centre: Point, tip: Point, em: float, margin: float,
                  panel: Box) -> list[list[Point]]:
    """Two or three circles shrinking from the cloud toward ``tip``, each kept inside the panel."""
    cx, cy = centre
    dx, dy = tip[0] - cx, tip[1] - cy
    dist = math.hypot(dx, dy)
    edge = max(math.hypot(x - cx, y - cy) for x, y in body)
    circles = []
    for fraction, r in ((0.25, 0.42 * em), (0.6, 0.3 * em), (1.0, 0.2 * em)):
        d = edge + (dist - edge) * fraction
        if d - r <= edge * 0.92 or dist <= edge:
            continue
        x = min(max(cx + dx * d / dist, panel[0] + r + margin), panel[2] - r - margin)
        y = min(max(cy + dy * d / dist, panel[1] + r + margin), panel[3] - r - margin)
        circles.append(_ellipse(x, y, r, r, 40))
    return circles


def plan_bubble(bubble: Bubble, panel_box: Box, dpi: int, fonts: FontBook) -> Optional[BubblePlan]:
    """Everything ``draw_bubble`` will draw, without drawing it; None for an empty text."""
    if bubble.style not in BUBBLE_STYLES:
        raise InvalidRequestError(
            f"Unknown bubble style {bubble.style!r}: use one of {', '.join(BUBBLE_STYLES)}.")
    text = bubble.text.strip()
    if not text:
        return None
    # 1. The font, the pen and the room the panel gives
    size_px = max(4, round(bubble.font_size * dpi / 72))
    font = fonts.font(bubble.font, size_px, bubble.bold)
    em = float(size_px)
    line = max(1.0, LINE_MM * dpi / 25.4)
    margin = max(2.0, line)
    px0, py0, px1, py1 = panel_box
    room_w, room_h = px1 - px0 - 2 * margin, py1 - py0 - 2 * margin
    vertical = is_mostly_japanese(text) if bubble.vertical is None else bool(bubble.vertical)
    seed = zlib.crc32(text.encode("utf-8"))
    # 2. The largest text block whose shape fits: start from the shape's usual growth, shrink until it fits
    grow = {"narration": 1.0, "thought": 1.3 * _ROOT2, "shout": 1.4 * _ROOT2}.get(bubble.style, _ROOT2)
    pad = 1.0 * em if bubble.style == "narration" else 0.6 * em
    max_w, max_h = room_w / grow - pad, room_h / grow - pad
    for _ in range(8):
        layout = fit_text(text, font, vertical=vertical, max_w=max_w, max_h=max_h, align=bubble.align)
        if layout is None:
            break
        body = _body(bubble.style, layout.width, layout.height, em, seed)
        bx0, by0, bx1, by1 = _bbox(body)
        if bx1 - bx0 <= room_w and by1 - by0 <= room_h:
            break
        max_w, max_h = min(max_w, layout.width) * 0.92, min(max_h, layout.height) * 0.92
    else:
        layout = None
    if layout is None:
        raise InvalidRequestError(
            f"Bubble text in panel {bubble.panel} does not fit at {bubble.font_size:g} pt: "
            "shorten it or choose a smaller font size.")
    # 3. Centre clamped so the body stays in the panel, then the tail
    cx = min(max(px0 + bubble.x * (px1 - px0), px0 + margin - bx0), px1 - margin - bx1)
    cy = min(max(py0 + bubble.y * (py1 - py0), py0 + margin - by0), py1 - margin - by1)
    outline = [(cx + x, cy + y) for x, y in body]
    polygons = [outline]
    reach = 2.0 * max(bx1 - bx0, by1 - by0) / 2
    tip = _tail_tip(bubble, panel_box, (cx, cy), reach, margin)
    if tip is not None and bubble.style == "thought":
        polygons += _thought_tail(outline, (cx, cy), tip, em, margin, panel_box)
    elif tip is not None:
        polygons[0] = _splice_tail(outline, (cx, cy), tip, bubble.style, em)
    # 4. The drawn box: every polygon, rounded outward, never past the panel
    boxes = [_bbox(p) for p in polygons]
    box = (max(px0, math.floor(min(b[0] for b in boxes))), max(py0, math.floor(min(b[1] for b in boxes))),
           min(px1, math.ceil(max(b[2] for b in boxes))), min(py1, math.ceil(max(b[3] for b in boxes))))
    text_at = (round(cx - layout.width / 2), round(cy - layout.height / 2))
    dashed = bubble.style == "whisper"
    return BubblePlan(box, tuple(tuple(p) for p in polygons), dashed, line, layout, text_at)


def measure_bubble(bubble: Bubble, panel_box: Box, dpi: int, fonts: FontBook) -> Box:
    """The box ``draw_bubble`` would draw (for hit-testing clicks), in page pixels; (0, 0, 0, 0) if empty."""
    plan = plan_bubble(bubble, panel_box, dpi, fonts)
    return (0, 0, 0, 0) if plan is None else plan.box


def _dashes(points: list[Point], dash: float) -> list[list[Point]]:
    """The closed outline cut into dashes of length ``dash`` with equal gaps between them."""
    ring = points + points[:1]
    pieces: list[list[Point]] = []
    piece: list[Point] = []
    travelled = 0.0
    for (x0, y0), (x1, y1) in zip(ring, ring[1:]):
        length = math.hypot(x1 - x0, y1 - y0)
        done = 0.0
        while done < length - 1e-9:
            on = int(travelled // dash) % 2 == 0
            step = min(length - done, dash - travelled % dash)
            step = max(step, 1e-6)
            start, end = done / length, min(1.0, (done + step) / length)
            if on:
                if not piece:
                    piece = [(x0 + (x1 - x0) * start, y0 + (y1 - y0) * start)]
                piece.append((x0 + (x1 - x0) * end, y0 + (y1 - y0) * end))
            elif piece:
                pieces.append(piece)
                piece = []
            done += step
            travelled += step
    if piece:
        pieces.append(piece)
    return pieces


def _masks(plan: BubblePlan) -> tuple[Image.Image, Image.Image]:
    """Paper and ink coverage for the plan's box, rendered at SUPERSAMPLE x and shrunk (anti-aliasing)."""
    s = SUPERSAMPLE
    x0, y0, x1, y1 = plan.box
    size = ((x1 - x0) * s, (y1 - y0) * s)
    paper, ink = Image.new("L", size, 0), Image.new("L", size, 0)
    dp, di = ImageDraw.Draw(paper), ImageDraw.Draw(ink)
    width = max(1, round(plan.line_px * s))
    for polygon in plan.polygons:
        local = [((x - x0) * s, (y - y0) * s) for x, y in polygon]
        dp.polygon(local, fill=255)
        if plan.dashed:
            for dash in _dashes(local, 4.5 * plan.line_px * s):
                di.line(dash, fill=255, width=2 * width, joint="curve")
        else:
            di.polygon(local, outline=255, width=width)  # Pillow draws a wide outline inside the polygon
    if plan.dashed:
        ink = ImageChops.multiply(ink, paper)  # keep the inner half: the dash width matches the solid pen
    return paper.reduce(s), ink.reduce(s)


@dataclass(frozen=True)
class PreparedBubble:
    """A bubble ready to paint: its plan and its anti-aliased paper and ink masks (no page needed)."""

    plan: BubblePlan
    paper: Image.Image
    ink: Image.Image


def prepare_bubble(bubble: Bubble, panel_box: Box, dpi: int, fonts: FontBook) -> Optional[PreparedBubble]:
    """All of a bubble's work that does not touch the page, so it can run while the panels load;
    None for an empty text. Raises InvalidRequestError when the text cannot fit."""
    plan = plan_bubble(bubble, panel_box, dpi, fonts)
    if plan is None:
        return None
    paper, ink = _masks(plan)
    return PreparedBubble(plan, paper, ink)


def paint_bubble(image: Image.Image, prepared: Optional[PreparedBubble]) -> Box:
    """Paint a prepared bubble onto the page ``image`` (RGB or L); returns its box, (0, 0, 0, 0) if empty."""
    if prepared is None:
        return (0, 0, 0, 0)
    plan = prepared.plan
    x0, y0 = plan.box[:2]
    where = (x0, y0, x0 + prepared.paper.width, y0 + prepared.paper.height)
    image.paste(ImageColor.getcolor("white", image.mode), where, prepared.paper)
    image.paste(ImageColor.getcolor("black", image.mode), where, prepared.ink)
    draw_text(image, plan.text, plan.text_at)
    return plan.box


def draw_bubble(image: Image.Image, bubble: Bubble, panel_box: Box, dpi: int, fonts: FontBook) -> Box:
    """Draw ``bubble`` onto the page ``image`` (RGB or L) inside ``panel_box`` (page pixels, x0 y0 x1 y1)
    and return the drawn box, tail and outline included; (0, 0, 0, 0) and nothing drawn for empty text.

    Raises InvalidRequestError when the text cannot fit in the panel at its font size."""
    return paint_bubble(image, prepare_bubble(bubble, panel_box, dpi, fonts))
