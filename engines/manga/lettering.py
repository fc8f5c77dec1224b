"""Laying out a bubble's text: horizontal lines or vertical Japanese columns, then drawing them.

    layout = fit_text("行くぞ！", font, vertical=True, max_w=400, max_h=600)   # None: cannot fit
    draw_text(image, layout, (x, y))

Horizontal text wraps Latin at spaces and CJK at any character. Vertical text (tategaki) runs in
top-to-bottom columns from right to left, one character per 1-em cell, drawn with the OpenType
``vert`` feature so 。、 sit at the cell's top right and ー 「」（） turn upright to the column;
Latin of 1-2 characters ("!?", "42") stands upright in one cell (tate-chu-yoko), longer Latin
words turn 90 degrees clockwise. Both directions follow kinsoku shori, the Japanese line-break
rules: no line or column starts with closing punctuation or a small kana, none ends with an
opening bracket. A bubble grows to its text, so ``fit_text`` picks the wrap length whose block has
the most pleasant aspect (about square for vertical, wide for Latin) inside the box it is given.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Optional

from PIL import Image, ImageColor, ImageDraw, ImageFont

from engines.manga.fonts import LetteringFont

# Kinsoku shori (JIS X 4051): characters that may not start a line, and ones that may not end it.
NO_START = frozenset("、。，．,.・：；:;？！?!‼⁇⁈⁉゛゜ヽヾゝゞ々〻ー—…‥」』）］｝〕〉》】〙〗»)]}%℃"
                     "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ〜～")
NO_END = frozenset("「『（［｛〔〈《【〘〖«([{")
LINE_PITCH = 1.2  # horizontal: baseline to baseline, in ems
COLUMN_PITCH = 1.35  # vertical: column to column; manga leaves wider gaps between columns than lines
# Without libraqm there is no vert feature: turn these a quarter (their vertical forms are rotations)
# and move the small punctuation from the cell's bottom left to its top right, as vert would.
_TURN_WITHOUT_VERT = frozenset("ー—―…‥〜～「」『』（）()［］[]｛｝{}〔〕〈〉《》【】-=")
_SHIFT_WITHOUT_VERT = frozenset("、。，．")
_REFERENCE_IDEOGRAPH = "国"  # every CJK face centres its ideographs on the em box; we centre this one


_CJK_PUNCTUATION = frozenset("…‥―—※〃")  # general punctuation that Japanese sets full-width


def is_cjk(ch: str) -> bool:
    """Kana, kanji, CJK punctuation and full-width forms: the characters that break anywhere."""
    o = ord(ch)
    return (ch in _CJK_PUNCTUATION
            or 0x2E80 <= o <= 0x30FF or 0x31C0 <= o <= 0x31FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF
            or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x3FFFF)


def is_mostly_japanese(text: str) -> bool:
    """More than half of the visible characters are CJK: letter it vertically by default."""
    visible = [ch for ch in text if not ch.isspace()]
    return bool(visible) and sum(map(is_cjk, visible)) * 2 > len(visible)


@dataclass(frozen=True)
class PlacedRun:
    """Text drawn at one place: ``box`` is its cell (or line piece) in layout pixels, ``origin`` the
    left baseline point to draw it at; a ``turned`` run is drawn sideways, 90 degrees clockwise."""

    text: str
    box: tuple[int, int, int, int]
    origin: tuple[int, int]
    font: ImageFont.FreeTypeFont
    vert: bool = False
    turned: bool = False


@dataclass(frozen=True)
class TextLayout:
    """A block of text ready to draw: its size in pixels, its pieces, and its lines/columns as strings."""

    width: int
    height: int
    runs: tuple[PlacedRun, ...]
    lines: tuple[str, ...]
    vertical: bool
    stroke: int
    raqm: bool


@dataclass(frozen=True)
class _Unit:
    """The smallest piece a line can hold: one CJK character, one Latin word, or one space."""

    text: str
    kind: str  # "cjk" | "latin" | "space"
    advance: float  # along the line or column, in pixels
    font: ImageFont.FreeTypeFont


def _units(paragraph: str, font: LetteringFont, vertical: bool) -> list[_Unit]:
    pieces: list[tuple[str, str]] = []
    for ch in paragraph:
        kind = "space" if ch.isspace() and ch != "\u3000" else "cjk" if is_cjk(ch) else "latin"
        if kind == "latin" and pieces and pieces[-1][1] == "latin":
            pieces[-1] = (pieces[-1][0] + ch, kind)
        else:
            pieces.append((ch, kind))
    em = font.size_px
    units = []
    for text, kind in pieces:
        face = font.fallback if any(font.for_char(c) is font.fallback for c in text) else font.main
        if kind == "space":
            advance = em * 0.5 if vertical else face.getlength(" ")
        elif vertical and (kind == "cjk" or len(text) <= 2):
            advance = float(em)  # one cell: a character, or tate-chu-yoko
        else:
            advance = face.getlength(text)
        units.append(_Unit(text, kind, advance, face))
    return units


def _break(units: list[_Unit], limit: float) -> list[list[_Unit]]:
    """Greedy line breaking with kinsoku: when a break would start a line with 。 or end one with 「,
    the characters around it move to the next line together (oidashi)."""
    lines: list[list[_Unit]] = []
    line: list[_Unit] = []
    used = 0.0  # sum(u.advance for u in line), kept as it grows (the same additions, in the same order)
    for unit in units:
        if unit.kind == "space":
            if line:
                line.append(unit)  # trailing spaces never count: _length trims them
                used += unit.advance
            continue
        if line and used + unit.advance > limit:
            carried = [unit]
            while len(line) > 1 and (carried[0].text[0] in NO_START or line[-1].text[-1] in NO_END):
                carried.insert(0, line.pop())
            lines.append(_trim(line))
            while carried and carried[0].kind == "space":
                carried.pop(0)
            line = carried
            used = sum(u.advance for u in line)
            continue
        line.append(unit)
        used += unit.advance
    lines.append(_trim(line))
    return lines


def _trim(line: list[_Unit]) -> list[_Unit]:
    while line and line[-1].kind == "space":
        line = line[:-1]
    return line


def _length(line: list[_Unit]) -> float:
    return sum(u.advance for u in _trim(line))


def _wrap(paragraphs: list[list[_Unit]], limit: float) -> list[list[_Unit]]:
    """Explicit newlines always start a new line or column; each paragraph then wraps at ``limit``."""
    return [line for units in paragraphs for line in _break(units, limit)]


def _orphans(broken: list[list[list[_Unit]]], limit: float) -> int:
    """Paragraphs (each already broken at ``limit``) whose last line is a short leftover (a lone
    "せ。"), which readers find clumsy."""
    return sum(1 for lines in broken if len(lines) > 1 and _length(lines[-1]) < 0.45 * limit)


def _block_size(lines: list[list[_Unit]], em: int, vertical: bool) -> tuple[float, float]:
    longest = max((_length(line) for line in lines), default=0.0)
    across = em + (len(lines) - 1) * em * (COLUMN_PITCH if vertical else LINE_PITCH)
    return (across, longest) if vertical else (longest, across)


def fit_text(text: str, font: LetteringFont, *, vertical: bool, max_w: float, max_h: float,
             align: str = "center", aspect: Optional[float] = None) -> Optional[TextLayout]:
    """The layout of ``text`` inside ``max_w`` x ``max_h`` pixels whose width/height is closest to
    ``aspect`` (default: 0.8 vertical, 1.1 horizontal CJK, 1.7 Latin); None when no wrap fits.
    ``align`` left/center/right places lines; in vertical text it places columns at top/middle/bottom."""
    text = text.strip("\n")
    if aspect is None:
        aspect = 0.8 if vertical else 1.1 if is_mostly_japanese(text) else 1.7
    em = font.size_px
    room = (max_h if vertical else max_w) - 2 * font.stroke
    paragraphs = [_units(p, font, vertical) for p in text.split("\n")]
    all_units = [u for units in paragraphs for u in units]
    shortest = max((u.advance for u in all_units if u.kind != "space"), default=float(em))
    total = sum(u.advance for u in all_units)
    if shortest > room:
        return None
    # Each line count gets its shortest wrap that keeps that count (balanced lines, no lone
    # last character); then the count whose block is closest to the wanted aspect wins.
    top = min(room, max(total, shortest))
    # A wrap only compares ``limit`` with sums of runs of consecutive units (a line is always such a
    # run, summed from its start in order), so all limits between two neighbouring sums wrap alike:
    # the searches below break the text once per such step instead of once per try.
    sums: set[float] = set()
    for units in paragraphs:
        for start in range(len(units)):
            run = 0.0
            for unit in units[start:]:
                run += unit.advance
                sums.add(run)
    steps = sorted(sums)
    counted: dict[int, int] = {}

    def line_count(limit: float) -> int:
        step = bisect.bisect_right(steps, limit)
        if step not in counted:
            counted[step] = len(_wrap(paragraphs, limit))
        return counted[step]

    limits = {line_count(shortest + (top - shortest) * i / 24): 0.0 for i in range(25)}
    best: Optional[tuple[float, list[list[_Unit]]]] = None
    for count in sorted(limits):
        lo, hi = shortest, top
        if line_count(hi) > count:
            continue
        for _ in range(14):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if line_count(mid) <= count else (mid, hi)
        broken = [_break(units, hi) for units in paragraphs]
        lines = [line for paragraph in broken for line in paragraph]
        w, h = _block_size(lines, em, vertical)
        if w + 2 * font.stroke > max_w or h + 2 * font.stroke > max_h or w <= 0 or h <= 0:
            continue
        score = abs(math.log((w / h) / aspect)) + 0.3 * _orphans(broken, hi)
        if best is None or score < best[0] - 1e-9:
            best = (score, lines)
    return None if best is None else _place(best[1], font, vertical, align)


def _baseline_offset(face: ImageFont.FreeTypeFont, em: int) -> int:
    """Baseline below the top of a 1-em cell that centres the face's ideographs in the cell."""
    top, bottom = face.getbbox(_REFERENCE_IDEOGRAPH, anchor="ls")[1::2]
    return round(em / 2 - (top + bottom) / 2)


def _place(lines: list[list[_Unit]], font: LetteringFont, vertical: bool, align: str) -> TextLayout:
    em, pad = font.size_px, font.stroke
    w, h = _block_size(lines, em, vertical)
    width, height = math.ceil(w) + 2 * pad, math.ceil(h) + 2 * pad
    base = _baseline_offset(font.main, em)
    runs: list[PlacedRun] = []
    for i, line in enumerate(lines):
        length = _length(line)
        slack = (h if vertical else w) - length
        start = {"left": 0.0, "center": slack / 2, "right": slack}.get(align, slack / 2)
        if vertical:
            left = round(w - em - i * em * COLUMN_PITCH) + pad
            runs += _column_runs(line, font, left, start + pad, base)
        else:
            top = round(i * em * LINE_PITCH) + pad
            runs += _line_runs(line, top, start + pad, base, em)
    texts = tuple("".join(u.text for u in line) for line in lines)
    return TextLayout(width, height, tuple(runs), texts, vertical, font.stroke, font.raqm)


def _line_runs(line: list[_Unit], top: int, x: float, base: int, em: int) -> list[PlacedRun]:
    """Neighbouring units in the same face join into one run, so Latin keeps its kerning."""
    runs: list[PlacedRun] = []
    group: list[_Unit] = []
    for unit in _trim(line) + [None]:  # type: ignore[list-item]
        if group and (unit is None or unit.font is not group[0].font):
            start = x
            text = "".join(u.text for u in group)
            x += sum(u.advance for u in group)
            runs.append(PlacedRun(text, (round(start), top, round(x), top + em), (round(start), top + base),
                                  group[0].font))
            group = []
        if unit is not None:
            group.append(unit)
    return runs


def _column_runs(line: list[_Unit], font: LetteringFont, left: int, y: float, base: int) -> list[PlacedRun]:
    em = font.size_px
    runs = []
    for unit in _trim(line):
        top = round(y)
        y += unit.advance
        if unit.kind == "space":
            continue
        box = (left, top, left + em, round(y))
        across = unit.font.getlength(unit.text)
        turned = unit.kind == "latin" and len(unit.text) > 2
        vert = unit.kind == "cjk"
        origin = (round(left + (em - across) / 2), top + base)
        if not font.raqm and unit.text in _TURN_WITHOUT_VERT:
            turned, vert = True, False
        elif not font.raqm and unit.text in _SHIFT_WITHOUT_VERT:
            origin = (left + round(em * 0.6), top + base - round(em * 0.6))
        runs.append(PlacedRun(unit.text, box, origin, unit.font, vert, turned))
    return runs


def draw_text(image: Image.Image, layout: TextLayout, at: tuple[int, int], fill: str = "black") -> None:
    """Draw ``layout`` with its top left at ``at`` (page pixels) onto ``image`` (RGB or L)."""
    draw = ImageDraw.Draw(image)
    colour = ImageColor.getcolor(fill, image.mode)
    ox, oy = at
    for run in layout.runs:
        if run.turned:
            _draw_turned(image, run, (ox, oy), colour, layout.stroke)
            continue
        extra = {"features": ["vert"]} if run.vert and layout.raqm else {}
        draw.text((ox + run.origin[0], oy + run.origin[1]), run.text, font=run.font, fill=colour, anchor="ls",
                  stroke_width=layout.stroke, stroke_fill=colour, **extra)


def _draw_turned(image: Image.Image, run: PlacedRun, at: tuple[int, int], colour, stroke: int) -> None:
    """A sideways run: drawn upright into a mask the size of its column piece, then turned clockwise."""
    x0, y0, x1, y1 = run.box
    length, em = y1 - y0, x1 - x0
    mask = Image.new("L", (max(1, length), max(1, em)), 0)
    face = run.font
    top, bottom = face.getbbox("Hg", anchor="ls")[1::2]
    baseline = round(em / 2 - (top + bottom) / 2)
    start = (length - face.getlength(run.text)) / 2
    ImageDraw.Draw(mask).text((start, baseline), run.text, font=face, fill=255, anchor="ls",
                              stroke_width=stroke, stroke_fill=255)
    turned = mask.transpose(Image.Transpose.ROTATE_270)  # 270 degrees anticlockwise = 90 clockwise
    left, top = at[0] + x0, at[1] + y0
    image.paste(colour, (left, top, left + turned.width, top + turned.height), turned)
