"""Lettering: fonts with real glyphs, vertical Japanese, kinsoku, bubbles that stay in their panel."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.errors import InvalidRequestError
from engines.manga.bubbles import draw_bubble, measure_bubble
from engines.manga.fonts import DEFAULT_FONT, FontBook, glyph_missing
from engines.manga.lettering import NO_END, NO_START, draw_text, fit_text
from engines.manga.page_model import BUBBLE_STYLES, Bubble

DPI = 150
PANEL = (40, 30, 640, 530)
LIBERATION = Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf")


@pytest.fixture(scope="module")
def book() -> FontBook:
    return FontBook(system=False)


def _ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")) < 128


def _render(layout, pad: int = 10) -> np.ndarray:
    image = Image.new("L", (layout.width + 2 * pad, layout.height + 2 * pad), 255)
    draw_text(image, layout, (pad, pad))
    return _ink(image)[pad:pad + layout.height, pad:pad + layout.width]


def test_default_font_has_real_glyphs_for_kana_kanji_and_latin(book):
    font = book.font("", 48).main
    for ch in "あカ漢字語A7g。":
        assert not glyph_missing(font, ch), ch
    assert glyph_missing(font, "\U0010FFFE")  # a noncharacter: the tofu box
    assert book.names()[0] == DEFAULT_FONT


def test_latin_only_font_falls_back_per_character(tmp_path):
    if not LIBERATION.is_file():
        pytest.skip("needs a Latin-only system font to fall back from")
    shutil.copy(LIBERATION, tmp_path / "Liberation.ttf")
    book = FontBook([tmp_path], system=False)
    assert "Liberation Sans" in book.names()
    lettering = book.font("Liberation Sans", 40)
    assert glyph_missing(lettering.main, "語")
    assert lettering.for_char("語") is lettering.fallback and lettering.for_char("A") is lettering.main
    layout = fit_text("A語", lettering, vertical=False, max_w=500, max_h=200)
    assert {run.font for run in layout.runs} == {lettering.main, lettering.fallback}


def test_unknown_font_names_what_is_available(book):
    with pytest.raises(InvalidRequestError, match=r"not available: choose one of IPAexGothic"):
        book.font("Comic Sans Nowhere", 30)


def test_vertical_columns_run_right_to_left_from_the_top_right(book):
    lettering = book.font("", 40)
    layout = fit_text("あいう\nかき", lettering, vertical=True, max_w=1000, max_h=1000)
    assert layout.lines == ("あいう", "かき")
    first, fourth = layout.runs[0], layout.runs[3]
    assert first.text == "あ" and first.box[2] == layout.width - lettering.stroke and first.box[1] == 0
    ink = _render(layout)
    columns = np.flatnonzero(ink.any(axis=0))
    gap = np.flatnonzero(np.diff(columns) > 1)
    assert len(gap) == 1  # two separate columns of ink
    assert fourth.box[2] <= first.box[0]  # the second column is left of the first
    left_col, right_col = ink[:, : columns[gap[0]] + 1], ink[:, columns[gap[0] + 1]:]
    assert right_col.sum() > left_col.sum()  # three characters on the right, two on the left


def test_vertical_period_sits_top_right_of_its_cell(book):
    lettering = book.font("", 60)
    layout = fit_text("あ。", lettering, vertical=True, max_w=1000, max_h=1000)
    period = layout.runs[1]
    assert period.text == "。" and period.vert
    ink = _render(layout, pad=0)
    x0, y0, x1, y1 = period.box
    cell = ink[y0:y1, x0:x1]
    ys, xs = np.nonzero(cell)
    assert len(ys) > 0
    assert ys.mean() < (y1 - y0) / 2 and xs.mean() > (x1 - x0) / 2


def test_vertical_period_top_right_without_raqm():
    lettering = FontBook(system=False, raqm=False).font("", 60)
    layout = fit_text("あ。", lettering, vertical=True, max_w=1000, max_h=1000)
    ink = _render(layout, pad=0)
    x0, y0, x1, y1 = layout.runs[1].box
    ys, xs = np.nonzero(ink[y0:y1, x0:x1])
    assert ys.mean() < (y1 - y0) / 2 and xs.mean() > (x1 - x0) / 2


@pytest.mark.parametrize("vertical", [True, False])
def test_kinsoku_no_line_starts_with_closing_or_ends_with_opening(book, vertical):
    lettering = book.font("", 30)
    text = "ああ。いい、うう」「ええっおお！かか」きき。くく、けけ（こ）さ"
    seen_lengths = set()
    for cells in range(3, 10):
        along, across = 30 * cells + 2, 10_000  # fewest, longest lines: every break is a forced one
        layout = fit_text(text, lettering, vertical=vertical, max_w=across if vertical else along,
                          max_h=along if vertical else across, aspect=0.01 if vertical else 100)
        if layout is None:
            continue
        seen_lengths.add(max(len(line) for line in layout.lines))
        for line in layout.lines:
            assert line[0] not in NO_START, (cells, layout.lines)
            assert line[-1] not in NO_END, (cells, layout.lines)
    assert len(seen_lengths) >= 3  # the rule was exercised at several wrap widths


def _bubble_mask(bubble: Bubble, book: FontBook, size=(700, 580)) -> tuple[np.ndarray, tuple]:
    image = Image.new("RGB", size, (0, 255, 0))  # green: anything not green was drawn
    box = draw_bubble(image, bubble, PANEL, DPI, book)
    drawn = np.any(np.asarray(image) != (0, 255, 0), axis=2)
    return drawn, box


LONG_JA = "待ってくれ！それは俺の弁当だ、今すぐ返せ。明日も明後日も絶対に渡さないからな！"
LONG_EN = "Wait! That is my lunch you are eating, give it back right now or I will never cook for you again."


@pytest.mark.parametrize("style", BUBBLE_STYLES)
@pytest.mark.parametrize("x, y, tail", [(0.0, 0.0, (1.0, 1.0)), (1.0, 1.0, (0.0, 0.0)),
                                        (1.0, 0.0, (0.0, 1.0)), (0.5, 0.5, (1.0, 0.0))])
def test_every_style_stays_inside_its_panel(book, style, x, y, tail):
    for text in (LONG_JA, LONG_EN, "はい"):
        bubble = Bubble(panel=1, text=text, x=x, y=y, style=style, tail_x=tail[0], tail_y=tail[1])
        drawn, box = _bubble_mask(bubble, book)
        ys, xs = np.nonzero(drawn)
        assert len(xs) > 500
        assert PANEL[0] <= xs.min() and xs.max() < PANEL[2] and PANEL[1] <= ys.min() and ys.max() < PANEL[3]
        assert box[0] <= xs.min() and xs.max() < box[2] and box[1] <= ys.min() and ys.max() < box[3]
        assert measure_bubble(bubble, PANEL, DPI, book) == box


def test_tail_reaches_toward_its_point(book):
    plain = Bubble(panel=1, text="行くぞ", x=0.3, y=0.3, style="speech")
    tailed = Bubble(panel=1, text="行くぞ", x=0.3, y=0.3, style="speech", tail_x=0.9, tail_y=0.9)
    (x0, y0, x1, y1), (tx0, ty0, tx1, ty1) = (measure_bubble(b, PANEL, DPI, book) for b in (plain, tailed))
    assert tx1 > x1 + 10 and ty1 > y1 + 10 and (tx0, ty0) == (x0, y0)


def test_bubble_grows_with_its_text(book):
    boxes = [measure_bubble(Bubble(panel=1, text=t, style=s), PANEL, DPI, book)
             for s in ("speech", "narration") for t in ("はい", "はい、わかりました", LONG_JA)]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas[0] < areas[1] < areas[2] and areas[3] < areas[4] < areas[5]


def test_same_inputs_same_pixels(book):
    def page() -> str:
        image = Image.new("L", (700, 580), 255)
        for i, style in enumerate(BUBBLE_STYLES):
            draw_bubble(image, Bubble(panel=1, text="うおおっ!! Go!", x=0.2 * i, y=0.5, style=style,
                                      tail_x=0.5, tail_y=1.0), PANEL, DPI, book)
        return hashlib.sha256(image.tobytes()).hexdigest()
    assert page() == page() == page()


def test_text_that_cannot_fit_raises_a_sentence(book):
    bubble = Bubble(panel=3, text=LONG_JA * 4, font_size=24)
    with pytest.raises(InvalidRequestError, match=r"Bubble text in panel 3 does not fit at 24 pt"):
        draw_bubble(Image.new("RGB", (700, 580), "white"), bubble, PANEL, DPI, book)


def test_empty_text_draws_nothing(book):
    image = Image.new("L", (700, 580), 200)
    assert draw_bubble(image, Bubble(panel=1, text="  \n "), PANEL, DPI, book) == (0, 0, 0, 0)
    assert image.getextrema() == (200, 200)


def test_bold_changes_pixels(book):
    image_r, image_b = Image.new("L", (700, 580), 255), Image.new("L", (700, 580), 255)
    draw_bubble(image_r, Bubble(panel=1, text="行くぞ！", style="narration"), PANEL, DPI, book)
    draw_bubble(image_b, Bubble(panel=1, text="行くぞ！", style="narration", bold=True), PANEL, DPI, book)
    assert _ink(image_r).sum() > 0 and _ink(image_b).sum() > _ink(image_r).sum() * 1.1


def test_shapes_differ_by_style(book):
    images, drawn = {}, {}
    for style in BUBBLE_STYLES:
        image = Image.new("L", (700, 580), 128)
        draw_bubble(image, Bubble(panel=1, text="えっ", x=0.5, y=0.5, style=style), PANEL, DPI, book)
        images[style], drawn[style] = _ink(image), (np.asarray(image) != 128).sum()
    assert len({hashlib.sha256(m.tobytes()).hexdigest() for m in images.values()}) == len(BUBBLE_STYLES)
    assert drawn["shout"] > drawn["speech"]  # spikes reach beyond the ellipse
    assert images["whisper"].sum() < images["speech"].sum() * 0.9  # the dashed outline has gaps
