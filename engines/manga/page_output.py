"""A page or a chapter to files: what the CLI's `page` and `chapter` and the Pages section call.

    export_page(spec, folder, Path("page.png"))      # PNG at the page's DPI (its project in the PNG)
    export_page(spec, folder, Path("page.pdf"))      # a one-page PDF at print size
    export_chapter([Path("p1/page.json"), Path("p2.png")], Path("ch1.cbz"), rtl=True)

A chapter takes page projects (drawn to PNG first, beside their page.json) and finished page
images alike, in the order given: that order is the reading order of the book, whatever the
reading direction inside each page.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from engines.errors import InvalidRequestError
from engines.manga.compose import ComposedPage, compose_page
from engines.manga.page_model import PageSpec, page_to_json
from engines.manga.project import PROJECT_FILE, export_name, load_page

PAGE_SUFFIXES = (".png", ".pdf")
CHAPTER_SUFFIXES = (".cbz", ".pdf")
PNG_KEY = "inkframe-page"


def check_output(output: Path, suffixes: tuple[str, ...]) -> Path:
    output = Path(output).expanduser()
    if output.suffix.lower() not in suffixes:
        raise InvalidRequestError(f"Write the page to a {' or '.join(suffixes)} file, not {output.name!r}.")
    if not output.parent.exists():
        raise InvalidRequestError(f"The folder {output.parent} does not exist.")
    return output


def export_page(spec: PageSpec, folder: Optional[Path], output: Path, *, fonts=None,
                require_pictures: bool = False) -> ComposedPage:
    """Draw the page at its DPI and write it as PNG (with its project JSON inside) or PDF."""
    from engines.manga.export import write_page_png, write_pdf

    output = check_output(output, PAGE_SUFFIXES)
    composed = compose_page(spec, base_dir=folder, fonts=fonts)
    if require_pictures and composed.missing:
        numbers = ", ".join(str(n) for n in composed.missing)
        raise InvalidRequestError(f"The picture of panel {numbers} is missing or not an image.")
    if output.suffix.lower() == ".png":
        write_page_png(composed.image, output, spec.dpi, text={PNG_KEY: page_to_json(spec)})
    else:
        with tempfile.TemporaryDirectory(prefix="inkframe-page-") as tmp:
            png = Path(tmp) / "page.png"
            write_page_png(composed.image, png, spec.dpi)
            write_pdf([png], output, dpi=spec.dpi)
    return composed


def page_images(sources: list[Path], *, fonts=None) -> list[Path]:
    """Each source as a page image: a project (folder or page.json) is drawn to PNG beside it first."""
    images = []
    for source in sources:
        source = Path(source).expanduser()
        if source.is_dir() or source.suffix.lower() == ".json":
            if source.is_dir() and not (source / PROJECT_FILE).is_file():
                raise InvalidRequestError(f"{source} is a folder without a {PROJECT_FILE}: "
                                          "give page images or projects.")
            spec, folder = load_page(source)
            target = export_name(folder, spec)
            export_page(spec, folder, target, fonts=fonts)
            images.append(target)
        elif source.is_file():
            images.append(source)
        else:
            raise InvalidRequestError(f"The page {source} is not there.")
    return images


def reading_of(sources: list[Path]) -> Optional[str]:
    """The reading direction the page projects agree on, None when there are none or they disagree."""
    found = set()
    for source in sources:
        source = Path(source).expanduser()
        if source.is_dir() or source.suffix.lower() == ".json":
            found.add(load_page(source)[0].reading)
    return found.pop() if len(found) == 1 else None


def export_chapter(sources: list[Path], output: Path, *, rtl: bool, title: str = "", fonts=None) -> list[Path]:
    """The pages, in order, as one CBZ (images stored as they are) or PDF; returns the page images."""
    from engines.manga.export import write_cbz, write_pdf

    if not sources:
        raise InvalidRequestError("A chapter needs at least one page.")
    output = check_output(output, CHAPTER_SUFFIXES)
    images = page_images(sources, fonts=fonts)
    if output.suffix.lower() == ".cbz":
        write_cbz(images, output, rtl=rtl, title=title or output.stem)
    else:
        write_pdf(images, output)
    return images
