"""Pages and chapters on disk: a PNG that knows its DPI, a PDF that prints at size, a CBZ in order."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pikepdf
import pytest
from PIL import Image, ImageDraw

from engines.errors import InvalidRequestError
from engines.manga import export
from engines.manga.export import write_cbz, write_page_png, write_pdf

COLOURS = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (230, 200, 30)]


def page_files(folder: Path, count: int = 3, dpi: int = 150) -> list[Path]:
    """Pages of distinct sizes and colours, each with its DPI recorded, named so that a plain sort
    of the names would put them in the wrong order."""
    paths = []
    for index in range(count):
        image = Image.new("RGB", (200 + 20 * index, 280 + 10 * index), COLOURS[index % len(COLOURS)])
        ImageDraw.Draw(image).text((20, 20), f"page {index + 1}", fill=(0, 0, 0))
        path = folder / f"p{count - index}.png"
        image.save(path, dpi=(dpi, dpi))
        paths.append(path)
    return paths


def media_boxes(pdf_path: Path) -> list[tuple[float, float]]:
    with pikepdf.open(pdf_path) as pdf:
        return [(float(p.mediabox[2] - p.mediabox[0]), float(p.mediabox[3] - p.mediabox[1]))
                for p in pdf.pages]


def page_pixels(pdf_path: Path, index: int) -> np.ndarray:
    with pikepdf.open(pdf_path) as pdf:
        page = pdf.pages[index]
        (image,) = page.get_images().values()
        return np.asarray(pikepdf.PdfImage(image).as_pil_image().convert("RGB"))


# --- the page PNG -------------------------------------------------------------------------------

def test_page_png_records_its_dpi_and_text(tmp_path: Path) -> None:
    project = json.dumps({"name": "第1話", "panels": [1, 2]}, ensure_ascii=False)
    path = tmp_path / "page.png"
    picture = Image.new("RGB", (200, 280), (120, 30, 60))
    write_page_png(picture, path, 300, text={"inkframe-page": project})
    with Image.open(path) as saved:
        assert tuple(round(v) for v in saved.info["dpi"]) == (300, 300)
        assert saved.text["inkframe-page"] == project
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(picture))


def test_a_toned_page_is_stored_as_one_bit_without_loss(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    toned = Image.fromarray((rng.random((280, 200)) > 0.5).astype(np.uint8) * 255, "L")
    path = tmp_path / "toned.png"
    write_page_png(toned, path, 300)
    with Image.open(path) as saved:
        assert saved.mode == "1"
        assert np.array_equal(np.asarray(saved.convert("L")), np.asarray(toned))


def test_a_grey_colour_page_is_stored_as_grey_without_loss(tmp_path: Path) -> None:
    ramp = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (280, 1)), "L").convert("RGB")
    write_page_png(ramp, tmp_path / "grey.png", 300)
    colour = ramp.copy()
    colour.putpixel((5, 5), (10, 20, 30))
    write_page_png(colour, tmp_path / "colour.png", 300)
    with Image.open(tmp_path / "grey.png") as grey, Image.open(tmp_path / "colour.png") as kept:
        assert grey.mode == "L" and np.array_equal(np.asarray(grey.convert("RGB")), np.asarray(ramp))
        assert kept.mode == "RGB" and np.array_equal(np.asarray(kept), np.asarray(colour))


def test_page_png_refuses_another_suffix(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="png"):
        write_page_png(Image.new("L", (8, 8)), tmp_path / "page.jpg", 300)


# --- the chapter PDF ----------------------------------------------------------------------------

def test_pdf_has_every_page_in_order_at_print_size(tmp_path: Path) -> None:
    pages = page_files(tmp_path, 3, dpi=150)
    out = tmp_path / "chapter.pdf"
    write_pdf(pages, out)
    expected = [(200 + 20 * i) * 72 / 150 for i in range(3)], [(280 + 10 * i) * 72 / 150 for i in range(3)]
    boxes = media_boxes(out)
    assert [w for w, _ in boxes] == pytest.approx(expected[0], abs=0.01)
    assert [h for _, h in boxes] == pytest.approx(expected[1], abs=0.01)
    for index in range(3):  # lossless: the very pixels of each page, in the given order
        with Image.open(pages[index]) as source:
            assert np.array_equal(page_pixels(out, index), np.asarray(source.convert("RGB")))


def test_pdf_dpi_overrides_the_pages_own(tmp_path: Path) -> None:
    pages = page_files(tmp_path, 2, dpi=72)
    out = tmp_path / "chapter.pdf"
    write_pdf(pages, out, dpi=300)
    assert media_boxes(out)[0] == pytest.approx((200 * 72 / 300, 280 * 72 / 300), abs=0.01)


def test_pdf_takes_transparent_and_one_bit_pages(tmp_path: Path) -> None:
    clear = Image.new("RGBA", (200, 280), (0, 0, 0, 0))
    ImageDraw.Draw(clear).rectangle((50, 50, 99, 99), fill=(0, 0, 0, 255))
    clear.save(tmp_path / "clear.png", dpi=(150, 150))
    inked = Image.new("L", (200, 280), 255)
    ImageDraw.Draw(inked).ellipse((40, 60, 160, 200), fill=0)
    write_page_png(inked, tmp_path / "ink.png", 150)  # bilevel: stored as a 1-bit PNG
    out = tmp_path / "chapter.pdf"
    write_pdf([tmp_path / "clear.png", tmp_path / "ink.png"], out)
    assert len(media_boxes(out)) == 2
    flat = page_pixels(out, 0)
    assert tuple(flat[10, 10]) == (255, 255, 255) and tuple(flat[70, 70]) == (0, 0, 0)  # on white paper
    assert media_boxes(out)[0] == pytest.approx((200 * 72 / 150, 280 * 72 / 150), abs=0.01)
    assert np.array_equal(page_pixels(out, 1)[..., 0], np.asarray(inked))


# --- the CBZ ------------------------------------------------------------------------------------

def test_cbz_stores_every_page_byte_for_byte_in_order(tmp_path: Path) -> None:
    pages = page_files(tmp_path, 3)
    jpeg = tmp_path / "cover.jpeg"
    Image.new("RGB", (200, 280), (10, 10, 10)).save(jpeg, quality=90)
    out = tmp_path / "chapter.cbz"
    write_cbz([jpeg, *pages], out, rtl=True, title="Kage & <Hikari>", series="Kage", number="1")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert names == ["001.jpeg", "002.png", "003.png", "004.png", "ComicInfo.xml"]
        for member, source in zip(archive.infolist()[:4], [jpeg, *pages]):
            assert member.compress_type == zipfile.ZIP_STORED
            assert archive.read(member) == source.read_bytes()
        info = ElementTree.fromstring(archive.read("ComicInfo.xml"))
    assert info.tag == "ComicInfo"
    assert info.findtext("Title") == "Kage & <Hikari>" and info.findtext("Series") == "Kage"
    assert info.findtext("Number") == "1" and info.findtext("PageCount") == "4"
    assert info.findtext("Manga") == "YesAndRightToLeft"
    listed = info.find("Pages").findall("Page")
    assert [p.get("Image") for p in listed] == ["0", "1", "2", "3"]
    assert listed[0].get("Type") == "FrontCover" and all(p.get("Type") == "Story" for p in listed[1:])
    assert [(p.get("ImageWidth"), p.get("ImageHeight")) for p in listed[1:]] == [
        (str(200 + 20 * i), str(280 + 10 * i)) for i in range(3)]
    assert listed[1].get("ImageSize") == str(pages[0].stat().st_size)


def test_cbz_left_to_right_says_no_manga_reading(tmp_path: Path) -> None:
    out = tmp_path / "chapter.cbz"
    write_cbz(page_files(tmp_path, 2), out, rtl=False)
    with zipfile.ZipFile(out) as archive:
        info = ElementTree.fromstring(archive.read("ComicInfo.xml"))
    assert info.findtext("Manga") == "No" and info.find("Title") is None and info.findtext("PageCount") == "2"


def test_a_long_chapter_pads_names_so_readers_sort_them(tmp_path: Path) -> None:
    source = page_files(tmp_path, 1)[0]
    out = tmp_path / "long.cbz"
    write_cbz([source] * 1001, out, rtl=True)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()[:-1]
    assert names[0] == "0001.png" and names[-1] == "1001.png" and names == sorted(names)


# --- errors and atomicity -----------------------------------------------------------------------

@pytest.mark.parametrize("writer,suffix", [(write_pdf, ".pdf"), (write_cbz, ".cbz")])
def test_a_failed_export_leaves_the_old_file_as_it_was(tmp_path: Path, writer, suffix: str) -> None:
    out = tmp_path / f"chapter{suffix}"
    out.write_bytes(b"the chapter exported yesterday")
    pages = page_files(tmp_path, 2)
    kwargs = {"rtl": True} if writer is write_cbz else {}
    with pytest.raises(InvalidRequestError, match="does not exist"):
        writer([pages[0], tmp_path / "missing.png", pages[1]], out, **kwargs)
    assert out.read_bytes() == b"the chapter exported yesterday"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["p1.png", "p2.png", out.name])


def test_a_crash_while_writing_the_cbz_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "chapter.cbz"
    out.write_bytes(b"old")
    pages = page_files(tmp_path, 2)

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_full)
    with pytest.raises(OSError):
        write_cbz(pages, out, rtl=True)
    assert out.read_bytes() == b"old" and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("writer,name", [(write_pdf, "chapter.pdf"), (write_cbz, "chapter.cbz")])
def test_bad_inputs_are_one_sentence(tmp_path: Path, writer, name: str) -> None:
    kwargs = {"rtl": True} if writer is write_cbz else {}
    with pytest.raises(InvalidRequestError, match="at least one page"):
        writer([], tmp_path / name, **kwargs)
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture")
    with pytest.raises(InvalidRequestError, match="not an image"):
        writer([fake], tmp_path / name, **kwargs)
    with pytest.raises(InvalidRequestError, match=Path(name).suffix):
        writer(page_files(tmp_path, 1), tmp_path / "chapter.zip", **kwargs)
    assert not (tmp_path / name).exists()


def test_cbz_refuses_a_page_readers_cannot_open(tmp_path: Path) -> None:
    tiff = tmp_path / "scan.tif"
    Image.new("L", (20, 20), 255).save(tiff)
    with pytest.raises(InvalidRequestError, match="PNG, JPEG"):
        write_cbz([tiff], tmp_path / "chapter.cbz", rtl=True)


def test_page_files_are_only_opened_not_decoded_for_the_checks(tmp_path: Path) -> None:
    page = export._inspect(page_files(tmp_path, 1)[0])
    assert (page.format, page.width, page.height, page.has_alpha) == ("PNG", 200, 280, False)
