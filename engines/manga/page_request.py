"""A page described the way the CLI and the `/compose_page` API take it: pictures, prompts and bubbles as text.

    request = PageRequest(layout="2x2", panels=("a.png", "3=c.png"), bubbles=("1:行くぞ！", "2:Wait!:shout"))
    spec, folder = build_page(request, outputs)        # checked; pictures copied into the project
    result = make_page(request, ctx, Path("page.png"))  # + panels drawn from prompts, + the file written

Panel N is the N-th in reading order. Each picture and prompt fills the next panel that has
neither, or panel N with "N=...". A bubble is "N:TEXT" or "N:TEXT:style", placed in the panel's
first-read top corner with its tail toward the middle (the Pages editor moves it later). The page
is kept as a project in outputs/pages/<name>/ either way, so the studio opens it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from engines.errors import InvalidRequestError
from engines.manga.page_model import BUBBLE_STYLES, Bubble, PageSpec
from engines.progress import CancelToken, OnStep, no_progress


@dataclass(frozen=True)
class PageRequest:
    layout: Optional[str] = None  # None: the project's, else "2x2"
    panels: tuple[str, ...] = ()  # "[N=]IMAGE"
    prompts: tuple[str, ...] = ()  # "[N=]TEXT"
    bubbles: tuple[str, ...] = ()  # "N:TEXT[:style]"
    reading: Optional[str] = None  # "rtl" | "ltr"
    tone: Optional[str] = None  # none | grey | screentone | ink
    lpi: Optional[float] = None
    tone_angle: Optional[float] = None
    size: Optional[str] = None
    dpi: Optional[int] = None
    margin: Optional[float] = None
    gutter: Optional[float] = None
    bleed: Optional[float] = None
    fit: Optional[str] = None
    model: Optional[str] = None
    reference: Optional[str] = None
    style: Optional[str] = None
    seed: Optional[int] = None
    sampler: Optional[str] = None
    steps: Optional[int] = None
    cfg: Optional[float] = None
    name: Optional[str] = None
    project: Optional[str] = None  # a saved page (folder or page.json) to start from


@dataclass(frozen=True)
class PageResult:
    output: Path
    folder: Path
    spec: PageSpec
    size: tuple[int, int]


def _numbered(values: tuple[str, ...], count: int, taken: set[int], what: str) -> list[tuple[int, str]]:
    """"N=value" goes to panel N; a plain value to the next panel not yet given anything."""
    placed = []
    for value in values:
        match = re.match(r"^(\d+)=(.*)$", value, re.S)
        if match:
            number, value = int(match.group(1)), match.group(2)
        else:
            number = next((n for n in range(1, count + 1) if n not in taken), 0)
        if not 1 <= number <= count:
            raise InvalidRequestError(f"There is no panel for the {what} {value!r}: the layout has {count} panels.")
        if number in taken:
            raise InvalidRequestError(f"Panel {number} is given two pictures or prompts.")
        taken.add(number)
        placed.append((number, value))
    return placed


def parse_bubble(text: str, reading: str, placed: tuple[Bubble, ...] = ()) -> Bubble:
    """ "N:TEXT[:style]" as a Bubble in the panel's first-read top corner, below the bubbles already
    ``placed`` in that panel, its tail toward the panel's middle."""
    number, sep, rest = str(text).partition(":")
    if not sep or not number.strip().isdigit():
        raise InvalidRequestError(f'Write a bubble as "N:TEXT" or "N:TEXT:style", not {text!r}.')
    body, sep, style = rest.rpartition(":")
    if not sep or style.strip().lower() not in BUBBLE_STYLES:
        body, style = rest, "speech"
    if not body.strip():
        raise InvalidRequestError(f"The bubble {text!r} has no text.")
    style = style.strip().lower()
    x = 0.72 if reading == "rtl" else 0.28
    y = min(0.2 + 0.25 * sum(b.panel == int(number) for b in placed), 0.8)
    tail = (None, None) if style == "narration" else (0.5, min(0.95, y + 0.3))
    return Bubble(panel=int(number), text=body.replace("\\n", "\n"), x=x, y=y, style=style,
                  tail_x=tail[0], tail_y=tail[1])


def build_page(request: PageRequest, outputs: Path) -> tuple[PageSpec, Path]:
    """The checked PageSpec and its project folder; pictures are copied in, nothing is drawn yet."""
    from engines.manga.compose import check_page, geometry_of, with_panel
    from engines.manga.project import import_picture, load_page, new_page_name, page_folder

    r = request
    if r.project:
        spec, folder = load_page(Path(r.project))
    else:
        spec = PageSpec(name=r.name or new_page_name(outputs))
        folder = page_folder(outputs, spec.name)
    if r.reference and not Path(r.reference).expanduser().is_file():
        raise InvalidRequestError(f"The character reference {r.reference} is not there.")
    changes = dict(layout=r.layout, reading=r.reading, size=r.size, dpi=r.dpi, margin_mm=r.margin,
                   gutter_mm=r.gutter, bleed_mm=r.bleed, model=r.model, style_prompt=r.style,
                   sampler=r.sampler, steps=r.steps, cfg=r.cfg,
                   reference=str(Path(r.reference).expanduser().resolve()) if r.reference else None)
    spec = replace(spec, **{k: v for k, v in changes.items() if v is not None})
    if r.tone is not None or r.lpi is not None or r.tone_angle is not None:
        mode = r.tone or (spec.tone.mode if spec.tone.mode != "none" else "screentone")
        spec = replace(spec, tone=replace(spec.tone, mode=mode, lpi=spec.tone.lpi if r.lpi is None else r.lpi,
                                          angle=spec.tone.angle if r.tone_angle is None else r.tone_angle))
    count = len(geometry_of(replace(spec, panels=(), bubbles=())).panels)  # the paper and layout, checked first
    taken = {i + 1 for i, p in enumerate(spec.panels[:count]) if p.image or p.prompt} if r.project else set()
    pictures = _numbered(r.panels, count, taken, "picture")
    prompts = _numbered(r.prompts, count, taken, "prompt")
    for number, image in pictures:  # opened and copied into the project: a broken file stops here
        spec = with_panel(spec, number, image=import_picture(folder, number, Path(image).expanduser()))
    for i, (number, prompt) in enumerate(prompts):
        spec = with_panel(spec, number, prompt=prompt, image="", seed=None if r.seed is None else r.seed + i)
    if r.fit is not None:
        spec = replace(spec, panels=tuple(replace(p, fit=r.fit) for p in spec.panels))
    bubbles = spec.bubbles
    for text in r.bubbles:
        bubbles += (parse_bubble(text, spec.reading, bubbles),)
    spec = replace(spec, bubbles=bubbles)
    check_page(spec)
    return spec, folder


def make_page(request: PageRequest, ctx: Any, output: Optional[Path] = None, *, suffix: str = ".png",
              on_step: OnStep = no_progress, cancel: Optional[CancelToken] = None, fonts: Any = None) -> PageResult:
    """Build the page, draw its prompt panels with the Text-to-Manga backend, and write ``output``
    (by default ``<name><suffix>`` in the project's folder).

    ``ctx`` needs ``settings`` only when no panel has a prompt; an EngineContext otherwise."""
    from engines.manga.page_fill import fill_panels, panel_requests, panels_to_fill
    from engines.manga.page_output import PAGE_SUFFIXES, check_output, export_page
    from engines.manga.project import export_name, save_page

    paths = ctx.settings.paths
    if output is not None:
        output = check_output(output, PAGE_SUFFIXES)
    elif suffix not in PAGE_SUFFIXES:
        raise InvalidRequestError(f"A page is written as {' or '.join(PAGE_SUFFIXES)}, not {suffix!r}.")
    spec, folder = build_page(request, paths.outputs)
    output = output or export_name(folder, spec, suffix)
    to_fill = panels_to_fill(spec)
    if to_fill:
        panel_requests(spec, paths, to_fill)  # every prompt checked before a model loads
    save_page(spec, folder)
    if to_fill:
        spec = fill_panels(spec, folder, ctx, numbers=to_fill, on_step=on_step, cancel=cancel)
    composed = export_page(spec, folder, output, require_pictures=True, fonts=fonts)
    return PageResult(output, folder, spec, composed.image.size)
