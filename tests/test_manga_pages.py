"""Manga pages: layouts and reading order, composition, project files, panels drawn from prompts, the CLI.

Lettering, tone and the export formats have their own files (test_manga_lettering, test_manga_tone,
test_manga_export); this one checks how the page puts them together.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.errors import InvalidRequestError
from engines.manga.compose import compose_page, fit_picture, geometry_of
from engines.manga.layouts import parse_rows, resolve_layout, templates
from engines.manga.page_model import Bubble, PageSpec, PanelSpec, Tone, page_from_json, page_to_json
from engines.manga.project import import_picture, list_pages, load_page, save_page

ROOT = Path(__file__).resolve().parent.parent
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 60, 200), (230, 200, 30), (150, 40, 170), (30, 180, 190)]
REQUIRED_TEMPLATES = {"4-koma", "2x2", "2x3", "3-rows", "splash", "splash-2", "5-panel-z", "tall-2-stacked",
                      "action-slant", "establishing-3"}


def _pictures(folder: Path, count: int, size: tuple[int, int] = (90, 120)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        image = Image.new("RGB", size, COLOURS[i % len(COLOURS)])
        path = folder / f"p{i + 1}.png"
        image.save(path)
        files.append(path)
    return files


def _huge_png(folder: Path, side: int = 20000) -> Path:
    """A PNG whose header says side x side pixels but whose file is tiny: refused before decoding."""
    import struct
    import zlib

    small = folder / "small.png"
    Image.new("L", (8, 8)).save(small)
    data = bytearray(small.read_bytes())
    ihdr = data[12:29]  # the chunk type and its 13 bytes
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    huge = folder / f"huge{side}.png"
    huge.write_bytes(bytes(data))
    return huge


def _page(folder: Path, layout: str = "2x2", reading: str = "rtl", **changes) -> PageSpec:
    count = len(resolve_layout(layout).panels)
    panels = tuple(PanelSpec(image=str(p)) for p in _pictures(folder, count))
    return replace(PageSpec(layout=layout, reading=reading, dpi=72, panels=panels), **changes)


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


# --- layouts --------------------------------------------------------------------------------------

def test_templates_cover_the_classic_pages_and_their_panels_never_overlap() -> None:
    found = templates()
    assert REQUIRED_TEMPLATES <= set(found) and len(found) >= 10
    for name, layout in found.items():
        spec = PageSpec(layout=name, dpi=72, gutter_mm=3)
        geometry = geometry_of(spec)
        masks = []
        for panel in geometry.panels:
            mask = Image.new("1", (geometry.width, geometry.height), 0)
            from PIL import ImageDraw
            ImageDraw.Draw(mask).polygon(panel.polygon, fill=1)
            masks.append(np.asarray(mask))
            assert 0 <= panel.box[0] < panel.box[2] <= geometry.width, name
            assert 0 <= panel.box[1] < panel.box[3] <= geometry.height, name
        overlap = np.sum(np.stack(masks), axis=0)
        assert overlap.max() == 1, f"{name}: panels overlap"
        if not layout.bleed:  # every panel inside the margins
            live = geometry.live
            assert all(live[0] - 1 <= x <= live[2] + 1 and live[1] - 1 <= y <= live[3] + 1
                       for p in geometry.panels for x, y in p.polygon), name


@pytest.mark.parametrize("rows, expected", [
    ("1", [(0, 0, 1, 1)]),
    ("1 1", [(0, 0, .5, 1), (.5, 0, 1, 1)]),
    ("1; 2 1", [(0, 0, 1, .5), (0, .5, 2 / 3, 1), (2 / 3, .5, 1, 1)]),
    ("3: 1; 1 1", [(0, 0, 1, .75), (0, .75, .5, 1), (.5, .75, 1, 1)]),
    ("1\n1 1 1", [(0, 0, 1, .5), (0, .5, 1 / 3, 1), (1 / 3, .5, 2 / 3, 1), (2 / 3, .5, 1, 1)]),
])
def test_rows_become_panels(rows: str, expected: list) -> None:
    panels = resolve_layout(rows).panels
    boxes = [(p[0][0], p[0][1], p[2][0], p[2][1]) for p in panels]
    assert np.allclose(boxes, expected)


@pytest.mark.parametrize("text, words", [
    ("1; a b", 'Row 2 of the layout, "a b", is not numbers'),
    ("1; 0 1", "between 0 and 100"),
    ("; ;", "Unknown layout"),
    ("3x9", "Unknown layout '3x9': use one of"),
    ("1 1 1 1 1; 1 1 1 1 1; 1 1 1 1 1; 1 1 1 1 1; 1 1 1 1 1", "at most 24"),
])
def test_bad_layouts_get_one_sentence(text: str, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        resolve_layout(text)
    assert parse_rows("2 1").panels  # the parser itself stays usable


def test_paper_sizes_dpi_margins_and_bleed() -> None:
    b5 = geometry_of(PageSpec(size="B5", dpi=300))
    assert (b5.width, b5.height) == (2150, 3035)  # 182 x 257 mm at 300 DPI
    assert geometry_of(PageSpec(size="A4", dpi=600)).width == 4961
    custom = geometry_of(PageSpec(size="7x10in", dpi=100, bleed_mm=3))
    bleed = round(3 * 100 / 25.4)
    assert (custom.width, custom.height) == (700 + 2 * bleed, 1000 + 2 * bleed)
    splash = geometry_of(PageSpec(layout="splash", size="7x10in", dpi=100, bleed_mm=3))
    assert splash.panels[0].box == (0, 0, splash.width, splash.height)  # a splash runs into the bleed
    for spec, words in ((PageSpec(dpi=1200), "72 to 600"), (PageSpec(size="B7"), "Unknown page size"),
                        (PageSpec(size="10x10mm"), "out of range"), (PageSpec(margin_mm=90), "out of range"),
                        (PageSpec(reading="up"), "rtl")):
        with pytest.raises(InvalidRequestError, match=words):
            compose_page(spec)


# --- reading order ---------------------------------------------------------------------------------

def test_right_to_left_is_the_mirror_of_left_to_right(tmp_path: Path) -> None:
    for layout in ("5-panel-z", "tall-2-stacked", "action-slant"):
        ltr = compose_page(_page(tmp_path / layout, layout, "ltr"))
        rtl = compose_page(_page(tmp_path / layout, layout, "rtl"))
        width = ltr.geometry.width
        for a, b in zip(ltr.geometry.panels, rtl.geometry.panels):
            assert abs((width - a.box[2]) - b.box[0]) <= 1 and abs((width - a.box[0]) - b.box[2]) <= 1
        mirrored = np.asarray(ltr.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).astype(int)
        assert np.abs(mirrored - np.asarray(rtl.image).astype(int)).mean() < 1.0, layout
    # panel 1 is read first: top right in manga, top left in a western comic
    rtl = geometry_of(PageSpec(layout="2x2", reading="rtl"))
    ltr = geometry_of(PageSpec(layout="2x2", reading="ltr"))
    assert rtl.panels[0].box[0] > rtl.panels[1].box[0] and ltr.panels[0].box[0] < ltr.panels[1].box[0]
    assert rtl.panel_at(*_centre(rtl.panels[0].box)) == 1 and rtl.panel_at(2, 2) is None


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


# --- composition ---------------------------------------------------------------------------------

def test_composition_is_deterministic_and_each_panel_holds_its_picture(tmp_path: Path) -> None:
    spec = replace(_page(tmp_path, "2x3"), bubbles=(Bubble(panel=2, text="行くぞ！", tail_x=0.3, tail_y=0.9),))
    first, second = compose_page(spec), compose_page(spec)
    assert _digest(first.image) == _digest(second.image)
    pixels = np.asarray(first.image)
    for panel in first.geometry.panels:
        left, top, right, bottom = panel.box
        corner = pixels[bottom - 6, (left + right) // 2]  # below any bubble, inside the border
        assert tuple(corner) == COLOURS[panel.number - 1], panel.number
    left, top, right, bottom = first.geometry.panels[1].text_box
    bubble = first.bubble_boxes[0]
    assert left <= bubble[0] < bubble[2] <= right and top <= bubble[1] < bubble[3] <= bottom


def test_bubbles_stay_inside_slanted_panels(tmp_path: Path) -> None:
    from engines.manga.layouts import point_in_polygon

    corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5)]
    bubbles = tuple(Bubble(panel=n, text="その夜、街は静かだった。", x=x, y=y, style=style, tail_x=1 - x, tail_y=1 - y)
                    for n in range(1, 5) for (x, y), style in zip(corners, ("speech", "narration", "shout", "thought",
                                                                            "whisper")))
    composed = compose_page(replace(_page(tmp_path, "action-slant"), bubbles=bubbles))
    for bubble, (left, top, right, bottom) in zip(bubbles, composed.bubble_boxes):
        polygon = composed.geometry.panels[bubble.panel - 1].inner
        assert all(point_in_polygon(p, polygon) for p in ((left, top), (right, top), (left, bottom), (right, bottom)))


def test_cover_keeps_the_focus_point_and_contain_shows_everything() -> None:
    picture = Image.new("RGB", (200, 100), (255, 0, 0))
    picture.paste((0, 0, 255), (100, 0, 200, 100))  # left red, right blue
    assert fit_picture(picture, (50, 100), "cover", (0.0, 0.5)).getpixel((25, 50)) == (255, 0, 0)
    assert fit_picture(picture, (50, 100), "cover", (1.0, 0.5)).getpixel((25, 50)) == (0, 0, 255)
    contained = fit_picture(picture, (100, 100), "contain", (0.5, 0.5))
    assert contained.getpixel((50, 5)) == (255, 255, 255) and contained.getpixel((10, 50)) == (255, 0, 0)
    assert contained.getpixel((90, 50)) == (0, 0, 255)


def test_a_picture_too_large_is_refused_before_decoding(tmp_path: Path) -> None:
    from engines.manga.compose import open_picture

    for side in (10000, 20000):  # over the studio's 80 MP; over Pillow's own bomb limit too
        with pytest.raises(InvalidRequestError, match="too large for a panel picture"):
            open_picture(_huge_png(tmp_path, side))


def test_a_missing_picture_is_shown_as_missing_never_a_crash(tmp_path: Path) -> None:
    spec = _page(tmp_path, "2x2")
    Path(spec.panels[1].image).unlink()
    (tmp_path / "p3.png").write_bytes(b"not a png")
    composed = compose_page(spec)
    assert composed.missing == (2, 3)
    box = composed.geometry.panels[1].box
    region = np.asarray(composed.image.crop(box))
    assert region.std() > 5  # hatched, with its label: not an empty white panel


def test_page_tone_dots_the_pictures_but_not_the_lettering(tmp_path: Path) -> None:
    spec = replace(_page(tmp_path, "2x2"), dpi=150, tone=Tone(mode="screentone", lpi=40),
                   bubbles=(Bubble(panel=1, text="TONE", x=0.5, y=0.5),))
    composed = compose_page(spec)
    grey = np.asarray(composed.image.convert("L"))
    left, top, right, bottom = composed.geometry.panels[3].box
    values = set(np.unique(grey[bottom - 40:bottom - 10, left + 10:left + 40]))
    assert values <= {0, 255} and values == {0, 255}  # halftone dots of ink on paper
    bx0, by0, bx1, by1 = composed.bubble_boxes[0]
    inside = grey[(by0 + by1) // 2 - 2:(by0 + by1) // 2 + 2, bx0 + 8:bx0 + 14]
    assert inside.min() == 255  # the bubble's white fill has no dots


# --- project files ---------------------------------------------------------------------------------

def test_a_project_round_trips_and_keeps_its_pictures(tmp_path: Path) -> None:
    source = _pictures(tmp_path / "src", 1)[0]
    folder = tmp_path / "outputs" / "pages" / "page-001"
    name = import_picture(folder, 1, source)
    spec = PageSpec(name="page-001", layout="1; 1 1", reading="ltr", tone=Tone(mode="ink", threshold=90),
                    panels=(PanelSpec(image=name, focus=(0.2, 0.8), fit="contain"), PanelSpec(prompt="a cat", seed=7)),
                    bubbles=(Bubble(panel=2, text="にゃ", style="thought", tail_x=0.1, tail_y=0.9, vertical=True),))
    save_page(spec, folder)
    source.unlink()  # the artist's own file moved away: the project keeps its copy
    loaded, where = load_page(folder)
    assert loaded == spec and where == folder
    assert page_from_json(page_to_json(spec)) == spec
    assert compose_page(loaded, base_dir=folder).missing == ()
    assert list_pages(tmp_path / "outputs") == [folder]
    newer = json.loads((folder / "page.json").read_text())
    newer["from_the_future"] = 1
    assert page_from_json(json.dumps(newer)) == spec  # a newer file's unknown fields are skipped
    for text, words in (("{", "not valid JSON"), ('{"panels": 3}', "not a page"), ("[]", "list")):
        with pytest.raises(InvalidRequestError, match=words):
            page_from_json(text)
    with pytest.raises(InvalidRequestError, match="not an image"):
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG broken")
        import_picture(folder, 1, bad)


# --- CLI -----------------------------------------------------------------------------------------

def _app(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data), "--cpu", "--offline",
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=240)


def test_cli_page_and_chapter(tmp_path: Path) -> None:
    data = tmp_path / "data"
    files = _pictures(tmp_path / "in", 4, size=(60, 80))
    out = tmp_path / "page.png"
    done = _app(data, "page", "--layout", "2x2", *sum((["--panel", str(f)] for f in files), []),
                "--bubble", "1:行くぞ！", "--bubble", "2:Wait for me!:shout", "--tone", "grey",
                "--dpi", "100", "--output", str(out))
    assert done.returncode == 0, done.stderr
    with Image.open(out) as page:
        assert page.size == (717, 1012) and round(page.info["dpi"][0]) == 100
        project = json.loads(page.info["inkframe-page"])
    assert [b["text"] for b in project["bubbles"]] == ["行くぞ！", "Wait for me!"]
    assert project["bubbles"][1]["style"] == "shout"
    folder = data / "outputs" / "pages" / project["name"]
    assert (folder / "page.json").is_file()
    again = _app(data, "page", "--project", str(folder), "--ltr", "--output", str(tmp_path / "page2.pdf"))
    assert again.returncode == 0, again.stderr
    ltr = _app(data, "page", "--layout", "1 1", "--panel", str(files[0]), "--ltr", "--dpi", "72",
               "--output", str(tmp_path / "wide.png"))
    assert ltr.returncode == 0, ltr.stderr
    chapter = _app(data, "chapter", "--page", str(folder), "--page", str(tmp_path / "wide.png"),
                   "--output", str(tmp_path / "ch.cbz"))
    assert chapter.returncode == 0, chapter.stderr
    with zipfile.ZipFile(tmp_path / "ch.cbz") as book:
        names = [n for n in book.namelist() if n.lower().endswith(".png")]
        assert len(names) == 2 and names == sorted(names)
        assert book.read(names[1]) == (tmp_path / "wide.png").read_bytes()
        info = book.read("ComicInfo.xml").decode()
    assert "<Manga>No</Manga>" in info  # --ltr was saved into the project, and the chapter follows it
    rtl = _app(data, "chapter", "--page", str(out), "--rtl", "--output", str(tmp_path / "rtl.cbz"))
    assert rtl.returncode == 0, rtl.stderr
    with zipfile.ZipFile(tmp_path / "rtl.cbz") as book:
        assert "<Manga>YesAndRightToLeft</Manga>" in book.read("ComicInfo.xml").decode()
    pdf = _app(data, "chapter", "--page", str(tmp_path / "wide.png"), "--page", str(out), "--ltr",
               "--output", str(tmp_path / "ch.pdf"))
    assert pdf.returncode == 0, pdf.stderr
    import pikepdf
    with pikepdf.open(tmp_path / "ch.pdf") as document:
        assert len(document.pages) == 2


@pytest.mark.parametrize("args, words", [
    (["--layout", "7x7"], "Unknown layout"),
    (["--layout", "2x2", "--panel", "{bad}"], "not an image"),
    (["--layout", "2x2", "--panel", "{missing}"], "is not there"),
    (["--layout", "1", "--panel", "{good}", "--panel", "{good}"], "no panel for the picture"),
    (["--layout", "1 1 1 1 1 1 1 1", "--bubble", "1:" + "とても長い台詞です。" * 60], "does not fit"),
    (["--layout", "1", "--bubble", "3:hi"], "panels 1 to 1"),
    (["--layout", "1", "--prompt", "a cat"], "Choose a model"),
    (["--layout", "1", "--output-format"], "unrecognized"),
    (["--layout", "1", "--panel", "{huge}"], "too large for a panel picture"),
])
def test_cli_refuses_bad_input_with_one_sentence(tmp_path: Path, args: list[str], words: str) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    good = _pictures(tmp_path, 1)[0]
    args = [a.format(bad=bad, missing=tmp_path / "gone.png", good=good, huge=_huge_png(tmp_path)) for a in args]
    done = _app(tmp_path / "data", "page", *args, "--dpi", "72", "--output", str(tmp_path / "x.png"))
    assert done.returncode != 0 and words in done.stderr, done.stderr
    assert not (tmp_path / "x.png").exists()


# --- panels from prompts ---------------------------------------------------------------------------

def test_panels_drawn_from_prompts_with_an_sd_checkpoint(tmp_path: Path, tiny_sd_dir: Path) -> None:
    from engines.context import build_engine_context
    from engines.manga.page_fill import fill_panels, sd_panel_size
    from engines.settings import MachineSettings

    settings = MachineSettings(data_dir=tmp_path / "data", cpu=True, offline=True)
    ctx = build_engine_context(settings)
    shutil.copytree(tiny_sd_dir, settings.paths.models / "tiny-anime")
    reference = _pictures(tmp_path / "ref", 1)[0]
    folder = settings.paths.outputs / "pages" / "p"
    spec = PageSpec(name="p", layout="1; 1 1", dpi=72, model="tiny-anime", steps=2, sampler="DDIM",
                    panel_pixels=64 * 64, style_prompt="manga",
                    panels=(PanelSpec(prompt="a rooftop", seed=11), PanelSpec(image=str(reference)),
                            PanelSpec(prompt="a cat")))
    saved: list[PageSpec] = []
    steps: list[tuple[int, int]] = []
    filled = fill_panels(spec, folder, ctx, on_panel=saved.append, on_step=lambda s, t, *_: steps.append((s, t)))
    assert [p.seed for p in filled.panels][:2] == [11, None] and filled.panels[2].seed is not None
    first = Image.open(folder / filled.panels[0].image)
    assert first.size == sd_panel_size(geometry_of(spec).panels[0].box, 64 * 64) and first.size[0] > first.size[1]
    assert filled.panels[1].image == str(reference)  # a dropped-in picture is left alone
    assert len(saved) == 2 and load_page(folder)[0] == filled  # saved after each panel
    assert steps[-1][0] == steps[-1][1] == 4
    again = fill_panels(replace(filled, panels=filled.panels), folder, ctx, numbers=[1])
    assert np.array_equal(np.asarray(Image.open(folder / again.panels[0].image)), np.asarray(first))  # same seed
    with pytest.raises(InvalidRequestError, match="no prompt"):
        fill_panels(filled, folder, ctx, numbers=[2])
