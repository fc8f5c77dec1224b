"""A manga page as data: what the project file holds and what every part of the page engine shares.

    page = PageSpec(layout="2x2", reading="rtl", panels=(PanelSpec(image="a.png"), ...),
                    bubbles=(Bubble(panel=1, text="行くぞ！", x=0.7, y=0.2, tail_x=0.5, tail_y=0.6),))
    text = page_to_json(page); page = page_from_json(text)

Coordinates are fractions, never pixels, so a page keeps its look at any DPI and page size:
a bubble's centre and tail are fractions of its panel's lettering box, a panel's focus point is a
fraction of its image. Panels are numbered 1..N in reading order (the layout's order); with
right-to-left reading the layout's geometry is mirrored, so panel 1 is always read first.
Everything is frozen; an edit makes a new spec with ``dataclasses.replace``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Optional

from engines.errors import InvalidRequestError

PROJECT_VERSION = 1
BUBBLE_STYLES = ("speech", "thought", "shout", "whisper", "narration")
ALIGNMENTS = ("left", "center", "right")
TONE_MODES = ("none", "grey", "screentone", "ink")
FITS = ("cover", "contain")
READINGS = ("rtl", "ltr")


@dataclass(frozen=True)
class Tone:
    """The manga look: ``grey`` is a greyscale tuned for line art, ``screentone`` turns its mid-greys
    into halftone dots at ``lpi`` lines per inch and ``angle`` degrees (print manga uses 55-85 lpi at
    45 degrees), ``ink`` thresholds to pure black and white at ``threshold`` (0-255)."""

    mode: str = "none"
    lpi: float = 60.0
    angle: float = 45.0
    threshold: int = 128
    contrast: float = 1.0  # applied in the greyscale step, before tone or ink


@dataclass(frozen=True)
class PanelSpec:
    """Where a panel's picture comes from: an image file (dropped in or generated), else its prompt.

    ``image`` is a path; a relative one is relative to the project file's folder. ``prompt`` and
    ``seed`` are kept after generation so the panel can be made again. ``focus`` is the point of
    the image (fractions) kept in view when ``fit`` is "cover" crops it."""

    image: str = ""
    prompt: str = ""
    negative: str = ""
    seed: Optional[int] = None
    fit: str = "cover"
    focus: tuple[float, float] = (0.5, 0.5)
    tone: Optional[Tone] = None  # None = the page's tone


@dataclass(frozen=True)
class Bubble:
    """One piece of lettering in panel ``panel`` (1-based, reading order).

    ``x``/``y`` is the bubble's centre and ``tail_x``/``tail_y`` the spot its tail points at, both as
    fractions of the panel's lettering box (the upright rectangle inside its border); no tail when they
    are None (narration never has one).
    The bubble grows to fit its text and always stays inside its panel. ``font_size`` is in points
    (1/72 inch), so it prints at the same size at any DPI. ``vertical`` None means automatic:
    top-to-bottom columns (tategaki) when the text is mostly Japanese."""

    panel: int
    text: str
    x: float = 0.5
    y: float = 0.25
    style: str = "speech"
    tail_x: Optional[float] = None
    tail_y: Optional[float] = None
    font_size: float = 9.0
    bold: bool = False
    align: str = "center"
    vertical: Optional[bool] = None
    font: str = ""  # "" = the default font (see engines.manga.fonts)


@dataclass(frozen=True)
class PageSpec:
    """A page: its paper, its layout, what fills each panel, its lettering and its look."""

    name: str = "page"
    size: str = "B5"  # B5 | A5 | A4 | US comic | "WxHmm" | "WxHin"
    dpi: int = 300
    margin_mm: float = 10.0
    gutter_mm: float = 4.0
    bleed_mm: float = 0.0
    border_mm: float = 0.6
    layout: str = "2x2"  # a template name in assets/page_layouts/ or rows like "1; 2 1; 1 1 1"
    reading: str = "rtl"
    panels: tuple[PanelSpec, ...] = ()
    bubbles: tuple[Bubble, ...] = ()
    tone: Tone = field(default_factory=Tone)
    model: str = ""  # the Text-to-Manga model that fills panels from their prompts
    reference: str = ""  # the page's character reference image, used for every generated panel
    style_prompt: str = ""  # added to every panel's prompt (e.g. "monochrome, manga, screentone")
    sampler: str = ""  # "" / 0: the backend's defaults
    steps: int = 0
    cfg: float = 0.0
    panel_pixels: int = 512 * 640  # an SD panel's area; its shape follows the panel's


def check_bubble(bubble: Bubble, panel_count: int) -> None:
    """One sentence for a bubble that cannot be drawn."""
    if not 1 <= int(bubble.panel) <= panel_count:
        raise InvalidRequestError(f"A bubble is in panel {bubble.panel}, but this layout has panels "
                                  f"1 to {panel_count}.")
    if bubble.style not in BUBBLE_STYLES:
        raise InvalidRequestError(f"Unknown bubble style {bubble.style!r}: use one of {', '.join(BUBBLE_STYLES)}.")
    if bubble.align not in ALIGNMENTS:
        raise InvalidRequestError(f"Unknown alignment {bubble.align!r}: use left, center or right.")
    if not 3.0 <= float(bubble.font_size) <= 72.0:
        raise InvalidRequestError(f"Font size {bubble.font_size} pt is out of range: use 3 to 72 pt.")
    for name in ("x", "y", "tail_x", "tail_y"):
        value = getattr(bubble, name)
        if value is not None and not -0.001 <= float(value) <= 1.001:
            raise InvalidRequestError(f"A bubble's {name} is {value}: positions are fractions of the panel, 0 to 1.")


def check_tone(tone: Tone) -> None:
    if tone.mode not in TONE_MODES:
        raise InvalidRequestError(f"Unknown tone {tone.mode!r}: use one of {', '.join(TONE_MODES)}.")
    if not 10.0 <= float(tone.lpi) <= 200.0:
        raise InvalidRequestError(f"Screentone at {tone.lpi} lines per inch is out of range: use 10 to 200.")
    if not 0 <= int(tone.threshold) <= 255:
        raise InvalidRequestError(f"Ink threshold {tone.threshold} is out of range: use 0 to 255.")
    if not 0.2 <= float(tone.contrast) <= 4.0:
        raise InvalidRequestError(f"Contrast {tone.contrast} is out of range: use 0.2 to 4.")


def _tone_from(data: Any) -> Optional[Tone]:
    if data is None:
        return None
    return Tone(**_known(Tone, data))


def _known(cls: type, data: Any) -> dict[str, Any]:
    """The fields of ``cls`` found in ``data``; a project from a newer version keeps its known fields."""
    if not isinstance(data, dict):
        raise InvalidRequestError(f"The page file has {type(data).__name__} where a {cls.__name__} belongs.")
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def page_to_dict(page: PageSpec) -> dict[str, Any]:
    data = asdict(page)
    data["version"] = PROJECT_VERSION
    return data


def page_from_dict(data: Any) -> PageSpec:
    """A PageSpec from a project file's JSON; one sentence when it is not one."""
    values = _known(PageSpec, data)
    try:
        panels = tuple(
            replace(PanelSpec(**_known(PanelSpec, p)), tone=_tone_from(p.get("tone")),
                    focus=tuple(float(v) for v in p.get("focus", (0.5, 0.5)))[:2])  # type: ignore[arg-type]
            for p in values.pop("panels", ()))
        bubbles = tuple(Bubble(**_known(Bubble, b)) for b in values.pop("bubbles", ()))
        tone = _tone_from(values.pop("tone", None)) or Tone()
        return PageSpec(**values, panels=panels, bubbles=bubbles, tone=tone)
    except (TypeError, ValueError, AttributeError) as error:
        if isinstance(error, InvalidRequestError):
            raise
        raise InvalidRequestError(f"The page file is not a page Inkframe can read ({error}).") from error


def page_to_json(page: PageSpec) -> str:
    return json.dumps(page_to_dict(page), ensure_ascii=False, indent=2)


def page_from_json(text: str) -> PageSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(f"The page file is not valid JSON (line {error.lineno}).") from error
    return page_from_dict(data)
