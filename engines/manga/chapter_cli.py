"""`python app.py chapter`: pages in order as one CBZ or PDF that comic readers open in the right order.

    python app.py chapter --page outputs/pages/page-001 --page outputs/pages/page-002 --output ch1.cbz
    python app.py chapter --page p1.png --page p2.png --output ch1.pdf --ltr

A page is a page project (its folder or page.json, drawn first) or a finished page image. The CBZ
stores the images as they are, with ComicInfo.xml (Manga=YesAndRightToLeft for right-to-left
books); the direction defaults to what the page projects say, else right to left.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.settings import MachineSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page", action="append", default=[], type=Path, required=True, metavar="FILE",
                        help="a page project (folder or page.json) or a page image, in reading order; repeatable")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--rtl", dest="reading", action="store_const", const="rtl", default=None,
                       help="a right-to-left book (manga; the default unless the projects say otherwise)")
    order.add_argument("--ltr", dest="reading", action="store_const", const="ltr", help="a left-to-right book")
    parser.add_argument("--title", default="", help="the chapter's title in ComicInfo.xml (default: the file name)")
    parser.add_argument("--output", type=Path, required=True, metavar="chapter.cbz|chapter.pdf")


def run(args: argparse.Namespace, settings: MachineSettings) -> int:
    from engines.manga.fonts import FontBook
    from engines.manga.page_output import CHAPTER_SUFFIXES, check_output, export_chapter, reading_of

    output = check_output(args.output, CHAPTER_SUFFIXES)
    reading = args.reading or reading_of(args.page) or "rtl"
    images = export_chapter(args.page, output, rtl=reading == "rtl", title=args.title,
                            fonts=FontBook([settings.paths.root / "fonts"]))
    print(f"Saved {output}: {len(images)} pages, {'right to left' if reading == 'rtl' else 'left to right'}")
    return 0
