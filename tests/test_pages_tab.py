"""The Pages section of the Text-to-Manga tab: the editor's edits, the `/compose_page` and `/chapter` endpoints through
gradio_client, and a browser that composes a 2x2 page from dropped-in pictures, letters it by clicking and
downloads the PNG."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.manga.compose import compose_page
from engines.manga.page_model import Bubble, PageSpec, PanelSpec
from engines.manga.project import load_page, save_page
from studio.pages_view import (CUSTOM, add_bubble, bubble_choices, clicked_bubble, clicked_panel, delete_bubble,
                               edit_bubble, preview_dpi, refocus, render, settings_changes)

COLOURS = [(220, 40, 40), (40, 160, 60), (40, 60, 200), (230, 200, 30)]


def _pictures(folder: Path, size=(120, 90)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(COLOURS):
        path = folder / f"panel{i + 1}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(path)
    return paths


def test_clicks_place_select_and_move_bubbles(tmp_path: Path) -> None:
    pictures = _pictures(tmp_path)
    spec = PageSpec(layout="2x2", panels=tuple(PanelSpec(image=str(p)) for p in pictures))
    assert 90 <= preview_dpi(spec) <= 100  # B5's long side near 1000 pixels
    composed = render(spec, tmp_path)
    left, top, right, bottom = composed.geometry.panels[0].text_box
    panel, fx, fy = clicked_panel(composed, left + 0.25 * (right - left), top + 0.5 * (bottom - top))
    assert (panel, round(fx, 2), round(fy, 2)) == (1, 0.25, 0.5)
    assert clicked_panel(composed, 1, 1) is None  # the margin
    spec = add_bubble(spec, panel, fx, fy, {"text": "行くぞ！", "style": "shout", "font_size": 12,
                                            "direction": "vertical"})
    assert spec.bubbles[0] == Bubble(panel=1, text="行くぞ！", x=fx, y=fy, style="shout", tail_x=0.375, tail_y=0.8,
                                     font_size=12.0, vertical=True)
    composed = render(spec, tmp_path)
    bx0, by0, bx1, by1 = composed.bubble_boxes[0]
    assert clicked_bubble(composed, (bx0 + bx1) / 2, (by0 + by1) / 2) == 0 and clicked_bubble(composed, 1, 1) is None
    moved = edit_bubble(spec, 0, x=0.8, text="待て")
    assert moved.bubbles[0].x == 0.8 and moved.bubbles[0].text == "待て"
    assert bubble_choices(moved) == [("1. panel 1, shout: 待て", 0)]
    assert delete_bubble(moved, 0).bubbles == ()
    with pytest.raises(Exception, match="Click a bubble"):
        edit_bubble(spec, 3, x=0.1)


def test_a_click_moves_the_crop_to_that_spot(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    picture = Image.new("RGB", (200, 100), (255, 0, 0))
    picture.paste((0, 0, 255), (180, 0, 200, 100))  # a blue strip at the right end, cropped away at first
    picture.save(wide)
    spec = PageSpec(layout="1; 1", dpi=100, panels=(PanelSpec(image=str(wide)),))
    composed = render(spec, tmp_path)
    panel = composed.geometry.panels[0]
    edge = (panel.box[2] - 12, (panel.box[1] + panel.box[3]) // 2)
    assert composed.image.getpixel(edge) == (255, 0, 0)
    spec = refocus(spec, tmp_path, composed, 1, 1.0, 0.5)  # click the right edge: it comes to the middle
    assert spec.panels[0].focus[0] > 0.8
    assert render(spec, tmp_path).image.getpixel(edge) == (0, 0, 255)


def test_settings_widgets_and_their_sentences() -> None:
    values = settings_changes("2x3", "", "left to right", "A5", "", 350, 8, 3, 2)
    assert values == dict(layout="2x3", reading="ltr", size="A5", dpi=350, margin_mm=8.0, gutter_mm=3.0, bleed_mm=2.0)
    custom = settings_changes(CUSTOM, "1; 1 1", "right to left (manga)", CUSTOM, "7x10in", 300, 10, 4, 0)
    assert (custom["layout"], custom["size"], custom["reading"]) == ("1; 1 1", "7x10in", "rtl")
    with pytest.raises(Exception, match="rows"):
        settings_changes(CUSTOM, " ", "rtl", "B5", "", 300, 10, 4, 0)
    with pytest.raises(Exception, match="custom page size"):
        settings_changes("2x2", "", "rtl", CUSTOM, "", 300, 10, 4, 0)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path):
    from test_app import Studio

    data = tmp_path_factory.mktemp("pages-studio") / "data"
    (data / "outputs").mkdir(parents=True)
    shutil.copytree(tiny_sd_dir, data / "models" / "tiny-anime")
    server = Studio(data, "--cpu", "--offline")
    yield server, data
    server.stop()


def test_compose_page_and_chapter_endpoints_through_gradio_client(studio) -> None:
    from gradio_client import Client

    server, data = studio
    pictures = _pictures(data / "outputs" / "incoming")
    client = Client(server.url, verbose=False)
    made = client.predict(layout="2x2", panel=[str(p) for p in pictures], bubble=["1:行くぞ！", "4:Run!:shout"],
                          dpi=72, name="api-page", api_name="/compose_page")
    assert Path(made["file"]).is_file() and (made["width"], made["height"]) == (516, 729)
    spec, _ = load_page(Path(made["project"]))
    assert [b.text for b in spec.bubbles] == ["行くぞ！", "Run!"] and spec.reading == "rtl"
    ltr = client.predict(layout="1 1", panel=[str(pictures[0])], reading="ltr", dpi=72, name="second",
                         output_format="pdf", api_name="/compose_page")
    assert ltr["file"].endswith(".pdf")
    book = client.predict(page=["api-page", "second"], reading="rtl", output_format="cbz", title="vol1",
                          api_name="/chapter")
    assert book["pages"] == 2
    with zipfile.ZipFile(book["file"]) as cbz:
        assert "YesAndRightToLeft" in cbz.read("ComicInfo.xml").decode()
    # With no reading given, the direction the projects agree on (as `app.py chapter`): left to right here.
    west = client.predict(page=["second"], title="west", api_name="/chapter")
    with zipfile.ZipFile(west["file"]) as cbz:
        assert "YesAndRightToLeft" not in cbz.read("ComicInfo.xml").decode()
    with pytest.raises(Exception, match="Unknown layout"):
        client.predict(layout="9x9", api_name="/compose_page")
    save_page(PageSpec(name="drawn", layout="1 1", dpi=72, panel_pixels=64 * 80),  # the tiny model's size
              data / "outputs" / "pages" / "drawn")
    # The saved page by its name in outputs/pages, as `app.py page --project` takes its folder.
    drawn = client.predict(project="drawn", panel=["2=" + str(pictures[1])], prompt=["ink manga, rooftop"],
                           model="tiny-anime", sampler="DDIM", steps=2, seed=8, api_name="/compose_page")
    spec, folder = load_page(Path(drawn["project"]))
    assert spec.panels[0].seed == 8 and spec.panels[0].prompt == "ink manga, rooftop"
    with Image.open(folder / spec.panels[0].image) as panel:
        assert panel.size[0] < panel.size[1]  # drawn in its tall panel's shape


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_browser_composes_a_2x2_page_letters_it_and_downloads_the_png(studio, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from test_app import CHROMIUM, CHROMIUM_FLAGS

    server, data = studio
    pictures = _pictures(tmp_path / "drop")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
            page.goto(server.url)
            page.get_by_role("tab", name="Text-to-Manga").click()
            page.locator("#manga-pages").get_by_role("button").first.click()
            page.locator("#pages-new").click()
            expect(page.locator("#pages-status")).to_contain_text("page-", timeout=20_000)
            for number, picture in enumerate(pictures, start=1):
                expect(page.locator("#pages-panel input")).to_have_value(str(number), timeout=20_000)
                page.locator("#pages-picture input[type=file]").set_input_files(str(picture))
            expect(page.locator("#pages-panel input")).to_have_value("4", timeout=20_000)  # all full: stays
            page.locator("#pages-text textarea").fill("行くぞ！")
            image = page.locator("#pages-preview img")
            expect(image).to_be_visible(timeout=20_000)
            image.scroll_into_view_if_needed()
            box = image.bounding_box()
            page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.22 * box["height"])  # panel 1: top right
            expect(page.locator("#pages-bubble input")).to_have_value("1. panel 1, speech: 行くぞ！", timeout=20_000)
            page.screenshot(path=str(tmp_path / "pages.png"), full_page=True)
            page.locator("#pages-export-png").click()
            link = page.locator("#pages-export-file a").first
            expect(link).to_be_visible(timeout=60_000)
            with page.expect_download() as download:
                link.click()
            saved = tmp_path / "downloaded.png"
            download.value.save_as(saved)
        finally:
            browser.close()
    with Image.open(saved) as png:
        assert png.size == (2150, 3035) and round(png.info["dpi"][0]) == 300
        project = json.loads(png.info["inkframe-page"])
        pixels = np.asarray(png.convert("RGB"))
    assert [b["text"] for b in project["bubbles"]] == ["行くぞ！"] and project["bubbles"][0]["panel"] == 1
    assert len([p for p in project["panels"] if p["image"]]) == 4
    composed = compose_page(PageSpec(layout="2x2", dpi=300))
    for number, colour in enumerate(COLOURS, start=1):  # each dropped picture in its panel, in reading order
        left, top, right, bottom = composed.geometry.panels[number - 1].box
        assert tuple(pixels[bottom - 20, (left + right) // 2]) == colour
