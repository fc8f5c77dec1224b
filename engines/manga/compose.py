"""Drawing a page: panels filled with their pictures, borders, the manga look, then the lettering.

    page = compose_page(spec, base_dir=project_folder)          # ComposedPage(image, geometry, ...)
    page = compose_page(spec, base_dir=folder, preview_dpi=96)   # the same page, small, numbered

The order is fixed because each step must not spoil the next: pictures are cropped into their
panels and toned (a panel's own tone first, then the page's), borders are drawn over them, and
only then the bubbles, so screentone never dots the lettering's white or its anti-aliased edges.
A panel whose picture is missing or unreadable is drawn as a hatched box that says so and is
listed in ``missing``: reopening a project whose file moved shows it, it never fails.
Composition is deterministic: the same spec and pictures give the same pixels.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from PIL import Image, ImageDraw, ImageOps

from engines.errors import InvalidRequestError
from engines.manga.layouts import PageGeometry, PanelGeometry, page_geometry, resolve_layout
from engines.manga.page_model import PageSpec, PanelSpec, Tone, check_bubble, check_tone
from engines.manga.pictures import PAPER, on_paper

MAX_PICTURE_PIXELS = 80_000_000  # a panel picture larger than this is refused rather than decoded


@dataclass(frozen=True)
class ComposedPage:
    image: Image.Image
    geometry: PageGeometry
    bubble_boxes: tuple[tuple[int, int, int, int], ...]  # page pixels, in the order of spec.bubbles
    missing: tuple[int, ...]  # panels whose picture file is missing or unreadable
    empty: tuple[int, ...]  # panels with neither a picture nor anything to show yet


def geometry_of(spec: PageSpec, dpi: Optional[int] = None) -> PageGeometry:
    return page_geometry(spec.size, dpi or spec.dpi, resolve_layout(spec.layout), reading=spec.reading,
                         margin_mm=spec.margin_mm, gutter_mm=spec.gutter_mm, bleed_mm=spec.bleed_mm,
                         border_mm=spec.border_mm)


def check_page(spec: PageSpec) -> PageGeometry:
    """Every setting of the page, before anything is drawn or generated; returns its geometry."""
    if spec.reading not in ("rtl", "ltr"):
        raise InvalidRequestError(f"Reading order {spec.reading!r} is unknown: use rtl (manga) or ltr.")
    geometry = geometry_of(spec)
    count = len(geometry.panels)
    if len(spec.panels) > count:
        raise InvalidRequestError(f"The page has {len(spec.panels)} panel pictures but its layout has {count} panels.")
    for panel in spec.panels:
        if panel.fit not in ("cover", "contain"):
            raise InvalidRequestError(f"Unknown fit {panel.fit!r}: use cover (crop to fill) or contain (show it all).")
        if panel.tone is not None:
            check_tone(panel.tone)
    check_tone(spec.tone)
    for bubble in spec.bubbles:
        check_bubble(bubble, count)
    return geometry


def resolve_image_path(image: str, base_dir: Optional[Path]) -> Path:
    path = Path(image).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def open_picture(path: Path, mode: str = "RGB") -> Image.Image:
    """A panel picture in ``mode`` (RGB or L), upright (EXIF), transparency on white paper; one
    sentence for a file that is not a usable image. One conversion at most: a panel is decoded
    on every redraw of the page, so copies here are paid many times."""
    try:
        with warnings.catch_warnings():  # Pillow warns of big headers; the size check below says it once
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(path)
        with picture:
            if picture.width * picture.height > MAX_PICTURE_PIXELS:
                raise InvalidRequestError(f"{path.name} is {picture.width}x{picture.height} pixels, too large for a "
                                          "panel picture: scale it below 80 megapixels.")
            picture.load()
            ImageOps.exif_transpose(picture, in_place=True)
            picture = on_paper(picture)
            return picture if picture.mode == mode else picture.convert(mode)
    except InvalidRequestError:
        raise
    except FileNotFoundError:
        raise InvalidRequestError(f"The panel picture {path} is not there.") from None
    except Image.DecompressionBombError:  # Pillow's own limit, checked before ours for giant headers
        raise InvalidRequestError(f"{path.name} is too large for a panel picture: scale it below "
                                  "80 megapixels.") from None
    except (OSError, ValueError) as error:
        raise InvalidRequestError(f"{path.name} is not an image that can be opened ({error}).") from None


def fit_picture(picture: Image.Image, size: tuple[int, int], fit: str, focus: tuple[float, float]) -> Image.Image:
    """The picture at exactly ``size``: "cover" crops it to fill, keeping ``focus`` (fractions of the
    picture) as near the middle as the crop allows; "contain" shows all of it on paper white."""
    width, height = max(1, size[0]), max(1, size[1])
    if fit == "contain":
        scale = min(width / picture.width, height / picture.height)
        scaled = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (width, height), PAPER)
        canvas.paste(scaled, ((width - scaled.width) // 2, (height - scaled.height) // 2))
        return canvas
    scale = max(width / picture.width, height / picture.height)
    crop_w, crop_h = min(width / scale, picture.width), min(height / scale, picture.height)  # float slack
    fx = min(max(float(focus[0]), 0.0), 1.0) * picture.width
    fy = min(max(float(focus[1]), 0.0), 1.0) * picture.height
    left = min(max(fx - crop_w / 2, 0.0), picture.width - crop_w)
    top = min(max(fy - crop_h / 2, 0.0), picture.height - crop_h)
    # Bicubic to enlarge (an SD panel at print size is 2-3x its pixels: Lanczos rings there and costs
    # 1.6x as much), Lanczos to reduce, where it is the sharpest.
    method = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS
    return picture.resize((width, height), method, box=(left, top, left + crop_w, top + crop_h))


def _placeholder(size: tuple[int, int], label: str, dpi: int) -> Image.Image:
    """A hatched box that says what is missing (the file's name), instead of a picture."""
    image = Image.new("RGB", size, (236, 236, 236))
    draw = ImageDraw.Draw(image)
    step = max(8, round(dpi / 12))
    for offset in range(-size[1], size[0], step):
        draw.line([(offset, 0), (offset + size[1], size[1])], fill=(205, 205, 205), width=max(1, dpi // 100))
    if label:
        from PIL import ImageFont

        font = ImageFont.load_default(size=max(10, round(12 * dpi / 72)))
        text_box = draw.textbbox((0, 0), label, font=font)
        x = (size[0] - (text_box[2] - text_box[0])) / 2
        y = (size[1] - (text_box[3] - text_box[1])) / 2
        draw.rectangle((x - 6, y - 6, x + text_box[2] - text_box[0] + 6, y + text_box[3] - text_box[1] + 6),
                       fill=PAPER)
        draw.text((x - text_box[0], y - text_box[1]), label, fill=(150, 0, 0), font=font)
    return image


def _mask(panel_polygon: tuple, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
    ImageDraw.Draw(mask).polygon([(x - box[0], y - box[1]) for x, y in panel_polygon], fill=255)
    return mask


def _box_of(polygon: tuple) -> tuple[int, int, int, int]:
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    return math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys))


def _panel_picture(panel: PanelSpec, geometry: PanelGeometry, base_dir: Optional[Path], dpi: int,
                   preview: bool, mode: str) -> tuple[Optional[Image.Image], str]:
    """(picture fitted to the panel's inner box, in the page's mode, or None; "ok" | "missing" | "empty")."""
    box = _box_of(geometry.inner)
    size = (box[2] - box[0], box[3] - box[1])
    if not panel.image:
        if preview and panel.prompt:
            return _placeholder(size, "", dpi).convert(mode), "empty"
        return None, "empty"
    path = resolve_image_path(panel.image, base_dir)
    try:
        # a greyscale page fits grey pictures: the same luminance the tone would take, at a third of the work
        picture = open_picture(path, mode)
    except InvalidRequestError:
        return _placeholder(size, f"missing: {Path(panel.image).name}", dpi).convert(mode), "missing"
    return fit_picture(picture, size, panel.fit, panel.focus), "ok"


def _page_mode(spec: PageSpec) -> str:
    """"L" when the whole page ends greyscale (its tone is on and no panel keeps its colour), else "RGB"."""
    if spec.tone.mode == "none":
        return "RGB"
    return "RGB" if any(p.tone is not None and p.tone.mode == "none" for p in spec.panels) else "L"


def _colour(mode: str, grey: int):
    return grey if mode == "L" else (grey, grey, grey)


def compose_page(spec: PageSpec, *, base_dir: Optional[Path] = None, preview_dpi: Optional[int] = None,
                 fonts=None) -> ComposedPage:
    """The page as an image at ``spec.dpi`` (or ``preview_dpi``, numbered, for the editor)."""
    from engines.manga.bubbles import paint_bubble, prepare_bubble
    from engines.manga.fonts import FontBook
    from engines.manga.tone import apply_tone

    geometry = check_page(spec)
    preview = preview_dpi is not None
    dpi = int(preview_dpi or spec.dpi)
    if dpi != spec.dpi:
        geometry = geometry_of(spec, dpi)
    mode = _page_mode(spec)
    page = Image.new(mode, (geometry.width, geometry.height), _colour(mode, 255))
    draw = ImageDraw.Draw(page)
    missing, empty = [], []
    panels = [spec.panels[g.number - 1] if g.number <= len(spec.panels) else PanelSpec() for g in geometry.panels]
    # 1. pictures, each toned by its own panel tone, cut to the panel's shape. Decoding and resizing
    # release the GIL, so the panels load side by side (half the time on 2 cores); the order of the
    # pastes below stays fixed, so the page is the same pixels however the threads ran.
    fonts = fonts or FontBook()
    with ThreadPoolExecutor(max_workers=max(1, min(len(panels), os.cpu_count() or 1, 8))) as pool:
        pictures = pool.map(lambda pair: _panel_picture(pair[0], pair[1], base_dir, dpi, preview, mode),
                            zip(panels, geometry.panels))
        # meanwhile, in this thread: the bubbles' text layout and outlines, which need no page
        bubbles = [prepare_bubble(b, geometry.panels[b.panel - 1].text_box, dpi, fonts) for b in spec.bubbles]
        loaded = list(pictures)
    for panel_geometry, panel, (picture, state) in zip(geometry.panels, panels, loaded):
        if state == "missing":
            missing.append(panel_geometry.number)
        elif state == "empty":
            empty.append(panel_geometry.number)
        inner_box = _box_of(panel_geometry.inner)
        _draw_border(draw, panel_geometry, inner_box, _colour(mode, 0))
        if picture is None:
            picture = Image.new(mode, (inner_box[2] - inner_box[0], inner_box[3] - inner_box[1]), _colour(mode, 255))
        elif panel.tone is not None and panel.tone.mode != "none":
            # the panel's screen keeps the page's grid, so neighbouring tones line up
            picture = apply_tone(picture, _viewable(panel.tone, dpi, preview), dpi, offset=inner_box[:2]).convert(mode)
        if panel_geometry.is_rectangle:
            page.paste(picture, inner_box[:2])
        else:
            page.paste(picture, inner_box[:2], _mask(panel_geometry.inner, inner_box))
    # 2. the page's tone over pictures and borders (panels with their own tone keep it)
    if spec.tone.mode != "none":
        toned = apply_tone(page, _viewable(spec.tone, dpi, preview), dpi)
        toned = toned if toned.mode == mode else toned.convert(mode)
        own = [g for g in geometry.panels if g.number <= len(spec.panels) and spec.panels[g.number - 1].tone]
        for g in own:  # a panel's own tone wins over the page's
            box = _box_of(g.inner)
            toned.paste(page.crop(box), box[:2], _mask(g.inner, box))
        page = toned
        draw = ImageDraw.Draw(page)
    # 3. lettering, last, clean black on white
    boxes = [paint_bubble(page, prepared) for prepared in bubbles]
    # 4. the editor's panel numbers, in reading order
    if preview:
        _number_panels(draw, geometry, dpi, mode)
    return ComposedPage(page, geometry, tuple(boxes), tuple(missing), tuple(empty))


def _draw_border(draw: ImageDraw.ImageDraw, panel: PanelGeometry, inner_box: tuple[int, int, int, int],
                 ink) -> None:
    """The panel's border: for a rectangle its four sides (the picture covers the rest), otherwise the
    whole polygon in ink, which the picture's shape then covers inside the border."""
    if not panel.is_rectangle:
        draw.polygon(panel.polygon, fill=ink)
        return
    left, top, right, bottom = _box_of(panel.polygon)
    for side in ((left, top, right, inner_box[1]), (left, inner_box[3], right, bottom),
                 (left, top, inner_box[0], bottom), (inner_box[2], top, right, bottom)):
        if side[2] > side[0] and side[3] > side[1]:
            draw.rectangle((side[0], side[1], side[2] - 1, side[3] - 1), fill=ink)


def _viewable(tone: Tone, dpi: int, preview: bool) -> Tone:
    """On a small preview a 60 lpi screen would be dots of 1-2 pixels, which read as noise and moire;
    the editor shows the screen coarser (at least 4 pixels a dot) so the artist sees that it is there."""
    if preview and tone.mode == "screentone" and dpi / tone.lpi < 4:
        return replace(tone, lpi=dpi / 4)
    return tone


def _number_panels(draw: ImageDraw.ImageDraw, geometry: PageGeometry, dpi: int, mode: str) -> None:
    from PIL import ImageFont

    font = ImageFont.load_default(size=max(12, round(14 * dpi / 72)))
    for panel in geometry.panels:
        left, top = _box_of(panel.inner)[:2]
        label = str(panel.number)
        box = draw.textbbox((left + 6, top + 6), label, font=font)
        draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=_colour(mode, 30))
        draw.text((left + 6, top + 6), label, fill=_colour(mode, 255), font=font)


def with_panel(spec: PageSpec, number: int, **changes) -> PageSpec:
    """The spec with panel ``number``'s fields changed, adding empty panels up to it."""
    panels = list(spec.panels) + [PanelSpec()] * max(0, number - len(spec.panels))
    panels[number - 1] = replace(panels[number - 1], **changes)
    return replace(spec, panels=tuple(panels))
