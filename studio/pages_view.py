"""Data shaping for the Pages editor (no gradio here): choices, clicks on the preview, edits of the page.

Every edit is a function ``(spec, ...) -> spec``; the section loads the page from disk, applies one,
saves it and draws the preview again, so the project on disk is always the page on screen.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.manga.compose import ComposedPage, compose_page, open_picture, resolve_image_path, with_panel
from engines.manga.layouts import PAPER_MM, paper_mm, templates
from engines.manga.page_model import Bubble, PageSpec
from engines.manga.project import list_pages

PREVIEW_LONG_SIDE = 1000  # pixels: the editor's page, sharp enough to letter, fast enough to redraw
CUSTOM = "custom"
CLICK_MODES = ("add a bubble", "point the tail", "move the bubble", "set the focus point")


def layout_choices() -> list[tuple[str, str]]:
    return [(layout.title, name) for name, layout in templates().items()] + [("Custom rows…", CUSTOM)]


def paper_choices() -> list[str]:
    return [*PAPER_MM, CUSTOM]


def page_choices(outputs: Path) -> list[tuple[str, str]]:
    return [(folder.name, str(folder)) for folder in list_pages(outputs)]


def bubble_choices(spec: PageSpec) -> list[tuple[str, int]]:
    def label(i: int, bubble: Bubble) -> str:
        text = " ".join(bubble.text.split())
        return f"{i + 1}. panel {bubble.panel}, {bubble.style}: {text[:24]}{'…' if len(text) > 24 else ''}"

    return [(label(i, b), i) for i, b in enumerate(spec.bubbles)]


def preview_dpi(spec: PageSpec) -> int:
    """The DPI at which the page's long side is about PREVIEW_LONG_SIDE pixels (never above the page's)."""
    width_mm, height_mm = paper_mm(spec.size)
    long_inches = (max(width_mm, height_mm) + 2 * spec.bleed_mm) / 25.4
    return max(36, min(spec.dpi, round(PREVIEW_LONG_SIDE / long_inches)))


def render(spec: PageSpec, folder: Path, fonts: Any = None) -> ComposedPage:
    return compose_page(spec, base_dir=folder, preview_dpi=preview_dpi(spec), fonts=fonts)


def status(spec: PageSpec, folder: Path, composed: Optional[ComposedPage]) -> str:
    parts = [f"**{spec.name}**", f"{spec.size}, {spec.dpi} DPI", "right to left" if spec.reading == "rtl"
             else "left to right", f"{len(composed.geometry.panels) if composed else '?'} panels",
             f"saved {time.strftime('%H:%M:%S')} in `{folder}`"]
    line = " · ".join(parts)
    if composed and composed.missing:
        names = ", ".join(f"{n} ({Path(spec.panels[n - 1].image).name})" for n in composed.missing)
        line += f"\n\n⚠ Missing picture in panel {names}: drop the picture in again."
    return line


def settings_changes(layout: str, rows: str, reading: str, paper: str, custom_size: str, dpi: Any, margin: Any,
                     gutter: Any, bleed: Any) -> dict[str, Any]:
    """The page fields from the settings widgets (a custom layout or size from its text box)."""
    layout_value = (rows or "").strip() if layout == CUSTOM else layout
    if layout == CUSTOM and not layout_value:
        raise InvalidRequestError('Write the custom layout as rows, like "1; 2 1; 1 1 1".')
    size = (custom_size or "").strip() if paper == CUSTOM else paper
    if paper == CUSTOM and not size:
        raise InvalidRequestError("Write the custom page size, like 182x257mm or 7x10in.")
    return dict(layout=layout_value, reading="rtl" if str(reading).startswith("right") or reading == "rtl" else "ltr",
                size=size, dpi=int(dpi or 300), margin_mm=float(margin or 0), gutter_mm=float(gutter or 0),
                bleed_mm=float(bleed or 0))


def without_empty_tail(spec: PageSpec) -> PageSpec:
    """Drop the empty panels past the layout's last one (a switch to a layout with fewer panels keeps
    every panel that holds a picture or a prompt, and says so when one no longer has a place)."""
    from engines.manga.layouts import resolve_layout

    panels = list(spec.panels)
    count = len(resolve_layout(spec.layout).panels)
    while len(panels) > count and not (panels[-1].image or panels[-1].prompt):
        panels.pop()
    return replace(spec, panels=tuple(panels))


def clicked_panel(composed: ComposedPage, x: float, y: float) -> Optional[tuple[int, float, float]]:
    """(panel, x, y as fractions of the panel's lettering box) under a click on the preview, None in a gutter."""
    number = composed.geometry.panel_at(x, y)
    if number is None:
        return None
    return (number, *point_in_panel(composed, number, x, y))


def clicked_bubble(composed: ComposedPage, x: float, y: float) -> Optional[int]:
    """The index of the bubble drawn under a click (the topmost, drawn last), None if there is none."""
    for index in range(len(composed.bubble_boxes) - 1, -1, -1):
        left, top, right, bottom = composed.bubble_boxes[index]
        if left <= x <= right and top <= y <= bottom:
            return index
    return None


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def add_bubble(spec: PageSpec, panel: int, fx: float, fy: float, style: dict[str, Any]) -> PageSpec:
    """A new bubble centred on the click, its tail pointing down toward the panel's middle."""
    text = str(style.get("text") or "").strip() or "…"
    kind = style.get("style") or "speech"
    tail = (None, None) if kind == "narration" else (_clamp(0.5 * fx + 0.25), _clamp(fy + 0.3))
    bubble = Bubble(panel=panel, text=text, x=fx, y=fy, style=kind, tail_x=tail[0], tail_y=tail[1],
                    font_size=float(style.get("font_size") or 9.0), bold=bool(style.get("bold")),
                    align=style.get("align") or "center", vertical=direction_value(style.get("direction")),
                    font=style.get("font") or "")
    return replace(spec, bubbles=spec.bubbles + (bubble,))


def direction_value(direction: Any) -> Optional[bool]:
    return {"vertical": True, "horizontal": False}.get(str(direction or "auto"))


def direction_label(vertical: Optional[bool]) -> str:
    return {True: "vertical", False: "horizontal"}.get(vertical, "auto")  # type: ignore[arg-type]


def edit_bubble(spec: PageSpec, index: int, **changes: Any) -> PageSpec:
    if not 0 <= index < len(spec.bubbles):
        raise InvalidRequestError("Click a bubble on the page (or add one) first.")
    bubbles = list(spec.bubbles)
    bubbles[index] = replace(bubbles[index], **changes)
    return replace(spec, bubbles=tuple(bubbles))


def point_in_panel(composed: ComposedPage, panel: int, x: float, y: float) -> tuple[float, float]:
    """A click as fractions of ``panel``'s lettering box, clamped into it (a tail cannot leave its panel)."""
    left, top, right, bottom = composed.geometry.panels[panel - 1].text_box
    return _clamp((x - left) / max(1, right - left)), _clamp((y - top) / max(1, bottom - top))


def delete_bubble(spec: PageSpec, index: int) -> PageSpec:
    if not 0 <= index < len(spec.bubbles):
        raise InvalidRequestError("Choose the bubble to delete first.")
    return replace(spec, bubbles=spec.bubbles[:index] + spec.bubbles[index + 1:])


def refocus(spec: PageSpec, folder: Path, composed: ComposedPage, panel: int, fx: float, fy: float) -> PageSpec:
    """Move a cropped panel so the clicked spot of its picture comes to the middle of the panel."""
    if panel > len(spec.panels) or not spec.panels[panel - 1].image:
        raise InvalidRequestError(f"Panel {panel} has no picture to move.")
    current = spec.panels[panel - 1]
    picture = open_picture(resolve_image_path(current.image, folder))
    left, top, right, bottom = composed.geometry.panels[panel - 1].box
    scale = max((right - left) / picture.width, (bottom - top) / picture.height)
    shown_w, shown_h = (right - left) / scale / picture.width, (bottom - top) / scale / picture.height
    # the crop's left edge in picture fractions, as fit_picture placed it for the current focus
    start_x = min(max(current.focus[0] - shown_w / 2, 0.0), 1.0 - shown_w)
    start_y = min(max(current.focus[1] - shown_h / 2, 0.0), 1.0 - shown_h)
    focus = (_clamp(start_x + fx * shown_w), _clamp(start_y + fy * shown_h))
    return with_panel(spec, panel, focus=focus, fit="cover")


def bubble_fields(spec: PageSpec, index: Optional[int]) -> dict[str, Any]:
    """The bubble editor's values for bubble ``index``."""
    if index is None or not 0 <= index < len(spec.bubbles):
        return {}
    b = spec.bubbles[index]
    return dict(text=b.text, style=b.style, font_size=b.font_size, bold=b.bold, align=b.align,
                direction=direction_label(b.vertical), font=b.font or "")
