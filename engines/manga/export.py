"""Pages and chapters on disk: a page PNG that knows its DPI, a chapter PDF that prints at size, a CBZ.

    write_page_png(page, Path("ch1/001.png"), 300, text={"inkframe-page": page_to_json(spec)})
    write_pdf([Path("ch1/001.png"), ...], Path("ch1.pdf"))
    write_cbz([Path("ch1/001.png"), ...], Path("ch1.cbz"), rtl=True, title="Chapter 1", series="Kage")

Nothing is re-encoded on the way into a chapter: the PDF embeds each PNG's compressed data as it is
(img2pdf), the CBZ stores the files' bytes. Every file is written atomically (a temporary name,
fsync, rename), so a failed export leaves the previous file as it was. Inputs are checked before
anything is written, and each bad one gets one sentence.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from xml.etree import ElementTree

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engines.errors import InvalidRequestError
from engines.files import atomic_write
from engines.manga.pictures import has_alpha, on_paper

# zlib level 3: on a B5 page at 300 DPI, level 6 (zlib's default) took 20 % longer on a grey or
# colour page and over twice as long on a 1-bit toned one, for files only 2 to 6 % smaller;
# level 9 took up to 10x as long for a few % more.
PNG_COMPRESS_LEVEL = 3
CBZ_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}  # what comic readers open


@dataclass(frozen=True)
class PageFile:
    """A page image on disk, checked: what the chapter writers need to know about it."""

    path: Path
    format: str  # Pillow's name: PNG, JPEG...
    width: int
    height: int
    size: int  # bytes
    has_alpha: bool


def _check_suffix(out: Path, suffix: str, what: str) -> None:
    if out.suffix.lower() != suffix:
        raise InvalidRequestError(f"A {what} is written to a {suffix} file, not {out.name!r}.")


def _inspect(path: Path) -> PageFile:
    """Open only the header: size, format and transparency, or one sentence for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(f"The page {str(path)!r} does not exist.")
    try:
        with Image.open(path) as image:
            return PageFile(path, image.format or "", image.width, image.height, path.stat().st_size,
                            has_alpha(image))
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidRequestError(f"The page {str(path)!r} is not an image Inkframe can read.") from error


def _inspect_all(pages: Sequence[Path]) -> list[PageFile]:
    if not pages:
        raise InvalidRequestError("A chapter needs at least one page.")
    return [_inspect(Path(p)) for p in pages]


def _smallest_lossless(image: Image.Image) -> Image.Image:
    """The page in the smallest mode that keeps every pixel: an RGB page that is all grey (toned,
    then lettered) as L, a page of only black and white (screentone, ink) as 1 bit. Less to compress:
    a toned B5 page at 300 DPI took 0.07 s and 0.53 MB as 1 bit, 0.16 s and 0.87 MB as 8-bit grey.
    The checks cost 20 to 30 ms on a B5 page, a few % of its encode."""
    if image.mode == "RGB":
        pixels = np.asarray(image)
        if np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]):
            image = Image.fromarray(np.ascontiguousarray(pixels[..., 0]), "L")
    if image.mode == "L" and sum(image.histogram()[1:255]) == 0:
        image = image.convert("1", dither=Image.Dither.NONE)
    return image


def write_page_png(image: Image.Image, path: Path, dpi: int, *, text: Optional[Mapping[str, str]] = None,
                   compress_level: int = PNG_COMPRESS_LEVEL) -> None:
    """Save a page as PNG with its DPI (pHYs) and ``text`` chunks (e.g. the project JSON under
    "inkframe-page"), atomically.

    Every pixel is kept, in the smallest mode that holds them: a grey RGB page is stored as L, a page
    of only black and white as 1 bit, so reading it back may give a mode "L" or "1" image."""
    path = Path(path)
    _check_suffix(path, ".png", "page")
    if int(dpi) <= 0:
        raise InvalidRequestError(f"A page needs a positive DPI, not {dpi}.")
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value, zip=len(value) > 1024)  # iTXt is UTF-8: the JSON keeps its Japanese
    image = _smallest_lossless(image)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", dpi=(int(dpi), int(dpi)), pnginfo=info,
                                              compress_level=compress_level))


def _flattened(page: PageFile, out: Path) -> Path:
    """A copy of a transparent page on white paper. img2pdf would store the alpha as a soft mask
    (and refuses it at 16 bits): a viewer then shows its own background through the page and a
    printer flattens the transparency its own way. A page is paper, so it is made opaque here."""
    with Image.open(page.path) as image:
        flat = on_paper(image)
        dpi = image.info.get("dpi")
    flat.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL, **({"dpi": dpi} if dpi else {}))
    return out


def write_pdf(pages: Sequence[Path], out: Path, dpi: Optional[int] = None) -> None:
    """A chapter PDF, one page per image in the given order, each page the size of its image at its
    DPI (a B5 page at 300 DPI prints at B5); ``dpi`` overrides the images' own. Lossless: PNG and JPEG
    data is embedded as it is."""
    import img2pdf  # only an export needs it (and pikepdf behind it)

    out = Path(out)
    _check_suffix(out, ".pdf", "chapter PDF")
    if dpi is not None and int(dpi) <= 0:
        raise InvalidRequestError(f"A chapter needs a positive DPI, not {dpi}.")
    checked = _inspect_all(pages)
    layout = img2pdf.get_fixed_dpi_layout_fun((int(dpi), int(dpi))) if dpi else img2pdf.default_layout_fun
    with tempfile.TemporaryDirectory(prefix="inkframe-pdf-") as tmp:
        sources = [str(_flattened(p, Path(tmp) / f"{i:04d}.png") if p.has_alpha else p.path)
                   for i, p in enumerate(checked)]

        def write(target: Path) -> None:
            with open(target, "wb") as handle:
                img2pdf.convert(sources, layout_fun=layout, outputstream=handle)

        try:
            atomic_write(out, write)
        except (img2pdf.ImageOpenError, img2pdf.UnsupportedColorspaceError,
                img2pdf.AlphaChannelError) as error:
            raise InvalidRequestError(f"A page cannot go into a PDF as it is ({error}).") from error


def _comic_info(checked: Sequence[PageFile], *, rtl: bool, title: str, series: str, number: str) -> bytes:
    """ComicInfo.xml (the ComicRack/Anansi schema v2.0), elements in the schema's order."""
    root = ElementTree.Element("ComicInfo", {"xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                                             "xmlns:xsd": "http://www.w3.org/2001/XMLSchema"})
    for tag, value in (("Title", title), ("Series", series), ("Number", number)):
        if value:
            ElementTree.SubElement(root, tag).text = value
    ElementTree.SubElement(root, "PageCount").text = str(len(checked))
    # YesAndRightToLeft is what makes readers turn pages leftwards; "Yes" alone only labels it manga.
    ElementTree.SubElement(root, "Manga").text = "YesAndRightToLeft" if rtl else "No"
    listing = ElementTree.SubElement(root, "Pages")
    for index, page in enumerate(checked):
        ElementTree.SubElement(listing, "Page", {
            "Image": str(index), "Type": "FrontCover" if index == 0 else "Story",
            "ImageSize": str(page.size), "ImageWidth": str(page.width), "ImageHeight": str(page.height)})
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _member_name(index: int, count: int, page: PageFile) -> str:
    """``001.png``...: zero-padded so every reader sorts them in order, with the file's own extension."""
    suffix = page.path.suffix.lower() or CBZ_FORMATS.get(page.format, ".img")
    return f"{index + 1:0{max(3, len(str(count)))}d}{suffix}"


def write_cbz(pages: Sequence[Path], out: Path, *, rtl: bool, title: str = "", series: str = "",
              number: str = "") -> None:
    """A comic book archive: the page files stored byte for byte (no compression: images are already
    compressed, and readers seek faster in a stored zip), in order, plus ComicInfo.xml that tells
    readers the title, the page count and, when ``rtl``, to turn pages right to left."""
    out = Path(out)
    _check_suffix(out, ".cbz", "CBZ")
    checked = _inspect_all(pages)
    for page in checked:
        if page.format not in CBZ_FORMATS:
            kind = page.format or "not a known format"
            raise InvalidRequestError(f"The page {str(page.path)!r} is {kind}: "
                                      "comic readers open PNG, JPEG, WebP and GIF pages.")
    comic_info = _comic_info(checked, rtl=rtl, title=title, series=series, number=number)

    def write(target: Path) -> None:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
            for index, page in enumerate(checked):
                member = zipfile.ZipInfo.from_file(page.path, _member_name(index, len(checked), page))
                member.compress_type = zipfile.ZIP_STORED
                # One read per file and one CRC over it: a chunked copy costs a CRC call and a write
                # per chunk, and a page is a few MB at most.
                archive.writestr(member, page.path.read_bytes())
            archive.writestr("ComicInfo.xml", comic_info)

    atomic_write(out, write)
